"""bench transfer on a tiny rendered corpus: every figure present, in range, and honest."""

from __future__ import annotations

import pytest

from moodshift.audio.corpus.render import default_soundfonts
from moodshift.bench.transfer import corpus_parts, run_transfer_bench


def test_the_parts_share_no_soundfont_genre_or_tune_share():
    parts = corpus_parts(seed=0)
    train, cross = parts["train_wide"], parts["cross"]
    assert train.soundfont != cross.soundfont
    assert not set(train.genres) & set(cross.genres)
    assert train.melody_part != cross.melody_part
    assert cross.variety == "classic" and not cross.augment  # the corpus as shipped


@pytest.mark.slow
def test_bench_transfer_measures_in_domain_cross_and_the_ceiling(tmp_path):
    if len(default_soundfonts()) < 2:
        pytest.skip(
            "needs both GM soundfonts (apt-get install fluid-soundfont-gm timgm6mb-soundfont)"
        )
    r = run_transfer_bench(workdir=tmp_path, n_train=64, n_cross=64, clip_seconds=3.0,
                           epochs=2, variants=("wide",), workers=1, progress=False,
                           cross_parts=("cross",))  # fmt: skip
    wide = r["wide"]
    for dom in ("in_domain", "cross"):
        t = wide["tagger"][dom]
        assert 0.0 <= t["accuracy"] <= 1.0 and 0.0 <= t["ece"] <= 1.0 and t["n"] > 0
        ev = wide["evidence"][dom]
        assert {"tagger", "taghead", "taghead (re-centred)", "fused"} <= set(ev)
        assert ev["tagger"]["accuracy"] == t["accuracy"]  # one figure, two places
        engine = wide["engine"][dom]
        assert {"query_default", "tagger_filter"} <= set(engine)
        assert 0.0 <= engine["query_default"]["mood_p@1"] <= 1.0
    # The cross figures are measured on tracks of the held-out soundfont only.
    assert r["parts"]["cross"]["soundfont"] == "TimGM6mb"
    assert 0.0 < r["ceiling"]["cross"]["accuracy"] <= 1.0
    assert r["chance"]["cross"]["accuracy"] >= 0.25
    curve = wide["labelling"]["cross"]
    assert set(curve) == {"active", "random"} and set(curve["active"]) == {"5/mood", "10/mood",
                                                                            "20/mood"}  # fmt: skip
    assert (tmp_path / "model_wide" / "evidence.json").is_file()
