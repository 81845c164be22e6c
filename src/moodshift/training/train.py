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
from moodshift.evaluation.evaluate import RetrievalEvaluator
from moodshift.mining.neighbors import class_topk
from moodshift.threads import apply_thread_policy
from moodshift.training.evidence import choose_evidence
from moodshift.training.losses import build_losses
from moodshift.training.model import Architecture, MoodshiftModel, MoodTransformer
from moodshift.training.sampling import ProxySampler
from moodshift.training.tagger import fit_tagger

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Everything that defines a training run (saved in config.json and checkpoints).

    The defaults are the configuration chosen by validation-split measurements
    (README, "Choosing the defaults"; benchmarks/QUALITY.md): cosine loss to the
    nearest target-mood track (K = 1), aimed 3x past it, on top of the centroid
    shift, with the default strength chosen on validation. The paper's own setting
    is ``losses=("cos", "triplet", "cosbce"), margin=0.3, relative_margin=False,
    k=100, head_hidden=0, centroid_shift=False, extrapolation=1.0``.
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
    hidden: tuple[int, int] = (1024, 512)
    class_hidden: tuple[int, int] = (64, 128)
    dropout: float = 0.3
    class_dropout: float = 0.4
    residual: bool = False
    head_hidden: int = 512
    centroid_shift: bool = True
    extrapolation: float = 3.0
    choose_strength: bool = True
    seed: int = 0
    device: str = "auto"
    mood_target: float = 0.9
    val_max_seeds: int | None = 2000
    patience: int | None = None
    checkpoint_seconds: float = 30.0

    def __post_init__(self) -> None:
        self.losses = tuple(self.losses)
        self.hidden = tuple(self.hidden)  # type: ignore[assignment]
        self.class_hidden = tuple(self.class_hidden)  # type: ignore[assignment]
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise InputError("epochs, batch_size and lr must be positive")
        if self.k < 1:
            raise InputError(f"k must be >= 1, got {self.k}")
        if self.extrapolation <= 0:
            raise InputError(f"extrapolation must be positive, got {self.extrapolation}")
        if self.k_fraction is not None and not 0 < self.k_fraction <= 1:
            raise InputError(f"k_fraction must lie in (0, 1], got {self.k_fraction}")
        build_losses(self.losses)  # validates the names
        if self.mining not in ("exact", "ivf", "ivf-faiss", "hnsw", "auto"):
            raise InputError(
                f"mining must be exact, ivf, ivf-faiss, hnsw or auto; got {self.mining!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def resolve_k(config: TrainConfig, class_sizes: np.ndarray) -> int:
    """The K used for proxy targets: absolute, or a fraction of the smallest class."""
    if config.k_fraction is not None:
        return max(1, round(config.k_fraction * int(class_sizes.min())))
    return config.k


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
    """
    cfg = config or TrainConfig()
    dev = torch_device(cfg.device)
    policy = apply_thread_policy(role="train", threads=threads)
    torch.manual_seed(cfg.seed)
    train_rows = catalog.split_indices("train")
    classes, y = catalog.subset(train_rows).classes(cfg.attribute)
    # Unlabelled tracks are never seeds nor proxy targets: they are not in the join at all.
    train_cat = catalog.subset(train_rows[y >= 0])
    y = y[y >= 0]
    k = resolve_k(cfg, np.bincount(y))
    x = train_cat.normalized
    t0 = time.perf_counter()
    if engine == "ray":  # exact self-join as Ray tasks (moodshift.mining.ray_engine)
        from moodshift.mining.ray_engine import ray_class_topk

        nb = ray_class_topk(embeddings=x, labels=y, k=k, n_classes=len(classes),
                            normalized=True, address=ray_address, progress=progress)  # fmt: skip
    else:
        nb = class_topk(embeddings=x, labels=y, k=k, n_classes=len(classes), normalized=True,
                        device=str(dev), progress=progress, method=cfg.mining,
                        threads=policy.threads)  # fmt: skip
    join_s = time.perf_counter() - t0
    val = None
    val_rows = catalog.split_indices(val_part)
    # Labelled validation tracks only, so that nothing unlabelled steers the checkpoint choice.
    val_rows = val_rows[catalog.subset(val_rows).labelled_rows(cfg.attribute)]
    if val_rows.size > 10:
        val = RetrievalEvaluator(
            catalog.subset(val_rows), attribute=cfg.attribute, classes=classes, ks=(1,),
            max_seeds=cfg.val_max_seeds, mood_target=cfg.mood_target, seed=cfg.seed,
        )  # fmt: skip
    arch = Architecture(
        dim=catalog.dim, n_classes=len(classes), hidden=cfg.hidden, class_hidden=cfg.class_hidden,
        dropout=cfg.dropout, class_dropout=cfg.class_dropout, residual=cfg.residual,
        head_hidden=cfg.head_hidden, centroid_shift=cfg.centroid_shift,
        # The base shift goes as far as the (extrapolated) targets: x_s + e (c_t - c_s).
        shift_scale=cfg.extrapolation,
    )  # fmt: skip
    net = MoodTransformer(arch).to(dev)
    if cfg.centroid_shift:
        from moodshift.evaluation.baselines import class_centroids

        net.centroids.copy_(torch.from_numpy(class_centroids(x, y, n_classes=len(classes))))
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    losses = build_losses(cfg.losses, margin=cfg.margin, relative_margin=cfg.relative_margin,
                          bce_on=cfg.bce_on)  # fmt: skip
    weights = {n: float(cfg.loss_weights.get(n, 1.0)) for n in losses}
    gen = torch.Generator(device=dev).manual_seed(cfg.seed)
    xt = torch.from_numpy(x).to(dev)
    yt = torch.from_numpy(y).to(dev)
    sampler = ProxySampler(
        topk=torch.from_numpy(nb.indices).to(dev), counts=torch.from_numpy(nb.counts).to(dev),
        labels=yt,
    )  # fmt: skip
    ckpt_path = Path(f"{out}.ckpt") / "last.pt" if out is not None else None
    state: dict[str, Any] = {"epoch": 0, "best": -math.inf, "best_state": None, "log": [],
                             "bad_epochs": 0}  # fmt: skip
    if resume and ckpt_path is not None and ckpt_path.is_file():
        state = _load_checkpoint(ckpt_path, cfg, net, opt, gen)
        log.info("resumed from %s at epoch %d", ckpt_path, state["epoch"])
    n = xt.shape[0]
    bs = min(cfg.batch_size, n)
    last_ckpt = time.monotonic()
    meta = {"k": k, "self_join_seconds": round(join_s, 3), "n_train": int(n),
            "classes": classes, "device": str(dev), "threads": policy.threads}  # fmt: skip
    bar = tqdm(range(state["epoch"], cfg.epochs), desc="train", unit="epoch",
               disable=not progress, initial=state["epoch"], total=cfg.epochs)  # fmt: skip
    for epoch in bar:
        policy.refresh()  # other jobs may have started (or stopped) since the last epoch
        net.train()
        t_ep = time.perf_counter()
        perm = torch.randperm(n, generator=gen, device=dev)
        totals = dict.fromkeys(losses, 0.0)
        steps = 0
        for start in range(0, n, bs):
            seeds = perm[start : start + bs]
            y_t, rows = sampler.sample(seeds, generator=gen)
            xs, xtgt = xt[seeds], xt[rows]
            if cfg.extrapolation != 1.0:
                # Aim past the proxy target (x_s + e (x_t - x_s)): the strength knob can
                # then pull the output back, so s in [0, 1] spans more of the trade-off.
                xtgt = xs + cfg.extrapolation * (xtgt - xs)
            same = rows == seeds
            outp = net(xs, yt[seeds], y_t)
            parts = {name: fn(outp, xs, xtgt, same) for name, fn in losses.items()}
            loss = sum(weights[nm] * v for nm, v in parts.items())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            for name, v in parts.items():
                totals[name] += float(v.detach())
            steps += 1
        ep_s = time.perf_counter() - t_ep
        entry: dict[str, Any] = {
            "epoch": epoch + 1,
            **{f"loss_{k_}": v / steps for k_, v in totals.items()},
            "samples_per_s": n / ep_s,
            "threads": policy.threads,
        }
        net.eval()
        if val is not None:
            model = MoodshiftModel(net=net, classes=classes, attribute=cfg.attribute)
            figures = val(model)
            net.train()
            entry.update({f"val_{k_}": v for k_, v in figures.items()})
            score = figures["primary"]
        else:
            score = -sum(entry[f"loss_{k_}"] for k_ in totals)
        state["log"].append(entry)
        if score > state["best"]:
            state["best"] = score
            state["best_state"] = copy.deepcopy({k_: v.cpu() for k_, v in net.state_dict().items()})
            state["best_epoch"] = epoch + 1
            state["bad_epochs"] = 0
        else:
            state["bad_epochs"] += 1
        state["epoch"] = epoch + 1
        bar.set_postfix(
            {k_.replace("val_", ""): f"{v:.3f}" for k_, v in entry.items()
             if k_ in ("val_mood_p@1", "val_genre_p@1", "val_inst_j@1", "loss_cos")}
        )  # fmt: skip
        done = epoch + 1 == cfg.epochs
        stop = cfg.patience is not None and state["bad_epochs"] >= cfg.patience
        if ckpt_path is not None and (
            done or stop or time.monotonic() - last_ckpt > cfg.checkpoint_seconds
        ):
            _save_checkpoint(ckpt_path, cfg, net, opt, gen, state)
            last_ckpt = time.monotonic()
        if stop:
            log.info("early stop at epoch %d (best %d)", epoch + 1, state.get("best_epoch", 0))
            break
    bar.close()
    if state["best_state"] is not None:
        net.load_state_dict(state["best_state"])
    net.eval().cpu()
    meta["best_epoch"] = state.get("best_epoch")
    meta["best_val_primary"] = state["best"]
    config_out = cfg.to_dict() | {"training": meta}
    model = MoodshiftModel(
        net=net, classes=classes, attribute=cfg.attribute, embedder=dict(catalog.provenance),
        config=config_out, log=state["log"],
    )  # fmt: skip
    if cfg.choose_strength and val is not None:
        from moodshift.evaluation.baselines import class_centroids
        from moodshift.evaluation.sweep import collapse_bounds, operating_point, strength_curve

        # The strength used when a query gives none: the most preservation at validation
        # Mood P@1 >= mood_target (the rule of ``moodshift tune``).
        bounds = collapse_bounds(val, centroids=class_centroids(x, y, n_classes=len(classes)))
        point, tier = operating_point(
            strength_curve(val, model), mood_target=cfg.mood_target, bounds=bounds
        )
        model.config["default_strength"] = float(point["param"])
        meta["strength_tier"] = tier
        meta["val_at_default_strength"] = {
            k: v for k, v in point.items() if k.endswith("@1") or k in ("preservation", "kept")
        }
    model.tagger = fit_tagger(catalog, attribute=cfg.attribute, classes=classes, seed=cfg.seed)
    meta["tagger"] = model.tagger.report
    if cfg.choose_strength and val is not None:
        # How evidence-aware queries rank (labels where known, the tagger elsewhere).
        settings, chosen = choose_evidence(val, model)
        model.config["evidence"] = settings.to_dict()
        meta["evidence_validation"] = chosen
    if out is not None:
        model.save(out)
    return model


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
    saved = dict(blob["config"])
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
    net.load_state_dict(blob["model"])
    opt.load_state_dict(blob["optimizer"])
    gen.set_state(blob["generator"])
    torch.set_rng_state(blob["torch_rng"])
    return blob["state"]
