"""Ray engine: the self-join and embedding extraction equal their single-process results."""

from __future__ import annotations

import sys
import threading

import numpy as np
import pytest

from audio_helpers import write_tone

ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'moodshift[ray]')")

from moodshift._ray import ray_session  # noqa: E402
from moodshift.audio.embedders import Embedder, embed_files, register_embedder  # noqa: E402
from moodshift.audio.ray_embed import ray_embed_files  # noqa: E402
from moodshift.errors import InputError  # noqa: E402
from moodshift.mining.neighbors import class_topk  # noqa: E402
from moodshift.mining.ray_engine import ray_class_topk  # noqa: E402

pytestmark = [
    pytest.mark.ray,
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray with 2 worker CPUs for the whole module (start-up costs seconds)."""
    from ray import cloudpickle

    # Workers cannot import this test module: send its classes (the embedder) by value,
    # as cloudpickle does by itself for classes defined in a user's script.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        with ray_session(num_cpus=2) as r:
            yield r
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


class TinyEmbedder(Embedder):
    """Deterministic 4-d summary of the audio: a stand-in for a real embedder."""

    name = "tiny-test"
    version = "1"
    dim = 4
    sample_rate = 8000

    def embed(self, audio: np.ndarray, sr: int) -> np.ndarray:
        a = np.asarray(audio, dtype=np.float64)
        spec = np.abs(np.fft.rfft(a[:4096]))
        return np.array([a.mean(), a.std(), np.abs(a).max(), float(np.argmax(spec))],
                        dtype=np.float32)  # fmt: skip


def test_ray_self_join_equals_single_process(local_ray, rng):
    x = rng.standard_normal((1500, 16)).astype(np.float32)
    y = rng.integers(3, size=1500)
    ref = class_topk(embeddings=x, labels=y, k=15)
    # Small blocks and shards: every list is merged from several partial lists.
    got = ray_class_topk(embeddings=x, labels=y, k=15, block=600, shard=300)
    assert got.info["backend"] == "ray"
    for i in range(len(x)):
        for c in range(3):
            assert set(got.indices[i, c]) == set(ref.indices[i, c]), (i, c)
    np.testing.assert_allclose(got.scores, ref.scores, atol=1e-5)
    assert np.array_equal(got.counts, ref.counts)


def test_ray_embedding_equals_single_process(local_ray, tmp_path):
    register_embedder("tiny-test", TinyEmbedder, overwrite=True)
    paths = []
    for i, freq in enumerate((220.0, 330.0, 440.0, 550.0, 660.0)):
        paths.append(tmp_path / f"t{i}.wav")
        write_tone(paths[-1], freq=freq, seconds=0.3, amplitude=0.4)
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF0000WAVEnot really audio")
    paths.insert(2, bad)
    ref = embed_files(paths, embedder="tiny-test", progress=False)
    got = ray_embed_files(paths, embedder="tiny-test", batch_size=2)
    assert np.array_equal(got.ok_indices, ref.ok_indices)
    np.testing.assert_array_equal(got.embeddings, ref.embeddings)
    assert [p for p, _ in got.failures] == [str(bad)]
    assert got.provenance["name"] == "tiny-test"


def test_ray_embedding_rejects_unpicklable_embedders(local_ray, tmp_path):
    class Local(TinyEmbedder):
        pass

    emb = Local()
    emb.lock = threading.Lock()  # locks cannot be pickled
    with pytest.raises(InputError, match="cannot be pickled"):
        ray_embed_files([tmp_path / "x.wav"], embedder=emb)


def test_train_with_ray_engine(local_ray, small_catalog):
    from moodshift.training.train import TrainConfig, train

    model = train(small_catalog, config=TrainConfig(epochs=1, k=10), progress=False,
                  engine="ray")  # fmt: skip
    assert model.config["training"]["k"] == 10
