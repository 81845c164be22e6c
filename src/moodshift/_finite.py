"""Refusing NaN and infinity in loaded arrays, cheaply even for memory-mapped ones.

A single non-finite weight or embedding turns every score it touches into NaN:
queries then answer nothing (or invalid JSON) instead of failing. Every loaded
array is therefore checked once, at load, and refused with one line naming the
file and the fix.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import numpy as np

from moodshift.errors import FileFormatError, one_line

#: Rows checked per step: a memory-mapped catalogue is read in chunks of about this many
#: values, so the check never holds a second copy of the array in memory.
CHUNK_VALUES = 1 << 22


def first_non_finite(array: Any) -> int | None:
    """Flat position of the first NaN or infinity in ``array``, or None when all are finite.

    Parameters
    ----------
    array : array_like, shape (n, ...)
        A numpy array (memory-mapped ones included) or a torch tensor. Integer and
        boolean arrays are always finite.

    Returns
    -------
    int or None
    """
    if hasattr(array, "detach"):  # a torch tensor: its values, without a copy
        array = array.detach().cpu().numpy()
    arr = np.asarray(array)
    if arr.dtype.kind not in "fc" or arr.size == 0:
        return None
    flat = arr.reshape(arr.shape[0], -1) if arr.ndim > 1 else arr.reshape(-1, 1)
    step = max(1, CHUNK_VALUES // max(1, flat.shape[1]))
    for start in range(0, flat.shape[0], step):
        block = flat[start : start + step]
        ok = np.isfinite(block)
        if not ok.all():
            return start * flat.shape[1] + int(np.argmin(ok.reshape(-1)))
    return None


def require_finite(array: Any, *, path: str | os.PathLike[str], fix: str, what: str = "") -> None:
    """Refuse an array holding NaN or infinity with one line naming the file and the fix.

    Parameters
    ----------
    array : array_like
        See :func:`first_non_finite`.
    path : str or PathLike
        The file the array was read from (named in the message).
    fix : str
        What the user should do, e.g. ``"rebuild the index with `moodshift index`"``.
    what : str
        Which array of the file (e.g. a tensor's name), when it holds several.

    Raises
    ------
    FileFormatError
        The array holds a NaN or an infinity.
    """
    pos = first_non_finite(array)
    if pos is not None:
        name = f" ({what})" if what else ""
        raise FileFormatError(
            f"{path}{name} holds NaN or infinity (first at value {pos}): the file is damaged; "
            f"{fix}."
        )


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a finite number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999 parses as infinity
        raise ValueError(f"{text} is not a finite number")
    return value


def loads_json(text: str | bytes) -> Any:
    """``json.loads`` that refuses ``NaN``, ``Infinity`` and numbers beyond float range.

    Python's ``json`` accepts those (standard JSON does not): in a model's
    ``config.json`` a ``NaN`` weight would be served as NaN scores.

    Raises
    ------
    ValueError
        Not JSON, or a non-finite number (callers report it as invalid JSON).
    """
    return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)


def read_json_file(path: str | os.PathLike[str], *, schema: Any, fix: str) -> Any:
    """Parse a JSON file with :func:`loads_json` and check it with ``schema``.

    Parameters
    ----------
    path : path of the file
    schema : callable
        Returns a one-line problem for data that breaks it, None when it holds.
    fix : str
        What the user should do, appended to every message.

    Raises
    ------
    FileFormatError
        One line naming the file, the problem and the fix.
    """
    try:
        with open(path, encoding="utf-8") as fh:
            data = loads_json(fh.read())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise FileFormatError(f"{path} is not valid JSON ({one_line(exc)}); {fix}.") from None
    problem = schema(data)
    if problem:
        raise FileFormatError(f"{path}: {problem}; {fix}.")
    return data
