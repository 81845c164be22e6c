"""The transformation network, strength interpolation and the saved model folder."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from moodshift.errors import DimensionMismatchError, FileFormatError, InputError, UnknownLabelError
from moodshift.model.network import (
    Architecture,
    Dropout,
    MoodshiftModel,
    MoodTransformer,
    slerp,
)


def _model(dim: int = 16, residual: bool = False) -> MoodshiftModel:
    torch.manual_seed(0)
    net = MoodTransformer(Architecture(dim=dim, n_classes=4, residual=residual))
    return MoodshiftModel(net=net, classes=["calm", "energetic", "happy", "sad"],
                          embedder={"name": "t", "version": "1", "dim": dim})  # fmt: skip


def test_parameter_count_follows_the_layer_sizes():
    # The paper's layers (docs/method.md: d->1024->512, m->64->128, 640->d) give 3.41 M
    # weights at d = 1728; its "about 2.4 M" does not follow from them, so the layer
    # sizes are what we keep.
    d, m = 1728, 4
    net = MoodTransformer(Architecture(dim=d, n_classes=m))
    n = sum(p.numel() for p in net.parameters())
    expected = (d * 1024 + 1024) + (1024 * 512 + 512) + (m * 64 + 64) + (64 * 128 + 128)
    expected += 640 * d + d
    assert n == expected == 3_411_584


@pytest.mark.parametrize("p", [0.1, 0.3, 0.4, 0.75])
def test_dropout_drops_p_of_every_lane_and_keeps_the_mean(p):
    torch.manual_seed(0)
    drop = Dropout(p).train()
    out = drop(torch.ones(1000, 4000))
    dropped = (out == 0).float()
    # Each element's mask comes from one 16-bit lane of a 64-bit word: every lane position
    # must drop p of its elements (an unbounded random_() would leave one lane in four
    # never dropped), within 6 standard errors of a Bernoulli(p) mean over 10^6 draws.
    per_lane = dropped.reshape(-1, 4).mean(dim=0)
    tol = 6 * (p * (1 - p) / 1e6) ** 0.5
    assert torch.all((per_lane - p).abs() < tol), per_lane
    kept = out[out != 0]
    assert torch.allclose(kept, torch.full_like(kept, 1 / (1 - p)))
    assert abs(out.mean().item() - 1.0) < 6 * (p / (1 - p) / 4e6) ** 0.5


def test_dropout_gradient_follows_its_mask_and_eval_is_the_identity():
    torch.manual_seed(1)
    drop = Dropout(0.3).train()
    x = torch.randn(64, 33, requires_grad=True)
    out = drop(x)
    out.sum().backward()
    mask = (out != 0).float() / 0.7
    assert torch.allclose(out, x.detach() * mask)
    assert torch.allclose(x.grad, mask)
    torch.manual_seed(1)
    again = Dropout(0.3).train()(torch.randn(64, 33))
    assert torch.equal(again, out.detach())  # the global seed repeats the mask
    assert torch.equal(drop.eval()(x.detach()), x.detach())
    assert torch.equal(Dropout(0.0).train()(x.detach()), x.detach())


def test_slerp_endpoints_and_constant_speed(rng):
    a = rng.standard_normal((5, 8))
    b = rng.standard_normal((5, 8))
    an = a / np.linalg.norm(a, axis=1, keepdims=True)
    bn = b / np.linalg.norm(b, axis=1, keepdims=True)
    np.testing.assert_allclose(slerp(a, b, 0.0), an, atol=1e-6)
    np.testing.assert_allclose(slerp(a, b, 1.0), bn, atol=1e-6)
    total = np.arccos(np.clip((an * bn).sum(1), -1, 1))
    half = slerp(a, b, 0.5)
    np.testing.assert_allclose(np.arccos(np.clip((half * an).sum(1), -1, 1)), total / 2,
                               atol=1e-5)  # fmt: skip


def test_strength_zero_returns_seed_direction(rng):
    m = _model()
    x = rng.standard_normal((3, 16)).astype(np.float32)
    out = m.transform(x, source="calm", target="happy", strength=0.0)
    np.testing.assert_allclose(out, x / np.linalg.norm(x, axis=1, keepdims=True), atol=1e-6)
    full = m.transform(x, source="calm", target="happy", strength=1.0)
    assert not np.allclose(full, out, atol=1e-3)


def test_transform_validation(rng):
    m = _model()
    x = rng.standard_normal(16).astype(np.float32)
    with pytest.raises(UnknownLabelError, match="known: calm, energetic, happy, sad"):
        m.transform(x, source="calm", target="angry")
    with pytest.raises(DimensionMismatchError, match="16-d"):
        m.transform(np.ones(8), source="calm", target="happy")
    with pytest.raises(InputError, match="strength"):
        m.transform(x, source="calm", target="happy", strength=1.5)
    bad = x.copy()
    bad[0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        m.transform(bad, source="calm", target="happy")


@pytest.mark.parametrize("residual", [False, True])
def test_save_load_round_trip_identical_outputs(tmp_path, rng, residual):
    m = _model(residual=residual)
    m.config = {"losses": ["cos"], "epochs": 3}
    x = rng.standard_normal((7, 16)).astype(np.float32)
    before = m.transform(x, source="sad", target="happy", strength=0.7)
    m.save(tmp_path / "m")
    assert {p.name for p in (tmp_path / "m").iterdir()} >= {
        "config.json",
        "model.safetensors",
        "vocab.json",
        "embedder.json",
    }
    back = MoodshiftModel.load(tmp_path / "m")
    np.testing.assert_array_equal(back.transform(x, source="sad", target="happy", strength=0.7),
                                  before)  # fmt: skip
    assert back.classes == m.classes and back.embedder["name"] == "t"
    assert back.config["losses"] == ["cos"]


def test_load_rejects_non_model(tmp_path):
    with pytest.raises(FileFormatError, match="not a moodshift model"):
        MoodshiftModel.load(tmp_path)
    m = _model()
    m.save(tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(FileFormatError, match="not a readable safetensors"):
        MoodshiftModel.load(tmp_path / "m")


def test_interrupted_model_save_keeps_old(tmp_path, rng, monkeypatch):
    m = _model()
    m.save(tmp_path / "m")
    x = rng.standard_normal((2, 16)).astype(np.float32)
    ref = m.transform(x, source="sad", target="happy")
    other = _model()
    torch.nn.init.zeros_(other.net.head[1].weight)

    def boom(self, folder):
        (folder / "model.safetensors").write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(MoodshiftModel, "write_into", boom)
    with pytest.raises(KeyboardInterrupt):
        other.save(tmp_path / "m")
    np.testing.assert_array_equal(
        MoodshiftModel.load(tmp_path / "m").transform(x, source="sad", target="happy"), ref
    )


# ---------------------------------------------------------------------- damaged or unusable folders
def _edit_json(path, fn):
    import json

    path.write_text(json.dumps(fn(json.loads(path.read_text()))))


@pytest.mark.parametrize(
    ("name", "damage", "needle"),
    [
        ("vocab.json", lambda p: _edit_json(p, lambda d: {"attribute": "mood"}), "classes"),
        ("vocab.json", lambda p: _edit_json(p, lambda d: ["calm", "sad"]), "expected an object"),
        ("embedder.json", lambda p: p.write_text("{not json"), "not valid JSON"),
        ("training_log.json", lambda p: p.write_text("[{"), "not valid JSON"),
        ("training_log.json", lambda p: _edit_json(p, lambda d: {"epochs": 3}), "per-epoch"),
        ("config.json", lambda p: p.write_text(""), "not valid JSON"),
        ("config.json", lambda p: _edit_json(p, lambda d: {**d, "architecture": None}),
         "architecture"),
        ("config.json",  # a changed architecture: was a 5-line torch message
         lambda p: _edit_json(p, lambda d: {**d, "architecture": {**d["architecture"],
                                                                  "hidden": [512, 256]}}),
         "does not match the architecture"),
        ("config.json", lambda p: _edit_json(p, lambda d: {**d, "default_strength": 1.5}),
         "outside [0, 1]"),
        ("config.json", lambda p: _edit_json(p, lambda d: {**d, "default_strength": "high"}),
         "outside [0, 1]"),
    ],
)  # fmt: skip
def test_damaged_model_files_give_one_line(tmp_path, name, damage, needle):
    _model().save(tmp_path / "m")
    damage(tmp_path / "m" / name)
    with pytest.raises(InputError) as info:
        MoodshiftModel.load(tmp_path / "m")
    msg = str(info.value)
    assert needle in msg and "\n" not in msg, msg
    assert name in msg or "model.safetensors" in msg


def test_model_refuses_a_catalogue_it_cannot_serve(small_catalog):
    from moodshift.data.catalog import Catalog

    cat = small_catalog
    m = MoodshiftModel(net=MoodTransformer(Architecture(dim=cat.dim, n_classes=4)),
                       classes=["calm", "energetic", "happy", "sad"])  # fmt: skip
    m.check_catalog(cat)  # every class labelled, every label known
    keep = np.flatnonzero(cat.labels["mood"].to_numpy() != "sad")
    no_sad = cat.subset(keep)
    with pytest.raises(InputError, match=r"\['sad'\] label no track"):
        m.check_catalog(no_sad)
    # ...unless some tracks are unlabelled (their mood may be any class).
    labels = no_sad.labels.copy()
    labels.loc[0, "mood"] = ""
    Catalog(embeddings=no_sad.embeddings, labels=labels, provenance=dict(no_sad.provenance))
    m.check_catalog(Catalog(embeddings=no_sad.embeddings, labels=labels,
                            provenance=dict(no_sad.provenance)))  # fmt: skip
    labels.loc[1, "mood"] = "furious"
    furious = Catalog(embeddings=no_sad.embeddings, labels=labels,
                      provenance=dict(no_sad.provenance))  # fmt: skip
    # Evaluation cannot score a mood the model does not know...
    with pytest.raises(InputError, match="furious"):
        m.check_catalog(furious, strict=True)
    # ...serving treats it as no label, and says so.
    with pytest.warns(UserWarning, match="furious"):
        m.check_catalog(furious)


def test_the_ranking_space_travels_with_the_model(tmp_path, rng):
    """The space chosen on validation is saved beside the weights and comes back the same."""
    from moodshift.model.ranking import fit_leace

    net = MoodTransformer(Architecture(dim=8, n_classes=2))
    model = MoodshiftModel(net=net, classes=["a", "b"])
    x = rng.standard_normal((60, 8)).astype(np.float32)
    model.ranking = fit_leace(x, np.arange(60) % 2).space(keep=0.5)
    model.save(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["ranking_space"] == {"kind": "leace", "rank": 1, "keep": 0.5}
    back = MoodshiftModel.load(tmp_path / "m")
    np.testing.assert_array_equal(back.ranking.matrix, model.ranking.matrix)
    assert back.ranking.info == cfg["ranking_space"]
    (tmp_path / "m" / "ranking.safetensors").unlink()
    with pytest.raises(FileFormatError, match=r"ranking\.safetensors is missing"):
        MoodshiftModel.load(tmp_path / "m")
    # A model without a space (older folders, or --ranking none) ranks by plain cosine.
    model.ranking = None
    model.save(tmp_path / "plain")
    assert MoodshiftModel.load(tmp_path / "plain").ranking is None
