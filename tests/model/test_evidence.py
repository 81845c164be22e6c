"""Evidence fusion: sources, re-centring, the fitted product of experts, persistence."""

from __future__ import annotations

import numpy as np
import pytest

from moodshift.errors import FileFormatError
from moodshift.model.evidence import (
    EvidenceFusion,
    TagHead,
    fit_fusion,
    labels_logp,
    log_softmax,
    recentre,
    score_proba,
)


def _noisy_logp(y: np.ndarray, m: int, signal: float, rng: np.random.Generator) -> np.ndarray:
    return log_softmax(signal * np.eye(m)[y] + rng.standard_normal((len(y), m)))


def test_fusion_weighs_an_informative_source_over_noise(rng):
    m, n = 4, 600
    y = rng.integers(m, size=n)
    good = _noisy_logp(y, m, 3.0, rng)
    noise = log_softmax(rng.standard_normal((n, m)))
    fusion = fit_fusion({"tagger": good, "taghead": noise}, y, recentre_sources=False)
    w = fusion.weights["tagger+taghead"]
    assert w["tagger"] > 0.5 and w["taghead"] < 0.2 * w["tagger"]
    # Weights are fitted by likelihood, so the fused output is calibrated on these rows.
    fused = fusion.combine({"tagger": good, "taghead": noise})
    assert score_proba(fused, y)["ece"] < 0.06
    assert set(fusion.weights) == {"tagger", "taghead", "tagger+taghead"}


def test_two_independent_sources_fuse_better_than_either(rng):
    m, n = 4, 2000
    y = rng.integers(m, size=n)
    a, b = _noisy_logp(y, m, 1.2, rng), _noisy_logp(y, m, 1.2, rng)
    fusion = fit_fusion({"tagger": a, "taghead": b}, y, recentre_sources=False)
    acc = {k: score_proba(np.exp(v), y)["accuracy"] for k, v in (("a", a), ("b", b))}
    fused = score_proba(fusion.combine({"tagger": a, "taghead": b}), y)["accuracy"]
    assert fused > max(acc.values()) + 0.03


def test_recentre_removes_a_catalogue_wide_lean(rng):
    m, n = 4, 400
    y = np.repeat(np.arange(m), n // m)
    lp = _noisy_logp(y, m, 2.0, rng)
    leaning = log_softmax(lp + np.array([3.0, 0, 0, 0]))  # every track pushed to class 0
    assert (np.exp(leaning).argmax(1) == y).mean() < 0.5
    fixed = recentre(leaning)
    np.testing.assert_allclose(np.exp(fixed).sum(1), 1.0, atol=1e-9)
    assert (fixed.argmax(1) == y).mean() > 0.8


def test_labels_source_needs_two_labelled_moods(rng):
    x = rng.standard_normal((30, 8))
    given = np.full(30, -1)
    given[:5] = 0
    assert labels_logp(x, given, classes=["a", "b"]) is None
    given[5:10] = 1
    lp = labels_logp(x, given, classes=["a", "b"])
    assert lp is not None and lp.shape == (30, 2)


def test_taghead_learns_a_map_and_the_fusion_round_trips(tmp_path, rng):
    d, t, m, n = 12, 6, 3, 300
    w, b = rng.standard_normal((t, d)).astype(np.float32), np.zeros(t, np.float32)
    y = rng.integers(m, size=n)
    # Tag k in {0, 1, 2} fires for mood k: the map must find it.
    x = rng.standard_normal((n, d)) * 0.3 + np.linalg.pinv(w)[:, :m].T[y] * 4
    head = TagHead.fit(tag_weight=w, tag_bias=b, tag_names=[f"t{i}" for i in range(t)],
                       embedder="toy", train_x=x, train_y=y, n_classes=m)  # fmt: skip
    assert (head.logits(x).argmax(1) == y).mean() > 0.9
    fusion = EvidenceFusion(weights={"taghead": {"taghead": 1.5}}, taghead=head)
    fusion.write_into(tmp_path)
    back = EvidenceFusion.read_from(tmp_path, dim=d, n_classes=m)
    assert back is not None and back.fingerprint() == fusion.fingerprint()
    p = back.proba(x, tagger=None, classes=["a", "b", "c"])
    np.testing.assert_allclose(p, fusion.proba(x, tagger=None, classes=["a", "b", "c"]), atol=1e-6)
    with pytest.raises(FileFormatError, match="dimension"):
        EvidenceFusion.read_from(tmp_path, dim=d + 1, n_classes=m)
    with pytest.raises(FileFormatError, match="no weights for sources"):
        back.combine({"tagger": np.zeros((2, m))})


def test_a_damaged_evidence_file_names_the_fix(tmp_path):
    (tmp_path / "evidence.json").write_text("{not json")
    with pytest.raises(FileFormatError, match="make_default_model"):
        EvidenceFusion.read_from(tmp_path, dim=4, n_classes=2)


def test_choose_to_label_prefers_uncertain_representative_tracks_and_spreads_them(rng):
    from moodshift.model.evidence import choose_to_label

    # Two dense clusters and a few lone outliers; the model is sure about cluster A.
    a = rng.standard_normal((40, 8)) * 0.05 + np.eye(8)[0] * 3
    b = rng.standard_normal((40, 8)) * 0.05 + np.eye(8)[1] * 3
    lone = rng.standard_normal((5, 8)) * 3
    x = np.vstack([a, b, lone])
    p = np.full((len(x), 4), 0.25)
    p[:40] = [0.97, 0.01, 0.01, 0.01]
    chosen = choose_to_label(p, x, k=2, exclude=np.array([40]))
    assert len(chosen) == 2 and 40 not in chosen
    assert 40 <= chosen[0] < 80  # uncertain and in a dense cluster, not a sure or lone track
    # The second pick is not the first's near twin: it leaves cluster B.
    assert not (40 <= chosen[1] < 80)
    assert len(choose_to_label(p, x, k=200)) == len(x)


def test_non_finite_evidence_files_are_refused(tmp_path, rng):
    """NaN weights in evidence.json or the tag head would be served as NaN probabilities."""
    import json

    from safetensors.numpy import load_file, save_file

    d, t, m, n = 12, 6, 3, 300
    w = rng.standard_normal((t, d)).astype(np.float32)
    y = rng.integers(m, size=n)
    x = rng.standard_normal((n, d)) * 0.3 + np.linalg.pinv(w)[:, :m].T[y] * 4
    head = TagHead.fit(tag_weight=w, tag_bias=np.zeros(t, np.float32),
                       tag_names=[f"t{i}" for i in range(t)], embedder="toy", train_x=x,
                       train_y=y, n_classes=m)  # fmt: skip
    EvidenceFusion(weights={"taghead": {"taghead": 1.0}}, taghead=head).write_into(tmp_path)
    arrays = load_file(str(tmp_path / "taghead.safetensors"))
    arrays["map_bias"][0] = np.nan
    save_file(arrays, str(tmp_path / "taghead.safetensors"))
    with pytest.raises(FileFormatError, match="map_bias"):
        EvidenceFusion.read_from(tmp_path, dim=d, n_classes=m)
    arrays["map_bias"][0] = 0.0
    save_file(arrays, str(tmp_path / "taghead.safetensors"))
    meta = json.loads((tmp_path / "evidence.json").read_text())
    (tmp_path / "evidence.json").write_text(
        json.dumps(meta).replace('"taghead": 1.0', '"taghead": NaN')
    )
    with pytest.raises(FileFormatError, match=r"evidence\.json"):
        EvidenceFusion.read_from(tmp_path, dim=d, n_classes=m)
