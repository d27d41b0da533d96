"""Black-box membership inference against a recommender (Zhang et al., CCS'21).

The attacker sees, per user, the items the user interacted with and the model's top-N
recommendations (nothing else). Protocol:
1. item vectors from a factorisation (truncated SVD) of the attacker's own interaction data;
2. per user, the feature is the centroid of the interacted items' vectors minus the centroid
   of the recommended items' vectors;
3. labels come from a shadow recommender the attacker trains the same way as the target on
   shadow members, queried for shadow members and shadow non-members;
4. a small MLP learns member / non-member from the shadow features and scores the target's
   users.
The evidence for unlearning is the AUC of forgotten users against never-seen users under the
original, the unlearned and the retrained model, each with a bootstrap interval: after exact
unlearning the forgotten users look like the retrained model's non-members. Users are served
as the system serves them: a known user with their trained vector, an unknown one by fold-in.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import svds
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier
from sklearn.preprocessing import StandardScaler

from recunlearn.config import ModelConfig
from recunlearn.data.interactions import InteractionData
from recunlearn.evidence.completeness import Scorer
from recunlearn.metrics import topk_excluding
from recunlearn.models.bpr import fit_bpr
from recunlearn.sharding.ensemble import MeanAggregator, ShardedEnsemble


def item_vectors(attacker_data: sp.csr_matrix, dim: int, seed: int) -> np.ndarray:
    """(n_items, dim) item factors of the attacker's interaction matrix, scaled by sqrt(sigma)."""
    x = attacker_data.astype(np.float64)
    dim = min(dim, min(x.shape) - 1)
    v0 = np.random.default_rng(seed).standard_normal(min(x.shape))
    _, s, vt = svds(x, k=dim, v0=v0)
    return (vt.T * np.sqrt(s)[None, :]).astype(np.float32)


def features(
    model: Scorer,
    keys: np.ndarray,
    history: sp.csr_matrix,
    vecs: np.ndarray,
    *,
    n_rec: int = 100,
    batch: int = 1024,
) -> np.ndarray:
    """(n, d) difference vectors: interacted-item centroid minus recommended-item centroid."""
    keys = np.asarray(keys).astype(str)
    # never more recommendations than there are unseen items for every user
    n_rec = max(1, min(n_rec, history.shape[1] - int(np.diff(history.indptr).max(initial=0))))
    n_hist = np.maximum(np.diff(history.indptr), 1)[:, None]
    hist_c = np.asarray(history.astype(np.float32) @ vecs) / n_hist
    rec_c = np.empty_like(hist_c)
    for s in range(0, len(keys), batch):
        sl = slice(s, s + batch)
        top = topk_excluding(model.score_users(keys[sl], history[sl]), history[sl], n_rec).numpy()
        rec_c[sl] = vecs[top].mean(1)
    return hist_c - rec_c


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties counted half (Mann-Whitney)."""
    pos, neg = np.asarray(pos, float), np.asarray(neg, float)
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    allv = np.concatenate([pos, neg])
    order = np.argsort(allv, kind="mergesort")
    ranks = np.empty(len(allv))
    sorted_v = allv[order]
    # average ranks of ties
    starts = np.flatnonzero(np.r_[True, sorted_v[1:] != sorted_v[:-1]])
    ends = np.r_[starts[1:], len(allv)]
    avg = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(avg, ends - starts)
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def auc_ci(
    pos: np.ndarray, neg: np.ndarray, *, resamples: int = 200, seed: int = 0, level: float = 0.95
) -> dict[str, Any]:
    """AUC with a percentile bootstrap interval (positives and negatives resampled apart)."""
    rng = np.random.default_rng(seed)
    pos, neg = np.asarray(pos, float), np.asarray(neg, float)
    point = auc(pos, neg)
    boots = (
        [
            auc(pos[rng.integers(0, len(pos), len(pos))], neg[rng.integers(0, len(neg), len(neg))])
            for _ in range(resamples)
        ]
        if len(pos) and len(neg)
        else []
    )
    ci = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2]).round(4).tolist() if boots else None
    return {
        "auc": round(point, 4),
        "ci": ci,
        "positives": int(len(pos)),
        "negatives": int(len(neg)),
    }


def has_power(ci: list[float] | tuple[float, ...] | None) -> bool:
    """Whether an attack's AUC interval excludes 0.5: it tells the two groups apart at all."""
    return ci is not None and len(ci) > 0 and not (ci[0] <= 0.5 <= ci[1])


@dataclass
class MembershipAttack:
    vecs: np.ndarray
    scaler: StandardScaler
    clf: MLPClassifier
    n_rec: int
    shadow: dict[str, Any]  # AUC of the attack on held-out shadow users: the attacker's strength

    def scores(self, model: Scorer, keys: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        """Membership probability of each user under ``model``."""
        if len(keys) == 0:
            return np.zeros(0)
        x = features(model, keys, history, self.vecs, n_rec=self.n_rec)
        return self.clf.predict_proba(self.scaler.transform(x))[:, 1]

    def evidence(
        self,
        model: Scorer,
        pos: tuple[np.ndarray, sp.csr_matrix],
        neg: tuple[np.ndarray, sp.csr_matrix],
        *,
        resamples: int = 200,
        seed: int = 0,
    ) -> dict[str, Any]:
        """AUC of users ``pos`` (e.g. the forgotten ones) against ``neg`` (never seen)."""
        sp_, sn = self.scores(model, *pos), self.scores(model, *neg)
        return {
            **auc_ci(sp_, sn, resamples=resamples, seed=seed),
            "mean_score_pos": round(float(sp_.mean()), 4) if len(sp_) else None,
            "mean_score_neg": round(float(sn.mean()), 4) if len(sn) else None,
        }


def fit_attack(
    shadow_model: Scorer,
    members: tuple[np.ndarray, sp.csr_matrix],
    nonmembers: tuple[np.ndarray, sp.csr_matrix],
    vecs: np.ndarray,
    *,
    n_rec: int = 100,
    seed: int = 0,
    hidden: tuple[int, ...] = (32, 8),
    resamples: int = 200,
) -> MembershipAttack:
    """Train the attack on the shadow model's members and non-members (70/30 split of each,
    the 30% scoring the attacker's strength)."""
    xm = features(shadow_model, *members, vecs, n_rec=n_rec)
    xn = features(shadow_model, *nonmembers, vecs, n_rec=n_rec)
    x = np.concatenate([xm, xn])
    y = np.r_[np.ones(len(xm)), np.zeros(len(xn))]
    rng = np.random.default_rng(seed)
    test = np.zeros(len(y), bool)
    for c in (0, 1):
        idx = np.flatnonzero(y == c)
        test[rng.choice(idx, max(int(0.3 * len(idx)), 1), replace=False)] = True

    def fit(rows: np.ndarray) -> tuple[StandardScaler, MLPClassifier]:
        scaler = StandardScaler().fit(x[rows])
        clf = MLPClassifier(
            hidden_layer_sizes=hidden, alpha=1e-3, max_iter=600, random_state=int(seed % 2**31)
        )
        with warnings.catch_warnings():  # a capped, seeded fit: not converging is not an error
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(scaler.transform(x[rows]), y[rows])
        return scaler, clf

    scaler, clf = fit(~test)
    held = clf.predict_proba(scaler.transform(x[test]))[:, 1]
    shadow = auc_ci(held[y[test] == 1], held[y[test] == 0], resamples=resamples, seed=seed)
    # refit on every shadow user now that its held-out strength is measured
    scaler, clf = fit(np.ones(len(y), bool))
    return MembershipAttack(vecs, scaler, clf, n_rec, shadow)


def shadow_recommender(
    pool: InteractionData,
    *,
    n_shards: int,
    model_cfg: ModelConfig,
    seed: int,
    fold_in_reg: float = 1.0,
) -> Scorer:
    """A shadow of the served model's structure, trained on ``pool``: one BPR-MF, or (for a
    sharded ensemble) ``n_shards`` BPR-MF shards over a seeded random split with the mean
    aggregator. Fewer shards when the pool is too small for 10 users a shard."""
    k = max(1, min(n_shards, pool.n_users // 10))
    labels = np.random.default_rng(seed).permutation(pool.n_users) % k
    shards = []
    for s in range(k):
        rows = np.flatnonzero(labels == s)
        m, _ = fit_bpr(pool.subset(rows), model_cfg, seed=seed + s)
        m.fold_in_reg = fold_in_reg
        shards.append(m)
    return shards[0] if k == 1 else ShardedEnsemble(shards, MeanAggregator())


def membership_audit(
    original: Scorer,
    unlearned: Scorer,
    forgotten: tuple[np.ndarray, sp.csr_matrix],
    pool: InteractionData,
    *,
    n_shards: int,
    model_cfg: ModelConfig,
    seed: int,
    fold_in_reg: float = 1.0,
) -> list[dict[str, Any]]:
    """Per forgotten user, the membership evidence an unlearning job can give on its own:

    - the attack: a shadow of the served structure trained on half of ``pool`` (retained
      users), the other half its non-members; its held-out AUC is the attack's strength;
    - ``original`` / ``unlearned``: the user's membership probability under each model;
    - ``percentile_*``: where that probability falls among retained users, who are members of
      both models. Before unlearning a forgotten user is one member among others (about 0.5
      on average); after exact unlearning, with an attack that has any power, lower.
    ``pool`` must not hold the forgotten users."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(pool.n_users)
    half = pool.n_users // 2
    members, others = np.sort(perm[:half]), np.sort(perm[half:])
    shadow = shadow_recommender(
        pool.subset(members),
        n_shards=n_shards,
        model_cfg=model_cfg,
        seed=seed,
        fold_in_reg=fold_in_reg,
    )
    vecs = item_vectors(pool.train, 32, seed)
    attack = fit_attack(
        shadow,
        (pool.user_keys[members], pool.train[members]),
        (pool.user_keys[others], pool.train[others]),
        vecs,
        seed=seed % 2**31,
    )
    ref = (pool.user_keys[others], pool.train[others])
    out = []
    before, after = attack.scores(original, *forgotten), attack.scores(unlearned, *forgotten)
    ref_before, ref_after = (
        np.sort(attack.scores(original, *ref)),
        np.sort(attack.scores(unlearned, *ref)),
    )
    for b, a in zip(before, after, strict=True):
        out.append(
            {
                "original": round(float(b), 4),
                "unlearned": round(float(a), 4),
                "percentile_original": round(
                    float(np.searchsorted(ref_before, b) / len(ref_before)), 4
                ),
                "percentile_unlearned": round(
                    float(np.searchsorted(ref_after, a) / len(ref_after)), 4
                ),
                "attack_shadow_auc": attack.shadow["auc"],
                "attack_shadow_ci": attack.shadow["ci"],
                "shadow_shards": len(getattr(shadow, "shards", [shadow])),
            }
        )
    return out
