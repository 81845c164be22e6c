"""Active learning shared by ``moodshift label`` and the page (retrieval.labelling)."""

from __future__ import annotations

import numpy as np

from moodshift.model.evidence import choose_to_label, label_density
from moodshift.retrieval.labelling import label_codes, set_label, to_label


def test_label_codes_to_label_and_set_label(serve_catalog, serve_model):
    lib = serve_catalog.subset(np.arange(len(serve_catalog)))
    labels = lib.labels.copy()
    labels.loc[labels.index[:40], "mood"] = ""
    labels.loc[labels.index[40], "mood"] = " SAD "  # case and spaces as a tag editor leaves them
    labels.loc[labels.index[41], "mood"] = "melancholic"  # a mood the model does not know
    lib.labels = labels
    codes = label_codes(lib, serve_model)
    assert codes[40] == serve_model.classes.index("sad") and codes[41] == -1
    assert (codes[:40] == -1).all() and (codes[42:] >= 0).all()

    rows, proba = to_label(model=serve_model, embeddings=lib.embeddings, labels=codes, k=3,
                           skip=[5])  # fmt: skip
    # The same choice as choose_to_label on the refitted evidence, never a labelled or
    # skipped track.
    taken = np.union1d(np.flatnonzero(codes >= 0), [5])
    expected = choose_to_label(serve_model.mood_proba(lib.embeddings, labels=codes),
                               lib.embeddings, k=3, exclude=taken)  # fmt: skip
    np.testing.assert_array_equal(rows, expected)
    assert proba.shape == (len(lib), len(serve_model.classes))
    # The density, computed once by a caller that asks many times, changes nothing.
    again, _ = to_label(model=serve_model, embeddings=lib.embeddings, labels=codes, k=3, skip=[5],
                        density=label_density(lib.embeddings))  # fmt: skip
    np.testing.assert_array_equal(again, rows)
    assert len(rows) == 3 and not set(rows.tolist()) & ({5} | set(np.flatnonzero(codes >= 0)))

    set_label(lib, row=int(rows[0]), attribute="mood", value="happy")
    assert label_codes(lib, serve_model)[rows[0]] == serve_model.classes.index("happy")
    set_label(lib, row=0, attribute="energy", value="high")  # a column the catalogue lacks
    assert lib.labels["energy"].iat[0] == "high" and lib.labels["energy"].iat[1] == ""
