"""Write ``tests/fixtures/evaluate_catalog.json``: inputs and frozen scores of evaluate_catalog.

Run once (``python scripts/make_evaluate_fixture.py``) and check the file in; rerun
only when a change to the protocol is meant to change the scores, and say so in
the commit. The file holds everything the test needs, in mir_eval's manner: a
tiny fixed catalogue (embeddings and labels with their split), the weights of a
small trained model, and the scores ``evaluate_catalog`` gave on it. The test
(``tests/evaluation/test_frozen_scores.py``) rebuilds both from the file, so it
depends neither on the synthetic generator nor on training staying the same.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

from moodshift.evaluation.evaluate import evaluate_catalog
from moodshift.model.network import Architecture
from moodshift.synthetic import make_catalog
from moodshift.training.train import TrainConfig, train

OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "evaluate_catalog.json"
#: The methods that exist when the fixture was made; a new method gets its own entry.
METHODS = ("random", "seed_nn", "mood_shift", "mood_centroid", "oracle_top1", "oracle_rand100",
           "model")  # fmt: skip
KS = (1, 5)


def _one_line(match: re.Match[str]) -> str:
    return "[" + ", ".join(item.strip() for item in match.group(1).split(",\n")) + "]"


def main() -> None:
    cat = make_catalog(n=320, dim=8, seed=0, groups=True, interaction=True)
    arch = Architecture(hidden=(32, 16), class_hidden=(8, 8), head_hidden=16, residual=True)
    cfg = TrainConfig(epochs=30, k=3, batch_size=64, architecture=arch, extrapolation=1.0,
                      choose_strength=False, seed=0)  # fmt: skip
    model = train(cat, config=cfg, progress=False)
    report = evaluate_catalog(cat, model=model, methods=METHODS, ks=KS, seed=0)
    fixture = {
        "about": "made by scripts/make_evaluate_fixture.py; read by "
        "tests/evaluation/test_frozen_scores.py",
        "catalog": {
            "embeddings": cat.embeddings.tolist(),  # float32 values, exact as doubles
            "labels": cat.labels.to_dict(orient="list"),
        },
        "model": {
            "classes": model.classes,
            "attribute": model.attribute,
            "architecture": dataclasses.asdict(model.net.arch),
            "state_dict": {k: v.tolist() for k, v in model.net.state_dict().items()},
        },
        "call": {"methods": list(METHODS), "ks": list(KS), "seed": 0},
        "n_queries": report.n_queries,
        "scores": {
            m: {k: v for k, v in s.items() if k != "primary"} for m, s in report.methods.items()
        },
    }
    # One line per innermost list (an embedding row, a weight row, a label column):
    # readable, and a regenerated file diffs line by line.
    text = re.sub(r"\[([^\[\]{}]*)\]", _one_line, json.dumps(fixture, indent=1))
    assert json.loads(text) == json.loads(json.dumps(fixture))
    OUT.write_text(text + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes, {report.n_queries} queries)")


if __name__ == "__main__":
    main()
