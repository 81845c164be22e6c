"""evaluate_catalog's scores on a tiny fixed catalogue, frozen in the manner of mir_eval.

The fixture (made once by ``scripts/make_evaluate_fixture.py``) holds the inputs
(embeddings, labels with their split, a small model's weights) and the scores
they gave. A change that moves any score fails here; if the change is meant to,
regenerate the fixture and say why in the commit.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from moodshift.data.catalog import Catalog
from moodshift.evaluation.evaluate import evaluate_catalog
from moodshift.model.network import Architecture, MoodshiftModel, MoodTransformer

FIXTURE = json.loads(
    (Path(__file__).resolve().parents[1] / "fixtures" / "evaluate_catalog.json").read_text()
)


@pytest.fixture(scope="module")
def report():
    cat = Catalog(
        embeddings=np.asarray(FIXTURE["catalog"]["embeddings"], dtype=np.float32),
        labels=pd.DataFrame(FIXTURE["catalog"]["labels"]),
    )
    spec = FIXTURE["model"]
    arch = {k: tuple(v) if isinstance(v, list) else v for k, v in spec["architecture"].items()}
    net = MoodTransformer(Architecture(**arch))
    net.load_state_dict({k: torch.tensor(v) for k, v in spec["state_dict"].items()})
    model = MoodshiftModel(net=net, classes=spec["classes"], attribute=spec["attribute"])
    call = FIXTURE["call"]
    return evaluate_catalog(cat, model=model, methods=call["methods"], ks=tuple(call["ks"]),
                            seed=call["seed"])  # fmt: skip


def test_same_queries(report):
    assert report.n_queries == FIXTURE["n_queries"]


@pytest.mark.parametrize("method", sorted(FIXTURE["scores"]))
def test_frozen_scores(report, method):
    expected = FIXTURE["scores"][method]
    got = {k: v for k, v in report.methods[method].items() if k != "primary"}
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-9), (method, key)
