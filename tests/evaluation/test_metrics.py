"""Metrics against hand-computed fixtures (tests/fixtures/metrics_cases.json)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from moodshift.errors import InputError
from moodshift.evaluation import metrics

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "metrics_cases.json"
CASES = json.loads(FIXTURE.read_text())


def _sets(rows):
    return [[frozenset(x) for x in row] for row in rows]


@pytest.mark.parametrize("case", CASES["precision"], ids=lambda c: c["name"])
def test_mood_precision_fixture(case):
    got = metrics.mood_precision(case["reference"], case["estimated"], k=case["k"])
    assert got == pytest.approx(case["expected"])


@pytest.mark.parametrize("case", CASES["genre"], ids=lambda c: c["name"])
def test_genre_precision_fixture(case):
    ref = [frozenset(r) for r in case["reference"]]
    est = _sets(case["estimated"])
    assert metrics.genre_precision(ref, est, k=case["k"]) == pytest.approx(case["exact"])
    assert metrics.genre_any_precision(ref, est, k=case["k"]) == pytest.approx(case["any"])


@pytest.mark.parametrize("case", CASES["jaccard"], ids=lambda c: c["name"])
def test_instrument_jaccard_fixture(case):
    ref = [frozenset(r) for r in case["reference"]]
    got = metrics.instrument_jaccard(ref, _sets(case["estimated"]), k=case["k"])
    assert got == pytest.approx(case["expected"])


def test_jaccard_both_empty_is_zero():
    assert metrics.jaccard(frozenset(), frozenset()) == 0.0


def test_counterfactual_hit():
    assert metrics.counterfactual_hit(["a", "b"], [["x", "a"], ["b", "y"]], k=1) == 0.5
    assert metrics.counterfactual_hit(["a", "b"], [["x", "a"], ["b", "y"]], k=2) == 1.0


@pytest.mark.parametrize(
    ("reference", "estimated", "k"),
    [
        (["a"], [["a"]], 0),
        (["a", "b"], [["a"]], 1),
        ([], [], 1),
        (["a"], [["a"]], True),
        ("a", [["a"]], 1),  # a bare string is not one reference per query
        (["a"], ["a"], 1),  # nor a ranked list
        ([float("nan")], [[float("nan")]], 1),
        ([None], [["a"]], 1),
    ],
)
def test_validation_rejects_bad_input(reference, estimated, k):
    with pytest.raises(InputError):
        metrics.mood_precision(reference, estimated, k=k)


@pytest.mark.parametrize(
    "call",
    [
        lambda: metrics.genre_precision(["rock"], [["cork"]], k=1),
        lambda: metrics.genre_any_precision([frozenset({"rock"})], [["rock"]], k=1),
        lambda: metrics.instrument_jaccard([frozenset({"a"})], [[frozenset({1})]], k=1),
        lambda: metrics.label_preservation(["x"], [[frozenset({"x"})]], k=1),
    ],
)
def test_set_metrics_refuse_strings_as_label_sets(call):
    """A string label set was split into characters: "rock" and "cork" matched."""
    with pytest.raises(InputError, match=r"set of labels|must be strings"):
        call()


def test_nan_is_never_a_counterfactual_hit():
    nan = float("nan")
    with pytest.raises(InputError, match="real value"):
        metrics.counterfactual_hit([nan], [[nan, "b"]], k=2)


def test_short_lists_are_scored_over_the_results_they_have():
    # One query with two results at k=5: P@5 = 1/2, never padded to five.
    assert metrics.mood_precision(["a"], [["a", "b"]], k=5) == 0.5
    assert metrics.mood_precision(["a", "a"], [["a"], []], k=3) == 0.5  # empty list: 0
    j = metrics.instrument_jaccard([frozenset({"x"})], [[frozenset({"x"})]], k=10)
    assert j == 1.0
    assert metrics.counterfactual_hit(["c"], [["a", "c"]], k=10) == 1.0


def test_evaluate_names_and_values():
    out = metrics.evaluate(
        target=["happy", "sad"],
        retrieved_attribute=[["happy", "sad"], ["happy", "sad"]],
        seed_labels={"genre": [frozenset({"rock"}), frozenset({"pop"})],
                     "instruments": [frozenset({"piano"}), frozenset()]},
        retrieved_labels={"genre": _sets([[["rock"], ["pop"]], [["rock"], ["pop"]]]),
                          "instruments": _sets([[["piano"], []], [[], ["drums"]]])},
        ks=(1, 2),
    )  # fmt: skip
    assert out["mood_p@1"] == 0.5
    assert out["mood_p@2"] == 0.5
    assert out["genre_p@1"] == 0.5
    assert out["genre_p@2"] == 0.5
    assert out["inst_j@1"] == 0.5
    assert out["inst_j@2"] == 0.25
    assert set(out) == {f"{m}@{k}" for m in ("mood_p", "genre_p", "genre_any_p", "inst_j")
                        for k in (1, 2)}  # fmt: skip
