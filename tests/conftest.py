"""Shared fixtures: a seeded RNG and small synthetic catalogues."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from audio_helpers import write_tone

# Two cores are shared by torch, numpy and the test runner; more threads only contend.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# ... and moodshift's thread policy (moodshift.threads) follows the same override.
os.environ.setdefault("MOODSHIFT_THREADS", "1")

import torch

# Tests are small; on two shared cores one thread per process avoids spin-wait contention
# (measured: a 40-epoch run took 65 s with 2 threads beside other work, 12 s with 1).
torch.set_num_threads(1)


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded generator, so every random input is reproducible."""
    return np.random.default_rng(20251025)


def _random_model(*, residual: bool = False, head_hidden: int = 0, centroid_shift: bool = False,
                  shift_scale: float = 1.0, seed: int = 5) -> Any:  # fmt: skip
    """An untrained 24-d, four-mood model with every weight non-zero (trained ones are)."""
    from moodshift.model.network import Architecture, MoodshiftModel, MoodTransformer

    torch.manual_seed(seed)
    arch = Architecture(dim=24, n_classes=4, hidden=(32, 16), class_hidden=(8, 12),
                        residual=residual, head_hidden=head_hidden,
                        centroid_shift=centroid_shift, shift_scale=shift_scale)  # fmt: skip
    net = MoodTransformer(arch)
    with torch.no_grad():
        # Trained weights are not zero: perturb the zero-initialised last layer too.
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
        if centroid_shift:
            net.centroids.copy_(torch.randn(4, 24) * 0.3)
    return MoodshiftModel(net=net, classes=["calm", "energetic", "happy", "sad"])


@pytest.fixture
def random_model() -> Callable[..., Any]:
    """Build a random model of any architecture option (:func:`_random_model`)."""
    return _random_model


@pytest.fixture(scope="session")
def small_catalog():
    """800 synthetic tracks, 32-d, counterfactual groups, split stored."""
    from moodshift.synthetic import make_catalog

    return make_catalog(n=800, dim=32, seed=3, groups=True)


# ---------------------------------------------------------------------- serving (index/server/web)
@pytest.fixture(scope="session")
def serve_catalog(tmp_path_factory):
    """400 synthetic tracks (32-d, groups) with titles; even rows have a tiny WAV file.

    Audio paths are relative to the catalogue root (a temporary folder); odd rows
    have no audio, to exercise "no audio file" answers.
    """
    from moodshift.synthetic import make_catalog

    root = tmp_path_factory.mktemp("serve_catalog")
    cat = make_catalog(n=400, dim=32, seed=11, groups=True)
    (root / "audio").mkdir()
    paths = []
    for i, mood in enumerate(cat.labels["mood"]):
        if i % 2:
            paths.append("")
            continue
        rel = f"audio/{cat.labels['track_id'].iat[i]}.wav"
        write_tone(root / rel, freq=220.0 * (1 + ["calm", "sad", "happy", "energetic"].index(mood)))
        paths.append(rel)
    cat.labels["audio_path"] = paths
    cat.labels["title"] = [f"Tune {i:03d}" for i in range(len(cat))]
    cat.root = root
    return cat


@pytest.fixture(scope="session")
def serve_model(serve_catalog):
    """A model trained for a few epochs on ``serve_catalog`` (seconds, not quality)."""
    from moodshift.training.train import TrainConfig, train

    return train(serve_catalog, config=TrainConfig(epochs=3, k=20, seed=0), progress=False)


@pytest.fixture(scope="session")
def live_server(serve_catalog, serve_model):
    """A real uvicorn server on 127.0.0.1 (free port) in a background thread; yields its URL."""
    import socket
    import threading
    import time

    import uvicorn

    from moodshift.serving.app import create_app

    app = create_app(catalog=serve_catalog, model=serve_model, max_k=50)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()
