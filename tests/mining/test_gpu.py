"""GPU paths: the CUDA self-join equals the CPU one; a short training run works on CUDA.

Skipped cleanly where ``torch.cuda.is_available()`` is False (CPU-only machines and CI).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available"),
]


def _same_sets_up_to_rounding(a, b, *, atol: float = 1e-5) -> None:
    """Same top-K sets; where float rounding reorders a near-tie, the boundary scores agree."""
    assert a.indices.shape == b.indices.shape
    assert np.array_equal(a.counts, b.counts)
    n, m, _ = a.indices.shape
    differing = 0
    for i in range(n):
        for c in range(m):
            if set(a.indices[i, c]) != set(b.indices[i, c]):
                differing += 1
                assert abs(a.scores[i, c, -1] - b.scores[i, c, -1]) < atol, (i, c)
    assert differing <= max(1, n * m // 1000)
    np.testing.assert_allclose(a.scores, b.scores, atol=atol)


@pytest.mark.parametrize("precision", ["fp32", "tf32", "bf16", "fp16"])
def test_gpu_self_join_equals_cpu(precision, rng):
    from moodshift.mining.neighbors import class_topk

    x = rng.standard_normal((5000, 64)).astype(np.float32)
    y = rng.integers(4, size=5000)
    cpu = class_topk(embeddings=x, labels=y, k=50, device="cpu")
    gpu = class_topk(embeddings=x, labels=y, k=50, device="cuda", precision=precision,
                     chunk=1024)  # fmt: skip
    assert gpu.info["backend"] == "torch-cuda"
    _same_sets_up_to_rounding(gpu, cpu)


def test_gpu_self_join_small_classes_and_self_exclusion(rng):
    from moodshift.mining.neighbors import class_topk

    x = rng.standard_normal((300, 16)).astype(np.float32)
    y = np.zeros(300, dtype=np.int64)
    y[:7] = 1
    with pytest.warns(UserWarning):
        gpu = class_topk(embeddings=x, labels=y, k=20, device="cuda")
    assert (gpu.counts[:7, 1] == 6).all()
    rows = np.arange(300)
    assert not (gpu.indices == rows[:, None, None]).any()


def test_short_training_run_on_gpu(small_catalog):
    from moodshift.training.train import TrainConfig, train

    model = train(small_catalog, config=TrainConfig(epochs=2, k=10, device="cuda"),
                  progress=False)  # fmt: skip
    assert model.config["training"]["device"].startswith("cuda")
    assert all(np.isfinite(e["loss_cos"]) for e in model.log)
