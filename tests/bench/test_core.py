"""``moodshift bench``: the JSON's structure on tiny sizes (timings are never asserted)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from moodshift.bench import core as bench
from moodshift.errors import InputError

TINY = {"n": 1200, "dim": 16, "k": 10, "classes": 3, "progress": False}
STAGE_KEYS = {"wall_s", "cpu_s", "peak_rss_mb", "peak_rss_scope"}


def _roundtrip(result: dict) -> dict:
    # Everything must be plain JSON (the CLI prints it with json.dumps).
    return json.loads(json.dumps(result))


def test_selfjoin_reports_peak_and_ratio():
    r = _roundtrip(bench.run_bench("selfjoin", **TINY))
    assert {"machine", "note", "params", "selfjoin"} <= set(r)
    sj = r["selfjoin"]
    assert set(sj) >= STAGE_KEYS
    for key in ("sgemm_peak_gflops", "selfjoin_gflops", "ratio_to_peak",
                "ratio_to_peak_per_cpu_s", "flops_definition", "backend"):  # fmt: skip
        assert key in sj, key
    ratio = sj["selfjoin_gflops"] / sj["sgemm_peak_gflops"]
    assert sj["ratio_to_peak"] == pytest.approx(ratio, abs=0.01)
    assert r["machine"]["cores"] >= 1 and "torch_threads" in r["machine"]


def test_approx_reports_recall_and_speedup_per_size():
    r = _roundtrip(bench.run_bench("approx", approx_sample=100, **TINY))
    sizes = r["approx"]["sizes"]
    assert [s["n"] for s in sizes] == sorted(s["n"] for s in sizes) and sizes[-1]["n"] == 1200
    for entry in sizes:
        assert entry["runs"], entry
        # The baseline is the exact join itself, timed in this run (not an estimate).
        assert entry["exact_how"] == "measured (the exact join, this run)"
        assert entry["exact_seconds"] > 0
        for run in entry["runs"]:
            assert run["method"] in ("ivf", "ivf-faiss", "hnsw", "projected")
            # Tiny classes: every method finds (nearly) the exact lists.
            assert run["recall"] >= 0.9, run
            assert set(run) >= STAGE_KEYS
            # The speed-up is the exact join's time over this method's, both of this run.
            expected = entry["exact_seconds"] / max(run["wall_s"], 1e-3)
            assert run["speedup"] > 0
            assert run["speedup"] == pytest.approx(expected, rel=0.02, abs=0.01)


def test_train_reports_quiet_and_contended_speed():
    r = _roundtrip(bench.run_bench("train", train_n=600, train_epochs=2, **TINY))
    t = r["train"]
    assert t["samples_per_s"] > 0 and len(t["samples_per_s_per_epoch"]) == 2
    assert t["samples_per_s_contended"] > 0 and t["busy_processes"] >= 1
    ratio = t["samples_per_s_contended"] / t["samples_per_s"]
    assert t["contended_ratio"] == pytest.approx(ratio, abs=0.01)
    assert set(t) >= STAGE_KEYS and set(t["contended"]) >= STAGE_KEYS
    ceiling = t["matmul_ceiling"]
    assert ceiling["samples_per_s"] > 0 and ceiling["threads"] == t["threads"]
    assert t["share_of_ceiling"] == pytest.approx(t["samples_per_s"] / ceiling["samples_per_s"],
                                                  abs=0.01)  # fmt: skip


def test_matmul_ceiling_counts_three_products_per_layer_but_two_for_the_inputs():
    from moodshift.model.network import Architecture

    arch = Architecture(dim=8, n_classes=3, hidden=(16, 4), class_hidden=(5, 6), head_hidden=7)
    got = bench.matmul_ceiling(arch=arch, batch=32, threads=1, reps=2)
    weights_in = 8 * 16 + 3 * 5  # the first layer of each branch: no input gradient
    weights_rest = 16 * 4 + 5 * 6 + (4 + 6) * 7 + 7 * 8
    assert got["flops_per_sample"] == 2 * (2 * weights_in + 3 * weights_rest)
    assert got["samples_per_s"] > 0 and got["matmul_gflops"] > 0


def test_busy_processes_run_and_are_stopped():
    with bench.busy_processes(2) as pids:
        assert len(pids) == 2
        for pid in pids:
            os.kill(pid, 0)  # alive
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_embed_reports_realtime_factor_or_a_reason():
    r = _roundtrip(bench.run_bench("embed", embed_seconds=2.0, **TINY))
    embedders = r["embed"]["embedders"]
    assert set(embedders) == {"features", "musicnn"}
    # Both ship with the package (musicnn's weights included): neither may be skipped.
    for name, rec in embedders.items():
        assert "skipped" not in rec, rec
        assert rec["x_realtime"] > 0 and rec["dim"] == {"features": 72, "musicnn": 200}[name]


@pytest.mark.parametrize("kind", ["auto", "hnsw", "ivf"])
def test_query_reports_latency_percentiles(kind):
    r = _roundtrip(bench.run_bench("query", query_sizes=(1500,), query_kind=kind, **TINY))
    (size,) = r["query"]["sizes"]
    assert size["n"] == 1500 and size["p50_ms"] <= size["p99_ms"]
    assert set(size) >= STAGE_KEYS
    assert size["index"] == {"auto": "flat", "hnsw": "hnsw", "ivf": "ivf"}[kind]
    # A flat index is exact; the others have efSearch / nprobe tuned until recall@10 >= 0.95.
    assert size["recall_at_10"] == 1.0 if kind == "auto" else size["recall_at_10"] >= 0.95
    assert kind == "auto" or size[{"hnsw": "efSearch", "ivf": "nprobe"}[kind]] >= 1


def test_query_refuses_an_unknown_index_kind():
    with pytest.raises(InputError, match="unknown index kind"):
        bench.run_bench("query", query_sizes=(500,), query_kind="lsh", **TINY)


def test_ivf_index_used_for_large_catalogues_searches_through_faiss_index():
    x, _ = bench.synthetic_vectors(n=3000, dim=16, classes=2, seed=0)
    index = bench._ivf_index(x, seed=0)
    ids, _ = index.search(x[:5], k=3)
    assert ids.shape == (5, 3) and (ids[:, 0] == np.arange(5)).mean() >= 0.8


def test_all_runs_every_stage(monkeypatch):
    # The serving benchmark starts a server on 100k tracks: stand it in with a stub here.
    monkeypatch.setitem(bench.BENCHMARKS, "serve",
                        bench.Benchmark(lambda **_: {"stub": True}, "stub"))  # fmt: skip
    r = _roundtrip(bench.run_bench("all", query_sizes=(1200,), train_n=600, train_epochs=1,
                                   embed_seconds=1.0, approx_sample=64, **TINY))  # fmt: skip
    assert set(bench.ALL) <= set(r)
    assert r["serve"] == {"stub": True}
    # approx reuses the self-join's measured time for the full size.
    full = r["approx"]["sizes"][-1]
    assert full["exact_how"].startswith("measured")


def test_mining_compares_exact_and_ivf_training():
    r = _roundtrip(bench.run_bench("mining", train_n=600, mining_epochs=1, **TINY))
    m = r["mining"]
    assert set(m["runs"]) == {"exact", "ivf"}
    for rec in m["runs"].values():
        assert "mood_p@1" in rec["test"] and "genre_p@1" in rec["test"]
    assert set(m["delta"]) >= {"mood_p@1", "genre_p@1"}


def test_synthetic_vectors_are_unit_and_labelled():
    x, y = bench.synthetic_vectors(n=2500, dim=24, classes=4, seed=3, chunk=1000)
    assert x.shape == (2500, 24) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-5)
    assert set(np.unique(y)) == {0, 1, 2, 3}
    x2, y2 = bench.synthetic_vectors(n=2500, dim=24, classes=4, seed=3, chunk=1000)
    assert np.array_equal(x, x2) and np.array_equal(y, y2)


@pytest.mark.parametrize(
    ("what", "kwargs", "match"),
    [("nope", {}, "unknown benchmark"), ("selfjoin", {"n": 3}, "too small"),
     ("selfjoin", {"dim": 0}, "dim")],
)  # fmt: skip
def test_bad_arguments(what, kwargs, match):
    args = {**TINY, **kwargs}
    with pytest.raises(InputError, match=match):
        bench.run_bench(what, **args)


def test_the_cli_offers_every_registered_benchmark():
    import argparse

    from moodshift.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    what = next(a for a in sub.choices["bench"]._actions if a.dest == "what")
    assert tuple(what.choices) == bench.WHATS == (*bench.BENCHMARKS, "all")
    assert set(bench.ALL) == {name for name, b in bench.BENCHMARKS.items() if b.in_all}


@pytest.mark.slow
def test_request_bench_times_the_cli_and_the_server_on_one_index(tmp_path):
    from moodshift.bench.serve import run_request_bench

    r = _roundtrip(run_request_bench(n=1500, dim=16, count=32, processes=1, epochs=1,
                                     workdir=tmp_path, progress=False))  # fmt: skip
    assert r["queries"] == 32 and r["index"] == [r["setup"]["index"]["kind"]] == ["flat"]
    assert r["server_ms_per_query"] > 0 and r["cli_ms_per_query"] > 0
    assert r["cli_over_server"] == round(r["cli_ms_per_query"] / r["server_ms_per_query"], 2)
    assert [run["index"] for run in r["cli_process_seconds"]] == ["flat"]
