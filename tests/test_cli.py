"""The command line: a whole run on a small catalogue, and clean errors (exit 2)."""

from __future__ import annotations

import json
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


def test_evaluate_json_and_plots(trained, capsys):
    f = trained
    rc = main(["evaluate", "--catalog", str(f / "cat"), "--model", str(f / "model"),
               "--json", str(f / "r.json"), "--plots", str(f / "figs")])  # fmt: skip
    assert rc == 0
    out = json.loads((f / "r.json").read_text())
    required = {"model", "query_default", "random", "seed_nn", "mood_shift", "mood_centroid",
                "tagger_filter", "probe_direction", "oracle_top1", "oracle_rand100"}  # fmt: skip
    # plus the model at its validation-chosen strength, when that is not 1
    assert required <= set(out["methods"]) <= required | {"model_default_strength"}
    for scores in out["methods"].values():
        assert {"mood_p@1", "genre_p@1", "inst_j@1", "mood_p@10", "cf@10"} <= set(scores)
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
