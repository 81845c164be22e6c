"""The mood-transformation network and its saved form.

A saved model is a folder, loadable in one call with :meth:`MoodshiftModel.load`::

    my_model/
      config.json          TrainConfig + architecture
      model.safetensors    weights
      vocab.json           {"attribute": "mood", "classes": [...]}
      embedder.json        name, version, dim of the embedder the catalogue used
      training_log.json    per-epoch validation figures
      selection.json       (optional) how the configuration was chosen (``moodshift tune``)
      ranking.safetensors  (optional) the space queries rank in, chosen on validation
                           (``config.json`` -> ``ranking_space`` describes it; absent: plain cosine)
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from moodshift import __version__
from moodshift._atomic import atomic_dir, resolve_dir
from moodshift._finite import read_json_file, require_finite
from moodshift.errors import (
    DimensionMismatchError,
    FileFormatError,
    InputError,
    UnknownLabelError,
    one_line,
)
from moodshift.model.evidence import EvidenceFusion
from moodshift.model.ranking import RankingSpace
from moodshift.model.tagger import MoodTagger
from moodshift.values import parse_values


@dataclass(frozen=True)
class Architecture:
    """Layer sizes of :class:`MoodTransformer` (defaults: the paper's, docs/method.md).

    ``dim`` and ``n_classes`` come from the data: 0 means "not set yet" (the architecture
    a :class:`~moodshift.training.train.TrainConfig` holds before it sees a catalogue);
    :meth:`sized` sets them.
    """

    dim: int = 0
    n_classes: int = 0
    hidden: tuple[int, int] = (1024, 512)
    class_hidden: tuple[int, int] = (64, 128)
    dropout: float = 0.3
    class_dropout: float = 0.4
    residual: bool = False
    head_hidden: int = 0
    centroid_shift: bool = False
    shift_scale: float = 1.0

    def __post_init__(self) -> None:
        # JSON gives lists; the frozen dataclass compares and hashes tuples.
        object.__setattr__(self, "hidden", tuple(self.hidden))
        object.__setattr__(self, "class_hidden", tuple(self.class_hidden))

    def sized(self, *, dim: int, n_classes: int) -> Architecture:
        """This architecture for ``dim``-d embeddings and ``n_classes`` classes."""
        return dataclasses.replace(self, dim=dim, n_classes=n_classes)

    def to_dict(self) -> dict[str, Any]:
        """The ``architecture`` object of ``config.json`` (JSON types: lists, not tuples)."""
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self).items()}  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, base: Architecture | None = None) -> Architecture:
        """The architecture of a ``config.json`` object; names it does not set keep ``base``'s
        values (default: the paper's). Unknown names are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        return dataclasses.replace(base or cls(), **{k: v for k, v in data.items() if k in names})


#: One layer of a branch: ``("linear", n_in, n_out)``, ``("relu",)`` or ``("dropout", p)``.
Layer = tuple[Any, ...]


def branch_layers(arch: Architecture) -> dict[str, tuple[Layer, ...]]:
    """The network's layers, branch by branch, in state-dict order.

    The one description of the network's layers: :class:`MoodTransformer` builds its
    ``nn.Sequential`` branches from it (layer ``i`` of branch ``name`` holds the
    state-dict entries ``name.i.weight`` and ``name.i.bias``) and
    :class:`moodshift.model.fast.NumpyTransform` reads the state dict through it.

    Parameters
    ----------
    arch : Architecture

    Returns
    -------
    dict
        ``embedding_branch`` (d -> hidden), ``class_branch`` (m -> class_hidden) and
        ``head`` (their concatenation -> d), each a tuple of :data:`Layer`.
    """
    h1, h2 = arch.hidden
    c1, c2 = arch.class_hidden

    def block(n_in: int, n_out: int, p: float) -> tuple[Layer, ...]:
        return (("linear", n_in, n_out), ("relu",), ("dropout", p))

    p = arch.dropout
    if arch.head_hidden > 0:
        head: tuple[Layer, ...] = (("dropout", p), *block(h2 + c2, arch.head_hidden, p),
                                   ("linear", arch.head_hidden, arch.dim))  # fmt: skip
    else:
        head = (("dropout", p), ("linear", h2 + c2, arch.dim))
    return {
        "embedding_branch": block(arch.dim, h1, p) + block(h1, h2, p),
        "class_branch": block(arch.n_classes, c1, arch.class_dropout)
        + block(c1, c2, arch.class_dropout),
        "head": head,
    }


def _module(layer: Layer) -> nn.Module:
    kind = layer[0]
    if kind == "linear":
        return nn.Linear(layer[1], layer[2])
    if kind == "relu":
        return nn.ReLU()
    if kind == "dropout":
        return Dropout(layer[1])
    raise ValueError(f"unknown layer kind {kind!r}")


class Dropout(nn.Dropout):
    """:class:`torch.nn.Dropout` with a mask drawn from 16 random bits per element.

    On CPU, torch draws dropout's Bernoulli mask one element at a time: at batch 256 it
    was 14 % of a training step of the default network (5.5 ms of a 99 ms step for one
    256 x 1024 layer, forward and backward, on one AVX2 core). Here the mask comes from
    ``int64.random_`` words cut into four 16-bit lanes (0.5 ms): an element is kept when
    its lane is at least ``p`` of the way up the 16-bit range, so the drop probability
    is ``p`` to within 2^-17. The kept elements are scaled by ``1 / (1 - p)`` as in
    torch. Other devices use torch's own kernel. It holds no state, so saved models
    load as before, and the global seed still makes runs repeatable.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = float(self.p)
        if not self.training or p == 0.0 or x.device.type != "cpu" or p >= 1.0:
            return super().forward(x)
        n = x.numel()
        # The full signed range: random_() with no bounds leaves every fourth lane's
        # sign bit at zero (values stop at 2^63), which would bias one lane in four.
        words = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(2**63), 2**63 - 1)
        lanes = words.view(torch.int16)[:n].view(x.shape)
        keep = lanes >= (round(p * 65536) - 32768)
        return x * (keep * (1.0 / (1.0 - p))).to(x.dtype)


class MoodTransformer(nn.Module):
    """Embedding branch d->1024->512 and mood branch m->64->128, concatenated, then -> d.

    The mood condition is the difference of one-hot vectors y_t - y_s. With
    ``residual=True`` the output is ``x_s + f(x_s, y_t - y_s)`` (an extension:
    the identity is the zero function, which makes keeping the seed cheap).

    With the paper's linear head the output is ``A h(x) + B g(y_t - y_s)``: the
    mood's contribution is one shift per (source, target) pair whatever the
    seed, so a mood that sounds different in each genre cannot be followed.
    ``head_hidden > 0`` (an extension) puts a ReLU layer of that width after the
    concatenation, so the shift can depend on the seed.

    ``centroid_shift=True`` (an extension) starts from the training-free
    centroid shift: the output is ``x_s + a (c(y_t) - c(y_s)) + f(x_s, y_t - y_s)``
    with the training split's class centroids ``c`` stored as a buffer
    (``centroids``, set by training) and ``a = shift_scale``, so the network only
    learns a correction. At initialisation ``f = 0``: the strength curve of the
    untrained model is exactly the centroid shift's curve for alpha in [0, a].
    """

    def __init__(self, arch: Architecture) -> None:
        super().__init__()
        if arch.dim < 1 or arch.n_classes < 1:
            raise InputError(
                f"the architecture needs dim and n_classes >= 1, got {arch.dim} and "
                f"{arch.n_classes}; size it for the data with Architecture.sized."
            )
        self.arch = arch
        for name, layers in branch_layers(arch).items():
            setattr(self, name, nn.Sequential(*(_module(layer) for layer in layers)))
        if arch.centroid_shift:
            self.register_buffer("centroids", torch.zeros(arch.n_classes, arch.dim))
        if arch.residual or arch.centroid_shift:
            # Start as the identity (or the plain centroid shift): the network learns a
            # correction from there instead of undoing a random one first.
            nn.init.zeros_(self.head[-1].weight)
            nn.init.zeros_(self.head[-1].bias)

    def forward(self, x: torch.Tensor, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Transform unit-norm embeddings.

        Parameters
        ----------
        x : torch.Tensor, shape (B, d)
        source, target : torch.Tensor, shape (B,), int64
            Class indices of the seed and of the wanted mood.

        Returns
        -------
        torch.Tensor, shape (B, d)
            Not normalised: retrieval and losses use cosine similarity.
        """
        m = self.arch.n_classes
        cond = nn.functional.one_hot(target, m).float() - nn.functional.one_hot(source, m).float()
        h = torch.cat([self.embedding_branch(x), self.class_branch(cond)], dim=1)
        out = self.head(h)
        if self.arch.centroid_shift:
            shift = self.centroids[target] - self.centroids[source]
            return x + self.arch.shift_scale * shift + out
        return x + out if self.arch.residual else out


def slerp(a: np.ndarray, b: np.ndarray, t: float | np.ndarray) -> np.ndarray:
    """Spherical interpolation between unit rows ``a`` and ``b`` (shape (n, d)).

    Retrieval is by cosine, so only directions matter; slerp moves along the
    great circle from ``a`` to ``b`` at constant angular speed, so ``t`` is the
    fraction of the angle travelled. A straight line would pass nearer the
    origin and move the direction unevenly (slowly at the ends).
    """
    if a.ndim == 2 and a.shape[0] == 1 and np.size(t) == 1:
        return _slerp_one(a[0], b[0], float(np.asarray(t).reshape(-1)[0]))[None, :]
    a = a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=-1, keepdims=True), 1e-12)
    t = np.asarray(t, dtype=np.float32).reshape(-1, 1) if np.ndim(t) else np.float32(t)
    dot = np.clip((a * b).sum(axis=-1, keepdims=True), -1.0, 1.0)
    omega = np.arccos(dot)
    so = np.sin(omega)
    near = so < 1e-6
    safe = np.where(near, 1.0, so)
    wa = np.where(near, 1.0 - t, np.sin((1.0 - t) * omega) / safe)
    wb = np.where(near, t, np.sin(t * omega) / safe)
    out = wa * a + wb * b
    return (out / np.maximum(np.linalg.norm(out, axis=-1, keepdims=True), 1e-12)).astype(np.float32)


def _slerp_one(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """:func:`slerp` of one pair in scalar math: a serving query pays no array overhead."""
    a = a / max(math.sqrt(float(a @ a)), 1e-12)
    b = b / max(math.sqrt(float(b @ b)), 1e-12)
    omega = math.acos(min(1.0, max(-1.0, float(a @ b))))
    so = math.sin(omega)
    if so < 1e-6:
        out = (1.0 - t) * a + t * b
    else:
        out = (math.sin((1.0 - t) * omega) / so) * a + (math.sin(t * omega) / so) * b
    return (out / max(math.sqrt(float(out @ out)), 1e-12)).astype(np.float32)


class MoodshiftModel:
    """A trained transformation with its vocabulary and provenance.

    Parameters
    ----------
    net : MoodTransformer
    classes : list of str
        The attribute's vocabulary; index i is one-hot position i.
    attribute : str
        The label column it transforms (``mood`` by default).
    embedder : dict
        ``name``, ``version``, ``dim`` of the embedder of the training catalogue.
    config : dict
        The training configuration (saved in ``config.json``).
    tagger : MoodTagger, optional
        The calibrated mood probe fitted with the model (``tagger.*`` in the folder):
        the evidence for unlabelled tracks and the source mood of unlabelled seeds.
    evidence : EvidenceFusion, optional
        Fuses the tagger with the embedder's tag head and the catalogue's own
        labels into one calibrated p(mood | track) (``evidence.json`` in the folder).
    ranking : RankingSpace, optional
        The space the query engine compares queries and tracks in
        (:mod:`moodshift.model.ranking`); None: the plain cosine.
    """

    def __init__(
        self,
        *,
        net: MoodTransformer,
        classes: list[str],
        attribute: str = "mood",
        embedder: dict[str, Any] | None = None,
        config: dict[str, Any] | None = None,
        log: list[dict[str, Any]] | None = None,
        selection: dict[str, Any] | None = None,
        tagger: MoodTagger | None = None,
        evidence: EvidenceFusion | None = None,
        ranking: RankingSpace | None = None,
    ) -> None:
        self.net = net.eval()
        self.tagger = tagger
        self.evidence = evidence
        self.ranking = ranking
        self.classes = list(classes)
        self.attribute = attribute
        self.embedder = dict(embedder or {"dim": net.arch.dim})
        self.config = dict(config or {})
        self.log = list(log or [])
        self.selection = selection

    @property
    def dim(self) -> int:
        return self.net.arch.dim

    @property
    def default_strength(self) -> float:
        """Strength used when none is given: chosen on validation (``default_strength`` in
        the config, written by training or ``moodshift tune``), else 1."""
        return float(self.config.get("default_strength", 1.0))

    def mood_proba(self, embeddings: np.ndarray, *, labels: np.ndarray | None = None) -> np.ndarray:
        """p(mood | track) of a catalogue's tracks: the fused evidence, else the tagger.

        Parameters
        ----------
        embeddings : np.ndarray, shape (n, d)
            The catalogue's raw embeddings (the tag head needs them unnormalised).
        labels : np.ndarray, shape (n,), int, optional
            Known class per track (``-1`` unlabelled): the ``labels`` source.

        Returns
        -------
        np.ndarray, shape (n, m), float32
        """
        if self.evidence is not None:
            return self.evidence.proba(embeddings, tagger=self.tagger, labels=labels,
                                       classes=self.classes)  # fmt: skip
        if self.tagger is None:
            raise InputError("this model has no tagger; retrain it with `moodshift train`")
        return self.tagger.predict_proba(embeddings)

    def evidence_fingerprint(self) -> str | None:
        """A hash of what makes :meth:`mood_proba` (stored probabilities must match it)."""
        if self.tagger is None:
            return None
        fp = self.tagger.fingerprint()
        return fp if self.evidence is None else f"{fp}-{self.evidence.fingerprint()}"

    def class_index(self, value: str) -> int:
        try:
            return self.classes.index(value)
        except ValueError:
            raise UnknownLabelError(
                f"unknown target {self.attribute} {value!r}; known: {', '.join(self.classes)}."
            ) from None

    def transform(
        self,
        embeddings: np.ndarray,
        *,
        source: np.ndarray | list[str] | str,
        target: np.ndarray | list[str] | str,
        strength: float | np.ndarray | None = None,
        batch_size: int = 8192,
    ) -> np.ndarray:
        """Move embeddings toward a target class.

        Parameters
        ----------
        embeddings : np.ndarray, shape (n, d) or (d,)
        source, target : class names or indices, shape (n,) or scalar
        strength : float in [0, 1] (or shape (n,)), optional
            0 returns the seed's direction (so retrieval gives its neighbours),
            1 the full transform; in between, :func:`slerp` between the two.
            Default: :attr:`default_strength`.

        Returns
        -------
        np.ndarray, shape (n, d), unit-norm rows
        """
        x = np.asarray(embeddings, dtype=np.float32)
        single = x.ndim == 1
        x = np.atleast_2d(x)
        if x.shape[1] != self.dim:
            raise DimensionMismatchError(
                f"dimension mismatch: the model takes {self.dim}-d embeddings, got {x.shape[1]}-d; "
                f"use a model trained on this embedder."
            )
        if not np.isfinite(x).all():
            raise InputError("embedding contains NaN or inf; give a finite vector.")
        s = np.asarray(self.default_strength if strength is None else strength, dtype=np.float32)
        if np.any(s < 0) or np.any(s > 1) or not np.all(np.isfinite(s)):
            raise InputError(f"strength must lie in [0, 1], got {strength}.")
        src = self._as_indices(source, x.shape[0])
        tgt = self._as_indices(target, x.shape[0])
        xn = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        out = np.empty_like(xn)
        with torch.inference_mode():
            for i in range(0, x.shape[0], batch_size):
                sl = slice(i, i + batch_size)
                out[sl] = self.net(
                    torch.from_numpy(xn[sl]), torch.from_numpy(src[sl]), torch.from_numpy(tgt[sl])
                ).numpy()
        out = slerp(xn, out, s if s.ndim == 0 else s.reshape(-1))
        return out[0] if single else out

    def _as_indices(self, values: Any, n: int) -> np.ndarray:
        arr = np.atleast_1d(np.asarray(values))
        if arr.dtype.kind in "iu":
            if arr.size and (arr.min() < 0 or arr.max() >= len(self.classes)):
                raise UnknownLabelError(f"class index out of range 0..{len(self.classes) - 1}")
            idx = arr.astype(np.int64)
        else:
            idx = np.array([self.class_index(str(v)) for v in arr], dtype=np.int64)
        if idx.size == 1 and n != 1:
            idx = np.repeat(idx, n)
        if idx.size != n:
            raise InputError(f"expected {n} class labels, got {idx.size}")
        return idx

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Write the model folder atomically."""
        path = Path(path)
        with atomic_dir(path) as tmp:
            self.write_into(tmp)
        return path

    def write_into(self, folder: Path) -> None:
        save_file(
            {k: v.contiguous() for k, v in self.net.state_dict().items()},
            str(folder / "model.safetensors"),
        )
        cfg = dict(self.config)
        cfg["architecture"] = self.net.arch.to_dict()
        cfg["moodshift_version"] = __version__
        cfg["ranking_space"] = {"kind": "none"} if self.ranking is None else dict(self.ranking.info)
        if self.ranking is not None:
            self.ranking.save(folder / "ranking.safetensors")
        (folder / "config.json").write_text(json.dumps(cfg, indent=2, default=str))
        (folder / "vocab.json").write_text(
            json.dumps({"attribute": self.attribute, "classes": self.classes}, indent=2)
        )
        (folder / "embedder.json").write_text(json.dumps(self.embedder, indent=2, default=str))
        (folder / "training_log.json").write_text(json.dumps(self.log, indent=2, default=str))
        if self.tagger is not None:
            self.tagger.write_into(folder)
        if self.evidence is not None:
            self.evidence.write_into(folder)
        if self.selection is not None:
            (folder / "selection.json").write_text(
                json.dumps(self.selection, indent=2, default=str)
            )

    @classmethod
    def load(cls, path: str | Path) -> MoodshiftModel:
        """Load a model folder written by :meth:`save` (or by ``moodshift train``).

        Every file is checked against its schema before use, and the
        configuration must be one the model can serve (:meth:`check_servable`).

        Raises
        ------
        FileFormatError
            A file is missing, not JSON, or breaks its schema (one line naming it).
        InputError
            The configuration cannot serve (e.g. a default strength outside [0, 1]).
        """
        path = resolve_dir(path)
        needed = ["config.json", "model.safetensors", "vocab.json"]
        missing = [n for n in needed if not (path / n).is_file()]
        if missing:
            raise FileFormatError(
                f"{path} is not a moodshift model folder (missing {', '.join(missing)}); "
                f"train one with `moodshift train`."
            )
        cfg = _read_json(path / "config.json", None, schema=_check_config)
        vocab = _read_json(path / "vocab.json", None, schema=_check_vocab)
        arch = Architecture.from_dict(cfg["architecture"])
        if len(vocab["classes"]) != arch.n_classes:
            raise FileFormatError(
                f"{path / 'vocab.json'} lists {len(vocab['classes'])} classes but config.json's "
                f"architecture has {arch.n_classes}; the folder mixes two models: retrain it."
            )
        weights_path = path / "model.safetensors"
        try:
            weights = load_file(str(weights_path))
        except Exception as exc:  # safetensors raises its own error types
            raise FileFormatError(
                f"{weights_path} is not a readable safetensors file ({one_line(exc)}); "
                f"retrain the model or restore the file."
            ) from None
        net = MoodTransformer(arch)
        expected = {k: tuple(v.shape) for k, v in net.state_dict().items()}
        got = {k: tuple(v.shape) for k, v in weights.items()}
        if expected != got:
            diff = sorted(set(expected) ^ set(got)) or sorted(
                k for k in expected if expected[k] != got[k]
            )
            shown = ", ".join(
                f"{k} {got.get(k, 'absent')} vs {expected.get(k, 'absent')}" for k in diff[:2]
            )
            raise FileFormatError(
                f"{weights_path} does not match the architecture in config.json ({shown}); "
                f"restore the config.json the model was trained with, or retrain."
            )
        fix = "retrain the model (`moodshift train`) or restore the file"
        for name, tensor in weights.items():
            require_finite(tensor, path=weights_path, fix=fix, what=name)
        net.load_state_dict(weights)
        embedder = _read_json(path / "embedder.json", {"dim": arch.dim}, schema=_check_embedder)
        log = _read_json(path / "training_log.json", [], schema=_check_log)
        selection = _read_json(path / "selection.json", None, schema=_check_object)
        try:
            tagger = MoodTagger.read_from(path, dim=arch.dim, classes=list(vocab["classes"]))
            evidence = EvidenceFusion.read_from(path, dim=arch.dim, n_classes=arch.n_classes)
        except FileFormatError as exc:  # keep the CLI's message on one line
            raise FileFormatError(" ".join(str(exc).split())) from None
        ranking = None
        kind = (cfg.get("ranking_space") or {}).get("kind", "none")
        if kind != "none":
            if not (path / "ranking.safetensors").is_file():
                raise FileFormatError(
                    f"{path}: config.json ranks queries in a {kind!r} space but "
                    f"ranking.safetensors is missing; restore it, or retrain the model."
                )
            ranking = RankingSpace.load(path / "ranking.safetensors", dim=arch.dim,
                                        info=cfg["ranking_space"])  # fmt: skip
        model = cls(
            net=net, classes=vocab["classes"], attribute=vocab.get("attribute", "mood"),
            embedder=embedder, config=cfg, log=log, selection=selection, tagger=tagger,
            evidence=evidence, ranking=ranking,
        )  # fmt: skip
        model.check_servable(where=path)
        return model

    def check_servable(self, *, where: Any = "the model") -> None:
        """Refuse a configuration that would fail every query.

        Raises
        ------
        InputError
            If the default strength lies outside [0, 1] (or is not a number), or
            the embedder's dimension disagrees with the network's.
        """
        raw = self.config.get("default_strength", 1.0)
        ok = isinstance(raw, int | float) and not isinstance(raw, bool)
        if not ok or not (0.0 <= float(raw) <= 1.0):
            raise InputError(
                f"{where}: default_strength {raw!r} in config.json is outside [0, 1]; set it "
                f"to a number in [0, 1] (or rerun `moodshift tune`)."
            )
        dim = self.embedder.get("dim")
        if dim is not None and int(dim) != self.dim:
            raise FileFormatError(
                f"{where}: embedder.json says {dim}-d embeddings but the network takes "
                f"{self.dim}-d; restore embedder.json or retrain."
            )

    def check_catalog(self, catalog: Any, *, strict: bool = False) -> None:
        """Refuse to run on a catalogue this model cannot answer for.

        Each of the model's classes must label at least one track unless the
        catalogue also holds unlabelled tracks (then the tagger finds them).
        Serving and querying (``strict=False``) treat a catalogue without the
        attribute column as wholly unlabelled, and a mood the model does not know
        as no label (with a warning): an untagged or differently tagged music
        folder is served through the tagger. Evaluation (``strict=True``) must
        score every labelled mood, so it refuses both.

        Raises
        ------
        InputError
        """

        if self.attribute not in catalog.labels.columns:
            if strict:
                raise InputError(
                    f"the model transforms {self.attribute!r} but the catalogue has no such "
                    f"column (columns: {list(catalog.labels.columns)}); use a model trained on it."
                )
            return
        present: set[str] = set()
        unlabelled = False
        for cell in catalog.labels[self.attribute].tolist():
            values = parse_values(cell)
            if not values:
                unlabelled = True
            present |= values
        unknown = sorted(present - set(self.classes))
        if unknown and strict:
            raise InputError(
                f"the catalogue's {self.attribute} values {unknown[:10]} are not in the model's "
                f"vocabulary {self.classes}; retrain on this catalogue (`moodshift train`)."
            )
        if unknown:
            warnings.warn(
                f"the catalogue's {self.attribute} values {unknown[:10]} are not in the model's "
                f"vocabulary {self.classes}: those tracks count as unlabelled (the tagger "
                f"judges them)",
                stacklevel=2,
            )
            unlabelled = True
        absent = [c for c in self.classes if c not in present]
        if absent and not unlabelled:
            raise InputError(
                f"the model's {self.attribute} class(es) {absent} label no track of the "
                f"catalogue, so queries toward them cannot be checked or served; retrain on "
                f"this catalogue (`moodshift train`)."
            )


def _read_json(path: Path, default: Any, *, schema: Any) -> Any:
    """Parse one JSON file of a model folder and check it with ``schema`` (None: absent)."""
    if not path.is_file():
        if default is None and schema in (_check_config, _check_vocab):
            raise FileFormatError(f"{path} is missing; retrain the model.")
        return default
    return read_json_file(path, schema=schema, fix="restore it or retrain the model")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _check_object(data: Any) -> str | None:
    return None if isinstance(data, dict) else f"expected an object, got {type(data).__name__}"


def _check_config(data: Any) -> str | None:
    if not isinstance(data, dict):
        return _check_object(data)
    a = data.get("architecture")
    if not isinstance(a, dict):
        return "no 'architecture' object"
    for key in ("dim", "n_classes"):
        if not _is_int(a.get(key)) or a[key] < 1:
            return f"architecture.{key} must be a positive integer, got {a.get(key)!r}"
    for key in ("hidden", "class_hidden"):
        v = a.get(key)
        if not (isinstance(v, list) and len(v) == 2 and all(_is_int(x) and x > 0 for x in v)):
            return f"architecture.{key} must be two positive integers, got {v!r}"
    for key in ("dropout", "class_dropout"):
        if not _is_num(a.get(key)) or not 0 <= a[key] < 1:
            return f"architecture.{key} must be a number in [0, 1), got {a.get(key)!r}"
    if not _is_int(a.get("head_hidden", 0)) or a.get("head_hidden", 0) < 0:
        return f"architecture.head_hidden must be an integer >= 0, got {a.get('head_hidden')!r}"
    for key in ("residual", "centroid_shift"):
        if not isinstance(a.get(key, False), bool):
            return f"architecture.{key} must be true or false, got {a.get(key)!r}"
    if not _is_num(a.get("shift_scale", 1.0)):
        return f"architecture.shift_scale must be a number, got {a.get('shift_scale')!r}"
    ranking = data.get("ranking_space", {"kind": "none"})
    if not (isinstance(ranking, dict) and isinstance(ranking.get("kind", "none"), str)):
        return f"ranking_space must be an object with a 'kind' string, got {ranking!r}"
    return None


def _check_vocab(data: Any) -> str | None:
    if not isinstance(data, dict):
        return _check_object(data)
    classes = data.get("classes")
    if not isinstance(classes, list) or len(classes) < 2:
        return "'classes' must be a list of at least two class names"
    if not all(isinstance(c, str) and c for c in classes) or len(set(classes)) != len(classes):
        return "'classes' must hold distinct non-empty strings"
    if not isinstance(data.get("attribute", "mood"), str):
        return "'attribute' must be a string"
    return None


def _check_embedder(data: Any) -> str | None:
    if not isinstance(data, dict):
        return _check_object(data)
    if "dim" in data and data["dim"] is not None and (not _is_int(data["dim"]) or data["dim"] < 1):
        return f"'dim' must be a positive integer, got {data['dim']!r}"
    return None


def _check_log(data: Any) -> str | None:
    if not isinstance(data, list) or not all(isinstance(e, dict) for e in data):
        return "expected a list of per-epoch objects"
    return None
