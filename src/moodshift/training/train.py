"""Training loop: proxy targets, AdamW, validation every epoch, best checkpoint kept.

Short on purpose (after nanoGPT): one config dataclass that is saved inside
every checkpoint, one loop, resumable from ``<out>.ckpt/last.pt``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from moodshift._atomic import atomic_file
from moodshift._deps import torch_device
from moodshift.data.catalog import Catalog
from moodshift.errors import FileFormatError, InputError
from moodshift.evaluation.baselines import class_centroids, training_rows
from moodshift.evaluation.evaluate import RetrievalEvaluator
from moodshift.evaluation.sweep import collapse_bounds, operating_point, strength_curve
from moodshift.mining.neighbors import METHODS, ClassNeighbors, class_topk
from moodshift.mining.ray_engine import ray_class_topk
from moodshift.model.network import Architecture, MoodshiftModel, MoodTransformer
from moodshift.model.tagger import fit_tagger
from moodshift.threads import apply_thread_policy
from moodshift.training.evidence import RANKING_KINDS, candidate_spaces, choose_evidence
from moodshift.training.losses import build_losses
from moodshift.training.sampling import ProxySampler

log = logging.getLogger(__name__)


#: The network ``moodshift train`` builds (benchmarks/RESULTS.md, "Quality"): the paper's
#: layer sizes with a seed-dependent head on top of the centroid shift. ``dim`` and
#: ``n_classes`` are set from the catalogue, ``shift_scale`` from ``extrapolation``.
CHOSEN_ARCHITECTURE = Architecture(head_hidden=512, centroid_shift=True)


@dataclass
class TrainConfig:
    """Everything that defines a training run (saved in config.json and checkpoints).

    The defaults are the configuration chosen by validation-split measurements
    (benchmarks/RESULTS.md, "Quality"; benchmarks/QUALITY.md): cosine loss to the
    nearest target-mood track (K = 1), aimed 3x past it, on top of the centroid
    shift, with the default strength chosen on validation. The paper's own setting
    is ``losses=("cos", "triplet", "cosbce"), margin=0.3, relative_margin=False,
    k=100, extrapolation=1.0`` with ``architecture=Architecture()``.

    ``architecture`` is the network's :class:`Architecture` (a dict from JSON is read
    with :meth:`Architecture.from_dict`); its ``shift_scale`` always equals
    ``extrapolation`` (the base shift goes as far as the extrapolated targets:
    x_s + e (c_t - c_s)).
    """

    attribute: str = "mood"
    losses: tuple[str, ...] = ("cos",)
    loss_weights: dict[str, float] = field(default_factory=dict)
    margin: float = 0.5
    relative_margin: bool = True
    bce_on: str = "target"
    k: int = 1
    k_fraction: float | None = None
    mining: str = "auto"
    epochs: int = 150
    batch_size: int = 256
    lr: float = 5e-4
    weight_decay: float = 0.01
    architecture: Architecture = CHOSEN_ARCHITECTURE
    extrapolation: float = 3.0
    choose_strength: bool = True
    ranking: str = "auto"
    seed: int = 0
    device: str = "auto"
    mood_target: float = 0.9
    val_max_seeds: int | None = 2000
    patience: int | None = None
    checkpoint_seconds: float = 30.0

    def __post_init__(self) -> None:
        self.losses = tuple(self.losses)
        arch = self.architecture
        if isinstance(arch, dict):
            arch = Architecture.from_dict(arch, base=CHOSEN_ARCHITECTURE)
        self.architecture = dataclasses.replace(arch, shift_scale=float(self.extrapolation))
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise InputError("epochs, batch_size and lr must be positive")
        if self.k < 1:
            raise InputError(f"k must be >= 1, got {self.k}")
        if self.extrapolation <= 0:
            raise InputError(f"extrapolation must be positive, got {self.extrapolation}")
        if self.k_fraction is not None and not 0 < self.k_fraction <= 1:
            raise InputError(f"k_fraction must lie in (0, 1], got {self.k_fraction}")
        build_losses(self.losses)  # validates the names
        if self.mining not in METHODS:
            raise InputError(f"mining must be one of {', '.join(METHODS)}; got {self.mining!r}")
        if self.ranking not in ("auto", *RANKING_KINDS):
            raise InputError(
                f"ranking must be auto or one of {', '.join(RANKING_KINDS)}; got {self.ranking!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        """The configuration as JSON types, the architecture nested (``config.json``)."""
        return dataclasses.asdict(self) | {"architecture": self.architecture.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """A configuration from :meth:`to_dict`'s layout, or the flat one (read back).

        Architecture fields given at the top level (the layout of ``config.json`` before
        the architecture was nested; also the CLI's flags and ``moodshift tune``'s grid
        overrides) override the nested ``architecture`` object. Unknown names are ignored.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        arch = Architecture.from_dict(data.get("architecture") or {}, base=CHOSEN_ARCHITECTURE)
        arch = Architecture.from_dict(
            {k: v for k, v in data.items() if k in ARCH_FIELDS}, base=arch
        )
        kwargs = {k: v for k, v in data.items() if k in names and k != "architecture"}
        return cls(architecture=arch, **kwargs)


#: The :class:`Architecture` fields a flat configuration may set by name (``dim`` and
#: ``n_classes`` come from the data, ``shift_scale`` from ``extrapolation``).
ARCH_FIELDS = tuple(f.name for f in dataclasses.fields(Architecture)
                    if f.name not in ("dim", "n_classes", "shift_scale"))  # fmt: skip


def resolve_k(config: TrainConfig, class_sizes: np.ndarray) -> int:
    """The K used for proxy targets: absolute, or a fraction of the smallest class."""
    if config.k_fraction is not None:
        return max(1, round(config.k_fraction * int(class_sizes.min())))
    return config.k


@dataclass
class TrainingData:
    """The labelled training rows a run learns from (unlabelled tracks are left out)."""

    classes: list[str]
    x: np.ndarray  # (n, d) float32, unit rows
    y: np.ndarray  # (n,) int64 class index


def training_data(catalog: Catalog, cfg: TrainConfig) -> TrainingData:
    """The training split's labelled rows, unit-normalised, with their class indices."""
    train_rows = catalog.split_indices("train")
    classes, y = catalog.subset(train_rows).classes(cfg.attribute)
    # Unlabelled tracks are never seeds nor proxy targets: they are not in the join at all.
    labelled = y >= 0
    return TrainingData(classes=list(classes), x=catalog.subset(train_rows[labelled]).normalized,
                        y=y[labelled])  # fmt: skip


def mine_targets(
    data: TrainingData, cfg: TrainConfig, *, device: torch.device, threads: int,
    engine: str = "local", ray_address: str | None = None, progress: bool = False,
) -> tuple[ClassNeighbors, int]:  # fmt: skip
    """Proxy-target lists: every track's top-K neighbours in every class.

    Returns
    -------
    ClassNeighbors
    k : int
        The K used (:func:`resolve_k`).
    """
    k = resolve_k(cfg, np.bincount(data.y))
    common = {"embeddings": data.x, "labels": data.y, "k": k, "n_classes": len(data.classes),
              "normalized": True, "progress": progress}  # fmt: skip
    if engine == "ray":  # exact self-join as Ray tasks (moodshift.mining.ray_engine)
        return ray_class_topk(address=ray_address, **common), k
    return class_topk(device=str(device), method=cfg.mining, threads=threads, **common), k


def build_net(cfg: TrainConfig, data: TrainingData, device: torch.device) -> MoodTransformer:
    """The network of ``cfg`` for this data, its centroid shift set from the training split."""
    net = MoodTransformer(cfg.architecture.sized(dim=data.x.shape[1], n_classes=len(data.classes)))
    if cfg.architecture.centroid_shift:
        cent = class_centroids(data.x, data.y, n_classes=len(data.classes))
        net.centroids.copy_(torch.from_numpy(cent))
    return net.to(device)


def train_epoch(
    net: MoodTransformer, opt: torch.optim.Optimizer, sampler: ProxySampler,
    losses: dict[str, Any], weights: dict[str, float], x: torch.Tensor, y: torch.Tensor, *,
    batch_size: int, extrapolation: float, gen: torch.Generator,
) -> dict[str, float]:  # fmt: skip
    """One pass over the training rows in random order; mean loss per term.

    Returns
    -------
    dict
        ``loss_<name>`` per loss term, and ``samples_per_s``.
    """
    net.train()
    t0 = time.perf_counter()
    n = x.shape[0]
    perm = torch.randperm(n, generator=gen, device=x.device)
    totals = torch.zeros(len(losses), dtype=torch.float64)
    steps = 0
    for start in range(0, n, batch_size):
        seeds = perm[start : start + batch_size]
        y_t, rows = sampler.sample(seeds, generator=gen)
        xs, xtgt = x[seeds], x[rows]
        if extrapolation != 1.0:
            # Aim past the proxy target (x_s + e (x_t - x_s)): the strength knob can then
            # pull the output back, so s in [0, 1] spans more of the trade-off.
            xtgt = xs + extrapolation * (xtgt - xs)
        outp = net(xs, y[seeds], y_t)
        parts = [fn(outp, xs, xtgt, rows == seeds) for fn in losses.values()]
        loss = sum(w * v for w, v in zip(weights.values(), parts, strict=True))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        totals += torch.stack([v.detach() for v in parts]).double().cpu()
        steps += 1
    mean = (totals / max(steps, 1)).tolist()
    return {**{f"loss_{name}": v for name, v in zip(losses, mean, strict=True)},
            "samples_per_s": n / (time.perf_counter() - t0)}  # fmt: skip


def choose_default_strength(model: MoodshiftModel, val: Any, data: TrainingData,
                            cfg: TrainConfig) -> dict[str, Any]:  # fmt: skip
    """Set ``model.config["default_strength"]``: the rule of ``moodshift tune``.

    The most preservation at validation Mood P@1 >= ``cfg.mood_target``.

    Returns
    -------
    dict
        ``strength_tier`` and the validation figures at the chosen strength.
    """

    cent = class_centroids(data.x, data.y, n_classes=len(data.classes))
    bounds = collapse_bounds(val, centroids=cent)
    point, tier = operating_point(strength_curve(val, model), mood_target=cfg.mood_target,
                                  bounds=bounds)  # fmt: skip
    model.config["default_strength"] = float(point["param"])
    kept = {k: v for k, v in point.items() if k.endswith("@1") or k in ("preservation", "kept")}
    return {"strength_tier": tier, "val_at_default_strength": kept}


def _validator(catalog: Catalog, cfg: TrainConfig, classes: list[str], part: str) -> Any:

    rows = catalog.split_indices(part)
    # Labelled validation tracks only, so that nothing unlabelled steers the checkpoint choice.
    rows = rows[catalog.subset(rows).labelled_rows(cfg.attribute)]
    if rows.size <= 10:
        return None
    return RetrievalEvaluator(
        catalog.subset(rows), attribute=cfg.attribute, classes=classes, ks=(1,),
        max_seeds=cfg.val_max_seeds, mood_target=cfg.mood_target, seed=cfg.seed,
    )  # fmt: skip


def train(
    catalog: Catalog,
    *,
    config: TrainConfig | None = None,
    out: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    val_part: str = "val",
    engine: str = "local",
    ray_address: str | None = None,
    threads: int | None = None,
) -> MoodshiftModel:
    """Train a transformation on the catalogue's training split.

    Mine proxy targets, then epochs of training and validation (best checkpoint kept,
    early stop, resumable), then choose the default strength, fit the mood tagger and
    the evidence settings.

    Parameters
    ----------
    catalog : Catalog
        Must carry a split (``moodshift import`` stores one).
    config : TrainConfig
    out : path, optional
        Model folder to write (atomically) at the end; checkpoints go to
        ``<out>.ckpt/last.pt`` so a killed run can ``resume``.
    resume : bool
        Continue from the checkpoint when one exists (same config required,
        except ``epochs`` which may grow).
    progress : bool
    val_part : str
        The split part used for validation.
    engine : {"local", "ray"}
        Where the proxy-target self-join runs: this process, or Ray tasks
        (exact; ``config.mining`` applies to ``local`` only).
    ray_address : str, optional
        Existing Ray cluster for ``engine="ray"`` (default: start a local one).
    threads : int, optional
        CPU threads; default: the thread policy (:mod:`moodshift.threads`: the cores
        other processes leave free, re-checked every epoch, or ``MOODSHIFT_THREADS``).

    Returns
    -------
    MoodshiftModel
        The best validation checkpoint.

    Raises
    ------
    InputError
        CUDA requested but missing, a bad thread count, or a checkpoint of another config.
    FileFormatError
        An unreadable checkpoint.
    """
    cfg = config or TrainConfig()
    dev = torch_device(cfg.device)
    policy = apply_thread_policy(role="train", threads=threads)
    torch.manual_seed(cfg.seed)
    data = training_data(catalog, cfg)
    t0 = time.perf_counter()
    nb, k = mine_targets(data, cfg, device=dev, threads=policy.threads, engine=engine,
                         ray_address=ray_address, progress=progress)  # fmt: skip
    meta = {"k": k, "self_join_seconds": round(time.perf_counter() - t0, 3),
            "n_train": len(data.y), "classes": data.classes, "device": str(dev),
            "threads": policy.threads}  # fmt: skip
    val = _validator(catalog, cfg, data.classes, val_part)
    net = build_net(cfg, data, dev)
    # The fused kernel (one pass over all parameters per step) measured 2.5k samples per CPU
    # second against 2.3k for the default at batch 256 on this 2-core AVX2 machine.
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                            fused=True)  # fmt: skip
    losses = build_losses(cfg.losses, margin=cfg.margin, relative_margin=cfg.relative_margin,
                          bce_on=cfg.bce_on)  # fmt: skip
    weights = {name: float(cfg.loss_weights.get(name, 1.0)) for name in losses}
    gen = torch.Generator(device=dev).manual_seed(cfg.seed)
    x, y = torch.from_numpy(data.x).to(dev), torch.from_numpy(data.y).to(dev)
    sampler = ProxySampler(topk=torch.from_numpy(nb.indices).to(dev),
                           counts=torch.from_numpy(nb.counts).to(dev), labels=y)  # fmt: skip
    ckpt = Path(f"{out}.ckpt") / "last.pt" if out is not None else None
    state: dict[str, Any] = {"epoch": 0, "best": -math.inf, "best_state": None, "log": [],
                             "bad_epochs": 0}  # fmt: skip
    if resume and ckpt is not None and ckpt.is_file():
        state = _load_checkpoint(ckpt, cfg, net, opt, gen)
        log.info("resumed from %s at epoch %d", ckpt, state["epoch"])
    last_ckpt = time.monotonic()
    bar = tqdm(range(state["epoch"], cfg.epochs), desc="train", unit="epoch",
               disable=not progress, initial=state["epoch"], total=cfg.epochs)  # fmt: skip
    for epoch in bar:
        policy.refresh()  # other jobs may have started (or stopped) since the last epoch
        entry: dict[str, Any] = {"epoch": epoch + 1, "threads": policy.threads}
        entry |= train_epoch(net, opt, sampler, losses, weights, x, y,
                             batch_size=min(cfg.batch_size, len(data.y)),
                             extrapolation=cfg.extrapolation, gen=gen)  # fmt: skip
        if val is not None:
            net.eval()
            figures = val(MoodshiftModel(net=net, classes=data.classes, attribute=cfg.attribute))
            entry |= {f"val_{name}": v for name, v in figures.items()}
            score = figures["primary"]
        else:
            score = -sum(entry[f"loss_{name}"] for name in losses)
        _record(state, entry, score, net)
        bar.set_postfix({name.replace("val_", ""): f"{v:.3f}" for name, v in entry.items()
                         if name in ("val_mood_p@1", "val_genre_p@1", "loss_cos")})  # fmt: skip
        stop = cfg.patience is not None and state["bad_epochs"] >= cfg.patience
        due = time.monotonic() - last_ckpt > cfg.checkpoint_seconds
        if ckpt is not None and (epoch + 1 == cfg.epochs or stop or due):
            _save_checkpoint(ckpt, cfg, net, opt, gen, state)
            last_ckpt = time.monotonic()
        if stop:
            log.info("early stop at epoch %d (best %d)", epoch + 1, state.get("best_epoch", 0))
            break
    bar.close()
    if state["best_state"] is not None:
        net.load_state_dict(state["best_state"])
    meta |= {"best_epoch": state.get("best_epoch"), "best_val_primary": state["best"]}
    model = MoodshiftModel(
        net=net.eval().cpu(), classes=data.classes, attribute=cfg.attribute,
        embedder=dict(catalog.provenance), config=cfg.to_dict() | {"training": meta},
        log=state["log"],
    )  # fmt: skip
    if cfg.choose_strength and val is not None:
        meta |= choose_default_strength(model, val, data, cfg)
    model.tagger = fit_tagger(catalog, attribute=cfg.attribute, classes=data.classes,
                              seed=cfg.seed)  # fmt: skip
    meta["tagger"] = model.tagger.report
    if cfg.choose_strength and val is not None:
        # How evidence-aware queries rank (labels where known, the tagger elsewhere), and
        # in which space: every candidate is fitted on the training split alone.
        tx, ty, groups = training_rows(catalog, attribute=cfg.attribute, classes=data.classes)
        kinds = RANKING_KINDS if cfg.ranking == "auto" else (cfg.ranking,)
        spaces = candidate_spaces(tx, ty, groups=groups, kinds=kinds, seed=cfg.seed)
        settings, model.ranking, chosen = choose_evidence(val, model, spaces=spaces)
        model.config["evidence"] = settings.to_dict()
        meta["evidence_validation"] = chosen
    if out is not None:
        model.save(out)
    return model


def _record(state: dict[str, Any], entry: dict[str, Any], score: float, net: torch.nn.Module
            ) -> None:  # fmt: skip
    """Log an epoch; keep the network's weights when it is the best so far."""
    state["log"].append(entry)
    if score > state["best"]:
        state["best"] = score
        state["best_state"] = copy.deepcopy({k: v.cpu() for k, v in net.state_dict().items()})
        state["best_epoch"] = entry["epoch"]
        state["bad_epochs"] = 0
    else:
        state["bad_epochs"] += 1
    state["epoch"] = entry["epoch"]


def _save_checkpoint(
    path: Path, cfg: TrainConfig, net: torch.nn.Module, opt: torch.optim.Optimizer,
    gen: torch.Generator, state: dict[str, Any],
) -> None:  # fmt: skip
    blob = {
        "config": cfg.to_dict(),
        "model": net.state_dict(),
        "optimizer": opt.state_dict(),
        "generator": gen.get_state(),
        "torch_rng": torch.get_rng_state(),
        "state": state,
    }
    with atomic_file(path, "wb") as fh:
        torch.save(blob, fh)


def _load_checkpoint(
    path: Path, cfg: TrainConfig, net: torch.nn.Module, opt: torch.optim.Optimizer,
    gen: torch.Generator,
) -> dict[str, Any]:  # fmt: skip
    try:
        blob = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise FileFormatError(
            f"checkpoint {path} is unreadable ({exc}); delete it to start afresh."
        ) from exc
    needed = ("config", "model", "optimizer", "generator", "torch_rng", "state")
    missing = [k for k in needed if not isinstance(blob, dict) or k not in blob]
    if missing or not isinstance(blob.get("config"), dict) or not isinstance(blob["state"], dict):
        raise FileFormatError(
            f"checkpoint {path} is damaged (missing or malformed: {missing or ['config/state']}); "
            f"delete it to start afresh."
        )
    saved = TrainConfig.from_dict(blob["config"]).to_dict()  # a flat (older) layout too
    now = cfg.to_dict()
    saved.pop("epochs", None)
    now.pop("epochs", None)
    if json.dumps(saved, sort_keys=True, default=str) != json.dumps(
        now, sort_keys=True, default=str
    ):
        diff = sorted(k for k in now if saved.get(k) != now.get(k))
        raise InputError(
            f"cannot resume: the checkpoint was made with a different config ({diff}); "
            f"use the same options or start a new --out."
        )
    try:
        net.load_state_dict(blob["model"])
        opt.load_state_dict(blob["optimizer"])
        gen.set_state(blob["generator"])
        torch.set_rng_state(blob["torch_rng"])
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise FileFormatError(
            f"checkpoint {path} does not fit this model ({first}); delete it to start afresh."
        ) from exc
    state = blob["state"]
    if not {"epoch", "best", "log"} <= set(state):
        raise FileFormatError(
            f"checkpoint {path} has no training state; delete it to start afresh."
        )
    return state
