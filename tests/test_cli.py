"""The command line: a whole run on a small catalogue, and clean errors (exit 2)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest

from moodshift.cli import main
from moodshift.synthetic import make_catalog


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    cat = make_catalog(n=400, dim=16, seed=5, groups=True, split=False)
    np.save(tmp / "emb.npy", cat.embeddings)
    cat.labels.to_csv(tmp / "tracks.csv", index=False)
    return tmp


@pytest.fixture(scope="module")
def trained(files):
    assert main(["import", "--embeddings", str(files / "emb.npy"), "--labels",
                 str(files / "tracks.csv"), "--out", str(files / "cat"),
                 "--embedder-name", "toy"]) == 0  # fmt: skip
    assert main(["train", "--catalog", str(files / "cat"), "--out", str(files / "model"),
                 "--epochs", "5", "--batch-size", "128"]) == 0  # fmt: skip
    return files


def test_cmd_evaluate_json_and_plots(trained, capsys):
    f = trained
    rc = main(["evaluate", "--catalog", str(f / "cat"), "--model", str(f / "model"),
               "--json", str(f / "r.json"), "--plots", str(f / "figs")])  # fmt: skip
    assert rc == 0
    out = json.loads((f / "r.json").read_text())
    required = {"model", "query_default", "random", "seed_nn", "mood_shift", "mood_centroid",
                "tagger_filter", "probe_direction", "oracle_top1", "oracle_rand100",
                "erasure_label", "leace_label", "erasure_tagger", "leace_tagger"}  # fmt: skip
    # plus the model at its validation-chosen strength, when that is not 1
    assert required <= set(out["methods"]) <= required | {"model_default_strength"}
    for scores in out["methods"].values():
        assert {"mood_p@1", "genre_p@1", "inst_j@1", "mood_p@10", "cf@1", "cf@10"} <= set(scores)
    assert out["n_queries"] > 0 and out["model"].endswith("model")
    assert out["label_fraction"] == 1.0
    assert (f / "figs" / "metrics.png").stat().st_size > 1000
    assert (f / "figs" / "map.png").stat().st_size > 1000
    assert "oracle_top1" in capsys.readouterr().out


def test_query_json(trained, capsys):
    f = trained
    rc = main(
        [
            "query",
            "--catalog",
            str(f / "cat"),
            "--model",
            str(f / "model"),
            "--track",
            "syn_000003",
            "--mood",
            "happy",
            "-k",
            "4",
            "--strength",
            "0.5",
            "--json",
        ]
    )
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    ids = [r["track_id"] for r in out["results"]]
    assert len(ids) == 4 and "syn_000003" not in ids


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--track", "nope", "--mood", "happy"], "unknown track id 'nope'"),
        (["--track", "syn_000003", "--mood", "angry"], "known: calm, energetic, happy, sad"),
        (["--track", "syn_000003", "--mood", "happy", "--strength", "2"], "strength"),
    ],
)
def test_query_errors_exit_2(trained, capsys, args, needle):
    f = trained
    rc = main(["query", "--catalog", str(f / "cat"), "--model", str(f / "model"), *args])
    assert rc == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


def test_dimension_mismatch_between_catalogue_and_model(trained, tmp_path, capsys):
    other = make_catalog(n=200, dim=8, seed=1)
    other.save(tmp_path / "c8")
    rc = main(["evaluate", "--catalog", str(tmp_path / "c8"), "--model", str(trained / "model")])
    assert rc == 2
    assert "dimension mismatch" in capsys.readouterr().err


def test_missing_files_exit_2_without_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "moodshift.cli", "import", "--embeddings", str(tmp_path / "x.npy"),
         "--labels", str(tmp_path / "x.csv"), "--out", str(tmp_path / "c")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr


# ---------------------------------------------------------------------- one test per subcommand
def test_every_subcommand_has_a_test_and_a_docs_entry():
    from pathlib import Path

    from moodshift.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    commands = set(sub.choices)
    tested = {
        name[len("test_cmd_") :].split("_")[0] for name in globals() if name.startswith("test_cmd_")
    }
    assert commands == tested
    docs = (Path(__file__).parents[1] / "docs" / "cli.md").read_text()
    assert all(f"## `moodshift {c}`" in docs for c in commands)


def test_cmd_import_stores_a_split(files, tmp_path, capsys):
    from moodshift.data.catalog import Catalog

    rc = main(["import", "--embeddings", str(files / "emb.npy"), "--labels",
               str(files / "tracks.csv"), "--out", str(tmp_path / "c"), "--seed", "1"])  # fmt: skip
    assert rc == 0 and "400 tracks, 16-d" in capsys.readouterr().out
    split = Catalog.load(tmp_path / "c").labels["split"].value_counts().to_dict()
    assert set(split) == {"train", "val", "test"} and sum(split.values()) == 400


def test_cmd_train_saves_the_model_it_reports(trained, capsys):
    from moodshift.model.network import MoodshiftModel
    from moodshift.training.train import TrainConfig

    model = MoodshiftModel.load(trained / "model")
    assert model.config["epochs"] == 5 and model.config["k"] == TrainConfig().k
    assert len(model.log) == 5 and model.classes == ["calm", "energetic", "happy", "sad"]


def test_cmd_train_fuse_evidence_saves_a_fusion_the_model_uses(trained, tmp_path, capsys):
    from moodshift.data.catalog import Catalog
    from moodshift.model.network import MoodshiftModel

    assert main(["train", "--catalog", str(trained / "cat"), "--out", str(tmp_path / "m"),
                 "--epochs", "2", "--batch-size", "128", "--fuse-evidence"]) == 0  # fmt: skip
    assert "evidence fusion:" in capsys.readouterr().out
    model = MoodshiftModel.load(tmp_path / "m")
    # A toy embedder has no tag head: the tagger and the catalogue's labels are fused.
    assert model.evidence is not None and model.evidence.taghead is None
    assert "tagger" in model.evidence.weights and "tagger+labels@5" in model.evidence.weights
    cat = Catalog.load(trained / "cat")
    p = model.mood_proba(cat.embeddings)
    assert p.shape == (len(cat), 4) and np.allclose(p.sum(axis=1), 1.0, atol=1e-5)
    assert not np.allclose(p, model.tagger.predict_proba(cat.embeddings))  # re-centred, weighted


def test_cmd_train_help_states_the_true_k_default(capsys):
    from moodshift.training.train import TrainConfig

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert f"(default {TrainConfig().k};" in " ".join(capsys.readouterr().out.split())


def test_cmd_tune_with_a_spent_budget_trains_one_configuration(trained, tmp_path, capsys):
    from moodshift.training.tune import DEFAULT_GRID

    out = tmp_path / "tuned"
    rc = main(["tune", "--catalog", str(trained / "cat"), "--out", str(out), "--budget", "0",
               "--epochs", "1"])  # fmt: skip
    assert rc == 0
    sel = json.loads((out / "selection.json").read_text())
    assert sel["winner"] == DEFAULT_GRID[0]["name"]
    statuses = [r["status"] for r in sel["table"]]
    assert statuses == ["done"] + ["skipped (budget)"] * (len(DEFAULT_GRID) - 1)
    assert f"winner: {sel['winner']}" in capsys.readouterr().out


def test_cmd_query_prints_ranked_results(trained, capsys):
    f = trained
    rc = main(["query", "--catalog", str(f / "cat"), "--model", str(f / "model"), "--track",
               "syn_000003", "--mood", "sad", "-k", "3", "--filter", "genre=genre2"])  # fmt: skip
    assert rc == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("seed syn_000003:") and any(ln.startswith("-> sad") for ln in lines)
    ranked = [ln for ln in lines if re.match(r"\s*\d+\. ", ln)]
    assert [ln.split(".")[0].strip() for ln in ranked] == ["1", "2", "3"]
    assert all("genre=genre2" in ln for ln in ranked)


def test_cmd_query_filter_without_value_exits_2(trained, capsys):
    f = trained
    rc = main(["query", "--catalog", str(f / "cat"), "--model", str(f / "model"), "--track",
               "syn_000003", "--mood", "sad", "--filter", "genre"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and "--filter wants label=value" in err and "Traceback" not in err


def test_cmd_playlist_walks_toward_the_target_mood(trained, tmp_path, capsys):
    f = trained
    rc = main(["playlist", "--catalog", str(f / "cat"), "--model", str(f / "model"), "--track",
               "syn_000003", "--to", "happy", "--length", "5", "--json"])  # fmt: skip
    assert rc == 0
    tracks = json.loads(capsys.readouterr().out)["tracks"]
    ids = [t["track_id"] for t in tracks]
    # Up to --length tracks (fewer when the rules run out of candidates), never the seed.
    assert 1 <= len(ids) <= 5 and len(set(ids)) == len(ids) and "syn_000003" not in ids
    assert len({t["artist"] for t in tracks}) == len(ids)  # one per artist by default
    p = [t["p_target"] for t in tracks]
    assert p == sorted(p) and tracks[-1]["mood"] == "happy"


def test_cmd_label_asks_saves_and_tags_the_answers(trained, tmp_path, capsys, monkeypatch):
    import io

    from audio_helpers import write_tone
    from moodshift.audio.library import read_tags
    from moodshift.data.catalog import Catalog

    cat = Catalog.load(trained / "cat")
    cat.labels.loc[cat.labels.index[40:], "mood"] = ""  # most of the library is untagged
    paths = []
    for i in range(len(cat)):
        write_tone(tmp_path / f"t{i}.wav", freq=200 + i)
        paths.append(f"t{i}.wav")
    cat.labels["audio_path"] = paths
    cat.root = tmp_path
    cat.save(tmp_path / "lib")
    # happy, a skip, a prefix of calm, an answer that is no mood (asked again), then sad
    monkeypatch.setattr("sys.stdin", io.StringIO("happy\n\nca\nmaybe\nsad\n"))
    rc = main(["label", "--catalog", str(tmp_path / "lib"), "--model", str(trained / "model"),
               "--n", "3", "--write-tags"])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0 and "labelled 3 tracks" in out and "answer one of" in out
    after = Catalog.load(tmp_path / "lib")
    new = [(i, m) for i, m in enumerate(after.labels["mood"].fillna("")) if i >= 40 and m]
    assert [m for _, m in new] != [] and sorted(m for _, m in new) == ["calm", "happy", "sad"]
    for i, mood in new:
        assert read_tags(after.audio_path(i))["mood"] == [mood]
    # A player runs while asking (`true` exits at once); one that cannot run is a clear error.
    monkeypatch.setattr("sys.stdin", io.StringIO("energetic\n"))
    assert main(["label", "--catalog", str(tmp_path / "lib"), "--model", str(trained / "model"),
                 "--n", "1", "--player", "true"]) == 0  # fmt: skip
    assert "labelled 1 tracks" in capsys.readouterr().out
    monkeypatch.setattr("sys.stdin", io.StringIO("sad\n"))
    assert main(["label", "--catalog", str(tmp_path / "lib"), "--model", str(trained / "model"),
                 "--n", "1", "--player", str(tmp_path / "no-such-player")]) == 2  # fmt: skip
    assert "cannot run" in capsys.readouterr().err


def test_cmd_index_builds_an_exact_index_for_a_small_catalogue(trained, tmp_path, capsys):
    rc = main(["index", "--catalog", str(trained / "cat"), "--out", str(tmp_path / "idx")])
    assert rc == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kind"] == "flat" and info["path"] == str(tmp_path / "idx")
    assert (tmp_path / "idx" / "index.json").is_file()


def test_cmd_serve_answers_over_http(trained):
    import socket
    import time

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    f = trained
    proc = subprocess.Popen(
        [sys.executable, "-m", "moodshift.cli", "serve", "--catalog", str(f / "cat"), "--model",
         str(f / "model"), "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).json()
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the server did not start in 120 s"
                time.sleep(0.2)
        assert health["status"] == "ok" and health["tracks"] == 400
        r = httpx.post(f"http://127.0.0.1:{port}/query", timeout=10,
                       json={"track_id": "syn_000003", "target_mood": "happy", "k": 2})  # fmt: skip
        assert r.status_code == 200 and len(r.json()["results"]) == 2
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_cmd_bench_prints_and_writes_json(tmp_path, capsys):
    rc = main(["bench", "selfjoin", "--n", "600", "--dim", "16", "--k", "5", "--classes", "3",
               "--json", str(tmp_path / "b.json")])  # fmt: skip
    assert rc == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((tmp_path / "b.json").read_text())
    assert printed["params"]["n"] == 600 and printed["selfjoin"]["selfjoin_gflops"] > 0


def test_cmd_bench_serve_passes_its_options_to_the_load_benchmark(tmp_path, capsys, monkeypatch):
    """Wiring only: the load benchmark itself runs in tests/serving (a real server)."""
    from moodshift.bench import core as bench_core

    seen: dict = {}

    def fake(**kw):
        seen.update(kw)
        return {"runs": [], "p99_ratio_32_to_1": None}

    monkeypatch.setattr(bench_core, "run_serve_bench", fake)  # the name bench.core calls
    rc = main(["bench", "serve", "--n", "5000", "--dim", "32", "--workers", "2", "--workdir",
               str(tmp_path / "w"), "--clients", "1,4", "--requests", "50", "--duration", "2",
               "--index-kind", "flat", "--load-client", "httpx", "--filter-fraction", "0.5",
               "--json", str(tmp_path / "s.json")])  # fmt: skip
    assert rc == 0
    assert seen == {"n": 5000, "dim": 32, "seed": 0, "workers": 2, "workdir": str(tmp_path / "w"),
                    "clients": [1, 4], "requests": 50, "duration_s": 2.0, "kind": "flat",
                    "client": "httpx", "filter_fraction": 0.5, "progress": True}  # fmt: skip
    printed = json.loads(capsys.readouterr().out)
    assert printed["what"] == "serve" and "runs" in printed["serve"]
    assert printed == json.loads((tmp_path / "s.json").read_text())


@pytest.mark.parametrize(("what", "clients"), [("serve", "1,x"), ("serve", "0,8"),
                                                ("soak", "8,32")])  # fmt: skip
def test_cmd_bench_refuses_bad_client_counts(what, clients, capsys):
    rc = main(["bench", what, "--clients", clients])
    assert rc == 2
    assert "--clients" in capsys.readouterr().err


# ---------------------------------------------------------------------- audio: corpus, embed, demo
def _has_synth() -> bool:
    import shutil

    from moodshift.audio.corpus.render import default_soundfonts

    return shutil.which("fluidsynth") is not None and bool(default_soundfonts())


needs_synth = pytest.mark.skipif(
    not _has_synth(), reason="fluidsynth or GM soundfonts missing (bash scripts/setup.sh)"
)
# The smallest corpus whose artist-disjoint test part still holds more than k = 10 tracks.
N_CLIPS = "200"


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    """``moodshift corpus`` rendered where ``moodshift demo`` looks, so the demo reuses it."""
    out = tmp_path_factory.mktemp("demo")
    assert main(["corpus", "--out", str(out / "corpus"), "--n", N_CLIPS, "--clip-seconds", "1",
                 "1.5", "--workers", "2"]) == 0  # fmt: skip
    return out


@pytest.mark.slow
@needs_synth
def test_cmd_corpus_renders_labelled_audio(demo_dir):
    import pandas as pd
    import soundfile as sf

    labels = pd.read_csv(demo_dir / "corpus" / "labels.csv")
    assert len(labels) == int(N_CLIPS)
    assert set(labels["mood"]) == {"calm", "energetic", "happy", "sad"}
    info = sf.info(demo_dir / "corpus" / labels["audio_path"].iloc[0])
    assert 1.0 <= info.duration <= 1.5 + 0.5  # a clip may ring out past its last note


@pytest.mark.slow
@needs_synth
def test_cmd_embed_makes_a_catalogue(demo_dir, tmp_path, capsys):
    from moodshift.data.catalog import Catalog

    rc = main(["embed", "--labels", str(demo_dir / "corpus" / "labels.csv"), "--embedder",
               "features", "--cache-dir", str(demo_dir / "cache"), "--workers", "2", "--out",
               str(tmp_path / "cat")])  # fmt: skip
    assert rc == 0 and "0 files skipped" in capsys.readouterr().out
    cat = Catalog.load(tmp_path / "cat")
    assert len(cat) == int(N_CLIPS) and cat.dim == 72
    assert cat.provenance["name"] == "features" and cat.split is not None


@pytest.mark.slow
@needs_synth
def test_cmd_demo_runs_every_stage(demo_dir):
    rc = main(["demo", "--out", str(demo_dir), "--n", N_CLIPS, "--embedders", "features",
               "--epochs", "1", "--clip-seconds", "1", "1.5"])  # fmt: skip
    assert rc == 0
    results = json.loads((demo_dir / "results.json").read_text())
    methods = results["embedders"]["features"]["methods"]
    assert {"model", "seed_nn", "oracle_top1"} <= set(methods)
    assert "## features" in (demo_dir / "RESULTS.md").read_text()
    assert (demo_dir / "plots_features" / "metrics.png").stat().st_size > 1000


@pytest.mark.parametrize("command", ["query", "serve"])
def test_a_model_with_nan_weights_exits_2_naming_the_file(trained, tmp_path, capsys, command):
    import shutil

    from safetensors.numpy import load_file, save_file

    shutil.copytree(trained / "model", tmp_path / "model")
    path = tmp_path / "model" / "model.safetensors"
    weights = load_file(str(path))
    name = sorted(weights)[0]
    weights[name] = weights[name].copy()
    weights[name].reshape(-1)[0] = np.nan  # what flipped exponent bits give
    save_file(weights, str(path))
    import socket

    # serve must fail while loading; were it to start, the taken port makes it exit at once
    # rather than serve until the test times out.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        extra = (["--track", "syn_000003", "--mood", "happy"] if command == "query"
                 else ["--port", port])  # fmt: skip
        rc = main([command, "--catalog", str(trained / "cat"), "--model", str(tmp_path / "model"),
                   *extra])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "model.safetensors" in err, err
    assert "NaN or infinity" in err and "retrain" in err
