"""Balanced partitioning of users into K shards (pure numpy; the Spark step feeds it).

``balanced_kmeans`` is RecEraser's: k-means with a capacity cap per shard, each row to its
nearest centroid with room; it partitions users (UBP), items (IBP) or interactions (InBP).

``balanced_kmeans_ot`` is UltraRE-style clustering: k-means whose assignment step is entropic
optimal transport with uniform marginals (every cluster gets n/K of the mass), solved with a
log-domain Sinkhorn. Hard labels come from the dual potentials in one vectorised pass,
then ``capacity_round`` enforces exact capacities, assigning each user to the *nearest*
centroid that still has room (public code sorts the other way round).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import scipy.sparse as sp
from scipy.special import logsumexp

from recunlearn.errors import ConfigError


@dataclass(frozen=True)
class Partition:
    labels: np.ndarray  # (n,) int32 shard per row of the input
    centroids: np.ndarray | None  # (K, d) or None for a random split
    sizes: np.ndarray  # (K,) users per shard

    def max_imbalance(self) -> float:
        """Largest relative deviation of a shard's size from n/K."""
        target = self.sizes.sum() / len(self.sizes)
        return float(np.abs(self.sizes - target).max() / target)


def capacities(n: int, k: int) -> np.ndarray:
    cap = np.full(k, n // k, dtype=np.int64)
    cap[: n % k] += 1
    return cap


def random_partition(n: int, k: int, rng: np.random.Generator) -> Partition:
    """SISA's split: a seeded permutation cut into K near-equal parts."""
    _check(n, k)
    labels = np.empty(n, dtype=np.int32)
    labels[rng.permutation(n)] = np.repeat(np.arange(k, dtype=np.int32), capacities(n, k))
    return Partition(labels, None, np.bincount(labels, minlength=k))


def sq_dists(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    d = (x * x).sum(1)[:, None] - 2.0 * x @ c.T + (c * c).sum(1)[None, :]
    return np.maximum(d, 0.0)


def sinkhorn(
    cost: np.ndarray, eps: float, iters: int = 200, tol: float = 1e-6
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Entropic OT between uniform marginals over rows and columns (log domain).

    Returns the plan (n, K) and the dual potentials (f, g); the plan's column sums are 1/K.
    """
    n, k = cost.shape
    log_a, log_b = -np.log(n), -np.log(k)
    f = np.zeros(n)
    g = np.zeros(k)
    for _ in range(iters):
        f = eps * (log_a - logsumexp((g[None, :] - cost) / eps, axis=1))
        g_new = eps * (log_b - logsumexp((f[:, None] - cost) / eps, axis=0))
        done = np.abs(g_new - g).max() < tol * max(eps, 1e-12)
        g = g_new
        if done:
            break
    plan = np.exp((f[:, None] + g[None, :] - cost) / eps)
    return plan, f, g


def kmeans_pp(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    centroids = [x[rng.integers(len(x))]]
    d2 = sq_dists(x, np.asarray(centroids))[:, 0]
    for _ in range(1, k):
        p = d2 / d2.sum() if d2.sum() > 0 else np.full(len(x), 1 / len(x))
        centroids.append(x[rng.choice(len(x), p=p)])
        d2 = np.minimum(d2, sq_dists(x, centroids[-1][None, :])[:, 0])
    return np.asarray(centroids)


def capacity_round(cost: np.ndarray, cap: np.ndarray) -> np.ndarray:
    """Hard assignment with exact capacities: each user goes to its cheapest cluster with room.

    Users claim clusters in rounds of preference rank; inside a round, a full cluster keeps
    its nearest claimants. K*K vectorised steps, no loop over users.
    """
    n, k = cost.shape
    if cap.sum() < n:
        raise ConfigError(f"capacities sum to {cap.sum()} < {n} users")
    pref = np.argsort(cost, axis=1, kind="stable")
    labels = np.full(n, -1, dtype=np.int32)
    room = cap.astype(np.int64).copy()
    for r in range(k):
        free = np.flatnonzero(labels < 0)
        if free.size == 0:
            break
        want = pref[free, r]
        for c in range(k):
            if room[c] == 0:
                continue
            who = free[want == c]
            if who.size == 0:
                continue
            if who.size > room[c]:
                who = who[np.argsort(cost[who, c], kind="stable")[: room[c]]]
            labels[who] = c
            room[c] -= who.size
    assert (labels >= 0).all()
    return labels


def rebalance_rows(
    labels: np.ndarray,
    cost: np.ndarray,
    rows: np.ndarray,
    *,
    tolerance: float,
    max_swaps: int = 10_000,
    candidates: int = 256,
) -> np.ndarray:
    """Swap users between the heaviest and the lightest shard until no shard holds more than
    (1 + tolerance) x the mean number of rows (interactions), keeping every shard's user count.

    Shards balanced in users can differ several-fold in rows when active users cluster, and a
    shard's retraining cost follows its rows. Each swap takes, among the heaviest shard's
    ``candidates`` heaviest users and the lightest shard's lightest, the pair that narrows
    the gap at the smallest increase of clustering cost per row moved.
    """
    labels = labels.copy()
    k = cost.shape[1]
    rows = np.asarray(rows, dtype=np.float64)
    load = np.bincount(labels, weights=rows, minlength=k)
    limit = (1 + tolerance) * load.mean()
    for _ in range(max_swaps):
        hi, lo = int(np.argmax(load)), int(np.argmin(load))
        if load[hi] <= limit or hi == lo:
            break
        gap = load[hi] - load[lo]
        in_hi, in_lo = np.flatnonzero(labels == hi), np.flatnonzero(labels == lo)
        in_hi = in_hi[np.argsort(-rows[in_hi], kind="stable")[:candidates]]
        in_lo = in_lo[np.argsort(rows[in_lo], kind="stable")[:candidates]]
        moved = rows[in_hi][:, None] - rows[in_lo][None, :]  # rows that leave the heavy shard
        gain = np.minimum(moved, gap - moved)  # how much the pair narrows the gap
        extra = (
            cost[in_hi, lo][:, None]
            + cost[in_lo, hi][None, :]
            - cost[in_hi, hi][:, None]
            - cost[in_lo, lo][None, :]
        )
        score = np.where(gain > 0, (extra - extra.min()) / np.maximum(gain, 1e-12), np.inf)
        a, b = np.unravel_index(np.argmin(score), score.shape)
        if not np.isfinite(score[a, b]):
            break
        u, v = in_hi[a], in_lo[b]
        labels[u], labels[v] = lo, hi
        load[hi] -= moved[a, b]
        load[lo] += moved[a, b]
    return labels


def balanced_kmeans_ot(
    x: np.ndarray,
    k: int,
    rng: np.random.Generator,
    *,
    iterations: int = 20,
    epsilon: float = 0.05,
    rows: np.ndarray | None = None,
    row_tolerance: float | None = None,
) -> Partition:
    """Balanced clustering: OT k-means with uniform marginals, then exact-capacity rounding;
    with ``rows`` (interactions per user) and ``row_tolerance``, rows are then balanced too."""
    _check(len(x), k)
    x = np.asarray(x, dtype=np.float64)
    c = kmeans_pp(x, k, rng)
    g = np.zeros(k)
    for _ in range(iterations):
        cost = sq_dists(x, c)
        eps = epsilon * max(float(np.median(cost)), 1e-12)
        plan, _, g = sinkhorn(cost, eps)
        mass = plan.sum(0)
        new_c = (plan.T @ x) / np.maximum(mass, 1e-300)[:, None]
        shift = np.abs(new_c - c).max()
        c = new_c
        if shift < 1e-6:
            break
    cost = sq_dists(x, c)
    # The dual potential g prices each cluster; cost - g is the OT assignment rule for one pass.
    labels = capacity_round(cost - g[None, :], capacities(len(x), k))
    if rows is not None and row_tolerance is not None:
        labels = rebalance_rows(labels, cost, rows, tolerance=row_tolerance)
    return Partition(labels, c, np.bincount(labels, minlength=k))


def balanced_kmeans(
    x: np.ndarray, k: int, rng: np.random.Generator, *, iterations: int = 20, capacity: float = 1.2
) -> Partition:
    """RecEraser's balanced k-means, for any rows: users (UBP), items (IBP) or interactions
    (InBP, ``interaction_embeddings``).

    k-means++ seeds; then each iteration assigns every row to its *nearest* centroid that still
    has room, at most ceil(capacity n / K) rows per shard (``capacity_round``: claims by
    preference rank, a full shard keeps its nearest claimants; CURE4Rec's code sorts the
    distances the other way and fills shards with the farthest rows), and moves each centroid
    to the mean of its rows, over the rows (RecEraser's code takes the mean without an axis and
    collapses centroids to scalars). Stops when the labels repeat.
    """
    _check(len(x), k)
    if capacity < 1.0:
        raise ConfigError(f"capacity must be >= 1 (shards must hold all rows), got {capacity}")
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    cap = np.full(k, int(np.ceil(capacity * n / k)), dtype=np.int64)
    c = kmeans_pp(x, k, rng)
    labels = np.full(n, -1, dtype=np.int32)
    for _ in range(iterations):
        new = capacity_round(sq_dists(x, c), cap)
        if np.array_equal(new, labels):
            break
        labels = new
        member = sp.csr_matrix((np.ones(n), (labels, np.arange(n))), shape=(k, n))
        counts = np.asarray(member.sum(1)).ravel()
        c = np.where(counts[:, None] > 0, (member @ x) / np.maximum(counts, 1)[:, None], c)
    return Partition(labels, c, np.bincount(labels, minlength=k))


def _random(x: np.ndarray, k: int, rng: np.random.Generator, s: Any, rows: Any) -> Partition:
    return random_partition(len(x), k, rng)


def _kmeans(x: np.ndarray, k: int, rng: np.random.Generator, s: Any, rows: Any) -> Partition:
    return balanced_kmeans(x, k, rng, iterations=s.kmeans_iterations, capacity=s.capacity)


def _sinkhorn(x: np.ndarray, k: int, rng: np.random.Generator, s: Any, rows: Any) -> Partition:
    return balanced_kmeans_ot(
        x,
        k,
        rng,
        iterations=s.kmeans_iterations,
        epsilon=s.sinkhorn_epsilon,
        rows=rows,
        row_tolerance=s.row_tolerance,
    )


# the partitioners by ``sharding.method``: (embeddings, K, rng, sharding settings, training rows
# per embedded row or None) -> Partition; random ignores the embeddings but their count
PARTITIONERS: dict[str, Callable[..., Partition]] = {
    "random": _random,
    "kmeans": _kmeans,
    "sinkhorn": _sinkhorn,
}


def partition_with(
    method: str,
    x: np.ndarray,
    k: int,
    rng: np.random.Generator,
    settings: Any,
    rows: np.ndarray | None = None,
) -> Partition:
    """Partition the rows of ``x`` into ``k`` shards with ``method`` (the one dispatch the
    partition job and the benchmarks share); an unknown name is refused."""
    if method not in PARTITIONERS:
        raise ValueError(f"unknown partitioner {method!r}: one of {', '.join(PARTITIONERS)}")
    return PARTITIONERS[method](x, k, rng, settings, rows)


def interaction_embeddings(
    user_emb: np.ndarray, item_emb: np.ndarray, users: np.ndarray, items: np.ndarray
) -> np.ndarray:
    """InBP's rows: one per interaction, its user's and its item's embeddings side by side."""
    return np.hstack([user_emb[users], item_emb[items]])


def _check(n: int, k: int) -> None:
    if k < 1:
        raise ConfigError(f"n_shards must be >= 1, got {k}")
    if n < k:
        raise ConfigError(f"cannot split {n} users into {k} shards")
