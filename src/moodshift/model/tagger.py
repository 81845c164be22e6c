"""The mood tagger saved in every model: a calibrated linear probe p(mood | track).

A multinomial logistic regression on unit-norm embeddings, fitted on the
labelled tracks of the training split, then calibrated on the validation split
by temperature scaling (one scalar ``T`` dividing the logits, chosen to minimise
the validation negative log-likelihood: Guo et al., "On Calibration of Modern
Neural Networks", ICML 2017). It is the evidence used for tracks without a mood
label, and the source mood of an unlabelled seed (docs/method.md, "Mood evidence").

Saved in the model folder as ``tagger.safetensors`` (``weight`` (m, d), ``bias``
(m,)) and ``tagger.json`` (temperature, classes, validation accuracy and
calibration error before and after scaling).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file

from moodshift.errors import DataError, FileFormatError
from moodshift.values import l2_normalize

#: Bins of the expected calibration error.
ECE_BINS = 15
#: Inverse L2 strengths tried on the validation split.
C_GRID = (0.3, 1.0, 3.0, 10.0, 30.0)


def expected_calibration_error(proba: np.ndarray, y: np.ndarray, *, bins: int = ECE_BINS) -> float:
    """Expected calibration error of the top-1 prediction (Naeini et al., AAAI 2015).

    Parameters
    ----------
    proba : np.ndarray, shape (n, m)
    y : np.ndarray, shape (n,), int
        True class indices.
    bins : int
        Equal-width confidence bins.

    Returns
    -------
    float
        ``sum_b |B_b| / n * |acc(B_b) - conf(B_b)|``, in [0, 1].
    """
    conf = proba.max(axis=1)
    correct = (proba.argmax(axis=1) == y).astype(np.float64)
    which = np.minimum((conf * bins).astype(np.int64), bins - 1)
    ece = 0.0
    for b in range(bins):
        sel = which == b
        if sel.any():
            ece += sel.mean() * abs(correct[sel].mean() - conf[sel].mean())
    return float(ece)


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


@dataclass
class MoodTagger:
    """A calibrated linear mood classifier.

    Parameters
    ----------
    weight : np.ndarray, shape (m, d), float32
    bias : np.ndarray, shape (m,), float32
    classes : list of str, length m
    temperature : float
        Logits are divided by it before the softmax (> 1 softens overconfident output).
    report : dict
        Validation figures: ``val_accuracy``, ``val_ece``, ``val_ece_raw``, ``val_nll``, ``C``.
    """

    weight: np.ndarray
    bias: np.ndarray
    classes: list[str]
    temperature: float = 1.0
    report: dict[str, Any] = field(default_factory=dict)

    def logits(self, embeddings: np.ndarray) -> np.ndarray:
        """Calibrated logits, shape (n, m), of embeddings of shape (n, d) (normalised here)."""
        x = l2_normalize(np.atleast_2d(embeddings))
        return (x @ self.weight.T + self.bias) / np.float32(self.temperature)

    def predict_proba(self, embeddings: np.ndarray, *, block: int = 65536) -> np.ndarray:
        """p(mood | track), shape (n, m), float32; rows sum to 1.

        Parameters
        ----------
        embeddings : np.ndarray, shape (n, d)
        block : int
            Rows per matrix product, so memory stays bounded on large catalogues.
        """
        x = np.atleast_2d(embeddings)
        out = np.empty((x.shape[0], len(self.classes)), dtype=np.float32)
        for s in range(0, x.shape[0], block):
            out[s : s + block] = _softmax(self.logits(x[s : s + block]).astype(np.float32))
        return out

    # ------------------------------------------------------------------ fitting
    @classmethod
    def fit(
        cls,
        *,
        train_x: np.ndarray,
        train_y: np.ndarray,
        classes: list[str],
        val_x: np.ndarray | None = None,
        val_y: np.ndarray | None = None,
        seed: int = 0,
    ) -> MoodTagger:
        """Fit on labelled training rows; choose ``C`` and the temperature on validation.

        Parameters
        ----------
        train_x : np.ndarray, shape (n, d)
        train_y : np.ndarray, shape (n,), int in [0, m)
            Labelled rows only (the caller drops unlabelled ``-1`` rows).
        classes : list of str
        val_x, val_y : optional
            Labelled validation rows; without them ``C = 1`` and ``T = 1``.
        seed : int
        """
        from sklearn.linear_model import LogisticRegression  # sklearn is heavy: load on use

        m = len(classes)
        xtr = l2_normalize(train_x)
        have_val = val_x is not None and val_y is not None and len(val_y) >= m
        best: tuple[float, Any, float] | None = None
        for c in C_GRID if have_val else (1.0,):
            clf = LogisticRegression(C=c, max_iter=2000, random_state=seed)
            clf.fit(xtr, train_y)
            if not have_val:
                best = (0.0, clf, c)
                break
            logits = _full_logits(clf, l2_normalize(val_x), m)
            nll = _nll(logits, val_y, 1.0)
            if best is None or nll < best[0]:
                best = (nll, clf, c)
        assert best is not None
        _, clf, c = best
        w = np.zeros((m, xtr.shape[1]), dtype=np.float32)
        b = np.full(m, -30.0, dtype=np.float32)  # a class absent from training: never predicted
        present = clf.classes_.astype(np.int64)
        if present.size == 2 and clf.coef_.shape[0] == 1:
            # sklearn's binary form: one logit for class 1; spread it as +-z/2.
            w[present[1]], w[present[0]] = clf.coef_[0] / 2, -clf.coef_[0] / 2
            b[present[1]], b[present[0]] = clf.intercept_[0] / 2, -clf.intercept_[0] / 2
        else:
            w[present] = clf.coef_
            b[present] = clf.intercept_
        tagger = cls(weight=w, bias=b, classes=list(classes), report={"C": c})
        if have_val:
            assert val_x is not None and val_y is not None
            raw = (l2_normalize(val_x) @ w.T + b).astype(np.float64)
            temps = np.exp(np.linspace(np.log(0.05), np.log(20.0), 121))
            nlls = [_nll(raw, val_y, t) for t in temps]
            tagger.temperature = float(temps[int(np.argmin(nlls))])
            p_raw = _softmax(raw.copy())
            p_cal = _softmax(raw / tagger.temperature)
            tagger.report.update(
                val_accuracy=float((p_cal.argmax(axis=1) == val_y).mean()),
                val_ece_raw=expected_calibration_error(p_raw, val_y),
                val_ece=expected_calibration_error(p_cal, val_y),
                val_nll=float(min(nlls)),
                n_val=len(val_y),
            )
        tagger.report.update(temperature=tagger.temperature, n_train=len(train_y))
        return tagger

    def fingerprint(self) -> str:
        """A hash of the weights and temperature (stored probabilities must match it)."""

        h = hashlib.sha256()
        h.update(np.ascontiguousarray(self.weight, dtype=np.float32).tobytes())
        h.update(np.ascontiguousarray(self.bias, dtype=np.float32).tobytes())
        h.update(repr(float(self.temperature)).encode())
        return h.hexdigest()[:16]

    # ------------------------------------------------------------------ persistence
    def write_into(self, folder: Path) -> None:
        """Write ``tagger.safetensors`` and ``tagger.json`` into a model folder."""

        save_file(
            {"weight": np.ascontiguousarray(self.weight), "bias": np.ascontiguousarray(self.bias)},
            str(folder / "tagger.safetensors"),
        )
        meta = {"classes": self.classes, "temperature": self.temperature, **self.report}
        (folder / "tagger.json").write_text(json.dumps(meta, indent=2))

    @classmethod
    def read_from(cls, folder: Path, *, dim: int, classes: list[str]) -> MoodTagger | None:
        """The tagger of a model folder, or None when the folder predates taggers.

        Raises
        ------
        FileFormatError
            If the files exist but are damaged or disagree with the model.
        """
        weights, meta_path = folder / "tagger.safetensors", folder / "tagger.json"
        if not weights.is_file() and not meta_path.is_file():
            return None

        try:
            arrays = load_file(str(weights))
            meta = json.loads(meta_path.read_text())
            w = np.asarray(arrays["weight"], dtype=np.float32)
            b = np.asarray(arrays["bias"], dtype=np.float32)
            temperature = float(meta["temperature"])
        except Exception as exc:  # safetensors and json raise their own types
            raise FileFormatError(
                f"{folder}/tagger.* is damaged ({type(exc).__name__}: {exc}); retrain the model "
                f"with `moodshift train`."
            ) from exc
        if w.shape != (len(classes), dim) or b.shape != (len(classes),) or not temperature > 0:
            raise FileFormatError(
                f"{folder}/tagger.safetensors has shape {w.shape} but the model has "
                f"{len(classes)} classes of dimension {dim}; retrain the model with "
                f"`moodshift train`."
            )
        report = {k: v for k, v in meta.items() if k not in ("classes", "temperature")}
        return cls(weight=w, bias=b, classes=list(classes), temperature=temperature, report=report)


def _full_logits(clf: Any, x: np.ndarray, m: int) -> np.ndarray:
    out = np.full((x.shape[0], m), -30.0)
    present = clf.classes_.astype(np.int64)
    dec = clf.decision_function(x)
    if dec.ndim == 1:
        out[:, present[1]], out[:, present[0]] = dec / 2, -dec / 2
    else:
        out[:, present] = dec
    return out


def _nll(logits: np.ndarray, y: np.ndarray, temperature: float) -> float:
    z = logits / temperature
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-logp[np.arange(len(y)), y].mean())


def fit_tagger(catalog: Any, *, attribute: str, classes: list[str], seed: int = 0) -> MoodTagger:
    """Fit a :class:`MoodTagger` on a catalogue's labelled training tracks.

    Calibrated on the labelled validation tracks when the catalogue has any.

    Parameters
    ----------
    catalog : Catalog
        With a stored split.
    attribute : str
    classes : list of str
        The vocabulary (e.g. the model's); labels outside it are ignored.
    seed : int

    Returns
    -------
    MoodTagger
    """
    lookup = {c: i for i, c in enumerate(classes)}

    def labelled(part: str) -> tuple[np.ndarray, np.ndarray]:
        rows = catalog.split_indices(part)
        sub = catalog.subset(rows)
        try:
            vocab, y = sub.classes(attribute, min_count=0)
        except DataError:  # no labelled track in this part
            return sub.embeddings[:0], np.zeros(0, dtype=np.int64)
        y = np.array([lookup.get(vocab[v], -1) if v >= 0 else -1 for v in y], dtype=np.int64)
        keep = y >= 0
        return sub.embeddings[keep], y[keep]

    tx, ty = labelled("train")
    vx, vy = labelled("val")
    return MoodTagger.fit(
        train_x=tx, train_y=ty, classes=list(classes),
        val_x=vx if vy.size else None, val_y=vy if vy.size else None, seed=seed,
    )  # fmt: skip
