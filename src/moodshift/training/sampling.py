"""Proxy-target sampling (docs/method.md, "Proxy targets"), one whole batch at a time.

For a seed of class y_s a target class y_t is drawn uniformly from all m classes
(its own included). Same class: the target is the seed itself (identity pairs).
Otherwise the proxy target is a uniform draw from the seed's top-K list of
class y_t. Everything is tensor indexing: no per-sample Python in the loop.
"""

from __future__ import annotations

import torch


class ProxySampler:
    """Draws (target class, target row) for batches of seed rows.

    Parameters
    ----------
    topk : torch.Tensor, shape (n, m, K), int64
        Per-class neighbour lists (rows of the training matrix), ``-1`` padded.
    counts : torch.Tensor, shape (n, m), int64
        Valid entries per list.
    labels : torch.Tensor, shape (n,), int64
        Class of each training row.
    """

    def __init__(self, *, topk: torch.Tensor, counts: torch.Tensor, labels: torch.Tensor) -> None:
        self.topk = topk
        self.counts = counts.clamp(min=1)
        self.labels = labels
        self.n_classes = int(topk.shape[1])

    def sample(
        self, seeds: torch.Tensor, *, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Targets for ``seeds``.

        Parameters
        ----------
        seeds : torch.Tensor, shape (B,), int64
            Rows of the training matrix.

        Returns
        -------
        target_class : torch.Tensor, shape (B,)
        target_row : torch.Tensor, shape (B,)
            Equal to ``seeds`` where ``target_class`` is the seed's own class.
        """
        dev = seeds.device
        b = seeds.shape[0]
        y_t = torch.randint(self.n_classes, (b,), generator=generator, device=dev)
        n_valid = self.counts[seeds, y_t]
        # Uniform integer in [0, n_valid): floor(u * n_valid) keeps it vectorised per row.
        u = torch.rand(b, generator=generator, device=dev)
        pick = (u * n_valid).long().clamp(max=self.topk.shape[2] - 1)
        rows = self.topk[seeds, y_t, pick]
        same = (y_t == self.labels[seeds]) | (rows < 0)
        rows = torch.where(same, seeds, rows)
        y_t = torch.where(rows == seeds, self.labels[seeds], y_t)
        return y_t, rows
