"""Completeness evidence: did the model forget? Plain functions of the model interface.

Every function takes models through ``score_users(keys, history)`` and ``knows(keys)``
(single models and the sharded ensemble alike), so any two models are compared the same way:
- functional: how well a model ranks the forgotten users' (or items', or interactions')
  held-out truth, against a model retrained without them (same seed and config);
- parametric: distance from the unlearned parameters to the retrained model's, against the
  spread between retrains with different seeds;
- membership inference lives in :mod:`recunlearn.evidence.mia`.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import scipy.sparse as sp
import torch

from recunlearn.metrics import per_user_metrics


class Scorer(Protocol):
    def score_users(self, keys: np.ndarray, history: sp.csr_matrix) -> torch.Tensor: ...

    def knows(self, keys: np.ndarray) -> np.ndarray: ...


def bootstrap_mean_ci(
    x: np.ndarray, *, resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> list[float] | None:
    """Percentile bootstrap interval of the mean of ``x`` (None for fewer than two values)."""
    x = np.asarray(x, dtype=float)
    if len(x) < 2:
        return None
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), (resamples, len(x)))].mean(1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return [round(float(lo), 5), round(float(hi), 5)]


def functional(
    model: Scorer, keys: np.ndarray, history: sp.csr_matrix, truth: sp.csr_matrix, *, k: int = 20
) -> dict[str, np.ndarray]:
    """Per-row NDCG/Recall/HR@K of ``truth`` when ``model`` serves users ``keys`` with
    interaction rows ``history`` (never recommended). For forgotten users: history = their
    training rows, truth = their held-out rows; for forgotten interactions: history = what the
    user keeps, truth = the forgotten pairs (a model that forgot them recovers them no better
    than the retrain)."""
    keys = np.asarray(keys).astype(str)
    return per_user_metrics(
        lambda r: model.score_users(keys[r], history[r]), np.arange(len(keys)), history, truth, k=k
    )


def functional_gap(
    unlearned: Scorer,
    retrained: Scorer,
    keys: np.ndarray,
    history: sp.csr_matrix,
    truth: sp.csr_matrix,
    *,
    original: Scorer | None = None,
    k: int = 20,
    seed: int = 0,
) -> dict[str, Any]:
    """Mean NDCG@K of the forget set under each model and the paired unlearned - retrained
    difference with a bootstrap interval: exact unlearning puts 0 inside it."""
    has = np.diff(truth.indptr) > 0
    keys, history, truth = np.asarray(keys)[has], history[has], truth[has]
    if len(keys) == 0:
        return {"users": 0}
    out: dict[str, Any] = {"users": int(len(keys))}
    per = {
        "unlearned": functional(unlearned, keys, history, truth, k=k)["ndcg"],
        "retrained": functional(retrained, keys, history, truth, k=k)["ndcg"],
    }
    if original is not None:
        per["original"] = functional(original, keys, history, truth, k=k)["ndcg"]
    for name, v in per.items():
        out[f"ndcg@{k}_{name}"] = round(float(v.mean()), 5)
    diff = per["unlearned"] - per["retrained"]
    out["difference"] = round(float(diff.mean()), 5)
    out["difference_ci"] = bootstrap_mean_ci(diff, seed=seed)
    out["max_abs_difference"] = round(float(np.abs(diff).max()), 5)
    return out


def parameters(model: Any) -> list[tuple[str, torch.Tensor, np.ndarray | None]]:
    """(name, tensor, user keys or None) of every parameter block of a model or ensemble."""
    shards = getattr(model, "shards", None)
    if shards is not None:
        return [
            (f"shard{k}.{n}", t, keys) for k, m in enumerate(shards) for n, t, keys in parameters(m)
        ]
    return [
        ("user", model.user, model.user_keys),
        ("item", model.item, None),
        ("bias", model.bias, None),
    ]


def parameter_distance(a: Any, b: Any) -> dict[str, float]:
    """Relative L2 distance ||a - b|| / ||b|| over aligned parameters: item blocks row by row,
    user blocks over the users both models hold (matched by key). Models of different
    structure (a K-shard ensemble against a single model) are not comparable: ValueError."""
    pa, pb = parameters(a), parameters(b)
    if [n for n, _, _ in pa] != [n for n, _, _ in pb]:
        raise ValueError("parameter_distance: the models have different structures")
    num = den = 0.0
    common = 0
    for (_, ta, ka), (_, tb, kb) in zip(pa, pb, strict=True):
        if ka is not None and kb is not None:
            both, ia, ib = np.intersect1d(ka, kb, return_indices=True)
            common += len(both)
            ta, tb = ta[torch.from_numpy(ia)], tb[torch.from_numpy(ib)]
        if ta.shape != tb.shape:
            raise ValueError(
                f"parameter_distance: shapes differ {tuple(ta.shape)} vs {tuple(tb.shape)}"
            )
        num += float((ta.double() - tb.double()).pow(2).sum())
        den += float(tb.double().pow(2).sum())
    return {"relative_l2": num**0.5 / max(den**0.5, 1e-12), "common_users": int(common)}


def parametric_evidence(unlearned: Any, retrained: Any, other_seeds: list[Any]) -> dict[str, Any]:
    """Distance from the unlearned model to the retrain (same seed) against the spread between
    the retrain and retrains with other seeds. Exact unlearning gives distance 0; an
    approximate method is credible when it falls well inside the seed spread."""
    d = parameter_distance(unlearned, retrained)["relative_l2"]
    return _against_spread(
        d, [parameter_distance(o, retrained)["relative_l2"] for o in other_seeds]
    )


def _against_spread(d: float, spread: list[float]) -> dict[str, Any]:
    return {
        "distance_to_retrain": round(d, 6),
        "seed_spread": [round(s, 6) for s in spread],
        "within_seed_spread": bool(spread) and d <= min(spread),
    }


def score_distance(a: Scorer, b: Scorer, keys: np.ndarray, history: sp.csr_matrix) -> float:
    """Relative L2 distance of the two models' score matrices over users ``keys``: unlike the
    parameters, scores do not depend on how a factorisation happens to be rotated, so it
    compares models of any structure."""
    with torch.no_grad():
        sa, sb = a.score_users(keys, history).double(), b.score_users(keys, history).double()
    # centre each user's scores: a per-user shift does not change a ranking
    sa = sa - sa.mean(1, keepdim=True)
    sb = sb - sb.mean(1, keepdim=True)
    return float((sa - sb).norm() / sb.norm().clamp(min=1e-12))


def score_evidence(
    unlearned: Scorer,
    retrained: Scorer,
    other_seeds: list[Scorer],
    keys: np.ndarray,
    history: sp.csr_matrix,
) -> dict[str, Any]:
    """:func:`parametric_evidence` in score space (see :func:`score_distance`)."""
    return _against_spread(
        score_distance(unlearned, retrained, keys, history),
        [score_distance(o, retrained, keys, history) for o in other_seeds],
    )
