"""Trade-off curves: endpoints agree with the evaluation table, the level rule, the plots."""

from __future__ import annotations

import json

import numpy as np
import pytest

from moodshift.errors import SweepError
from moodshift.evaluation.evaluate import evaluate_catalog
from moodshift.evaluation.plots import plot_sweep
from moodshift.evaluation.sweep import (
    POINT_KEYS,
    best_at_level,
    dominates,
    level_key,
    run_sweep,
)
from moodshift.synthetic import make_catalog
from moodshift.training.train import TrainConfig, train


@pytest.fixture(scope="module")
def catalog():
    return make_catalog(n=700, dim=24, seed=7, groups=True, interaction=True)


@pytest.fixture(scope="module")
def model(catalog):
    cfg = TrainConfig(epochs=4, k=10, batch_size=128, seed=0)
    return train(catalog, config=cfg, progress=False)


@pytest.fixture(scope="module")
def sweep(catalog, model):
    return run_sweep(catalog, model=model, strengths=[0.0, 0.5, 1.0], alphas=[0.0, 1.0, 2.0],
                     ts=[0.0, 0.5, 1.0], progress=False)  # fmt: skip


@pytest.fixture(scope="module")
def table(catalog, model):
    return evaluate_catalog(catalog, model=model, ks=(1,)).methods


def _same(point, scores):
    for key in POINT_KEYS:
        assert point[key] == pytest.approx(scores[key], abs=1e-12), key


def test_format(sweep):
    assert set(sweep) == {"model", "mood_shift", "centroid_interp", "oracle_top1",
                          "oracle_rand100", "query_default", "tagger_filter",
                          "probe_direction", "erasure_label", "leace_label",
                          "erasure_tagger", "leace_tagger"}  # fmt: skip
    for entry in sweep.values():
        assert "genre_p@1_at_mood_0.9" in entry and "genre_p@1_at_mood_0.95" in entry
        assert "inst_j@1_at_mood_0.9" in entry and "cf@1_at_mood_0.95" in entry
        for point in entry["curve"]:
            assert set(point) == {"param", *POINT_KEYS}
    assert [p["param"] for p in sweep["model"]["curve"]] == [0.0, 0.5, 1.0]
    assert len(sweep["oracle_top1"]["curve"]) == 1
    assert [p["param"] for p in sweep["query_default"]["curve"]] == [0.0, 0.5, 1.0]
    assert sweep["tagger_filter"]["curve"][0]["param"] is None  # the argmax filter
    json.dumps(sweep)  # storable in the evaluation JSON as is


def test_strength_zero_is_seed_nn_and_one_is_the_model_row(sweep, table):
    curve = sweep["model"]["curve"]
    _same(curve[0], table["seed_nn"])
    _same(curve[-1], table["model"])
    # A curve that moved nothing would make both ends equal: the model does change moods.
    assert curve[-1]["mood_p@1"] != curve[0]["mood_p@1"]


@pytest.mark.parametrize("name", ["erasure_label", "leace_label", "erasure_tagger", "leace_tagger"])
def test_erasure_curves_run_from_the_evaluate_row_to_the_plain_filter(sweep, table, name):
    curve = sweep[name]["curve"]
    assert [p["param"] for p in curve] == [pytest.approx(k) for k in np.linspace(0, 1, 11)]
    _same(curve[0], table[name])  # keep 0: the full erasure that `evaluate` reports
    plain = "oracle_top1" if name.endswith("_label") else "tagger_filter"
    _same(curve[-1], table[plain])  # keep 1: nothing erased


def test_baseline_endpoints_match_the_table(sweep, table):
    _same(sweep["mood_shift"]["curve"][0], table["seed_nn"])  # alpha 0: no shift
    _same(sweep["mood_shift"]["curve"][1], table["mood_shift"])  # alpha 1: the plain shift
    _same(sweep["centroid_interp"]["curve"][0], table["seed_nn"])
    _same(sweep["centroid_interp"]["curve"][-1], table["mood_centroid"])
    _same(sweep["oracle_top1"]["curve"][0], table["oracle_top1"])
    _same(sweep["oracle_rand100"]["curve"][0], table["oracle_rand100"])
    _same(sweep["tagger_filter"]["curve"][0], table["tagger_filter"])  # the argmax filter
    _same(sweep["probe_direction"]["curve"][0], table["seed_nn"])  # alpha 0: the seed
    _same(sweep["probe_direction"]["curve"][1], table["probe_direction"])  # alpha 1
    # The engine curve at the label regime's strength is the query_default row.
    s = sweep["query_default"]["settings"]
    if s["strength_label"] in (0.0, 0.5, 1.0) and s["strength_probe"] == s["strength_label"]:
        point = sweep["query_default"]["curve"][[0.0, 0.5, 1.0].index(s["strength_label"])]
        _same(point, table["query_default"])


def test_best_at_level_interpolates_between_points():
    curve = [
        {"mood_p@1": 0.3, "genre_p@1": 1.0},
        {"mood_p@1": 0.5, "genre_p@1": 0.9},
        {"mood_p@1": 1.0, "genre_p@1": 0.5},
    ]
    # Crossing 0.9 on the second segment: 0.9 + (0.9 - 0.5) / 0.5 * (0.5 - 0.9) = 0.58.
    assert best_at_level(curve, level=0.9) == pytest.approx(0.58)
    assert best_at_level(curve, level=1.0) == pytest.approx(0.5)
    assert best_at_level(curve, level=0.2) == pytest.approx(1.0)
    assert best_at_level(curve[:2], level=0.9) is None
    # Knob order, not mood order: a curve that goes up and comes back down.
    bumpy = [{"mood_p@1": 0.8, "genre_p@1": 0.9}, {"mood_p@1": 1.0, "genre_p@1": 0.7},
             {"mood_p@1": 0.92, "genre_p@1": 0.8}]  # fmt: skip
    assert best_at_level(bumpy, level=0.95) == pytest.approx(0.7625)
    assert best_at_level(bumpy, level=0.9) == pytest.approx(0.8)
    assert best_at_level([{"mood_p@1": 0.9, "genre_p@1": None}], level=0.9) is None


def test_dominates():
    def entry(points):
        return {"curve": [{"mood_p@1": m, "genre_p@1": g} for m, g in points]}

    sweep = {
        "model": entry([(0.3, 1.0), (1.0, 0.8)]),
        "shift": entry([(0.3, 1.0), (0.85, 0.95), (1.0, 0.3)]),
        "weak": entry([(0.3, 1.0), (0.7, 0.9)]),
        "same": entry([(0.3, 1.0), (1.0, 0.8)]),
    }
    assert not dominates(sweep, other="shift")["dominates"]  # loses at 0.80-0.85
    assert dominates(sweep, other="weak")["dominates"]  # never reaches 0.8
    assert not dominates(sweep, other="same")["dominates"]  # never strictly better


def test_knobs_are_checked(catalog, model):
    with pytest.raises(SweepError, match="strengths"):
        run_sweep(catalog, model=model, strengths=[0.0, 1.5], progress=False)
    with pytest.raises(SweepError, match="alphas"):
        run_sweep(catalog, model=model, alphas=[1.0], progress=False)


def test_without_a_model_only_baselines(catalog):
    out = run_sweep(catalog, model=None, alphas=[0.0, 2.0], ts=[0.0, 1.0], progress=False)
    assert "model" not in out and "mood_shift" in out
    assert level_key("genre_p@1", 0.95) in out["mood_shift"]


def test_plot_sweep_writes_two_figures(tmp_path, sweep):
    paths = plot_sweep(sweep, out_dir=tmp_path)
    assert [p.name for p in paths] == ["sweep_frontier.png", "sweep_summary.png"]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Without instrument or CF figures there is a single frontier panel (and no crash).
    bare = {m: {"curve": [{"param": p["param"], "mood_p@1": p["mood_p@1"],
                           "genre_p@1": p["genre_p@1"], "inst_j@1": None, "cf@1": None}
                          for p in e["curve"]]} for m, e in sweep.items()}  # fmt: skip
    assert len(plot_sweep(bare, out_dir=tmp_path / "bare")) == 2
