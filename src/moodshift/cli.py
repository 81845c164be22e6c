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
    moodshift serve    --catalog CATALOG [--model MODEL]   (default: the shipped model)
    moodshift label    --catalog CATALOG [--write-tags]     (teach it your moods)
    moodshift bench    selfjoin|train|serve|all
    moodshift bench    embed [--audio-dir ~/Music]      (files/s and x real time per embedder)
    moodshift demo     [--out DIR]

Errors the user can fix exit with code 2 and a one-line message, no traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import subprocess
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from moodshift._atomic import write_text
from moodshift.audio.corpus import build_corpus
from moodshift.audio.embed import embed_catalog
from moodshift.audio.library import embed_library, write_mood_tag
from moodshift.bench.core import BENCHMARKS, WHATS, run_bench
from moodshift.data.catalog import Catalog, import_catalog
from moodshift.errors import InputError, MoodshiftError, UnknownLabelError
from moodshift.model.evidence import label_density
from moodshift.retrieval.index import build_catalog_index, default_index_dir

Handler = Callable[[argparse.Namespace], int | None]


def _catalog(path: str) -> Any:

    return Catalog.load(path)


def _say_default_model(art: Any) -> None:
    """Say on stderr when no ``--model`` was given and the shipped model serves."""
    if art is not None and art.default_model:
        print(f"model: {art.model_source}", file=sys.stderr)


# ---------------------------------------------------------------------- import
def cmd_import(a: argparse.Namespace) -> None:

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

    path = build_corpus(a.out, n=a.n, seed=a.seed, workers=a.workers, **_clip_seconds(a))
    print(f"corpus labels: {path}")


def _clip_seconds(a: argparse.Namespace) -> dict[str, tuple[float, float]]:
    """``--clip-seconds MIN MAX`` as a keyword argument (none when not given)."""
    return {"clip_seconds": (a.clip_seconds[0], a.clip_seconds[1])} if a.clip_seconds else {}


# ---------------------------------------------------------------------- embed
def cmd_embed(a: argparse.Namespace) -> None:
    if a.audio_dir:
        return cmd_embed_library(a)

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

    if a.engine != "local":
        raise InputError("--engine ray embeds a --labels CSV, not a folder; drop --audio-dir.")
    labels = a.labels
    if labels is None and (Path(a.audio_dir).expanduser() / "labels.csv").is_file():
        labels = str(Path(a.audio_dir).expanduser() / "labels.csv")
        print(f"labels from {labels}")
    from moodshift.audio.embedders.pipeline import DEFAULT_EXCERPTS, Excerpts

    excerpts: Any = DEFAULT_EXCERPTS
    if a.excerpts == 0:
        excerpts = None
    elif a.excerpts is not None or a.excerpt_seconds is not None:
        excerpts = Excerpts(n=a.excerpts or DEFAULT_EXCERPTS.n,
                            seconds=a.excerpt_seconds or DEFAULT_EXCERPTS.seconds)  # fmt: skip
    cat, report = embed_library(
        audio_dir=a.audio_dir, out=a.out, labels=labels, embedder=a.embedder,
        cache_dir=a.cache_dir, workers=a.workers, attribute=a.attribute, seed=a.seed,
        follow_symlinks=a.follow_symlinks, excerpts=excerpts,
    )  # fmt: skip
    print(f"catalogue {a.out}: {len(cat)} tracks embedded with {cat.provenance.get('name')} "
          f"({cat.dim}-d)")  # fmt: skip
    print(report.summary())
    for path, reason in [*report.failed, *report.bad_names][:20]:
        print(f"  unreadable {path}: {reason}")


# ---------------------------------------------------------------------- train
def _config_from_args(a: argparse.Namespace) -> Any:
    from moodshift.training.train import TrainConfig  # pulls in torch: load on use

    kwargs: dict[str, Any] = {"attribute": a.attribute, "seed": a.seed, "device": a.device}
    for name in ("epochs", "lr", "batch_size", "k", "margin", "k_fraction", "mood_target",
                 "patience", "weight_decay", "mining", "ranking"):  # fmt: skip
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
    return TrainConfig.from_dict(kwargs)


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
    from moodshift.training.train import train  # pulls in torch: load on use

    cat = _catalog(a.catalog)
    if a.attribute not in cat.labels.columns:
        from moodshift.training.fusion import add_tag_attribute  # pulls in torch: load on use

        classes = add_tag_attribute(cat, a.attribute)
        print(f"{a.attribute}: from the embedder's tag head ({' / '.join(classes)}: the top "
              "and bottom third of its probability)")  # fmt: skip
    cfg = _config_from_args(a)
    model = train(cat, config=cfg, out=a.out, resume=a.resume, engine=a.engine,
                  ray_address=a.ray_address, threads=a.threads)  # fmt: skip
    if a.fuse_evidence:
        from moodshift.training.fusion import fit_model_evidence  # pulls in torch: load on use

        model.evidence = fit_model_evidence(model, cat, seed=cfg.seed)
        model.save(a.out)
        print(f"evidence fusion: {', '.join(sorted(model.evidence.weights))} (docs/transfer.md)")
    t = model.config.get("training", {})
    print(f"model {a.out}: best epoch {t.get('best_epoch')}, "
          f"validation score {t.get('best_val_primary'):.3f} (K={t.get('k')})")  # fmt: skip


def cmd_tune(a: argparse.Namespace) -> None:
    from moodshift.training.tune import tune  # pulls in torch: load on use

    tune(catalog=_catalog(a.catalog), out=a.out, budget_s=a.budget, epochs=a.epochs,
         mood_target=a.mood_target, seed=a.seed, resume=not a.restart)  # fmt: skip


# ---------------------------------------------------------------------- evaluate
def cmd_evaluate(a: argparse.Namespace) -> None:
    from moodshift.evaluation.evaluate import (  # pulls in torch: load on use
        evaluate_catalog,
        format_table,
    )
    from moodshift.model.network import MoodshiftModel  # pulls in torch: load on use

    cat = _catalog(a.catalog)
    model = MoodshiftModel.load(a.model) if a.model else None
    report = evaluate_catalog(cat, model=model, part=a.part, big_k=a.oracle_k, seed=a.seed,
                              max_seeds=a.max_seeds, label_fraction=a.label_fraction,
                              evidence=a.evidence)  # fmt: skip
    report.catalog = str(a.catalog)
    report.model = str(a.model or "")
    if a.sweep:
        from moodshift.evaluation.sweep import run_sweep  # pulls in torch: load on use

        report.extras["sweep"] = run_sweep(cat, model=model, part=a.part, seed=a.seed,
                                           max_seeds=a.max_seeds,
                                           label_fraction=a.label_fraction)  # fmt: skip
    print(format_table(report))
    if a.json:
        write_text(a.json, json.dumps(report.to_json(), indent=2))
        print(f"wrote {a.json}")
    if a.plots:
        from moodshift.evaluation.plots import plot_report  # pulls in torch: load on use

        for p in plot_report(report, catalog=cat, model=model, out_dir=a.plots):
            print(f"wrote {p}")


# ---------------------------------------------------------------------- query
def cmd_query(a: argparse.Namespace) -> None:
    from moodshift.retrieval.search import Searcher  # pulls in torch: load on use

    # The catalogue's index (``moodshift index``) and its stored p(mood | track), and the
    # start-up refusals, as ``moodshift serve`` has them.
    searcher = Searcher.open(catalog=a.catalog, model=a.model, index=a.index)
    _say_default_model(searcher.artifacts)
    answer = searcher.query(track_id=a.track, target_mood=a.mood, k=a.k, strength=a.strength,
                            filters=_parse_filters(a.filter), evidence=a.evidence,
                            max_per_artist=a.max_per_artist)  # fmt: skip
    source = {"mood": answer.source_mood, "mood_source": answer.source_mood_source}
    if a.json:
        print(json.dumps({"track_id": a.track, "source": source, "target_mood": a.mood,
                          "strength": answer.strength, "evidence": a.evidence,
                          "index": answer.index,
                          "results": [r.__dict__ for r in answer.results]}, indent=2))  # fmt: skip
        return
    cat = searcher.catalog
    seed = cat.labels.iloc[cat.index_of(a.track)]
    print(f"seed {a.track}: " + ", ".join(f"{c}={seed[c]}" for c in cat.label_columns()))
    print(f"   source mood {source['mood']} ({source['mood_source']})")
    print(f"-> {a.mood} (evidence {a.evidence}, index {answer.index})")
    for r in answer.results:
        labels = ", ".join(f"{k}={'|'.join(v) if isinstance(v, list) else v}"
                           for k, v in r.labels.items())  # fmt: skip
        why = (
            "label"
            if r.mood_source == "label"
            else (f"predicted p={r.mood_probability:.2f}" if r.mood_source else "-")
        )
        print(f"{r.rank:3d}. {r.track_id}  {r.score:.3f}  [{r.mood}: {why}]  {labels}")


def cmd_playlist(a: argparse.Namespace) -> None:
    from moodshift.retrieval.playlist import (  # pulls in torch: load on use
        check_m3u_target,
        write_m3u,
    )
    from moodshift.retrieval.search import Searcher  # pulls in torch: load on use

    if a.m3u:
        check_m3u_target(a.m3u)  # before any work: a refused path creates nothing
    searcher = Searcher.open(catalog=a.catalog, model=a.model, index=a.index)
    _say_default_model(searcher.artifacts)
    model, cat = searcher.model, searcher.catalog
    for flag, mood in (("--to", a.to), ("--via", a.via)):
        if mood is not None and mood not in model.classes:
            raise UnknownLabelError(
                f"{flag} {mood!r} is not a {model.attribute} of the model; known: "
                f"{', '.join(model.classes)}."
            )
    cap = None if a.max_per_artist == 0 else a.max_per_artist
    tracks = searcher.playlist(track_id=a.track, to=a.to, length=a.length, via=a.via,
                               max_per_artist=cap)  # fmt: skip
    index = searcher.retriever.index_kind
    left_out = sum(t["audio_left_out"] for t in tracks)
    if a.m3u:
        write_m3u(a.m3u, tracks, roots=[cat.root] if cat.root is not None else [])
    if left_out:
        print(f"{left_out} track(s) have an audio_path outside the catalogue's audio root "
              f"{cat.root} (or not a regular file): their audio is left out of the playlist",
              file=sys.stderr)  # fmt: skip
    if a.mpd:
        _queue_in_mpd(a, cat, tracks)
    if a.json:
        print(json.dumps({"index": index, "tracks": tracks, "audio_left_out": left_out},
                         indent=2))  # fmt: skip
        return
    print(f"index {index}")
    for i, t in enumerate(tracks, 1):
        why = "label" if t["mood_source"] == "label" else f"predicted {t['mood_probability']:.2f}"
        print(
            f"{i:3d}. {t['track_id']}  {t['artist'] or '':<18} {t['mood']} ({why})  "
            f"strength {t['strength']:.2f}  p({t['toward']}) {t['p_target']:.2f}"
        )
    if a.m3u:
        print(f"wrote {a.m3u}")


def _queue_in_mpd(a: argparse.Namespace, cat: Any, tracks: list[dict[str, Any]]) -> None:
    from moodshift.retrieval.mpd import queue_in_mpd

    if cat.root is None:
        raise InputError(
            "--mpd needs a catalogue with audio files (audio_path); this one has none."
        )
    uris = queue_in_mpd(address=a.mpd, tracks=tracks, audio_root=cat.root,
                        music_dir=a.mpd_music_dir)  # fmt: skip
    print(f"queued {len(uris)} tracks in MPD at {a.mpd}", file=sys.stderr if a.json else sys.stdout)


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
    from moodshift.retrieval.labelling import (  # pulls in torch: load on use
        label_codes,
        set_label,
        to_label,
    )
    from moodshift.retrieval.request import open_artifacts  # pulls in torch: load on use

    if a.n < 1:
        raise InputError(f"--n must be at least 1, got {a.n}")
    # The catalogue in memory (its labels are written back), the model as query opens it.
    art = open_artifacts(catalog=_catalog(a.catalog), model=a.model)
    _say_default_model(art)
    cat, model = art.catalog, art.model
    model.check_catalog(cat)
    attr, classes = model.attribute, model.classes
    labels = label_codes(cat, model)
    density = label_density(cat.embeddings)  # the same every round: once
    skipped: set[int] = set()
    done: list[tuple[int, str]] = []
    print(f"{attr}s: {', '.join(classes)} (Enter skips, q stops)")
    stop = False
    while len(done) < a.n and not stop:
        # The evidence is refitted after every round: each answer changes the next question.
        rows, proba = to_label(model=model, embeddings=cat.embeddings, labels=labels,
                               k=min(len(classes), a.n - len(done)), skip=skipped,
                               density=density)  # fmt: skip
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
            labels[r] = classes.index(answer)
            set_label(cat, row=int(r), attribute=attr, value=answer)
            done.append((int(r), answer))
        if done:
            cat.save(a.catalog)  # atomic: a crash keeps the previous catalogue
    if a.write_tags:
        for r, mood in done:
            path = cat.audio_path(r)
            if path is None:
                print(f"warning: {cat.labels['track_id'].iat[r]} has no audio file to tag")
                continue
            write_mood_tag(path, mood)
    print(f"labelled {len(done)} tracks in {a.catalog}" + (" and their files" if a.write_tags
          and done else "") + "; p(mood | track) now learns from them")  # fmt: skip
    if done and (default_index_dir(a.catalog) / "index.json").is_file():
        # The index fingerprints the labels: serving would refuse it as stale.
        print(f"rebuild the catalogue's index: `moodshift index --catalog {a.catalog}`")


def _ask_label(
    cat: Any, row: int, p: Any, classes: list[str], *, player: str | None = None
) -> str | None:
    """One track's mood from the user: a class name (a prefix will do), "" to skip, None to stop.

    With ``player`` (a command; the file's path is appended) the track plays while asked.
    """
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

    model = None
    if a.model:
        from moodshift.model.network import MoodshiftModel  # pulls in torch: load on use

        model = MoodshiftModel.load(a.model)
    info = build_catalog_index(a.catalog, kind=a.kind, out=a.out, model=model)
    print(json.dumps(info, indent=2, default=str))


def cmd_serve(a: argparse.Namespace) -> None:
    from moodshift.serving.launch import serve  # pulls in torch: load on use

    serve(catalog=a.catalog, model=a.model, host=a.host, port=a.port, index=a.index,
          workers=a.workers, max_k=a.max_k, allowed_hosts=_split(a.allowed_hosts),
          cors_origins=_split(a.cors_origin), audio_roots=a.audio_root or ())  # fmt: skip


def _split(values: Sequence[str] | None) -> list[str]:
    """Comma lists, possibly given several times, as one list."""
    return [v.strip() for text in values or () for v in text.split(",") if v.strip()]


# ---------------------------------------------------------------------- bench / demo
def cmd_bench(a: argparse.Namespace) -> None:
    result = run_bench(
        a.what, n=a.n, dim=a.dim, k=a.k, classes=a.classes, seed=a.seed, train_n=a.train_n,
        train_epochs=a.train_epochs, query_kind=a.index_kind, clients=_client_counts(a.clients),
        duration_s=a.duration, requests=a.requests, filter_fraction=a.filter_fraction,
        load_client=a.load_client, workers=a.workers, workdir=a.workdir,
        audio_dir=a.audio_dir, files=a.files, embed_seconds=a.clip_seconds,
        embedders=[e.strip() for e in a.embedders.split(",") if e.strip()],
        # From the command line, bench embed measures rendered music (when FluidSynth is here).
        render=True,
        n_cross=a.n_cross, transfer_epochs=a.train_epochs_transfer, floor_model=a.floor_model,
    )  # fmt: skip
    text = json.dumps(result, indent=2, default=str)
    bench = BENCHMARKS.get(a.what)
    print(bench.report(result[a.what]) if bench is not None and bench.report else text)
    if a.json:
        write_text(a.json, text)


def _client_counts(text: str | None) -> list[int] | None:
    """``--clients`` as a list of positive counts ("1,8,32"); None when absent."""
    if not text:
        return None
    try:
        counts = [int(c) for c in text.split(",") if c.strip()]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise InputError(f"--clients takes positive counts separated by commas (e.g. 1,8,32); "
                         f"got {text!r}")  # fmt: skip
    return counts


def cmd_demo(a: argparse.Namespace) -> None:
    from moodshift.demo import run_demo  # pulls in torch: load on use

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
    p.add_argument("--ranking", choices=["auto", "none", "centroid", "leace", "metric"],
                   help="the space queries rank in: auto (default) chooses on validation among "
                        "plain cosine, mood erasure (centroid span, LEACE) and a space learned "
                        "from cross-mood pairs; none is the paper's plain cosine")  # fmt: skip
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
    p.add_argument("--follow-symlinks", action="store_true",
                   help="with --audio-dir: keep links to files outside the folder (skipped "
                   "by default)")  # fmt: skip
    p.add_argument("--excerpts", type=int, metavar="N",
                   help="with --audio-dir: embed N windows spread over each long track, "
                   "not all of it (default 3; 0: whole tracks; see docs/library.md)")  # fmt: skip
    p.add_argument("--excerpt-seconds", type=float,
                   help="length of each window (default 30)")  # fmt: skip
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
    p.add_argument(
        "--index", help="index folder (default: <catalog>/index when it exists, else exact search)"
    )
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
    p.add_argument(
        "--index", help="index folder (default: <catalog>/index when it exists, else exact search)"
    )
    p.add_argument("--to", required=True, help="target mood")
    p.add_argument("--via", help="a mood to pass through half-way")
    p.add_argument("--length", type=int, default=12)
    p.add_argument("--max-per-artist", type=int, default=1, help="0 = no cap (default 1)")
    p.add_argument("--m3u", help="write an M3U8 playlist of the audio files")
    p.add_argument("--mpd", metavar="HOST:PORT",
                   help="append the journey to a running MPD's queue (or: its socket)")  # fmt: skip
    p.add_argument("--mpd-music-dir", help="MPD's music_directory as seen from here (when "
                   "MPD is reached over TCP and cannot find the files by their paths)")  # fmt: skip
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
        choices=WHATS,
        help="; ".join(f"{name}: {b.about}" for name, b in BENCHMARKS.items())
        + "; all: every benchmark but "
        + ", ".join(name for name, b in BENCHMARKS.items() if not b.in_all),
    )
    p.add_argument("--n", type=int, help="tracks (default 200,000; serve: 100,000; soak: 5,000; "
                   "transfer: 320 train-part clips)")  # fmt: skip
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
