"""Fairness of unlearning and forget-set draws.

- A-IGF (active-inactive group fairness): mean NDCG@K of the ``top_share`` most active users
  (by training interactions) minus the mean of the rest. Sharding and unlearning are known to
  widen it; it is reported beside the retrain's.
- Per-shard spread: mean NDCG@K of the users of each shard, and its max - min and std.
- Forget sets: random users, the most active ("core") or the least active ("edge").
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

FORGET_KINDS: tuple[str, ...] = ("random", "core", "edge")


def active_mask(train: sp.csr_matrix, top_share: float = 0.05) -> np.ndarray:
    """The ``top_share`` most active users (ties broken by row order, so exactly
    ceil(top_share * n) users)."""
    n = train.shape[0]
    counts = np.diff(train.indptr)
    n_top = int(np.ceil(top_share * n))
    mask = np.zeros(n, bool)
    mask[np.argsort(-counts, kind="stable")[:n_top]] = True
    return mask


def a_igf(per_user: np.ndarray, active: np.ndarray) -> dict[str, float]:
    """NDCG of active users minus NDCG of the rest (``per_user`` and ``active`` aligned)."""
    per_user = np.asarray(per_user, float)
    active = np.asarray(active, bool)
    a = float(per_user[active].mean()) if active.any() else float("nan")
    r = float(per_user[~active].mean()) if (~active).any() else float("nan")
    return {
        "active": round(a, 5),
        "inactive": round(r, 5),
        "gap": round(a - r, 5),
        "n_active": int(active.sum()),
        "n_inactive": int((~active).sum()),
    }


def shard_spread(per_user: np.ndarray, shard_of: np.ndarray) -> dict[str, Any]:
    """Mean metric per shard and their spread (max - min, standard deviation)."""
    per_user = np.asarray(per_user, float)
    shard_of = np.asarray(shard_of)
    ids = np.unique(shard_of)
    means = np.array([per_user[shard_of == k].mean() for k in ids])
    return {
        "per_shard": {str(int(k)): round(float(m), 5) for k, m in zip(ids, means, strict=True)},
        "max_minus_min": round(float(means.max() - means.min()), 5),
        "std": round(float(means.std()), 5),
    }


def draw_forget_users(
    train: sp.csr_matrix,
    kind: str,
    n: int,
    rng: np.random.Generator,
    candidates: np.ndarray | None = None,
) -> np.ndarray:
    """Sorted rows of ``n`` users to forget among ``candidates`` (default: all rows).

    ``random``: uniform; ``core``: the most active; ``edge``: the least active (ties broken
    at random, so the draw is seeded but not biased by row order)."""
    cand = np.arange(train.shape[0]) if candidates is None else np.asarray(candidates)
    if not 0 < n <= len(cand):
        raise ValueError(f"forget set of {n} users out of {len(cand)}")
    if kind == "random":
        return np.sort(rng.choice(cand, n, replace=False))
    counts = np.diff(train.indptr)[cand].astype(float)
    jitter = rng.random(len(cand))
    if kind == "core":
        order = np.lexsort((jitter, -counts))
    elif kind == "edge":
        order = np.lexsort((jitter, counts))
    else:
        raise ValueError(f"unknown forget-set kind {kind!r}; expected one of {FORGET_KINDS}")
    return np.sort(cand[order[:n]])
