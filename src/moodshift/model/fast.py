"""What the saved model derives for serving: its numpy transform and evidence settings.

* :class:`NumpyTransform`: the model's eval-mode transform in numpy, batched, for
  every architecture option (plain, residual, seed-dependent head, centroid shift
  with any shift scale), checked against :meth:`MoodshiftModel.transform` when it is
  built;
* :class:`EvidenceSettings`: how evidence-aware queries rank, as chosen on the
  validation split and stored in ``config.json`` (``evidence``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from moodshift.model.network import Architecture, MoodshiftModel, branch_layers, slerp
from moodshift.values import l2_normalize

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvidenceSettings:
    """How evidence-aware queries rank, as chosen on validation.

    Parameters
    ----------
    strength_label : float in [0, 1]
        Strength of the query that scores labelled tracks.
    strength_probe : float in [0, 1]
        Strength of the query that scores tracks judged by the tagger.
    weight : float >= 0
        ``w`` in ``cos(q_probe, x) + w log p(t | x)``.
    """

    strength_label: float
    strength_probe: float
    weight: float

    @classmethod
    def of(cls, model: MoodshiftModel) -> EvidenceSettings:
        """The model's stored settings; a model that predates them gets its default strength."""
        ev = model.config.get("evidence") or {}
        s = model.default_strength
        return cls(
            strength_label=float(ev.get("strength_label", s)),
            strength_probe=float(ev.get("strength_probe", s)),
            weight=float(ev.get("weight", 0.0)),
        )

    def to_dict(self) -> dict[str, float]:
        return {
            "strength_label": self.strength_label,
            "strength_probe": self.strength_probe,
            "weight": self.weight,
        }


class NumpyTransform:
    """The model's eval-mode transform in numpy, batched.

    ``MoodshiftModel.transform`` goes through torch's module machinery, which
    costs about 0.5 ms per call for a single vector, more than an index search.
    Here the network is read from its :class:`Architecture` and state dict through
    :func:`branch_layers`, the mapping the torch network is built from: ``linear``
    layers become matrix products, ``relu`` a clip and ``dropout`` nothing (the
    identity in eval mode). The mood branch, whose input is one of m x m one-hot
    differences, is precomputed per (source, target) pair.

    Parameters
    ----------
    arch : Architecture
    state : dict of str to array-like
        The network's state dict (``MoodTransformer.state_dict()``, tensors or arrays).

    Raises
    ------
    KeyError
        A layer's weights are missing from ``state``.
    ValueError
        ``state`` holds entries no layer reads (another architecture's weights).
    """

    def __init__(self, *, arch: Architecture, state: Mapping[str, Any]) -> None:
        arrays = {k: _as_array(v) for k, v in state.items()}
        read: set[str] = set()

        def ops(name: str) -> list[tuple[np.ndarray, np.ndarray] | str]:
            out: list[tuple[np.ndarray, np.ndarray] | str] = []
            for i, layer in enumerate(plan[name]):
                if layer[0] == "linear":
                    keys = (f"{name}.{i}.weight", f"{name}.{i}.bias")
                    read.update(keys)
                    out.append((np.ascontiguousarray(arrays[keys[0]].T), arrays[keys[1]]))
                elif layer[0] == "relu":
                    out.append("relu")
                elif layer[0] != "dropout":  # dropout is the identity in eval mode
                    raise TypeError(f"unsupported layer {layer[0]!r}")
            return out

        plan = branch_layers(arch)
        self.embedding_ops = ops("embedding_branch")
        self.head_ops = ops("head")
        self.residual = bool(arch.residual)
        self.centroids: np.ndarray | None = None
        self.shift_scale = np.float32(arch.shift_scale)
        if arch.centroid_shift:
            self.centroids = arrays["centroids"]
            read.add("centroids")
        m = arch.n_classes
        eye = np.eye(m, dtype=np.float32)
        src, tgt = np.meshgrid(np.arange(m), np.arange(m), indexing="ij")
        cond = eye[tgt.reshape(-1)] - eye[src.reshape(-1)]
        cls = self._run(ops("class_branch"), cond)
        self.class_out = cls.reshape(m, m, -1)  # [source, target] -> branch output
        self.n_classes = m
        unread = sorted(set(arrays) - read)
        if unread:
            raise ValueError(f"state entries no layer of the architecture reads: {unread[:3]}")

    @classmethod
    def of(cls, model: MoodshiftModel) -> NumpyTransform:
        """The numpy transform of a model (unverified; :meth:`build` checks it)."""
        return cls(arch=model.net.arch, state=model.net.state_dict())

    @staticmethod
    def _run(ops: list[Any], h: np.ndarray) -> np.ndarray:
        for op in ops:
            if isinstance(op, str):
                np.maximum(h, 0.0, out=h)
            else:
                h = h @ op[0]
                h += op[1]
        return h

    def raw(self, x: np.ndarray, *, source: np.ndarray, target: np.ndarray) -> np.ndarray:
        """The network's output (not normalised), shape (q, d), for unit rows ``x`` (q, d)."""
        h = self._run(self.embedding_ops, x)
        out = self._run(self.head_ops, np.concatenate([h, self.class_out[source, target]], axis=1))
        if self.centroids is not None:
            out += x + self.shift_scale * (self.centroids[target] - self.centroids[source])
        elif self.residual:
            out += x
        return out

    def __call__(
        self,
        x: np.ndarray,
        *,
        source: np.ndarray | int,
        target: np.ndarray | int,
        strength: float | np.ndarray,
    ) -> np.ndarray:
        """Unit query vectors, shape (q, d) (or (d,) for a single vector).

        Parameters
        ----------
        x : np.ndarray, shape (q, d) or (d,), unit-norm
        source, target : int or np.ndarray of shape (q,)
            Class indices.
        strength : float or np.ndarray of shape (q,), in [0, 1]
            Fraction of the angle from the seed to the network's output (slerp).
        """
        x = np.asarray(x, dtype=np.float32)
        single = x.ndim == 1
        x2 = np.atleast_2d(x)
        q = x2.shape[0]
        src = np.broadcast_to(np.asarray(source, dtype=np.int64), (q,))
        tgt = np.broadcast_to(np.asarray(target, dtype=np.int64), (q,))
        out = slerp(x2, self.raw(x2, source=src, target=tgt), strength)
        return out[0] if single else out

    @classmethod
    def build(cls, model: MoodshiftModel, *, check: int = 16, seed: int = 0) -> Callable[..., Any]:
        """A verified numpy transform, or one that calls ``model.transform`` as a fallback.

        The check compares against the torch model on random unit vectors, so a
        change to the network cannot silently change the answers.
        """
        try:
            fast = cls.of(model)
            rng = np.random.default_rng(seed)
            m = len(model.classes)
            x = l2_normalize(rng.standard_normal((check, model.dim)).astype(np.float32))
            src = np.arange(check) % m
            tgt = (np.arange(check) * 7 + 1) % m
            st = np.array([(0.0, 0.3, 1.0)[i % 3] for i in range(check)], dtype=np.float32)
            ref = model.transform(x, source=src, target=tgt, strength=st)
            got = fast(x, source=src, target=tgt, strength=st)
            if not np.allclose(got, ref, atol=2e-5):
                raise ValueError(f"max difference {np.abs(got - ref).max():.2e}")
        except (TypeError, ValueError, KeyError) as exc:
            log.warning("numpy transform unavailable (%s); using model.transform", exc)

            def slow(x: np.ndarray, *, source: Any, target: Any, strength: Any) -> np.ndarray:
                return model.transform(x, source=source, target=target, strength=strength)

            return slow
        return fast


def _as_array(value: Any) -> np.ndarray:
    """A float32 numpy copy of a state-dict entry (a torch tensor or an array)."""
    if hasattr(value, "detach"):  # a torch tensor; fast.py itself never imports torch
        value = value.detach().cpu().numpy()
    return np.array(value, dtype=np.float32)
