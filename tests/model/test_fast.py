"""The numpy transform (read through the one layer mapping) and the evidence settings."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch import nn

from moodshift.model.fast import EvidenceSettings, NumpyTransform
from moodshift.model.network import (
    Architecture,
    Dropout,
    branch_layers,
)
from moodshift.values import l2_normalize

CLASSES = ["calm", "energetic", "happy", "sad"]

# Every architecture option; shift_scale only acts with the centroid shift, so its other
# value is tried there alone.
OPTIONS = [
    o for o in itertools.product([False, True], [0, 20], [False, True], [1.0, 3.0])
    if o[2] or o[3] == 1.0
]  # fmt: skip


KINDS = {nn.Linear: "linear", nn.ReLU: "relu", Dropout: "dropout"}


@pytest.mark.parametrize(("residual", "head_hidden", "centroid_shift", "shift_scale"), OPTIONS)
def test_the_layer_mapping_is_the_torch_network(residual, head_hidden, centroid_shift,
                                                shift_scale, rng, random_model):  # fmt: skip
    model = random_model(residual=residual, head_hidden=head_hidden,
                         centroid_shift=centroid_shift, shift_scale=shift_scale)  # fmt: skip
    net = model.net
    plan = branch_layers(net.arch)
    # The torch network's layers, branch by branch, are the mapping's, with its sizes.
    for name, layers in plan.items():
        seq = getattr(net, name)
        assert [KINDS[type(mod)] for mod in seq] == [layer[0] for layer in layers], name
        for mod, layer in zip(seq, layers, strict=True):
            if layer[0] == "linear":
                assert (mod.in_features, mod.out_features) == layer[1:]
            if layer[0] == "dropout":
                assert mod.p == layer[1]
    # The numpy transform reads every state-dict entry through the mapping ...
    fast = NumpyTransform.of(model)
    # ... and answers as the torch model does.
    x = l2_normalize(rng.standard_normal((64, 24)).astype(np.float32))
    src = rng.integers(0, 4, 64)
    tgt = rng.integers(0, 4, 64)
    strength = rng.uniform(0, 1, 64).astype(np.float32)
    ref = model.transform(x, source=src, target=tgt, strength=strength)
    got = fast(x, source=src, target=tgt, strength=strength)
    np.testing.assert_allclose(got, ref, atol=1e-5)
    # The verified builder keeps the numpy path (no fallback) for every option.
    assert isinstance(NumpyTransform.build(model), NumpyTransform)


def test_weights_of_another_architecture_are_refused(random_model):
    model = random_model(residual=False, head_hidden=20, centroid_shift=True, shift_scale=1.0)
    state = model.net.state_dict()
    plain = Architecture(dim=24, n_classes=4, hidden=(32, 16), class_hidden=(8, 12))
    with pytest.raises(ValueError, match="no layer of the architecture reads"):
        NumpyTransform(arch=plain, state=state)
    with pytest.raises(KeyError):
        NumpyTransform(arch=model.net.arch, state={k: v for k, v in state.items()
                                                   if k != "head.4.weight"})  # fmt: skip


def test_a_broken_fast_path_falls_back_to_the_torch_model(rng, caplog, random_model):
    model = random_model(residual=True, head_hidden=0, centroid_shift=False, shift_scale=1.0)
    model.net.register_buffer("stray", torch.ones(3))  # a state entry the mapping does not know
    built = NumpyTransform.build(model)
    assert not isinstance(built, NumpyTransform)
    assert "numpy transform unavailable" in caplog.text
    x = l2_normalize(rng.standard_normal((3, 24)).astype(np.float32))
    np.testing.assert_allclose(built(x, source=0, target=1, strength=1.0),
                               model.transform(x, source=0, target=1, strength=1.0))  # fmt: skip


# ---------------------------------------------------------------------- evidence settings
def test_evidence_settings_read_the_stored_ones_and_round_trip(random_model):
    model = random_model(residual=True, head_hidden=0, centroid_shift=False, shift_scale=1.0)
    model.config = {
        "default_strength": 0.4,
        "evidence": {"strength_label": 0.6, "strength_probe": 0.9, "weight": 0.25},
    }
    settings = EvidenceSettings.of(model)
    assert settings == EvidenceSettings(strength_label=0.6, strength_probe=0.9, weight=0.25)
    assert settings.to_dict() == {"strength_label": 0.6, "strength_probe": 0.9, "weight": 0.25}
    model.config["evidence"] = settings.to_dict()
    assert EvidenceSettings.of(model) == settings


def test_evidence_settings_of_an_older_model_use_its_default_strength(random_model):
    model = random_model(residual=True, head_hidden=0, centroid_shift=False, shift_scale=1.0)
    model.config = {"default_strength": 0.4}
    assert EvidenceSettings.of(model) == EvidenceSettings(strength_label=0.4, strength_probe=0.4,
                                                          weight=0.0)  # fmt: skip
    model.config = {"default_strength": 0.4, "evidence": {"weight": 2.0}}
    assert EvidenceSettings.of(model).to_dict() == {
        "strength_label": 0.4,
        "strength_probe": 0.4,
        "weight": 2.0,
    }
