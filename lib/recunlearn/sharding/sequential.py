"""LASER-style sequential training: one model, trained group after group (the sequential
exact family of Li et al.'s survey of recommendation unlearning).

Users are split into groups (any partition; the benchmarks use RecEraser's balanced
k-means). The groups are put in a curriculum order, easiest first: here the densest groups
(most training interactions per user) first, so the model learns the well-observed users
before the sparse ones. Stage s trains on the users of the first s+1 groups (SISA's
"slices"), warm-started from stage s-1's model (users it knows and every item), for at most
``group_epochs`` epochs, early-stopped on those users' validation pairs, with a seed of its
own; its model is checkpointed.

Forgetting users of the group at curriculum position p restarts from the checkpoint of stage
p-1, which never saw them, and retrains stages p.. on the retained data. With the same seeds
and the same (frozen) groups this is the model that training from scratch on the retained
data gives, bit for bit: the exactness the replay test checks. The price is the LASER
trade-off: a request costs the stages after its group, on average half of a full run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from recunlearn.config import ModelConfig
from recunlearn.data.interactions import InteractionData
from recunlearn.models import fit_model
from recunlearn.models.base import Recommender, lookup_rows
from recunlearn.seeding import make_seed


def curriculum(train_rows: np.ndarray, labels: np.ndarray, n_groups: int) -> np.ndarray:
    """Group ids in training order: mean training interactions per user, densest first
    (ties by group id)."""
    counts = np.bincount(labels, weights=train_rows, minlength=n_groups)
    sizes = np.maximum(np.bincount(labels, minlength=n_groups), 1)
    return np.lexsort((np.arange(n_groups), -(counts / sizes)))


@dataclass
class SequentialModel:
    """The stages' models (the last one serves), the user keys and groups they were trained
    on, and the curriculum."""

    stages: list[Recommender]
    keys: np.ndarray  # sorted user keys the run was trained on
    labels: np.ndarray  # group of each key
    order: np.ndarray  # group ids in curriculum order
    seconds: list[float] = field(default_factory=list)

    @property
    def model(self) -> Recommender:
        return self.stages[-1]

    def restart_position(self, forget_keys: np.ndarray) -> int | None:
        """Curriculum position of the earliest group holding any of ``forget_keys`` (None if
        no key is known)."""
        rows = lookup_rows(self.keys, forget_keys)
        groups = np.unique(self.labels[rows[rows >= 0]])
        if len(groups) == 0:
            return None
        position = np.empty(len(self.order), dtype=np.int64)
        position[self.order] = np.arange(len(self.order))
        return int(position[groups].min())


def fit_sequential(
    data: InteractionData,
    labels: np.ndarray,
    order: np.ndarray,
    cfg: ModelConfig,
    *,
    seed: int,
    group_epochs: int,
    start: int = 0,
    init: Recommender | None = None,
) -> tuple[list[Recommender], list[dict]]:
    """The stage models from curriculum position ``start`` on, and their fit stats, trained on
    ``data`` whose user ``labels`` give the groups; ``init`` is stage ``start - 1``'s model
    (required when ``start > 0``)."""
    if start > 0 and init is None:
        raise ValueError(f"restarting at stage {start} needs stage {start - 1}'s model")
    stages: list[Recommender] = []
    stats: list[dict] = []
    seen = np.isin(labels, order[:start])
    for pos in range(start, len(order)):
        t0 = time.perf_counter()
        seen |= labels == order[pos]
        model, st = fit_model(
            data.subset(seen),
            cfg,
            seed=make_seed(seed, "group", pos),
            init=stages[-1] if stages else init,
            max_epochs=group_epochs,
        )
        stages.append(model)
        stats.append(
            {**st, "fit_seconds": time.perf_counter() - t0, "stage": pos, "group": int(order[pos])}
        )
    return stages, stats


def train_sequential(
    data: InteractionData,
    labels: np.ndarray,
    n_groups: int,
    cfg: ModelConfig,
    *,
    seed: int,
    group_epochs: int,
) -> SequentialModel:
    order = curriculum(np.diff(data.train.indptr), labels, n_groups)
    stages, stats = fit_sequential(data, labels, order, cfg, seed=seed, group_epochs=group_epochs)
    return SequentialModel(stages, data.user_keys, labels, order, [s["fit_seconds"] for s in stats])


def unlearn_sequential(
    fitted: SequentialModel,
    retained: InteractionData,
    forget_keys: np.ndarray,
    cfg: ModelConfig,
    *,
    seed: int,
    group_epochs: int,
) -> tuple[SequentialModel, int]:
    """Forget ``forget_keys``: restart from the stage before their earliest group. Returns the
    new run and the number of stages retrained. ``retained`` must hold only users the run was
    trained on (its groups are frozen)."""
    rows = lookup_rows(fitted.keys, retained.user_keys)
    if (rows < 0).any():
        raise ValueError("retained users that the sequential model never saw")
    labels = fitted.labels[rows]
    start = fitted.restart_position(forget_keys)
    if start is None:
        return fitted, 0
    stages, stats = fit_sequential(
        retained,
        labels,
        fitted.order,
        cfg,
        seed=seed,
        group_epochs=group_epochs,
        start=start,
        init=fitted.stages[start - 1] if start else None,
    )
    return (
        SequentialModel(
            fitted.stages[:start] + stages,
            retained.user_keys,
            labels,
            fitted.order,
            [s["fit_seconds"] for s in stats],
        ),
        len(fitted.order) - start,
    )
