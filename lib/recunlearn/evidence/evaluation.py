"""Evaluation protocol (one for every model): full ranking over all items, the user's
training and validation items excluded, test items as truth; and the functional check of
forgotten users."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from recunlearn.data.interactions import InteractionData
from recunlearn.evidence.fairness import a_igf, active_mask, shard_spread
from recunlearn.metrics import per_user_metrics, summarize
from recunlearn.models.bpr import BPRMF
from recunlearn.sharding.ensemble import ShardedEnsemble

K = 20


def per_user(
    model: Any, data: InteractionData, users: np.ndarray, *, k: int = K
) -> dict[str, np.ndarray]:
    """Per-user NDCG/Recall/HR@k of ``users`` under ``model`` (a single model or an ensemble:
    anything with ``score_users``); users a model was not trained on are scored by fold-in."""
    return per_user_metrics(
        lambda r: model.score_users(data.user_keys[r], data.train[r]),
        users,
        (data.train + data.valid).tocsr(),
        data.test,
        k=k,
    )


def with_truth(data: InteractionData, users: np.ndarray | None = None) -> np.ndarray:
    """``users`` (default: all) that have test items, the only ones a metric is averaged over."""
    users = np.arange(data.n_users) if users is None else np.asarray(users)
    return users[np.diff(data.test.indptr)[users] > 0]


def evaluate_users(
    model: Any, data: InteractionData, users: np.ndarray | None = None
) -> dict[str, float]:
    """Mean NDCG@20, Recall@20 and HR@20 of ``model`` over ``users`` (default: all)."""
    return summarize(per_user(model, data, with_truth(data, users)), K)


def evaluate_with_fairness(
    model: Any,
    data: InteractionData,
    users: np.ndarray,
    *,
    shard_of: np.ndarray | None = None,
    top_share: float = 0.05,
) -> tuple[dict[str, float], dict[str, Any]]:
    """:func:`evaluate_users` and, from the same scores, A-IGF (the ``top_share`` most active
    users against the rest) and, given ``shard_of`` (a shard per row of ``data``), the spread of
    NDCG@20 over shards."""
    users = with_truth(data, users)
    per = per_user(model, data, users)
    fair: dict[str, Any] = a_igf(per["ndcg"], active_mask(data.train, top_share)[users])
    if shard_of is not None:
        fair["shard_spread"] = shard_spread(per["ndcg"], shard_of[users])
    return summarize(per, K), fair


def home_shards(ens: ShardedEnsemble, keys: np.ndarray) -> np.ndarray:
    """The shard holding each key's trained vector (-1 where none does)."""
    known = np.stack([m.rows_of(keys) >= 0 for m in ens.shards])
    return np.where(known.any(0), known.argmax(0), -1)


def functional_evidence(
    forgotten: InteractionData,
    *,
    original: ShardedEnsemble,
    unlearned: ShardedEnsemble,
    retrained: BPRMF | None,
) -> dict[str, dict[str, Any]]:
    """Per forgotten user: does each model still hold a trained vector for them, and how well
    it ranks their held-out items (valid + test) from their training history: the original
    with its trained vector, the unlearned ensemble and the retrained reference by fold-in.
    Exact unlearning should leave the unlearned model unaware of the user and scoring them
    like the retrain does."""
    out: dict[str, dict[str, Any]] = {}
    if forgotten.n_users == 0:
        return out
    truth = (forgotten.valid + forgotten.test).tocsr()
    truth.data[:] = 1.0
    keys = forgotten.user_keys
    rows = np.arange(forgotten.n_users)

    def per_user(score: Callable[[np.ndarray], torch.Tensor]) -> np.ndarray:
        """NDCG of each forgotten user, scored in blocks of users (bounded memory)."""
        return per_user_metrics(score, rows, forgotten.train, truth, k=K)["ndcg"]

    hist = forgotten.train
    with torch.no_grad():
        nd_orig = per_user(lambda r: original.score(keys[r], hist[r]))
        nd_unl = per_user(lambda r: unlearned.score(keys[r], hist[r]))
        nd_ret = (
            per_user(lambda r: retrained.score_history(hist[r])) if retrained is not None else None
        )
    known_before = original.knows(keys)
    known_after = unlearned.knows(keys)
    for r in rows:
        out[str(keys[r])] = {
            "known_to_original": bool(known_before[r]),
            "known_to_unlearned": bool(known_after[r]),
            "heldout_items": int(truth[r].nnz),
            f"ndcg@{K}_original": round(float(nd_orig[r]), 5),
            f"ndcg@{K}_unlearned": round(float(nd_unl[r]), 5),
            f"ndcg@{K}_retrained": None if nd_ret is None else round(float(nd_ret[r]), 5),
        }
    return out
