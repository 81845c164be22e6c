"""One place for the optional pieces every stage asks for: FAISS and the torch device."""

from __future__ import annotations

from typing import Any

from moodshift.errors import DependencyError, InputError


def require_faiss() -> Any:
    """The ``faiss`` module.

    Raises
    ------
    DependencyError
        When faiss is not importable (it is a core dependency, so only a broken install).
    """
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - faiss-cpu is a core dependency
        raise DependencyError(
            "faiss is not installed; `pip install faiss-cpu` (it is in moodshift's "
            "dependencies), or use exact search/mining."
        ) from exc
    return faiss


def torch_device(name: str | None = "auto") -> Any:
    """The torch device for ``name``: ``"auto"``/None picks CUDA when available, else CPU.

    Raises
    ------
    InputError
        CUDA requested but not available, or an unknown device name.
    """
    import torch  # torch is heavy: load on use

    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise InputError(f"unknown device {name!r}; use auto, cpu or cuda") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {name} requested but CUDA is not available; use --device cpu.")
    return dev
