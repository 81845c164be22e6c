"""``moodshift bench transfer``: do moods learned on one part of the corpus hold on another?

The built-in corpus is cut into two disjoint parts of its variety:

* **train** (in-domain): the FluidR3_GM soundfont, five genres (rock, waltz,
  swing, bossa, electronic) and one half of the tunes;
* **cross** (held out): the TimGM6mb soundfont, the three other genres (march,
  folk, ballad) and the other half of the tunes, always arranged by the
  ``classic`` arranger (the built-in corpus as it ships).

A model (transform network and mood tagger) is trained on the train part
(``classic``: the built-in arranger; ``wide``: the widened arranger with audio
augmentation). The tagger's accuracy and expected calibration error, and the
query engine's Mood / Genre P@1 on an untagged catalogue (no label visible to
queries), are measured on the train part's own held-out tracks (in-domain)
and on the cross part's test tracks, beside:

* ``ceiling``: a linear tagger fitted on the cross part's own labels
  (its training split) — what a tagger that had seen this music would reach;
* ``chance``: the majority class of the training tracks;
* every source of mood evidence of :mod:`moodshift.model.evidence` and their
  fusion (on the same cross test tracks).

Rendering and embedding are cached under ``workdir``: a re-run only trains and
measures. Nothing is tuned on the cross part: every fitted choice uses the
train part's training and validation splits (the ``ceiling`` row excepted, by
design, and the few user labels of the ``+ labels`` rows, which come from the
cross part's training split, as a user's would come from their library).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from moodshift.audio.corpus import build_corpus, default_soundfonts
from moodshift.audio.embed import embed_catalog
from moodshift.data.catalog import concat_catalogs
from moodshift.errors import DependencyError, InputError
from moodshift.model.evidence import (
    choose_to_label,
    labels_logp,
    log_softmax,
    recentre,
    score_proba,
)
from moodshift.model.tagger import MoodTagger

TRAIN_GENRES: tuple[str, ...] = ("rock", "waltz", "swing", "bossa", "electronic")
CROSS_GENRES: tuple[str, ...] = ("march", "folk", "ballad")
TRAIN_SOUNDFONT = "FluidR3_GM"
CROSS_SOUNDFONT = "TimGM6mb"
#: Tunes are split in two by a stable hash of their source: part 0 trains, part 1 is held out.
MELODY_PARTS = 2
#: Train-part split: a larger in-domain test share than the default, so both figures are
#: measured on a comparable number of tracks.
TRAIN_FRACTIONS = (0.6, 0.15, 0.25)
#: Training recipes compared (``mixed``: the classic and the wide renders together).
VARIANTS: tuple[str, ...] = ("classic", "wide", "mixed")
#: The held-out parts: the same pieces by the shipped (classic) and the wide arranger.
CROSS_PARTS: tuple[str, ...] = ("cross", "cross_wide")
#: Held-out split: a large test share; the ceiling tagger and user labels take the rest.
CROSS_FRACTIONS = (0.35, 0.1, 0.55)
#: Labelled tracks per mood given by "the user" in the ``+ labels`` rows.
USER_LABELS_PER_MOOD = 5


@dataclass(frozen=True)
class CorpusPart:
    """One rendered part of the benchmark's corpus."""

    name: str
    soundfont: str
    genres: tuple[str, ...]
    melody_part: int
    variety: str
    augment: bool
    seed: int


def corpus_parts(*, seed: int) -> dict[str, CorpusPart]:
    """The rendered parts: ``train_classic``, ``train_wide``, ``cross``, ``cross_wide``."""
    return {
        "train_classic": CorpusPart("train_classic", TRAIN_SOUNDFONT, TRAIN_GENRES, 0,
                                    "classic", False, seed),
        "train_wide": CorpusPart("train_wide", TRAIN_SOUNDFONT, TRAIN_GENRES, 0,
                                 "wide", True, seed),
        "cross": CorpusPart("cross", CROSS_SOUNDFONT, CROSS_GENRES, 1, "classic", False,
                            seed + 1000),
        # The same held-out pieces realised by the other (wide) arranger.
        "cross_wide": CorpusPart("cross_wide", CROSS_SOUNDFONT, CROSS_GENRES, 1, "wide",
                                 False, seed + 1000),
    }  # fmt: skip


def build_part(
    part: CorpusPart,
    *,
    workdir: Path,
    n: int,
    clip_seconds: float,
    workers: int,
    progress: bool,
) -> Any:
    """Render (or reuse) and embed (or read from cache) one part; return its Catalog.

    Raises
    ------
    DependencyError
        When fluidsynth or the part's soundfont is missing.
    """
    fonts = {p.stem: p for p in default_soundfonts()}
    if part.soundfont not in fonts:
        raise DependencyError(
            f"bench transfer needs the {part.soundfont} soundfont; install it with "
            "`apt-get install fluid-soundfont-gm timgm6mb-soundfont`"
        )
    labels = build_corpus(
        workdir / part.name, n=n, seed=part.seed, workers=workers,
        clip_seconds=(clip_seconds, clip_seconds), soundfonts=[fonts[part.soundfont]],
        progress=progress, cache_dir=workdir / "melodies", genres=part.genres,
        variety=part.variety, melody_part=(part.melody_part, MELODY_PARTS),
        augment=part.augment,
    )  # fmt: skip
    cat, _ = embed_catalog(labels=labels, embedder="musicnn", cache_dir=workdir / "embed_cache",
                           workers=workers, seed=part.seed, progress=progress)  # fmt: skip
    return cat


def _check(n_train: int, n_cross: int, clip_seconds: float) -> None:
    for name, v in (("--n", n_train), ("--n-cross", n_cross)):
        if v < 64:
            raise InputError(f"{name} must be at least 64 clips (16 per mood), got {v}")
    if not 3.0 <= clip_seconds <= 30.0:
        raise InputError(f"--clip-seconds must be 3..30 for bench transfer, got {clip_seconds}")


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def build_all(
    *,
    workdir: str | os.PathLike[str],
    n_train: int = 320,
    n_cross: int = 240,
    clip_seconds: float = 6.0,
    seed: int = 0,
    workers: int | None = None,
    progress: bool = True,
    parts: Sequence[str] = ("train_classic", "train_wide", "cross"),
) -> dict[str, Any]:
    """Render and embed the benchmark's parts; catalogues by part name."""
    _check(n_train, n_cross, clip_seconds)
    spec = corpus_parts(seed=seed)
    out: dict[str, Any] = {}
    for name in parts:
        t = time.perf_counter()
        out[name] = build_part(spec[name], workdir=Path(workdir),
                               n=n_cross if name.startswith("cross") else n_train,
                               clip_seconds=clip_seconds, workers=workers or default_workers(),
                               progress=progress)  # fmt: skip
        out[name].provenance["bench_build_s"] = round(time.perf_counter() - t, 1)
    return out


# --------------------------------------------------------------------------- measuring
#: The engine's own row, then simple baselines (the tagger's mood, ranked by similarity; the
#: seed's neighbours; the class-centroid shift; random).
ENGINE_METHODS = ("query_default", "tagger_filter", "seed_nn", "mood_shift", "random")


def _class_ids(catalog: Any, classes: Sequence[str]) -> np.ndarray:
    lookup = {c: i for i, c in enumerate(classes)}
    values = catalog.labels["mood"].fillna("").astype(str).to_numpy()
    return np.array([lookup.get(v, -1) for v in values], dtype=np.int64)


def _engine(catalog: Any, model: Any, *, seed: int) -> dict[str, dict[str, float]]:
    """Mood / Genre P@1 of the engine and its simple baselines, no label visible to queries."""
    from moodshift.evaluation.evaluate import evaluate_catalog  # pulls in torch: load on use

    rep = evaluate_catalog(catalog, model=model, seed=seed, label_fraction=0.0,
                           methods=ENGINE_METHODS, ks=(1, 10))  # fmt: skip
    return {
        m: {k: round(float(s[k]), 4) for k in ("mood_p@1", "genre_p@1") if k in s}
        for m, s in rep.methods.items()
    }


def _evidence_rows(
    model: Any, fusion: Any, catalog: Any, rows: np.ndarray, *, user_rows: np.ndarray, seed: int
) -> dict[str, dict[str, float]]:
    """Accuracy / ECE / NLL per evidence source and fused on ``rows`` of ``catalog``.

    Sources are computed over the whole catalogue (re-centring sees all of it, as it
    would a user's library); ``user_rows`` carry the few user labels.
    """
    x = catalog.embeddings
    y = _class_ids(catalog, model.classes)
    out: dict[str, dict[str, float]] = {}
    raw = {"tagger": log_softmax(model.tagger.logits(x).astype(np.float64))}
    if fusion.taghead is not None:
        raw["taghead"] = log_softmax(fusion.taghead.logits(x))
    given = np.full(len(y), -1)
    given[user_rows] = y[user_rows]
    lab = labels_logp(x, given, classes=model.classes, seed=seed)
    for name, lp in raw.items():
        out[name] = score_proba(np.exp(lp[rows]), y[rows])
        out[f"{name} (re-centred)"] = score_proba(np.exp(recentre(lp)[rows]), y[rows])
    if lab is not None:
        k = len(user_rows) // len(model.classes)
        out[f"labels ({k}/mood)"] = score_proba(np.exp(lab[rows]), y[rows])
    srcs = fusion.sources(x, tagger=model.tagger, classes=model.classes)
    out["fused"] = score_proba(fusion.combine(srcs)[rows], y[rows])
    if lab is not None:
        out[f"fused + labels ({k}/mood)"] = score_proba(
            fusion.combine({**srcs, "labels": lab}, labels_per_mood=k)[rows], y[rows]
        )
    return out


def _user_rows(catalog: Any, classes: Sequence[str], *, k: int, seed: int) -> np.ndarray:
    """``k`` tracks per mood from the catalogue's training split (a user's few labels)."""
    y = _class_ids(catalog, classes)
    train = catalog.split_indices("train")
    rng = np.random.default_rng([seed, 0x05E2])
    picks = []
    for c in range(len(classes)):
        rows = train[y[train] == c]
        picks.append(rng.choice(rows, size=min(k, len(rows)), replace=False))
    return np.sort(np.concatenate(picks))


#: Labels per mood at which active and random choice are compared.
LABEL_BUDGETS = (5, 10, 20)
#: Random-choice draws averaged.
RANDOM_DRAWS = 3


def _labelling_curve(
    model: Any, fusion: Any, catalog: Any, *, pool: np.ndarray, rows: np.ndarray, seed: int
) -> dict[str, dict[str, float]]:
    """Accuracy on ``rows`` after 5/10/20 labels per mood from ``pool``: active vs random.

    Labels come in rounds of one per mood (``m`` tracks); after each round the
    ``labels`` source is refitted and the fused p(mood | track) recomputed, as
    ``moodshift label`` does. The first round of the active strategy already
    uses the fused evidence without labels.
    """
    x = catalog.embeddings
    y = _class_ids(catalog, model.classes)
    m = len(model.classes)
    srcs = fusion.sources(x, tagger=model.tagger, classes=model.classes)
    base = fusion.combine(srcs)

    def fused(given: np.ndarray) -> np.ndarray:
        lab = labels_logp(x, given, classes=model.classes, seed=seed)
        k = float((given >= 0).sum()) / m
        return base if lab is None else fusion.combine({**srcs, "labels": lab}, labels_per_mood=k)

    def run(pick: Any) -> dict[int, float]:
        given = np.full(len(y), -1)
        proba = base
        out = {}
        for round_ in range(1, max(LABEL_BUDGETS) + 1):
            new = pick(proba, given)
            given[new] = y[new]
            proba = fused(given)
            if round_ in LABEL_BUDGETS:
                out[round_] = float((proba[rows].argmax(1) == y[rows]).mean())
        return out

    outside = np.setdiff1d(np.arange(len(y)), pool)

    def active(proba: np.ndarray, given: np.ndarray) -> np.ndarray:
        taken = np.union1d(outside, np.flatnonzero(given >= 0))
        return choose_to_label(proba, x, k=m, exclude=taken)

    curves = {"active": run(active)}
    draws = []
    for d in range(RANDOM_DRAWS):
        rng = np.random.default_rng([seed, 0xA11, d])

        def random(proba: np.ndarray, given: np.ndarray, rng: Any = rng) -> np.ndarray:
            free = np.setdiff1d(pool, np.flatnonzero(given >= 0))
            return rng.choice(free, size=min(m, len(free)), replace=False)

        draws.append(run(random))
    curves["random"] = {b: float(np.mean([c[b] for c in draws])) for b in LABEL_BUDGETS}
    return {name: {f"{b}/mood": round(v, 4) for b, v in c.items()} for name, c in curves.items()}


def run_transfer_bench(
    *,
    workdir: str | os.PathLike[str] = "bench_out/transfer",
    n_train: int = 320,
    n_cross: int = 240,
    clip_seconds: float = 6.0,
    seed: int = 0,
    workers: int | None = None,
    epochs: int | None = None,
    variants: Sequence[str] = ("classic", "wide", "mixed"),
    floor_model: str | os.PathLike[str] | None = None,
    cross_parts: Sequence[str] = CROSS_PARTS,
    progress: bool = True,
) -> dict[str, Any]:
    """Train on the train part, measure in-domain and on the held-out cross part.

    Parameters
    ----------
    workdir : path
        Rendered parts, embedding cache and trained models (``model_<variant>``).
    n_train, n_cross : int
        Clips of each train part and of the cross part.
    clip_seconds : float
        Length of every clip.
    seed : int
    workers : int, optional
        Rendering and embedding processes (default: all usable cores).
    epochs : int, optional
        Training epochs (default: :class:`~moodshift.training.train.TrainConfig`'s).
    variants : sequence of {"classic", "wide", "mixed"}
        Train parts to compare: the arranger as shipped, the widened arranger with
        audio augmentation, or both renders of the same pieces together.
    floor_model : path, optional
        A model folder (e.g. the demo's) whose tagger is measured on the cross test
        tracks as a reference row (``floor``).
    cross_parts : sequence of {"cross", "cross_wide"}
        Held-out parts measured: the shipped arranger, the wide one.
    progress : bool

    Returns
    -------
    dict
        ``parts`` (what each part holds), and per variant ``tagger``
        (accuracy, ECE in-domain and cross, and the ratio), ``evidence`` (every
        source and the fusion on the cross test tracks), ``engine`` (Mood / Genre
        P@1 in-domain and cross, beside baselines); ``ceiling`` and ``chance``.
    """
    from moodshift.training.fusion import fit_model_evidence  # pulls in torch: load on use
    from moodshift.training.train import TrainConfig, train  # pulls in torch: load on use

    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown or not variants:
        raise InputError(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    unknown = sorted(set(cross_parts) - set(CROSS_PARTS))
    if unknown or not cross_parts:
        raise InputError(f"unknown held-out parts {unknown}; choose from {CROSS_PARTS}")
    workdir = Path(workdir)
    t0 = time.perf_counter()
    trains = {v: ("train_classic", "train_wide") if v == "mixed" else (f"train_{v}",)
              for v in variants}  # fmt: skip
    names = list(dict.fromkeys([*cross_parts, *(p for ps in trains.values() for p in ps)]))
    cats = build_all(workdir=workdir, n_train=n_train, n_cross=n_cross,
                     clip_seconds=clip_seconds, seed=seed, workers=workers,
                     progress=progress, parts=names)  # fmt: skip
    build_s = time.perf_counter() - t0
    crosses = {name: cats[name] for name in cross_parts}
    for cross in crosses.values():
        # A large test share: the ceiling tagger and the user labels take the rest.
        cross.assign_split(seed=seed, fractions=CROSS_FRACTIONS)
    spec = corpus_parts(seed=seed)
    result: dict[str, Any] = {
        "params": {"n_train": n_train, "n_cross": n_cross, "clip_seconds": clip_seconds,
                   "seed": seed, "epochs": epochs, "embedder": "musicnn (MSD, penultimate)"},
        "parts": {n: {"soundfont": spec[n].soundfont, "genres": list(spec[n].genres),
                      "melody_part": f"{spec[n].melody_part} of {MELODY_PARTS}",
                      "variety": spec[n].variety, "augment": spec[n].augment,
                      "clips": len(cats[n])} for n in names},
        "build_s": round(build_s, 1),
    }  # fmt: skip
    classes: list[str] | None = None
    for v in variants:
        t = time.perf_counter()
        if v == "mixed":  # both renders of the same pieces: a classic and a wide version
            cat = concat_catalogs([cats[p] for p in trains[v]], prefixes=("classic_", "wide_"))
        else:
            cat = cats[f"train_{v}"]
        cat.assign_split(seed=seed, fractions=TRAIN_FRACTIONS)
        cfg = TrainConfig(seed=seed, **({"epochs": epochs} if epochs else {}))
        model = train(cat, config=cfg, out=None, progress=progress)
        classes = model.classes
        fusion = fit_model_evidence(model, cat, seed=seed)
        ind_test = cat.split_indices("test")
        y_in = _class_ids(cat, classes)
        tag_in = score_proba(model.tagger.predict_proba(cat.embeddings[ind_test]), y_in[ind_test])
        user_in = _user_rows(cat, classes, k=USER_LABELS_PER_MOOD, seed=seed)
        entry: dict[str, Any] = {
            "tagger": {"in_domain": tag_in},
            "evidence": {"in_domain": _evidence_rows(model, fusion, cat, ind_test,
                                                     user_rows=user_in, seed=seed)},
            "fusion": {"weights": fusion.weights,
                       "taghead_top_tags": fusion.report.get("taghead_top_tags")},
            "engine": {}, "engine_fused": {}, "labelling": {},
        }  # fmt: skip
        for name, cross in crosses.items():
            test = cross.split_indices("test")
            y_x = _class_ids(cross, classes)
            tag_x = score_proba(model.tagger.predict_proba(cross.embeddings[test]), y_x[test])
            entry["tagger"][name] = tag_x
            entry["tagger"][f"{name}_over_in_domain"] = round(
                tag_x["accuracy"] / tag_in["accuracy"], 3
            )
            user = _user_rows(cross, classes, k=USER_LABELS_PER_MOOD, seed=seed)
            entry["evidence"][name] = _evidence_rows(model, fusion, cross, test, user_rows=user,
                                                     seed=seed)  # fmt: skip
            # The cross part's train + val tracks are the library a user labels.
            pool = np.union1d(cross.split_indices("train"), cross.split_indices("val"))
            entry["labelling"][name] = _labelling_curve(model, fusion, cross, pool=pool,
                                                        rows=test, seed=seed)  # fmt: skip
        # The engine evaluates each catalogue's test split, with the tagger, then fused.
        for key, evidence in (("engine", None), ("engine_fused", fusion)):
            model.evidence = evidence
            entry[key]["in_domain"] = _engine(cat, model, seed=seed)
            for name, cross in crosses.items():
                entry[key][name] = _engine(cross, model, seed=seed)
        model.save(workdir / f"model_{v}")
        entry["seconds"] = round(time.perf_counter() - t, 1)
        result[v] = entry
    assert classes is not None
    result["ceiling"], result["chance"] = {}, {}
    floor = None
    if floor_model is not None:
        from moodshift.model.network import MoodshiftModel  # pulls in torch: load on use

        floor = MoodshiftModel.load(floor_model)
        if floor.tagger is None or floor.dim != crosses[cross_parts[0]].dim:
            raise InputError(f"--floor-model {floor_model} has no tagger for this embedder")
        result["floor"] = {"model": str(floor_model)}
    for name, cross in crosses.items():
        # Ceiling: a linear tagger fitted on the part's own labels (train, calibrated on val).
        y_x = _class_ids(cross, classes)
        tr, va, test = (cross.split_indices(p) for p in ("train", "val", "test"))
        ceil = MoodTagger.fit(train_x=cross.embeddings[tr], train_y=y_x[tr], classes=list(classes),
                              val_x=cross.embeddings[va], val_y=y_x[va], seed=seed)  # fmt: skip
        result["ceiling"][name] = score_proba(ceil.predict_proba(cross.embeddings[test]),
                                              y_x[test])  # fmt: skip
        result["ceiling"][name]["fitted_on"] = f"{len(tr)} train + {len(va)} val tracks"
        counts = np.bincount(y_x[test], minlength=len(classes))
        result["chance"][name] = {"accuracy": round(float(counts.max() / counts.sum()), 4)}
        if floor is not None:
            y_f = _class_ids(cross, floor.classes)
            result["floor"][name] = score_proba(floor.tagger.predict_proba(cross.embeddings[test]),
                                                y_f[test])  # fmt: skip
    result["total_s"] = round(time.perf_counter() - t0, 1)
    return result


def transfer_markdown(result: dict[str, Any]) -> str:
    """The benchmark's figures as Markdown tables (docs/transfer.md).

    Parameters
    ----------
    result : dict
        A :func:`run_transfer_bench` result (or the ``transfer`` entry of the CLI's JSON).

    Returns
    -------
    str
    """
    variants = [v for v in VARIANTS if v in result]
    parts = [p for p in CROSS_PARTS if p in result["ceiling"]]

    def f(s: dict[str, Any] | None, k: str) -> str:
        return "-" if s is None or k not in s else f"{s[k]:.3f}"

    def pair(s: dict[str, Any] | None, a: str, b: str) -> str:
        return "-" if s is None else f"{f(s, a)} / {f(s, b)}"

    head = " | ".join(parts)
    lines = ["Mood tagger, accuracy / ECE (the ratio is cross accuracy over in-domain):", "",
             f"| trained on | in-domain | {head} | " + " | ".join(f"{p} / in-domain"
                                                                for p in parts) + " |",
             "|---|---|" + "---|" * (2 * len(parts))]  # fmt: skip
    for v in variants:
        t = result[v]["tagger"]
        cells = [pair(t["in_domain"], "accuracy", "ece")]
        cells += [pair(t[p], "accuracy", "ece") for p in parts]
        cells += [f"{t[f'{p}_over_in_domain']:.2f}" for p in parts]
        lines.append(f"| train_{v} | " + " | ".join(cells) + " |")
    refs = [("ceiling: linear tagger on the part's own labels", result["ceiling"]),
            ("chance (majority mood)", result["chance"])]  # fmt: skip
    if "floor" in result:
        refs.insert(1, ("demo model's tagger (saw all genres and soundfonts)", result["floor"]))
    for label, ref in refs:
        cells = [pair(ref.get(p), "accuracy", "ece") for p in parts]
        lines.append(f"| {label} | - | " + " | ".join(cells) + " |" + " - |" * len(parts))
    for v in variants:
        ev = result[v]["evidence"]
        lines += ["", f"Evidence sources, trained on `train_{v}` (accuracy / ECE):", "",
                  f"| source | in-domain | {head} |",
                  "|---|---|" + "---|" * len(parts)]  # fmt: skip
        for name in ev[parts[0]]:
            cells = [pair(ev[d].get(name), "accuracy", "ece") for d in ("in_domain", *parts)]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Query engine, no label visible to queries (Mood P@1 / Genre P@1):", "",
              f"| trained on | method | evidence | in-domain | {head} |",
              "|---|---|---|---|" + "---|" * len(parts)]  # fmt: skip
    for v in variants:
        for key, label in (("engine", "tagger"), ("engine_fused", "fused")):
            for method in result[v][key]["in_domain"]:
                if key == "engine_fused" and method != "query_default":
                    continue
                cells = [pair(result[v][key][d].get(method), "mood_p@1", "genre_p@1")
                         for d in ("in_domain", *parts)]  # fmt: skip
                lines.append(f"| train_{v} | {method} | {label} | " + " | ".join(cells) + " |")
    budgets = " | ".join(f"{b}/mood" for b in LABEL_BUDGETS)
    lines += ["", "Labels chosen in the held-out part (fused + labels, accuracy on its test "
              "tracks):", "", f"| trained on | part | choice | {budgets} |",
              "|---|---|---|" + "---|" * len(LABEL_BUDGETS)]  # fmt: skip
    for v in variants:
        for p in parts:
            for how, curve in result[v]["labelling"][p].items():
                vals = " | ".join(f"{curve[f'{b}/mood']:.3f}" for b in LABEL_BUDGETS)
                lines.append(f"| train_{v} | {p} | {how} | {vals} |")
    return "\n".join(lines) + "\n"
