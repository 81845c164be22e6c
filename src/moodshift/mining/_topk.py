"""Streaming top-K selection kernels (numba) for the exact self-join on CPU.

A similarity tile coming out of the matrix product is scanned once. Each row
keeps a small buffer of candidates and a threshold: its K-th best score so
far. Scores below the threshold (almost all of them once a few thousand
columns have been seen) cost one compare; the others are appended to the
buffer, and a full buffer is cut back to its best K by quickselect, which
raises the threshold. Appending is a few stores, where a heap insertion costs
tens of nanoseconds in mispredicted branches; with random candidate order a
row sees about ``K ln(n / K)`` appends in all.

Order is (score descending, index ascending): among equal scores the lower
index wins, exactly like a stable sort of the full row.

Imported lazily: numba (a dependency of librosa) costs about half a second to
import and compiles these on first use (cached on disk afterwards).
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

#: Columns per strip of the fast scan in :func:`buffer_update` (one 64-bit hit mask).
_STRIP = 64


@intrinsic
def _cttz(typingctx: object, x: types.Type) -> tuple:
    """Count trailing zeros of a uint64 (LLVM ``cttz``): the lowest set bit's position."""
    sig = types.int64(types.uint64)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.cttz(args[0], ir.Constant(ir.IntType(1), 0))

    return sig, codegen


@numba.njit(nogil=True, cache=True, inline="always")
def _better(v1: float, i1: int, v2: float, i2: int) -> bool:
    return v1 > v2 or (v1 == v2 and i1 < i2)


@numba.njit(nogil=True, cache=True, boundscheck=False)
def _select(vals: np.ndarray, ids: np.ndarray, n: int, k: int) -> None:
    """Quickselect: move the best ``k`` of ``vals[:n]`` (with ``ids``) to the front, unordered."""
    lo = 0
    hi = n - 1
    while lo < hi:
        # Median of three as pivot keeps sorted runs from degrading to quadratic time.
        mid = (lo + hi) // 2
        a, b, c = lo, mid, hi
        if _better(vals[b], ids[b], vals[a], ids[a]):
            a, b = b, a
        if _better(vals[c], ids[c], vals[b], ids[b]):
            b, c = c, b
            if _better(vals[b], ids[b], vals[a], ids[a]):
                a, b = b, a
        pv = vals[b]
        pi = ids[b]
        i = lo
        j = hi
        while i <= j:
            while _better(vals[i], ids[i], pv, pi):
                i += 1
            while _better(pv, pi, vals[j], ids[j]):
                j -= 1
            if i <= j:
                tv = vals[i]
                vals[i] = vals[j]
                vals[j] = tv
                ti = ids[i]
                ids[i] = ids[j]
                ids[j] = ti
                i += 1
                j -= 1
        # Now [lo, j] are all at least as good as the pivot, [i, hi] at most as good.
        if k - 1 <= j:
            hi = j
        elif k - 1 >= i:
            lo = i
        else:
            return


@numba.njit(nogil=True, cache=True, boundscheck=False)
def _shrink(vals: np.ndarray, ids: np.ndarray, n: int, k: int) -> float:
    """Keep the best ``k`` of ``n`` buffered entries at the front; return the worst kept score."""
    _select(vals, ids, n, k)
    worst = vals[0]
    for t in range(1, k):
        if vals[t] < worst:
            worst = vals[t]
    return worst


@numba.njit(nogil=True, cache=True, boundscheck=False)
def _count_ge(vals: np.ndarray, n: int, t: float) -> int:
    c = 0
    for j in range(n):
        c += vals[j] >= t
    return c


@numba.njit(nogil=True, cache=True, boundscheck=False)
def _cut(vals: np.ndarray, ids: np.ndarray, n: int, k: int) -> tuple[int, float]:
    """Raise the threshold of a full buffer and drop what falls below it.

    Bisects the score range for a threshold that keeps between ``k`` and ``k + slack``
    entries: each step is one branch-free (vectorised) count, where an exact quickselect
    pays a mispredicted branch per comparison (measured: ~25 ns per entry). Any threshold
    keeping >= k entries is safe: it is at most the K-th best score seen so far. Falls
    back to the exact cut when ties leave too many entries.

    Returns
    -------
    n_kept, threshold
    """
    cap = vals.shape[0]
    slack = max(8, (cap - k) // 4)
    # Every buffered score is >= t; start from the buffer's own range (t may be -inf).
    lo = vals[0]
    hi = vals[0]
    for j in range(1, n):
        v = vals[j]
        lo = min(lo, v)
        hi = max(hi, v)
    for _ in range(24):
        mid = lo + (hi - lo) * np.float32(0.5)
        if not (lo < mid < hi):
            break
        c = _count_ge(vals, n, mid)
        if c >= k:
            lo = mid
            if c <= k + slack:
                break
        else:
            hi = mid
    kept = 0
    for j in range(n):
        if vals[j] >= lo:
            vals[kept] = vals[j]
            ids[kept] = ids[j]
            kept += 1
    if kept > cap - slack:
        lo = _shrink(vals, ids, kept, k)
        kept = k
    return kept, lo


@numba.njit(nogil=True, cache=True, boundscheck=False)
def _scan_row(
    row: np.ndarray,
    col_ids: np.ndarray,
    sp: int,
    k: int,
    bvi: np.ndarray,
    bii: np.ndarray,
    cnt: int,
    t: float,
) -> tuple[int, float]:
    """Append the scores >= t of one row to its buffer; returns (count, threshold)."""
    cap = bvi.shape[0]
    w = row.shape[0]
    one = np.uint64(1)
    nfull = w // _STRIP
    for strip in range(nfull):
        j0 = strip * _STRIP
        # A bit per score >= t over a fixed 64-wide strip: LLVM turns this into vector
        # compares + mask moves (~0.25 ns a score, measured). A plain scalar scan costs
        # ~2 ns a score here, and early in a row most strips hold a hit.
        mask = np.uint64(0)
        for jj in range(_STRIP):
            mask |= np.uint64(row[j0 + jj] >= t) << np.uint64(jj)
        while mask:
            j = j0 + _cttz(mask)
            mask &= mask - one
            v = row[j]
            if v < t or j == sp:  # t may have risen at a cut earlier in this strip
                continue
            bvi[cnt] = v
            bii[cnt] = col_ids[j]
            cnt += 1
            if cnt == cap:
                cnt, t = _cut(bvi, bii, cnt, k)
    for j in range(nfull * _STRIP, w):
        v = row[j]
        if v >= t and j != sp:
            bvi[cnt] = v
            bii[cnt] = col_ids[j]
            cnt += 1
            if cnt == cap:
                cnt, t = _cut(bvi, bii, cnt, k)
    return cnt, t


@numba.njit(nogil=True, cache=True, boundscheck=False)
def buffer_update(
    sims: np.ndarray,
    col_ids: np.ndarray,
    self_pos: np.ndarray,
    k: int,
    bv: np.ndarray,
    bi: np.ndarray,
    bn: np.ndarray,
    thr: np.ndarray,
) -> None:
    """Scan one tile of similarities into the per-row candidate buffers.

    Parameters
    ----------
    sims : float32 (b, w)
        Similarities of ``b`` query rows to ``w`` candidates.
    col_ids : int64 (w,)
        Id of each candidate (what the buffers store; ties go to the lower id).
    self_pos : int64 (b,)
        Column (in this tile) of each query itself, excluded; any value outside
        ``[0, w)`` when the query is not among these candidates.
    k : int
        List length.
    bv, bi : float32 (b, cap), int64 (b, cap)
        Buffers (``cap > k``), updated in place.
    bn : int64 (b,)
        Entries in use per buffer.
    thr : float32 (b,)
        Per-row admission threshold (start at ``-inf``): at most the K-th best score so
        far once the buffer has been cut. ``>=`` admits ties, which the cut resolves by id.
    """
    for i in range(sims.shape[0]):
        bn[i], thr[i] = _scan_row(sims[i], col_ids, self_pos[i], k, bv[i], bi[i], bn[i], thr[i])


@numba.njit(nogil=True, cache=True, boundscheck=False)
def buffer_update_rows(
    sims: np.ndarray,
    col_ids: np.ndarray,
    self_pos: np.ndarray,
    k: int,
    rows: np.ndarray,
    bv: np.ndarray,
    bi: np.ndarray,
    bn: np.ndarray,
    thr: np.ndarray,
) -> None:
    """:func:`buffer_update` where tile row ``i`` feeds buffer row ``rows[i]``."""
    for i in range(sims.shape[0]):
        r = rows[i]
        bn[r], thr[r] = _scan_row(sims[i], col_ids, self_pos[i], k, bv[r], bi[r], bn[r], thr[r])


@numba.njit(nogil=True, cache=True, boundscheck=False)
def buffer_finish(
    k: int, bv: np.ndarray, bi: np.ndarray, bn: np.ndarray, out_v: np.ndarray, out_i: np.ndarray
) -> None:
    """Best ``k`` of every buffer, sorted best first, into ``out_v``/``out_i`` (b, k).

    Rows with fewer than ``k`` entries are padded with ``-inf`` / ``-1``.
    """
    b, cap = bv.shape
    keys = np.empty(cap, dtype=np.uint64)
    bits_out = np.empty(k, dtype=np.uint32)
    vals_out = bits_out.view(np.float32)
    sign = np.uint32(0x80000000)
    ones = np.uint32(0xFFFFFFFF)
    low = np.uint64(0xFFFFFFFF)
    for i in range(b):
        cnt = bn[i]
        if cnt > k:
            cnt, _ = _cut(bv[i], bi[i], cnt, k)
        # One integer sort orders by (score desc, id asc): the high word maps the float's
        # bits to an order that falls as the score rises, the low word is the id (< 2^32).
        bits = bv[i, :cnt].view(np.uint32)
        for t in range(cnt):
            f = bits[t] ^ ones if bits[t] & sign else bits[t] | sign  # rises with the score
            keys[t] = (np.uint64(f ^ ones) << np.uint64(32)) | np.uint64(bi[i, t])
        srt = np.sort(keys[:cnt])
        m = min(cnt, k)
        for t in range(m):
            f = np.uint32(srt[t] >> np.uint64(32)) ^ ones
            bits_out[t] = f & ~sign if f & sign else f ^ ones
            out_i[i, t] = np.int64(srt[t] & low)
            out_v[i, t] = vals_out[t]
        for t in range(m, k):
            out_v[i, t] = -np.inf
            out_i[i, t] = -1
