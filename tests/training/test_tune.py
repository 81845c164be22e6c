"""Choosing the configuration on validation: test split unread, budget, resume, the rule."""

from __future__ import annotations

import json

import numpy as np
import pytest

import moodshift.training.tune as tune_mod
from moodshift.data.catalog import Catalog
from moodshift.errors import TuneError
from moodshift.evaluation.evaluate import evaluate_catalog
from moodshift.evaluation.sweep import operating_point
from moodshift.model.network import MoodshiftModel
from moodshift.synthetic import make_catalog
from moodshift.training.tune import select, tune

# Two cheap configurations that differ in what they keep (K and the loss mix).
GRID = (
    {"name": "cos_k5", "losses": ("cos",), "k": 5, "epochs": 3, "batch_size": 128},
    {"name": "triplet_k40", "losses": ("cos", "triplet"), "margin": 0.3,
     "relative_margin": False, "k": 40, "epochs": 3, "batch_size": 128},
)  # fmt: skip


@pytest.fixture(scope="module")
def catalog():
    return make_catalog(n=600, dim=24, seed=5, groups=True, interaction=True)


def _poison_test_split(cat: Catalog, seed: int = 0) -> Catalog:
    """Shuffle the test part's labels and replace its embeddings with noise."""
    rng = np.random.default_rng(seed)
    labels = cat.labels.copy()
    emb = cat.embeddings.copy()
    test = np.flatnonzero(labels["split"].to_numpy() == "test")
    for col in ("mood", "genre", "instruments", "group"):
        labels.loc[test, col] = labels.loc[test, col].to_numpy()[rng.permutation(test.size)]
    emb[test] = rng.standard_normal((test.size, cat.dim)).astype(np.float32)
    return Catalog(embeddings=emb, labels=labels, provenance=dict(cat.provenance),
                   split_info=dict(cat.split_info))  # fmt: skip


def test_tune_never_reads_the_test_split(tmp_path, catalog):
    poisoned = _poison_test_split(catalog)
    # The poison is real: the test-split figures of the baselines change.
    before = evaluate_catalog(catalog, methods=["seed_nn"], ks=(1,)).methods["seed_nn"]
    after = evaluate_catalog(poisoned, methods=["seed_nn"], ks=(1,)).methods["seed_nn"]
    assert before["genre_p@1"] != after["genre_p@1"]

    clean = tune(catalog=catalog, out=tmp_path / "clean", grid=GRID, progress=False,
                 verbose=False)  # fmt: skip
    dirty = tune(catalog=poisoned, out=tmp_path / "dirty", grid=GRID, progress=False,
                 verbose=False)  # fmt: skip
    a, b = clean.selection, dirty.selection
    assert a["winner"] == b["winner"]
    assert a["default_strength"] == b["default_strength"]
    assert a["winner_validation"] == b["winner_validation"]
    assert [r.get("val_genre_p@1") for r in a["table"]] == [r.get("val_genre_p@1")
                                                            for r in b["table"]]  # fmt: skip
    for (k, va), (_, vb) in zip(clean.net.state_dict().items(), dirty.net.state_dict().items(),
                                strict=True):  # fmt: skip
        assert np.array_equal(va.numpy(), vb.numpy()), k


def test_outputs_budget_and_resume(tmp_path, catalog, monkeypatch):
    calls = []
    real_train = tune_mod.train

    def counting_train(*args, **kwargs):
        calls.append(kwargs["config"].k)
        return real_train(*args, **kwargs)

    monkeypatch.setattr(tune_mod, "train", counting_train)
    out = tmp_path / "m"
    # A spent budget still trains the first configuration, and nothing after it.
    model = tune(catalog=catalog, out=out, grid=GRID, budget_s=0, progress=False, verbose=False)
    assert calls == [5]
    statuses = [r["status"] for r in model.selection["table"]]
    assert statuses == ["done", "skipped (budget)"]
    # A rerun with time left trains only what is missing.
    model = tune(catalog=catalog, out=out, grid=GRID, budget_s=600, progress=False, verbose=False)
    assert calls == [5, 40]
    tune(catalog=catalog, out=out, grid=GRID, budget_s=600, progress=False, verbose=False)
    assert calls == [5, 40]
    assert (out.parent / "m.tune").is_dir()

    table = json.loads((out / "tuning.json").read_text())
    assert [r["name"] for r in table["rows"]] == ["cos_k5", "triplet_k40"]
    csv_lines = (out / "tuning.csv").read_text().splitlines()
    assert csv_lines[0].startswith("name,status,feasible,tier,kept,strength,val_mood_p@1,")
    assert len(csv_lines) == 3
    loaded = MoodshiftModel.load(out)
    sel = json.loads((out / "selection.json").read_text())
    assert sel["winner"] in ("cos_k5", "triplet_k40") and "mood_p@1 >= mood_target" in sel["rule"]
    assert len(sel["table"]) == 2 and sel["split"] == "val"
    assert loaded.default_strength == sel["default_strength"] == model.default_strength
    assert loaded.config["k"] == sel["winner_config"]["k"]


def test_operating_point_and_winner_rule():
    curve = [
        {"param": 0.0, "mood_p@1": 0.3, "preservation": 0.95},
        {"param": 0.5, "mood_p@1": 0.91, "preservation": 0.8},
        {"param": 0.75, "mood_p@1": 0.95, "preservation": 0.8},
        {"param": 1.0, "mood_p@1": 0.99, "preservation": 0.6},
    ]
    point, tier = operating_point(curve, mood_target=0.9)
    assert tier == 2 and point["param"] == 0.75  # same preservation: more mood wins
    # Nothing reaches 0.995: the best primary = min(mood / target, 1) + preservation.
    point, tier = operating_point(curve, mood_target=0.995)
    assert tier == 1 and point["param"] == 0.75  # 0.955 + 0.8 beats 0.995 + 0.6
    assert point["primary"] == pytest.approx(0.95 / 0.995 + 0.8)
    # With the collapse at 0.55 and the seed at 0.95, s = 1 keeps (0.6 - 0.55) / 0.4 < 0.25:
    # it no longer counts as reaching 0.98, so nothing is feasible there.
    point, tier = operating_point(curve, mood_target=0.98, bounds=(0.55, 0.95))
    assert point["kept"] == pytest.approx(0.625) and tier == 1 and point["param"] == 0.75
    point, tier = operating_point(curve, mood_target=0.98)
    assert tier == 2 and point["param"] == 1.0
    # Everything collapsed: tier 0, still the best primary.
    point, tier = operating_point(curve, mood_target=0.9, bounds=(0.96, 1.0))
    assert tier == 0 and point["param"] == 0.75

    def row(name, tier, score, mood, secs=1.0):
        return {"name": name, "status": "done", "tier": tier, "score": score,
                "val_mood_p@1": mood, "train_seconds": secs}  # fmt: skip

    rows = [
        row("keeps_all", 1, 1.9, 0.85),
        row("ok", 2, 0.7, 0.92),
        row("better", 2, 0.8, 0.9),
        row("collapsed", 0, 1.2, 1.0),
        row("skipped", 2, 1.0, 1.0) | {"status": "skipped (budget)"},
    ]
    assert select(rows)["name"] == "better"
    assert select([rows[0], rows[3]])["name"] == "keeps_all"
    assert select([row("slow", 2, 0.8, 0.9, secs=9.0), rows[2]])["name"] == "better"
    with pytest.raises(TuneError):
        select(rows[4:])


def test_bad_grids_are_refused(tmp_path, catalog):
    with pytest.raises(TuneError, match="unknown options"):
        tune(catalog=catalog, out=tmp_path / "x", grid=[{"name": "a", "kk": 3}], verbose=False)
    with pytest.raises(TuneError, match="twice"):
        tune(catalog=catalog, out=tmp_path / "x", grid=[{"name": "a"}, {"name": "a"}],
             verbose=False)  # fmt: skip


@pytest.mark.slow
def test_default_model_beats_the_centroid_shift_with_interaction():
    """Where each genre expresses a mood differently, one global shift cannot follow it.

    Measured on this catalogue (seed 1, n=1000, 32-d, noise 0.1, test split): the
    centroid shift never reaches Mood P@1 0.9 for any alpha in [0, 2] (at most 0.31);
    the default model (150 epochs, 19 s) reaches it with Genre P@1 0.997 (0.979 at
    strength 1, Mood P@1 0.94). A curve that never reaches the level keeps nothing there.
    """
    from moodshift.evaluation.sweep import run_sweep
    from moodshift.training.train import TrainConfig, train

    cat = make_catalog(n=1000, dim=32, noise=0.1, seed=1, groups=True, interaction=True)
    model = train(cat, config=TrainConfig(), progress=False)
    sweep = run_sweep(cat, model=model, alphas=[0.0, 0.5, 1.0, 1.5, 2.0], ts=[0.0, 1.0],
                      progress=False)  # fmt: skip
    mine = sweep["model"]["genre_p@1_at_mood_0.9"]
    shift = sweep["mood_shift"]["genre_p@1_at_mood_0.9"] or 0.0
    assert mine is not None, "the default model never reaches Mood P@1 0.9"
    assert mine >= shift + 0.6
    # The stored default strength is an operating point that reaches the target on test too.
    point = min(sweep["model"]["curve"], key=lambda p: abs(p["param"] - model.default_strength))
    assert point["mood_p@1"] >= 0.85


def test_strength_is_swept_once_per_configuration(tmp_path, catalog, monkeypatch):
    import moodshift.evaluation.sweep as sweep_mod

    calls = []
    real_curve = sweep_mod.strength_curve

    def counting_curve(*args, **kwargs):
        calls.append(1)
        return real_curve(*args, **kwargs)

    # train() imports strength_curve from the sweep module when it chooses a strength;
    # tune() holds its own reference: count both.
    monkeypatch.setattr(sweep_mod, "strength_curve", counting_curve)
    monkeypatch.setattr(tune_mod, "strength_curve", counting_curve)
    model = tune(catalog=catalog, out=tmp_path / "m", grid=GRID, progress=False, verbose=False)
    assert len(calls) == len(GRID)
    assert model.default_strength == model.selection["default_strength"]
