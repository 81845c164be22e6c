"""``moodshift``: one command, a subcommand per stage.

    moodshift import   --embeddings emb.npy --labels tracks.csv --out CATALOG
    moodshift corpus   --out DIR --n N                (built-in rendered audio)
    moodshift embed    --labels DIR/labels.csv --embedder musicnn --out CATALOG
    moodshift embed    --audio-dir ~/Music --out CATALOG      (tags, incremental)
    moodshift train    --catalog CATALOG --out MODEL
    moodshift tune     --catalog CATALOG --out MODEL
    moodshift evaluate --catalog CATALOG --model MODEL [--json F] [--plots DIR] [--sweep]
    moodshift query    --catalog CATALOG --model MODEL --track T --mood happy
    moodshift index    --catalog CATALOG
    moodshift serve    --catalog CATALOG --model MODEL
    moodshift bench    selfjoin|train|serve|all
    moodshift bench    embed [--audio-dir ~/Music]      (files/s and x real time per embedder)
    moodshift demo     [--out DIR]

Errors the user can fix exit with code 2 and a one-line message, no traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from moodshift.errors import InputError, MoodshiftError

Handler = Callable[[argparse.Namespace], int | None]


def _catalog(path: str) -> Any:
    from moodshift.data.catalog import Catalog

    return Catalog.load(path)


def _model_path(path: str | None, *, catalog: Any) -> str:
    """``--model``, else the default model shipped with moodshift (said on stderr).

    Refuses, with the fix, a catalogue embedded otherwise than the default model.
    """
    if path:
        return path
    from moodshift.model.default import check_default_fits, default_model_dir, trained_on
    from moodshift.model.network import MoodshiftModel

    folder = default_model_dir()
    check_default_fits(catalog, MoodshiftModel.load(folder))
    what = trained_on(folder).get("summary", "")
    print(f"model: the default model {folder}" + (f" ({what})" if what else ""), file=sys.stderr)
    return str(folder)


# ---------------------------------------------------------------------- import
def cmd_import(a: argparse.Namespace) -> None:
    from moodshift.data.catalog import import_catalog

    embedder = {"name": a.embedder_name, "version": a.embedder_version}
    cat = import_catalog(
        labels=a.labels, embeddings=a.embeddings, mtg_jamendo=a.mtg_jamendo,
        attribute=a.attribute, embedder=embedder, seed=a.seed,
        embedding_column=a.embedding_column,
    )  # fmt: skip
    if a.labels and not a.mtg_jamendo:
        cat.root = Path(a.labels).resolve().parent
    cat.save(a.out)
    counts = cat.labels["split"].value_counts().to_dict()
    print(f"catalogue {a.out}: {len(cat)} tracks, {cat.dim}-d, split {counts}")
    _print_label_summary(cat, a.attribute)
    skipped = cat.provenance.get("skipped_on_import")
    if skipped:
        print(f"skipped on import: {skipped}")


def _print_label_summary(cat: Any, attribute: str) -> None:
    n = cat.label_summary(attribute)
    print(
        f"{attribute}: {n['labelled']} tracks labelled, {n['unlabelled']} unlabelled"
        + (" (kept: retrievable, judged by the model's tagger)" if n["unlabelled"] else "")
    )


# ---------------------------------------------------------------------- corpus
def cmd_corpus(a: argparse.Namespace) -> None:
    from moodshift.audio.corpus import build_corpus

    path = build_corpus(a.out, n=a.n, seed=a.seed, workers=a.workers, **_clip_seconds(a))
    print(f"corpus labels: {path}")


def _clip_seconds(a: argparse.Namespace) -> dict[str, tuple[float, float]]:
    """``--clip-seconds MIN MAX`` as a keyword argument (none when not given)."""
    return {"clip_seconds": (a.clip_seconds[0], a.clip_seconds[1])} if a.clip_seconds else {}


# ---------------------------------------------------------------------- embed
def cmd_embed(a: argparse.Namespace) -> None:
    if a.audio_dir:
        return cmd_embed_library(a)
    from moodshift.audio.embed import embed_catalog

    cat, report = embed_catalog(
        labels=a.labels, audio_dir=a.audio_dir, embedder=a.embedder, cache_dir=a.cache_dir,
        workers=a.workers, attribute=a.attribute, seed=a.seed, engine=a.engine,
        ray_address=a.ray_address,
    )  # fmt: skip
    cat.save(a.out)
    print(f"catalogue {a.out}: {len(cat)} tracks embedded with {cat.provenance.get('name')} "
          f"({cat.dim}-d); {len(report)} files skipped")  # fmt: skip
    _print_label_summary(cat, a.attribute)
    for path, reason in report[:20]:
        print(f"  skipped {path}: {reason}")


def cmd_embed_library(a: argparse.Namespace) -> None:
    from moodshift.audio.library import embed_library

    if a.engine != "local":
        raise InputError("--engine ray embeds a --labels CSV, not a folder; drop --audio-dir.")
    labels = a.labels
    if labels is None and (Path(a.audio_dir).expanduser() / "labels.csv").is_file():
        labels = str(Path(a.audio_dir).expanduser() / "labels.csv")
        print(f"labels from {labels}")
    cat, report = embed_library(
        audio_dir=a.audio_dir, out=a.out, labels=labels, embedder=a.embedder,
        cache_dir=a.cache_dir, workers=a.workers, attribute=a.attribute, seed=a.seed,
    )  # fmt: skip
    print(f"catalogue {a.out}: {len(cat)} tracks embedded with {cat.provenance.get('name')} "
          f"({cat.dim}-d)")  # fmt: skip
    print(report.summary())
    for path, reason in report.failed[:20]:
        print(f"  unreadable {path}: {reason}")


# ---------------------------------------------------------------------- train
def _config_from_args(a: argparse.Namespace) -> Any:
    from moodshift.training.train import TrainConfig

    kwargs: dict[str, Any] = {"attribute": a.attribute, "seed": a.seed, "device": a.device}
    for name in ("epochs", "lr", "batch_size", "k", "margin", "k_fraction", "mood_target",
                 "patience", "weight_decay", "mining"):  # fmt: skip
        value = getattr(a, name, None)
        if value is not None:
            kwargs[name] = value
    if a.losses:
        kwargs["losses"] = tuple(s.strip() for s in a.losses.split(",") if s.strip())
    if a.loss_weights:
        kwargs["loss_weights"] = _parse_weights(a.loss_weights)
    if a.margin_mode:
        kwargs["relative_margin"] = a.margin_mode == "relative"
    if a.bce_on:
        kwargs["bce_on"] = a.bce_on
    if a.residual:
        kwargs["residual"] = True
    return TrainConfig(**kwargs)


def _parse_weights(text: str) -> dict[str, float]:
    out = {}
    for part in text.split(","):
        if not part.strip():
            continue
        name, _, value = part.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise InputError(f"--loss-weights wants name=value pairs, got {part!r}") from None
    return out


def cmd_train(a: argparse.Namespace) -> None:
    from moodshift.training.train import train

    cat = _catalog(a.catalog)
    if a.attribute not in cat.labels.columns:
        from moodshift.training.fusion import add_tag_attribute

        classes = add_tag_attribute(cat, a.attribute)
        print(f"{a.attribute}: from the embedder's tag head ({' / '.join(classes)}: the top "
              "and bottom third of its probability)")  # fmt: skip
    cfg = _config_from_args(a)
    model = train(cat, config=cfg, out=a.out, resume=a.resume, engine=a.engine,
                  ray_address=a.ray_address, threads=a.threads)  # fmt: skip
    if a.fuse_evidence:
        from moodshift.training.fusion import fit_model_evidence

        model.evidence = fit_model_evidence(model, cat, seed=cfg.seed)
        model.save(a.out)
        print(f"evidence fusion: {', '.join(sorted(model.evidence.weights))} (docs/transfer.md)")
    t = model.config.get("training", {})
    print(f"model {a.out}: best epoch {t.get('best_epoch')}, "
          f"validation score {t.get('best_val_primary'):.3f} (K={t.get('k')})")  # fmt: skip


def cmd_tune(a: argparse.Namespace) -> None:
    from moodshift.training.tune import tune

    tune(catalog=_catalog(a.catalog), out=a.out, budget_s=a.budget, epochs=a.epochs,
         mood_target=a.mood_target, seed=a.seed, resume=not a.restart)  # fmt: skip


# ---------------------------------------------------------------------- evaluate
def cmd_evaluate(a: argparse.Namespace) -> None:
    from moodshift.evaluation.evaluate import evaluate_catalog, format_table
    from moodshift.model.network import MoodshiftModel

    cat = _catalog(a.catalog)
    model = MoodshiftModel.load(a.model) if a.model else None
    report = evaluate_catalog(cat, model=model, part=a.part, big_k=a.oracle_k, seed=a.seed,
                              max_seeds=a.max_seeds, label_fraction=a.label_fraction,
                              evidence=a.evidence)  # fmt: skip
    report.catalog = str(a.catalog)
    report.model = str(a.model or "")
    if a.sweep:
        from moodshift.evaluation.sweep import run_sweep

        report.extras["sweep"] = run_sweep(cat, model=model, part=a.part, seed=a.seed,
                                           max_seeds=a.max_seeds,
                                           label_fraction=a.label_fraction)  # fmt: skip
    print(format_table(report))
    if a.json:
        from moodshift._atomic import write_text

        write_text(a.json, json.dumps(report.to_json(), indent=2))
        print(f"wrote {a.json}")
    if a.plots:
        from moodshift.evaluation.plots import plot_report

        for p in plot_report(report, catalog=cat, model=model, out_dir=a.plots):
            print(f"wrote {p}")


# ---------------------------------------------------------------------- query
def cmd_query(a: argparse.Namespace) -> None:
    from moodshift.model.network import MoodshiftModel
    from moodshift.retrieval.search import Searcher

    cat = _catalog(a.catalog)
    model = MoodshiftModel.load(_model_path(a.model, catalog=cat))
    model.check_catalog(cat)  # the same start-up refusals as serve and evaluate
    searcher = Searcher(catalog=cat, model=model)
    filters = _parse_filters(a.filter)
    results, _ = searcher.query(track_id=a.track, target_mood=a.mood, k=a.k,
                                strength=a.strength, filters=filters, evidence=a.evidence,
                                max_per_artist=a.max_per_artist)  # fmt: skip
    _, _, src, predicted = searcher.seed(track_id=a.track)
    source = {"mood": searcher.model.classes[src], "mood_source": "predicted" if predicted
              else "label"}  # fmt: skip
    if a.json:
        print(json.dumps({"track_id": a.track, "source": source, "target_mood": a.mood,
                          "strength": a.strength, "evidence": a.evidence,
                          "results": [r.__dict__ for r in results]}, indent=2))  # fmt: skip
        return
    seed = cat.labels.iloc[cat.index_of(a.track)]
    print(f"seed {a.track}: " + ", ".join(f"{c}={seed[c]}" for c in cat.label_columns()))
    print(f"   source mood {source['mood']} ({source['mood_source']})")
    print(f"-> {a.mood} (evidence {a.evidence})")
    for r in results:
        labels = ", ".join(f"{k}={'|'.join(v) if isinstance(v, list) else v}"
                           for k, v in r.labels.items())  # fmt: skip
        why = (
            "label"
            if r.mood_source == "label"
            else (f"predicted p={r.mood_probability:.2f}" if r.mood_source else "-")
        )
        print(f"{r.rank:3d}. {r.track_id}  {r.score:.3f}  [{r.mood}: {why}]  {labels}")


def cmd_playlist(a: argparse.Namespace) -> None:
    from moodshift.model.network import MoodshiftModel
    from moodshift.retrieval.playlist import write_m3u
    from moodshift.retrieval.search import Searcher

    cat = _catalog(a.catalog)
    searcher = Searcher(catalog=cat, model=MoodshiftModel.load(_model_path(a.model, catalog=cat)))
    cap = None if a.max_per_artist == 0 else a.max_per_artist
    tracks = searcher.playlist(track_id=a.track, to=a.to, length=a.length, via=a.via,
                               max_per_artist=cap)  # fmt: skip
    if a.m3u:
        write_m3u(a.m3u, tracks)
    if a.json:
        print(json.dumps({"tracks": tracks}, indent=2))
        return
    for i, t in enumerate(tracks, 1):
        why = "label" if t["mood_source"] == "label" else f"predicted {t['mood_probability']:.2f}"
        print(
            f"{i:3d}. {t['track_id']}  {t['artist'] or '':<18} {t['mood']} ({why})  "
            f"strength {t['strength']:.2f}  p({t['toward']}) {t['p_target']:.2f}"
        )
    if a.m3u:
        print(f"wrote {a.m3u}")


def _parse_filters(items: list[str] | None) -> dict[str, str] | None:
    if not items:
        return None
    out = {}
    for item in items:
        col, sep, value = item.partition("=")
        if not sep or not col.strip() or not value.strip():
            raise InputError(f"--filter wants label=value (e.g. genre=rock), got {item!r}")
        out[col.strip()] = value.strip()
    return out


# ---------------------------------------------------------------------- label
def cmd_label(a: argparse.Namespace) -> None:
    """Ask the user for the moods of the tracks whose labels help most (active learning)."""
    import numpy as np

    from moodshift.model.evidence import choose_to_label
    from moodshift.model.network import MoodshiftModel

    if a.n < 1:
        raise InputError(f"--n must be at least 1, got {a.n}")
    cat = _catalog(a.catalog)
    model = MoodshiftModel.load(_model_path(a.model, catalog=cat))
    model.check_catalog(cat)
    attr, classes = model.attribute, model.classes
    if attr not in cat.labels.columns:
        cat.labels[attr] = ""
    lookup = {c.lower(): i for i, c in enumerate(classes)}
    values = cat.labels[attr].fillna("").astype(str).str.strip().str.lower()
    labels = np.array([lookup.get(v, -1) for v in values], dtype=np.int64)
    skipped: set[int] = set()
    done: list[tuple[int, str]] = []
    print(f"{attr}s: {', '.join(classes)} (Enter skips, q stops)")
    stop = False
    while len(done) < a.n and not stop:
        # The evidence is refitted after every round: each answer changes the next question.
        proba = model.mood_proba(cat.embeddings, labels=labels)
        taken = np.union1d(np.flatnonzero(labels >= 0), np.fromiter(skipped, dtype=np.int64))
        rows = choose_to_label(proba, cat.embeddings, k=min(len(classes), a.n - len(done)),
                               exclude=taken)  # fmt: skip
        if not len(rows):
            break
        for r in rows:
            answer = _ask_label(cat, int(r), proba[r], classes, player=a.player)
            if answer is None:
                stop = True
                break
            if answer == "":
                skipped.add(int(r))
                continue
            labels[r] = lookup[answer.lower()]
            cat.labels.loc[cat.labels.index[r], attr] = classes[labels[r]]
            done.append((int(r), classes[labels[r]]))
        if done:
            cat.save(a.catalog)  # atomic: a crash keeps the previous catalogue
    if a.write_tags:
        from moodshift.audio.library import write_mood_tag

        for r, mood in done:
            path = cat.audio_path(r)
            if path is None:
                print(f"warning: {cat.labels['track_id'].iat[r]} has no audio file to tag")
                continue
            write_mood_tag(path, mood)
    print(f"labelled {len(done)} tracks in {a.catalog}" + (" and their files" if a.write_tags
          and done else "") + "; p(mood | track) now learns from them")  # fmt: skip
    from moodshift.retrieval.index import default_index_dir

    if done and (default_index_dir(a.catalog) / "index.json").is_file():
        # The index fingerprints the labels: serving would refuse it as stale.
        print(f"rebuild the catalogue's index: `moodshift index --catalog {a.catalog}`")


def _ask_label(
    cat: Any, row: int, p: Any, classes: list[str], *, player: str | None = None
) -> str | None:
    """One track's mood from the user: a class name (a prefix will do), "" to skip, None to stop.

    With ``player`` (a command; the file's path is appended) the track plays while asked.
    """
    import shlex
    import subprocess

    import pandas as pd

    labels = {k: str(v) for k, v in cat.labels.iloc[row].items() if pd.notna(v) and str(v)}
    name = " - ".join(labels[c] for c in ("artist", "title") if c in labels)
    top = int(p.argmax())
    path = cat.audio_path(row)
    print(f"\n{labels['track_id']}  {name}\n  {path or '(no audio file)'}\n"
          f"  the model thinks: {classes[top]} (p={float(p[top]):.2f})")  # fmt: skip
    playing = None
    if player and path is not None:
        try:
            quiet = subprocess.DEVNULL
            playing = subprocess.Popen([*shlex.split(player), str(path)], stdout=quiet,
                                       stderr=quiet)  # fmt: skip
        except OSError as exc:
            raise InputError(f"--player {player!r} cannot run ({exc}); give a command "
                             "such as 'ffplay -nodisp -autoexit' or 'mpv --no-video'"
                             ) from None  # fmt: skip
    try:
        while True:
            try:
                text = input("  mood? ").strip().lower()
            except EOFError:
                return None
            if text in ("q", "quit"):
                return None
            if text in ("", "s", "skip"):
                return ""
            hits = [c for c in classes if c.lower().startswith(text)]
            if len(hits) == 1:
                return hits[0]
            print(f"  answer one of {', '.join(classes)} (Enter skips, q stops)")
    finally:
        if playing is not None and playing.poll() is None:
            playing.terminate()
            playing.wait(timeout=5)


# ---------------------------------------------------------------------- index / serve
def cmd_index(a: argparse.Namespace) -> None:
    from moodshift.retrieval.index import build_catalog_index

    model = None
    if a.model:
        from moodshift.model.network import MoodshiftModel

        model = MoodshiftModel.load(a.model)
    info = build_catalog_index(a.catalog, kind=a.kind, out=a.out, model=model)
    print(json.dumps(info, indent=2, default=str))


def cmd_serve(a: argparse.Namespace) -> None:
    from moodshift.serving.launch import serve

    model = a.model or _model_path(None, catalog=_catalog(a.catalog))
    serve(catalog=a.catalog, model=model, host=a.host, port=a.port, index=a.index,
          workers=a.workers, max_k=a.max_k, allowed_hosts=_split(a.allowed_hosts),
          cors_origins=_split(a.cors_origin), audio_roots=a.audio_root or ())  # fmt: skip


def _split(values: Sequence[str] | None) -> list[str]:
    """Comma lists, possibly given several times, as one list."""
    return [v.strip() for text in values or () for v in text.split(",") if v.strip()]


# ---------------------------------------------------------------------- bench / demo
def cmd_bench(a: argparse.Namespace) -> None:
    if a.what == "soak":
        from moodshift.bench.soak import format_soak, run_soak

        counts = _client_counts(a.clients, default=(32,))
        if len(counts) != 1:
            raise InputError(f"bench soak runs one client count; got --clients {a.clients}")
        result = run_soak(n=a.n or 5000, dim=a.dim or 64, clients=counts[0],
                          duration_s=a.duration or 60.0, seed=a.seed)  # fmt: skip
        text = json.dumps(result, indent=2, default=str)
        print(format_soak(result))
    else:
        if a.what == "embed":
            result = _bench_record("embed", lambda: _bench_embed(a))
        elif a.what == "serve":
            result = _bench_record("serve", lambda: _bench_serve(a))
        elif a.what == "transfer":
            from moodshift.bench.transfer import run_transfer_bench

            result = _bench_record("transfer", lambda: run_transfer_bench(
                workdir=a.workdir or "bench_out/transfer", n_train=a.n or 320, n_cross=a.n_cross,
                seed=a.seed, workers=a.workers, epochs=a.train_epochs_transfer,
                floor_model=a.floor_model))  # fmt: skip
        else:
            from moodshift.bench.core import run_bench

            result = run_bench(a.what, n=a.n or 200_000, dim=a.dim or 512, k=a.k,
                               classes=a.classes, seed=a.seed, train_n=a.train_n,
                               train_epochs=a.train_epochs, query_kind=a.index_kind)  # fmt: skip
        text = json.dumps(result, indent=2, default=str)
        print(text)
    if a.json:
        from moodshift._atomic import write_text

        write_text(a.json, text)


def _bench_record(what: str, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """One benchmark's figures with the machine facts around them, as ``run_bench`` writes."""
    from moodshift.bench.core import NOTE, _load_avg, machine_info

    result: dict[str, Any] = {"what": what, "machine": machine_info(), "note": NOTE}
    result[what] = run()
    result["machine"]["load_avg_after"] = _load_avg()
    return result


def _bench_serve(a: argparse.Namespace) -> dict[str, Any]:
    from moodshift.bench.serve import run_serve_bench

    return run_serve_bench(
        n=a.n or 100_000, dim=a.dim or 256, seed=a.seed, workers=a.workers or 1,
        workdir=a.workdir, clients=_client_counts(a.clients, default=(1, 8, 32)),
        requests=a.requests, duration_s=a.duration or 15.0, kind=a.index_kind,
        client=a.load_client, filter_fraction=a.filter_fraction,
    )  # fmt: skip


def _client_counts(text: str | None, *, default: tuple[int, ...]) -> list[int]:
    """``--clients`` as a list of positive counts ("1,8,32"); the default when absent."""
    if not text:
        return list(default)
    try:
        counts = [int(c) for c in text.split(",") if c.strip()]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise InputError(f"--clients takes positive counts separated by commas (e.g. 1,8,32); "
                         f"got {text!r}")  # fmt: skip
    return counts


def _bench_embed(a: argparse.Namespace) -> dict[str, Any]:
    from moodshift.bench.embed import bench_embed

    return bench_embed(
        audio_dir=a.audio_dir, n_files=a.files, clip_seconds=a.clip_seconds,
        embedders=[e.strip() for e in a.embedders.split(",") if e.strip()],
        workers=a.workers, seed=a.seed,
    )  # fmt: skip


def cmd_demo(a: argparse.Namespace) -> None:
    from moodshift.demo import run_demo

    run_demo(out=a.out, n=a.n, embedders=a.embedders.split(","), seed=a.seed,
             epochs=a.epochs, **_clip_seconds(a))  # fmt: skip


# ---------------------------------------------------------------------- parser
def _train_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--attribute", default="mood", help="label column to transform")
    p.add_argument("--losses", help="comma list of cos,triplet,cosbce (default: chosen config)")
    p.add_argument("--loss-weights", help="e.g. cos=1,triplet=0.5")
    p.add_argument("--margin", type=float, help="triplet margin (absolute, or gamma if relative)")
    p.add_argument("--margin-mode", choices=["fixed", "relative"])
    p.add_argument("--bce-on", choices=["target", "seed"])
    p.add_argument(
        "--k", type=int, help="proxy-target list length K (default 1; the paper uses 100)"
    )
    p.add_argument("--k-fraction", type=float, help="K as a fraction of the smallest class")
    p.add_argument("--epochs", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--mood-target", type=float, help="validation mood success to reach")
    p.add_argument("--patience", type=int, help="stop after this many epochs without gain")
    p.add_argument("--residual", action="store_true", help="predict a residual on the seed")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from <out>.ckpt")
    p.add_argument("--mining", choices=["auto", "exact", "ivf", "ivf-faiss", "hnsw", "projected"],
                   help="proxy-target self-join: exact, or approximate (IVF, FAISS, or in 64 "
                        "principal directions)")  # fmt: skip
    _engine_options(p)


def _clip_option(p: argparse.ArgumentParser, *, default: str) -> None:
    p.add_argument("--clip-seconds", type=float, nargs=2, metavar=("MIN", "MAX"),
                   help=f"range of the rendered clips' lengths (default {default})")  # fmt: skip


def _engine_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="run the heavy step here or on Ray (moodshift[ray])")  # fmt: skip
    p.add_argument("--ray-address", help="existing Ray cluster (default: start a local one)")


def build_parser() -> argparse.ArgumentParser:
    """The ``moodshift`` argument parser, one subparser per subcommand (docs/cli.md).

    Returns
    -------
    argparse.ArgumentParser
    """
    parser = argparse.ArgumentParser(
        prog="moodshift", description="Controllable music retrieval: like this track, but <mood>."
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("import", help="make a catalogue from embeddings + labels")
    p.add_argument("--embeddings", help=".npy of shape (n, d)")
    p.add_argument("--labels", help="CSV or Parquet: track_id, mood, genre, instruments[, artist]")
    p.add_argument("--mtg-jamendo", help="folder with MTG-Jamendo autotagging_*.tsv files")
    p.add_argument("--embedding-column", default="embedding", help="Parquet list column")
    p.add_argument("--embedder-name", default="unknown", help="what made the embeddings")
    p.add_argument("--embedder-version", default="unknown")
    p.add_argument("--attribute", default="mood", help="stratify the split by this column")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("corpus", help="render the built-in labelled audio corpus")
    p.add_argument("--out", required=True)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int)
    _clip_option(p, default="10 30")
    p.set_defaults(func=cmd_corpus)

    p = sub.add_parser("embed", help="embed audio files (a music folder or a CSV) into a catalogue")
    p.add_argument("--labels", help="labels CSV with an audio_path column; with --audio-dir: "
                   "rows that add or override tags, by audio_path or track_id")  # fmt: skip
    p.add_argument("--audio-dir", help="a music folder, walked recursively: tags give the labels "
                   "(mood may be missing); re-runs embed only new or changed files")  # fmt: skip
    p.add_argument("--embedder", default="musicnn")
    p.add_argument("--cache-dir")
    p.add_argument("--workers", type=int)
    p.add_argument("--attribute", default="mood")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    _engine_options(p)
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("train", help="train the mood transformation")
    p.add_argument("--catalog", required=True)
    p.add_argument("--out", required=True)
    _train_options(p)
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads (default: the cores other processes leave free, re-checked "
                        "every epoch; or MOODSHIFT_THREADS)")  # fmt: skip
    p.add_argument("--fuse-evidence", action="store_true",
                   help="also fit the evidence fusion: tagger, the embedder's tag head, the "
                   "catalogue's labels, re-centred (docs/transfer.md)")  # fmt: skip
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("tune", help="choose the training configuration on the validation split")
    p.add_argument("--catalog", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--budget", type=float, default=1800.0, help="seconds for the whole search")
    p.add_argument("--epochs", type=int)
    p.add_argument("--mood-target", type=float, default=0.9)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--restart", action="store_true", help="ignore an earlier partial search")
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("evaluate", help="the model and every baseline on the test split")
    p.add_argument("--catalog", required=True)
    p.add_argument("--model")
    p.add_argument("--json")
    p.add_argument("--plots")
    p.add_argument("--sweep", action="store_true", help="trade-off curves of every method")
    p.add_argument("--part", default="test", choices=["train", "val", "test"])
    p.add_argument("--oracle-k", type=int, default=100)
    p.add_argument("--max-seeds", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--label-fraction", type=float, default=1.0,
                   help="fraction of the test tracks whose mood labels queries may read "
                        "(scoring always uses every label; default 1)")  # fmt: skip
    p.add_argument(
        "--evidence",
        default="auto",
        choices=["auto", "labels", "probe", "none"],
        help="mood evidence of the query_default row (default auto)",
    )
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("query", help="like this track, but <mood>")
    p.add_argument("--catalog", required=True)
    p.add_argument("--model", help="model folder (default: the model shipped with moodshift)")
    p.add_argument("--track", required=True)
    p.add_argument("--mood", required=True)
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--strength", type=float,
                   help="0 = the seed's neighbours, 1 = full transform (default: the model's, "
                        "chosen on validation)")  # fmt: skip
    p.add_argument("--filter", action="append", help="label=value, e.g. genre=rock")
    p.add_argument("--evidence", default="auto", choices=["auto", "labels", "probe", "none"],
                   help="mood evidence: labels where known and the tagger elsewhere (auto), "
                        "labels only, the tagger only (probe), or none (default auto)")  # fmt: skip
    p.add_argument("--max-per-artist", type=int, help="at most this many results per artist")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_query)

    p = sub.add_parser("playlist", help="a mood-journey playlist from a seed to a target mood")
    p.add_argument("--catalog", required=True)
    p.add_argument("--model", help="model folder (default: the model shipped with moodshift)")
    p.add_argument("--track", required=True, help="seed track id (never in the list)")
    p.add_argument("--to", required=True, help="target mood")
    p.add_argument("--via", help="a mood to pass through half-way")
    p.add_argument("--length", type=int, default=12)
    p.add_argument("--max-per-artist", type=int, default=1, help="0 = no cap (default 1)")
    p.add_argument("--m3u", help="write an M3U8 playlist of the audio files")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_playlist)

    p = sub.add_parser("label", help="teach it your moods: label the tracks that help most")
    p.add_argument("--catalog", required=True)
    p.add_argument("--model", help="model folder (default: the model shipped with moodshift)")
    p.add_argument("--n", type=int, default=8, help="tracks to label (default 8)")
    p.add_argument("--player", help="play each track while asking, e.g. 'ffplay -nodisp -autoexit'")
    p.add_argument("--write-tags", action="store_true",
                   help="also write each mood into the file's mood tag")  # fmt: skip
    p.set_defaults(func=cmd_label)

    p = sub.add_parser("index", help="build the FAISS index of a catalogue")
    p.add_argument("--catalog", required=True)
    p.add_argument("--kind", default="auto", help="auto, flat, hnsw or ivf")
    p.add_argument("--model", help="also store this model's tagger p(mood | track) per track")
    p.add_argument("--out")
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("serve", help="HTTP API and web page")
    p.add_argument("--catalog", required=True)
    p.add_argument("--model", help="model folder (default: the model shipped with moodshift)")
    p.add_argument("--index")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", type=int, default=1, help="server processes")
    p.add_argument("--max-k", type=int, default=100, help="largest k a request may ask for")
    p.add_argument("--allowed-hosts", action="append", metavar="HOSTS",
                   help="Host header names to answer, comma-separated, '*' for any "
                        "(default: loopback names and --host)")  # fmt: skip
    p.add_argument(
        "--cors-origin",
        action="append",
        metavar="ORIGIN",
        help="browser origin allowed to call the API (CORS is off by default)",
    )
    p.add_argument(
        "--audio-root",
        action="append",
        metavar="FOLDER",
        help="further folder audio may be served from (default: the catalogue's)",
    )
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("bench", help="benchmarks (they measure; they are not tests)")
    p.add_argument(
        "what",
        nargs="?",
        default="selfjoin",
        help="selfjoin, approx, train, embed, query, serve, mining, all, soak, or transfer",
    )
    p.add_argument("--n", type=int, help="tracks (default 200,000; serve: 100,000; soak: 5,000)")
    p.add_argument("--dim", type=int, help="dimensions (default 512; serve: 256; soak: 64)")
    p.add_argument("--clients", help="concurrent clients: serve, a comma list (default 1,8,32); "
                   "soak, one count (default 32)")  # fmt: skip
    p.add_argument("--duration", type=float, help="soak: seconds of load (default 60); serve: "
                   "the most seconds per client count (default 15)")  # fmt: skip
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--classes", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-n", type=int, default=20_000, help="tracks of bench train/mining")
    p.add_argument("--train-epochs", type=int, default=3, help="epochs of bench train")
    p.add_argument("--json")
    g = p.add_argument_group("bench embed")
    g.add_argument("--audio-dir", help="measure on this music folder (default: make a library)")
    g.add_argument("--files", type=int, default=12, help="files in the made library")
    g.add_argument("--clip-seconds", type=float, default=30.0, help="length of each made file")
    g.add_argument("--embedders", default="features,musicnn")
    g.add_argument(
        "--workers",
        type=int,
        help="embedding worker processes; bench serve: server processes (default 1)",
    )
    g = p.add_argument_group("bench transfer")
    g.add_argument("--train-epochs-transfer", type=int, dest="train_epochs_transfer",
                   help="epochs of each model (default: train's); --n: train-part clips "
                   "(default 320); --workdir: renders and cache "
                   "(default bench_out/transfer)")  # fmt: skip
    g.add_argument("--floor-model", help="also measure this model's tagger on the held-out part")
    g.add_argument("--n-cross", type=int, default=240, help="held-out part's clips (default 240)")
    g = p.add_argument_group("bench query and serve")
    g.add_argument("--index-kind", default="auto", choices=("auto", "flat", "hnsw", "ivf"),
                   help="index timed (auto: what `moodshift index` builds)")  # fmt: skip
    g = p.add_argument_group("bench serve")
    g.add_argument("--workdir", help="keep (and reuse) the catalogue, model and index here")
    g.add_argument("--requests", type=int, default=3000,
                   help="the most requests per client count (default 3000)")  # fmt: skip
    g.add_argument("--filter-fraction", type=float, default=0.2,
                   help="share of queries with a genre filter (default 0.2)")  # fmt: skip
    g.add_argument("--load-client", default="raw", choices=("raw", "httpx"),
                   help="load generator: a small keep-alive loop (raw) or httpx")  # fmt: skip
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("demo", help="corpus -> embed -> train -> evaluate on built-in audio")
    p.add_argument("--out", default="demo_out")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--embedders", default="musicnn,features")
    p.add_argument("--epochs", type=int)
    p.add_argument("--seed", type=int, default=0)
    _clip_option(p, default="10 12")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; errors the user can fix print one line and return 2.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments after ``moodshift`` (default ``sys.argv[1:]``).

    Returns
    -------
    int
        0 on success, 2 for a :class:`MoodshiftError`, 130 when interrupted.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")  # fmt: skip
    warnings.simplefilter("default")
    warnings.formatwarning = lambda msg, cat, *_: f"warning: {msg}\n"  # type: ignore[assignment]
    try:
        rc = args.func(args)
    except MoodshiftError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
