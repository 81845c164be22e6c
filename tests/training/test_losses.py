"""Each loss on hand-made vectors."""

from __future__ import annotations

import math

import pytest
import torch

from moodshift.errors import InputError
from moodshift.training.losses import CosineBCELoss, CosineLoss, TripletLoss, build_losses

E1 = torch.tensor([[1.0, 0.0]])
E2 = torch.tensor([[0.0, 1.0]])
DIAG = torch.tensor([[1.0, 1.0]]) / math.sqrt(2)
DIFF = torch.tensor([False])
SAME = torch.tensor([True])


def test_cosine_loss():
    assert CosineLoss()(E1, E1, E1, DIFF).item() == pytest.approx(0.0)
    assert CosineLoss()(E1, E1, E2, DIFF).item() == pytest.approx(1.0)


def test_triplet_fixed_margin():
    # output on the target: cos(o, s) = 0, cos(o, t) = 1 -> max(0, 0.3 + 0 - 1) = 0
    assert TripletLoss(0.3)(E2, E1, E2, DIFF).item() == pytest.approx(0.0)
    # output halfway: 0.3 + 0.707 - 0.707 = 0.3
    assert TripletLoss(0.3)(DIAG, E1, E2, DIFF).item() == pytest.approx(0.3, abs=1e-6)


def test_triplet_relative_margin_and_mask():
    # gap 1 - cos(s, t) = 1, gamma 0.5 -> margin 0.5
    assert TripletLoss(0.5, relative=True)(DIAG, E1, E2, DIFF).item() == pytest.approx(
        0.5, abs=1e-6
    )
    # identity pairs are masked out entirely
    assert TripletLoss(0.3)(DIAG, E1, E1, SAME).item() == 0.0


def test_cosine_bce_labels():
    loss = CosineBCELoss()
    # identity pair, output = target: BCE(sigmoid(3), 1) = log(1 + e^-3)
    assert loss(E1, E1, E1, SAME).item() == pytest.approx(math.log1p(math.exp(-3)), rel=1e-5)
    # mood-changing pair: minimum at cos = 0 (sigmoid(0) = 0.5): BCE = log 2
    assert loss(E2, E1, E1, DIFF).item() == pytest.approx(math.log(2), rel=1e-5)
    seed_form = CosineBCELoss(on="seed")
    assert seed_form(E1, E1, E2, DIFF).item() != pytest.approx(loss(E1, E1, E2, DIFF).item())


def test_build_losses_rejects_unknown():
    with pytest.raises(InputError, match="choose from cos, triplet, cosbce"):
        build_losses(("cos", "hinge"))
    assert list(build_losses(("cos", "triplet"))) == ["cos", "triplet"]
