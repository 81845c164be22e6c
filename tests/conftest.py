"""Shared fixtures: a seeded RNG and small synthetic catalogues."""

from __future__ import annotations

import os

import numpy as np
import pytest

# Two cores are shared by torch, numpy and the test runner; more threads only contend.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch

# Tests are small; on two shared cores one thread per process avoids spin-wait contention
# (measured: a 40-epoch run took 65 s with 2 threads beside other work, 12 s with 1).
torch.set_num_threads(1)


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded generator, so every random input is reproducible."""
    return np.random.default_rng(20251025)


@pytest.fixture(scope="session")
def small_catalog():
    """800 synthetic tracks, 32-d, counterfactual groups, split stored."""
    from moodshift.synthetic import make_catalog

    return make_catalog(n=800, dim=32, seed=3, groups=True)
