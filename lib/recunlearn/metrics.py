"""Full-ranking top-K metrics: every item is scored, the user's training items are excluded.

Plain functions of score matrices so any two models (an unlearned ensemble, a full retrain)
are compared the same way. Definitions (per user, then averaged over users with test items):
- Recall@K = |top-K ∩ T| / |T|
- HR@K     = 1 if top-K ∩ T is non-empty
- NDCG@K   = sum_{r<K, item_r in T} 1/log2(r+2)  /  sum_{r<min(|T|,K)} 1/log2(r+2)
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import scipy.sparse as sp
import torch


def topk_excluding(scores: torch.Tensor, exclude: sp.csr_matrix, k: int) -> torch.Tensor:
    """Indices of the K best items per row, never an item in ``exclude``'s row."""
    scores = scores.clone()
    coo = exclude.tocoo()
    if coo.nnz:
        scores[torch.from_numpy(coo.row).long(), torch.from_numpy(coo.col).long()] = -torch.inf
    return torch.topk(scores, k=min(k, scores.shape[1]), dim=1).indices


def rank_metrics(top: np.ndarray, truth: sp.csr_matrix, k: int) -> dict[str, np.ndarray]:
    """Per-user NDCG/Recall/HR of ranked lists ``top`` (n, >=k) against ``truth`` rows."""
    top = np.asarray(top)[:, :k]
    # A dense truth mask for the batch: rows are bounded by the caller's batch size.
    hit = np.take_along_axis(truth.toarray() > 0, top, axis=1)
    n_true = np.diff(truth.indptr)
    disc = 1.0 / np.log2(np.arange(2, top.shape[1] + 2))
    dcg = (hit * disc).sum(1)
    ideal_len = np.minimum(n_true, top.shape[1])
    cdisc = np.concatenate([[0.0], np.cumsum(disc)])
    idcg = cdisc[ideal_len]
    with np.errstate(divide="ignore", invalid="ignore"):
        ndcg = np.where(idcg > 0, dcg / idcg, 0.0)
        recall = np.where(n_true > 0, hit.sum(1) / n_true, 0.0)
    return {"ndcg": ndcg, "recall": recall, "hr": hit.any(1).astype(float)}


# Most score cells (users x items) one block of users is scored in: the block shrinks as the
# catalogue grows (1024 users up to 16K items, 6 users at 2.5M), so memory stays bounded
# (64 MB a score matrix; an ensemble holds one per shard). Scores are per user: the block
# size changes no result.
MAX_SCORE_CELLS = 1 << 24


def user_block(batch: int, n_items: int) -> int:
    """Users scored at once: at most ``batch``, at most ``MAX_SCORE_CELLS`` cells."""
    return max(1, min(batch, MAX_SCORE_CELLS // max(n_items, 1)))


def per_user_metrics(
    score_rows: Callable[[np.ndarray], torch.Tensor],
    users: np.ndarray,
    seen: sp.csr_matrix,
    truth: sp.csr_matrix,
    *,
    k: int = 20,
    batch: int = 1024,
) -> dict[str, np.ndarray]:
    """Per-user NDCG@K, Recall@K and HR@K of ``users`` (all of them, in order; a user without
    truth items scores 0). ``score_rows(u)`` returns (len(u), n_items) scores for rows ``u``;
    ``seen`` items are never recommended."""
    users = np.asarray(users)
    out = {m: np.zeros(len(users)) for m in ("ndcg", "recall", "hr")}
    batch = user_block(batch, seen.shape[1])
    for s in range(0, len(users), batch):
        u = users[s : s + batch]
        top = topk_excluding(score_rows(u), seen[u], k).numpy()
        for name, vals in rank_metrics(top, truth[u], k).items():
            out[name][s : s + len(u)] = vals
    return out


def evaluate(
    score_rows: Callable[[np.ndarray], torch.Tensor],
    users: np.ndarray,
    train: sp.csr_matrix,
    truth: sp.csr_matrix,
    *,
    k: int = 20,
    batch: int = 1024,
) -> dict[str, float]:
    """Mean NDCG@K, Recall@K and HR@K over ``users`` that have truth items.

    ``score_rows(u)`` returns a (len(u), n_items) score tensor for user rows ``u``; ``train``
    and ``truth`` are indexed by the same rows.
    """
    users = np.asarray(users)
    users = users[np.diff(truth.indptr)[users] > 0]
    return summarize(per_user_metrics(score_rows, users, train, truth, k=k, batch=batch), k)


def summarize(per: dict[str, np.ndarray], k: int) -> dict[str, float]:
    """Means of per-user metrics (users with truth items only), as :func:`evaluate` reports them."""
    n = len(per["ndcg"])
    return {f"{m}@{k}": float(per[m].sum()) / max(n, 1) for m in ("ndcg", "recall", "hr")} | {
        "users": int(n)
    }
