"""Registry, provenance and windowing of the embedder plug-in interface."""

from __future__ import annotations

import numpy as np
import pytest

from moodshift.audio.embedders import (
    Embedder,
    available_embedders,
    embedder_from_provenance,
    get_embedder,
    register_embedder,
    window_starts,
)
from moodshift.errors import EmbedderMismatchError, InputError


class ConstantEmbedder(Embedder):
    name = "test-constant"
    version = "1"
    dim = 3
    sample_rate = 8000

    def __init__(self, *, value: float = 1.0) -> None:
        self.value = value

    def embed(self, audio: np.ndarray, sr: int) -> np.ndarray:
        return np.full(self.dim, self.value, dtype=np.float32)


def test_builtins_registered() -> None:
    names = available_embedders()
    for name in ("musicnn", "musicnn-msd", "musicnn-mtt", "features"):
        assert name in names
    assert names == sorted(names)


def test_unknown_name_lists_known_ones() -> None:
    with pytest.raises(InputError, match=r"unknown embedder 'nope'.*features.*musicnn"):
        get_embedder("nope")


def test_register_custom_and_duplicates() -> None:
    register_embedder("test-constant", ConstantEmbedder, overwrite=True)
    emb = get_embedder("test-constant", value=2.0)
    assert isinstance(emb, ConstantEmbedder)
    assert emb.embed(np.zeros(10), 8000).tolist() == [2.0, 2.0, 2.0]
    assert emb.provenance() == {"name": "test-constant", "version": "1", "dim": 3}
    with pytest.raises(InputError, match="already registered"):
        register_embedder("test-constant", ConstantEmbedder)
    with pytest.raises(InputError, match="bad options"):
        get_embedder("test-constant", colour="red")
    with pytest.raises(InputError, match="callable"):
        register_embedder("test-x", 42)  # type: ignore[arg-type]
    register_embedder("test-notembedder", lambda: object(), overwrite=True)
    with pytest.raises(InputError, match="not an Embedder"):
        get_embedder("test-notembedder")


def test_musicnn_names_and_provenance_roundtrip() -> None:
    default = get_embedder("musicnn")
    assert default.provenance() == {
        "name": "musicnn-msd", "version": "1", "dim": 200,
        "options": {"model": "MSD_musicnn", "output": "penultimate"},
    }  # fmt: skip
    mtt = get_embedder("musicnn-mtt", output="tags")
    assert mtt.provenance()["options"] == {"model": "MTT_musicnn", "output": "tags"}
    again = embedder_from_provenance(mtt.provenance())
    assert again.provenance() == mtt.provenance()
    with pytest.raises(EmbedderMismatchError, match="re-embed"):
        embedder_from_provenance({**default.provenance(), "version": "0"})


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [(7.0, [0, 2, 4]), (8.0, [0, 2, 4, 5]), (7.5, [0, 2, 4]), (2.0, [0]), (3.0, [0]),
     (4.0, [0, 1]), (3.5, [0])],
)  # fmt: skip
def test_window_starts(seconds: float, expected: list[float]) -> None:
    sr = 100
    starts = window_starts(int(seconds * sr), win=3 * sr, hop=2 * sr)
    assert (starts / sr).tolist() == expected
    assert starts.dtype == np.int64
