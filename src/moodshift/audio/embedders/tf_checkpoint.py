"""Read TensorFlow (v1 "V2 format") checkpoints without TensorFlow.

A checkpoint with prefix ``P`` is two files:

``P.index``
    A LevelDB-style sorted string table (SSTable). Keys are variable names;
    each value is a serialized ``BundleEntryProto`` (dtype, shape, shard,
    byte offset and size, masked CRC32C). The empty key holds a
    ``BundleHeaderProto`` (number of shards, endianness).
``P.data-SSSSS-of-NNNNN``
    The raw little-endian tensor bytes, concatenated.

The table format (footer, block handles, prefix-compressed entries, restart
array, 5-byte block trailer of compression type + masked CRC32C) and the two
protobuf messages are decoded by hand here, so reading the musicnn weights
needs neither ``tensorflow`` nor ``protobuf``. Blocks may be Snappy-compressed
(TensorFlow's table default when it was built with Snappy); a small pure-Python
Snappy decoder handles that case (musicnn's checkpoints happen to be
uncompressed). Every block checksum of the index is verified; tensor checksums
are verified on request (pure-Python CRC32C costs ~0.1 s per MB, so it is off
by default and byte counts are checked instead).

Checked against ``tf.train.load_checkpoint``: all 150 tensors of
MSD_musicnn are bit-identical.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from moodshift.errors import FileFormatError

__all__ = ["CheckpointEntry", "crc32c", "list_variables", "read_checkpoint"]

_TABLE_MAGIC = 0xDB4775248B80FB57
_FOOTER_LEN = 48  # two BlockHandles padded to 40 bytes + 8-byte magic
_BLOCK_TRAILER_LEN = 5
_NO_COMPRESSION = 0
_SNAPPY_COMPRESSION = 1
_CRC_MASK_DELTA = 0xA282EAD8

# tensorflow/core/framework/types.proto -> numpy (little-endian)
_DTYPES: dict[int, np.dtype] = {
    1: np.dtype("<f4"),  # DT_FLOAT
    2: np.dtype("<f8"),  # DT_DOUBLE
    3: np.dtype("<i4"),  # DT_INT32
    4: np.dtype("u1"),  # DT_UINT8
    5: np.dtype("<i2"),  # DT_INT16
    6: np.dtype("i1"),  # DT_INT8
    9: np.dtype("<i8"),  # DT_INT64
    10: np.dtype("?"),  # DT_BOOL
    17: np.dtype("<u2"),  # DT_UINT16
    19: np.dtype("<f2"),  # DT_HALF
    22: np.dtype("<u4"),  # DT_UINT32
    23: np.dtype("<u8"),  # DT_UINT64
}


# --------------------------------------------------------------------------- CRC32C
def _make_crc_table() -> list[int]:
    poly = 0x82F63B78  # Castagnoli, reflected
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _make_crc_table()


def crc32c(data: bytes | bytearray | memoryview) -> int:
    """CRC-32C (Castagnoli) of ``data``, as used by LevelDB and TensorFlow."""
    crc = 0xFFFFFFFF
    table = _CRC_TABLE
    for b in bytes(data):
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _unmask_crc(masked: int) -> int:
    rot = (masked - _CRC_MASK_DELTA) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF


# --------------------------------------------------------------------------- varints
def _varint(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= len(buf):
            raise FileFormatError("truncated varint in TensorFlow checkpoint index")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise FileFormatError("malformed varint in TensorFlow checkpoint index")


def _parse_proto(buf: bytes) -> dict[int, list[int | bytes]]:
    """Decode one protobuf message into ``{field_number: [values]}``.

    Varint and fixed-width fields give ints, length-delimited fields give bytes
    (nested messages are decoded by the caller, which knows the schema).
    """
    fields: dict[int, list[int | bytes]] = {}
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value = struct.unpack_from("<Q", buf, pos)[0]
            pos += 8
        elif wire == 2:
            n, pos = _varint(buf, pos)
            value = bytes(buf[pos : pos + n])
            pos += n
        elif wire == 5:
            value = struct.unpack_from("<I", buf, pos)[0]
            pos += 4
        else:
            raise FileFormatError(f"unsupported protobuf wire type {wire} in checkpoint index")
        if pos > len(buf):
            raise FileFormatError("truncated protobuf message in TensorFlow checkpoint index")
        fields.setdefault(field, []).append(value)
    return fields


def _to_int64(v: int) -> int:
    # protobuf int64 varints carry negative numbers in two's complement
    return v - (1 << 64) if v >= 1 << 63 else v


# --------------------------------------------------------------------------- snappy
def _snappy_decompress(src: bytes) -> bytes:
    """Decode a raw Snappy block (format_description.txt of google/snappy)."""
    n, pos = _varint(src, 0)
    out = bytearray()
    while pos < len(src):
        tag = src[pos]
        pos += 1
        kind = tag & 3
        if kind == 0:  # literal
            length = tag >> 2
            if length >= 60:
                nbytes = length - 59
                length = int.from_bytes(src[pos : pos + nbytes], "little")
                pos += nbytes
            length += 1
            out += src[pos : pos + length]
            pos += length
            continue
        if kind == 1:
            length = ((tag >> 2) & 7) + 4
            offset = ((tag >> 5) << 8) | src[pos]
            pos += 1
        elif kind == 2:
            length = (tag >> 2) + 1
            offset = int.from_bytes(src[pos : pos + 2], "little")
            pos += 2
        else:
            length = (tag >> 2) + 1
            offset = int.from_bytes(src[pos : pos + 4], "little")
            pos += 4
        if offset == 0 or offset > len(out):
            raise FileFormatError("corrupt Snappy block in TensorFlow checkpoint index")
        start = len(out) - offset
        if offset >= length:
            out += out[start : start + length]
        else:  # overlapping copy repeats the last `offset` bytes
            for i in range(length):
                out.append(out[start + i])
    if len(out) != n:
        raise FileFormatError("corrupt Snappy block in TensorFlow checkpoint index")
    return bytes(out)


# --------------------------------------------------------------------------- SSTable
def _read_block(table: bytes, offset: int, size: int, path: Path) -> bytes:
    end = offset + size + _BLOCK_TRAILER_LEN
    if end > len(table):
        raise FileFormatError(f"{path}: block runs past the end of the file; the file is truncated")
    contents = table[offset : offset + size]
    ctype = table[offset + size]
    stored = struct.unpack_from("<I", table, offset + size + 1)[0]
    if crc32c(table[offset : offset + size + 1]) != _unmask_crc(stored):
        raise FileFormatError(f"{path}: block checksum mismatch; the checkpoint is corrupt")
    if ctype == _NO_COMPRESSION:
        return contents
    if ctype == _SNAPPY_COMPRESSION:
        return _snappy_decompress(contents)
    raise FileFormatError(f"{path}: unknown block compression type {ctype}")


def _block_entries(block: bytes, path: Path) -> Iterator[tuple[bytes, bytes]]:
    if len(block) < 4:
        raise FileFormatError(f"{path}: block too short")
    num_restarts = struct.unpack_from("<I", block, len(block) - 4)[0]
    limit = len(block) - 4 - 4 * num_restarts
    if limit < 0:
        raise FileFormatError(f"{path}: malformed block restart array")
    pos = 0
    key = b""
    while pos < limit:
        shared, pos = _varint(block, pos)
        non_shared, pos = _varint(block, pos)
        value_len, pos = _varint(block, pos)
        if shared > len(key) or pos + non_shared + value_len > limit:
            raise FileFormatError(f"{path}: malformed block entry")
        key = key[:shared] + block[pos : pos + non_shared]
        pos += non_shared
        yield key, block[pos : pos + value_len]
        pos += value_len


def _iter_table(path: Path) -> Iterator[tuple[bytes, bytes]]:
    table = path.read_bytes()
    if len(table) < _FOOTER_LEN:
        raise FileFormatError(f"{path}: too short to be a TensorFlow checkpoint index")
    footer = table[-_FOOTER_LEN:]
    if struct.unpack_from("<Q", footer, 40)[0] != _TABLE_MAGIC:
        raise FileFormatError(f"{path}: not a TensorFlow checkpoint index (bad magic number)")
    _meta_off, pos = _varint(footer, 0)
    _meta_size, pos = _varint(footer, pos)
    index_off, pos = _varint(footer, pos)
    index_size, pos = _varint(footer, pos)
    index_block = _read_block(table, index_off, index_size, path)
    for _last_key, handle in _block_entries(index_block, path):
        off, p = _varint(handle, 0)
        size, _ = _varint(handle, p)
        yield from _block_entries(_read_block(table, off, size, path), path)


# --------------------------------------------------------------------------- bundle
class CheckpointEntry:
    """Where one tensor lies in the data files (a decoded ``BundleEntryProto``)."""

    __slots__ = ("crc32c", "dtype", "name", "offset", "shape", "shard_id", "size")

    def __init__(
        self,
        *,
        name: str,
        dtype: np.dtype,
        shape: tuple[int, ...],
        shard_id: int,
        offset: int,
        size: int,
        crc32c: int | None,
    ) -> None:
        self.name = name
        self.dtype = dtype
        self.shape = shape
        self.shard_id = shard_id
        self.offset = offset
        self.size = size
        self.crc32c = crc32c

    def __repr__(self) -> str:
        return f"CheckpointEntry({self.name!r}, {self.dtype}, {self.shape})"


def _parse_entry(name: str, raw: bytes, path: Path) -> CheckpointEntry:
    f = _parse_proto(raw)
    if 7 in f:
        raise FileFormatError(f"{path}: tensor {name!r} is stored in slices, which is unsupported")
    dtype_code = int(f.get(1, [0])[0])
    if dtype_code not in _DTYPES:
        raise FileFormatError(f"{path}: tensor {name!r} has unsupported dtype code {dtype_code}")
    shape: list[int] = []
    for shape_msg in f.get(2, []):
        for dim_msg in _parse_proto(bytes(shape_msg)).get(2, []):
            dim = _parse_proto(bytes(dim_msg))
            shape.append(_to_int64(int(dim.get(1, [0])[0])))
    crc = f.get(6)
    return CheckpointEntry(
        name=name,
        dtype=_DTYPES[dtype_code],
        shape=tuple(shape),
        shard_id=int(f.get(3, [0])[0]),
        offset=int(f.get(4, [0])[0]),
        size=int(f.get(5, [0])[0]),
        crc32c=int(crc[0]) if crc else None,
    )


def _prefix(prefix: str | Path) -> str:
    # musicnn's checkpoints were saved with a directory as prefix, so their files
    # are called ".index" and ".data-..." inside that directory.
    p = str(prefix)
    if Path(p).is_dir() and not p.endswith("/"):
        p += "/"
    return p


def _read_index(prefix: str) -> tuple[int, dict[str, CheckpointEntry]]:
    path = Path(prefix + ".index")
    if not path.is_file():
        raise FileFormatError(
            f"TensorFlow checkpoint index {path} does not exist; pass the checkpoint prefix "
            "(the path without '.index')"
        )
    num_shards = 1
    entries: dict[str, CheckpointEntry] = {}
    for key, value in _iter_table(path):
        if key == b"":
            header = _parse_proto(value)
            num_shards = int(header.get(1, [1])[0])
            if int(header.get(2, [0])[0]) != 0:
                raise FileFormatError(f"{path}: big-endian checkpoints are not supported")
            continue
        name = key.decode("utf-8")
        entries[name] = _parse_entry(name, value, path)
    return num_shards, entries


def list_variables(prefix: str | Path) -> dict[str, CheckpointEntry]:
    """List the tensors of a checkpoint without reading their data.

    Parameters
    ----------
    prefix : str or Path
        Checkpoint prefix (``model.ckpt`` for ``model.ckpt.index``), or a
        directory when the checkpoint was saved with a directory as prefix.

    Returns
    -------
    dict of str to CheckpointEntry
        Variable name -> dtype, shape and location, in the index's (sorted) order.
    """
    return _read_index(_prefix(prefix))[1]


def read_checkpoint(
    prefix: str | Path,
    *,
    names: Iterable[str] | None = None,
    verify_checksums: bool = False,
) -> dict[str, np.ndarray]:
    """Read tensors from a TensorFlow checkpoint into numpy arrays.

    Parameters
    ----------
    prefix : str or Path
        Checkpoint prefix, as for :func:`list_variables`.
    names : iterable of str, optional
        Variables to read; all of them when omitted. Unknown names raise
        :class:`~moodshift.errors.FileFormatError`.
    verify_checksums : bool, default False
        Also check each tensor's CRC32C (pure Python: ~0.1 s per MB).

    Returns
    -------
    dict of str to ndarray
        Variable name -> array of the stored dtype and shape (a writable copy).
    """
    p = _prefix(prefix)
    num_shards, entries = _read_index(p)
    wanted = list(entries) if names is None else list(names)
    missing = [n for n in wanted if n not in entries]
    if missing:
        raise FileFormatError(
            f"checkpoint {p} lacks variables {missing[:5]}; it holds e.g. {list(entries)[:5]}"
        )
    out: dict[str, np.ndarray] = {}
    by_shard: dict[int, list[CheckpointEntry]] = {}
    for n in wanted:
        by_shard.setdefault(entries[n].shard_id, []).append(entries[n])
    for shard, shard_entries in by_shard.items():
        data_path = Path(f"{p}.data-{shard:05d}-of-{num_shards:05d}")
        if not data_path.is_file():
            raise FileFormatError(f"checkpoint data file {data_path} is missing")
        with open(data_path, "rb") as fh:
            for e in sorted(shard_entries, key=lambda e: e.offset):
                count = int(np.prod(e.shape, dtype=np.int64))
                if count * e.dtype.itemsize != e.size:
                    raise FileFormatError(
                        f"{data_path}: tensor {e.name!r} has {e.size} bytes, "
                        f"expected {count * e.dtype.itemsize} for shape {e.shape}"
                    )
                fh.seek(e.offset)
                raw = fh.read(e.size)
                if len(raw) != e.size:
                    raise FileFormatError(f"{data_path} is truncated (tensor {e.name!r})")
                if (
                    verify_checksums
                    and e.crc32c is not None
                    and crc32c(raw) != _unmask_crc(e.crc32c)
                ):
                    raise FileFormatError(f"{data_path}: checksum mismatch for {e.name!r}")
                out[e.name] = np.frombuffer(raw, dtype=e.dtype).reshape(e.shape).copy()
    return {n: out[n] for n in wanted}
