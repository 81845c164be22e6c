"""The query engine (placeholder while the layout moves; see below)."""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from moodshift.data.catalog import l2_normalize
from moodshift.training.model import MoodshiftModel

log = logging.getLogger(__name__)


class FastTransform:
    """The model's eval-mode transform of one vector, in numpy, for the request path.

    ``MoodshiftModel.transform`` goes through torch's module machinery, which
    costs about 0.5 ms per call for a single vector, more than the index search.
    Here the network's ``Linear``/``ReLU``/``Dropout`` layers become numpy
    matrix-vector products, and the mood branch (whose input is one of m x m
    one-hot differences) is precomputed for every (source, target) pair.
    :meth:`build` checks the result against ``model.transform`` on random
    vectors and falls back to it (with a log line) when they disagree or the
    network has layers this class does not know, so a change to the model
    cannot silently change the answers.
    """

    def __init__(self, model: MoodshiftModel) -> None:
        import torch
        from torch import nn

        net = model.net
        m = len(model.classes)

        def layers(seq: Any) -> list[tuple[np.ndarray, np.ndarray] | str]:
            ops: list[tuple[np.ndarray, np.ndarray] | str] = []
            for mod in seq:
                if isinstance(mod, nn.Linear):
                    w = mod.weight.detach().cpu().numpy().astype(np.float32)
                    b = mod.bias.detach().cpu().numpy().astype(np.float32)
                    ops.append((np.ascontiguousarray(w.T), b))
                elif isinstance(mod, nn.ReLU):
                    ops.append("relu")
                elif isinstance(mod, nn.Dropout):
                    continue  # identity in eval mode
                else:
                    raise TypeError(f"unsupported layer {type(mod).__name__}")
            return ops

        self.embedding_ops = layers(net.embedding_branch)
        self.head_ops = layers(net.head)
        self.residual = bool(net.arch.residual)
        eye = torch.eye(m)
        src, tgt = torch.meshgrid(torch.arange(m), torch.arange(m), indexing="ij")
        cond = eye[tgt.reshape(-1)] - eye[src.reshape(-1)]
        with torch.inference_mode():
            cls = net.class_branch.eval()(cond).numpy().astype(np.float32)
        self.class_out = cls.reshape(m, m, -1)  # [source, target] -> branch output

    @classmethod
    def build(cls, model: MoodshiftModel, *, check: int = 16, seed: int = 0) -> Any:
        """A verified fast transform, or ``model.transform`` itself as the fallback."""
        try:
            fast = cls(model)
            rng = np.random.default_rng(seed)
            m = len(model.classes)
            for i in range(check):
                x = l2_normalize(rng.standard_normal((1, model.dim)).astype(np.float32))[0]
                s, t, st = i % m, (i * 7 + 1) % m, (0.0, 0.3, 1.0)[i % 3]
                ref = model.transform(x, source=s, target=t, strength=st)
                got = fast(x, source=s, target=t, strength=st)
                if not np.allclose(got, ref, atol=2e-5):
                    raise ValueError(f"max difference {np.abs(got - ref).max():.2e}")
        except (TypeError, ValueError, AttributeError) as exc:
            log.warning("fast transform unavailable (%s); using model.transform", exc)
            return model.transform
        return fast

    @staticmethod
    def _run(ops: list[Any], h: np.ndarray) -> np.ndarray:
        for op in ops:
            if op == "relu":
                np.maximum(h, 0.0, out=h)
            else:
                h = h @ op[0]
                h += op[1]
        return h

    def __call__(self, x: np.ndarray, *, source: int, target: int, strength: float) -> np.ndarray:
        """Transform one unit vector (shape (d,)); returns a unit vector (d,)."""
        h = self._run(self.embedding_ops, x)
        out = self._run(self.head_ops, np.concatenate([h, self.class_out[source, target]]))
        if self.residual:
            out = out + x
        # slerp(x, out, strength) for one vector (same formula as moodshift.training.model.slerp).
        b = out / max(float(np.linalg.norm(out)), 1e-12)
        dot = min(1.0, max(-1.0, float(x @ b)))
        omega = math.acos(dot)
        so = math.sin(omega)
        t = float(strength)
        if so < 1e-6:
            v = (1.0 - t) * x + t * b
        else:
            v = (math.sin((1.0 - t) * omega) / so) * x + (math.sin(t * omega) / so) * b
        return (v / max(float(np.linalg.norm(v)), 1e-12)).astype(np.float32)
