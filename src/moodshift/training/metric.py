"""A learned ranking space: a linear map under which a piece stays itself across moods.

Concept erasure removes the average way a mood moves an embedding. How a mood
changes a piece also varies from piece to piece, and the directions that carry it
are not the mood's mean directions. This module learns them from *cross-mood
pairs* of the training split, tracks that should match in another mood:

* where the catalogue has counterfactual groups (column ``group``: the same piece
  rendered in several moods, as the built-in corpus does), every two members of a
  group with different moods;
* otherwise, cross-mood mutual nearest neighbours
  (:func:`moodshift.model.ranking.cross_mood_pairs`).

The map ``L`` (d x d) starts at the centroid eraser and is trained with a
contrastive loss (InfoNCE, van den Oord et al. 2018), the retrieval task itself:
for a pair (s, t), ``cos(L x_s, L x_t)`` must beat ``cos(L x_s, L x_c)`` for the
other training tracks ``c`` of t's mood, the candidates a query of that mood ranks.
A penalty ``weight_decay * ||L - L_0||^2 / d`` keeps it near the eraser where the
pairs say little. It reads no genre or instrument label.

Whether the learned space, an eraser or the plain cosine ranks a model's queries
is chosen on the validation split (:mod:`moodshift.training.evidence`).
"""

from __future__ import annotations

import numpy as np

from moodshift.errors import DataError
from moodshift.model.ranking import RankingSpace, cross_mood_pairs, fit_centroid

#: Softmax temperature of the contrastive loss (cosines divided by it).
TEMPERATURE = 0.1
#: Optimiser steps and pairs per step.
STEPS = 300
BATCH = 256
#: Candidates each step scores at most (a seeded sample of the training rows).
MAX_CANDIDATES = 4096
LR = 1e-3
#: Penalties toward the centroid eraser tried on validation.
WEIGHT_DECAYS = (1.0, 10.0)


def fit_metric(
    x: np.ndarray,
    y: np.ndarray,
    *,
    groups: np.ndarray | None = None,
    weight_decay: float = 1.0,
    temperature: float = TEMPERATURE,
    steps: int = STEPS,
    seed: int = 0,
) -> RankingSpace:
    """Learn the ranking space from cross-mood pairs of training rows.

    Parameters
    ----------
    x : np.ndarray, shape (n, d)
        Unit-norm training embeddings.
    y : np.ndarray, shape (n,), int
        Class per row (``-1``: unlabelled, never paired nor a candidate).
    groups : np.ndarray of str, shape (n,), optional
        Counterfactual group per row (``""``: none).
    weight_decay : float >= 0
        Penalty toward the centroid eraser.
    temperature : float > 0
    steps : int
    seed : int

    Returns
    -------
    RankingSpace
        ``info``: ``kind="metric"``, the pair source and count, the parameters.

    Raises
    ------
    DataError
        Without at least two cross-mood pairs.
    """
    import torch  # optional at import time: only training needs it

    y = np.asarray(y, dtype=np.int64)
    pairs, source = cross_mood_pairs(x, y, groups=groups, seed=seed)
    if pairs.shape[0] < 2:
        raise DataError(
            "learning a ranking space needs at least two cross-mood pairs in the training "
            "split; label more tracks of each mood, or train with --ranking centroid."
        )
    pairs = np.concatenate([pairs, pairs[:, ::-1]])
    start = fit_centroid(x, y).space(keep=0.0).matrix
    gen = torch.Generator().manual_seed(seed)
    xs = torch.as_tensor(np.asarray(x, dtype=np.float32))
    ys = torch.as_tensor(y)
    ref = torch.as_tensor(start)
    lmap = ref.clone().requires_grad_(True)
    opt = torch.optim.Adam([lmap], lr=LR)
    pt = torch.as_tensor(pairs)
    labelled = torch.as_tensor(np.flatnonzero(y >= 0))
    d = xs.shape[1]
    for _ in range(steps):
        batch = pt[torch.randint(0, pt.shape[0], (BATCH,), generator=gen)]
        s, t = batch[:, 0].contiguous(), batch[:, 1].contiguous()
        cand = labelled
        if cand.numel() > MAX_CANDIDATES:
            cand = cand[torch.randperm(cand.numel(), generator=gen)[:MAX_CANDIDATES]]
        cand = torch.unique(torch.cat([cand, t]))
        z_c = torch.nn.functional.normalize(xs[cand] @ lmap, dim=1)
        z_s = torch.nn.functional.normalize(xs[s] @ lmap, dim=1)
        logits = z_s @ z_c.T / temperature
        # Only the target mood's tracks compete, as in a query; never the seed itself.
        other = (ys[cand][None, :] != ys[t][:, None]) | (cand[None, :] == s[:, None])
        logits = logits.masked_fill(other, float("-inf"))
        positive = torch.searchsorted(cand, t)
        loss = torch.nn.functional.cross_entropy(logits, positive)
        loss = loss + weight_decay * ((lmap - ref) ** 2).sum() / d
        opt.zero_grad()
        loss.backward()
        opt.step()
    matrix = lmap.detach().numpy().astype(np.float32)
    info = {"kind": "metric", "pairs": source, "n_pairs": int(pairs.shape[0] // 2),
            "weight_decay": float(weight_decay), "temperature": float(temperature),
            "steps": int(steps)}  # fmt: skip
    return RankingSpace(matrix=matrix, offset=np.zeros(d, dtype=np.float32), info=info)
