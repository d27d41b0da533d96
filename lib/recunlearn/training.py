"""Training a component the way the jobs do, and unlearning methods run in one process.

``fit_component`` and ``fit_aggregator`` are what the train and unlearn jobs' Ray tasks run
(``pipelines.train``): the same seeds (one per component, from ``cfg.seed``), the same config.
:class:`LocalDeployment` holds a sharded model version in memory and is an ``UpdateContext``
(``recunlearn.unlearning.methods``): an unlearning method's ``update`` runs on it exactly as in
the unlearn job, with the shards' rows in memory instead of Delta, checkpoints in a dict instead
of on disk and retraining in this process instead of on Ray. The contract suites
(``recunlearn.testing``) use it, so a method's replay equality is checked through its
production code.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from recunlearn.data.interactions import InteractionData
from recunlearn.hashing import fingerprint
from recunlearn.models import fit_model
from recunlearn.seeding import make_seed, numpy_rng
from recunlearn.sharding.ensemble import aggregator_kind
from recunlearn.storage.checkpoints import shard_component
from recunlearn.storage.versions import CheckpointMeta, Component, ModelVersion
from recunlearn.unlearning.targets import Targets

if TYPE_CHECKING:
    from recunlearn.config import RunConfig
    from recunlearn.models.base import Recommender
    from recunlearn.sharding.ensemble import Aggregator

REFERENCE = "reference"
AGGREGATOR = "aggregator"


def component_name(shard_id: int | None) -> str:
    """``shard-007``, or ``reference`` for the model trained on every shard."""
    return REFERENCE if shard_id is None else shard_component(shard_id)


def component_seed(seed: int, shard_id: int | None) -> int:
    """The seed a component is trained with: a function of the run's seed and its name, so a
    retrain of the same shard on the retained rows replays the original's randomness."""
    return make_seed(seed, "model", component_name(shard_id))


def sequential_seed(seed: int) -> int:
    """The seed of a sequential (LASER) run: every stage draws from it in curriculum order."""
    return make_seed(seed, "model", "sequential")


def fit_component(
    cfg: RunConfig, data: InteractionData, shard_id: int | None
) -> tuple[Recommender, dict[str, Any], int]:
    """Train ``model.kind`` on ``data`` (a shard's rows, or every shard's for the reference):
    the model, its training stats and the seed it used."""
    seed = component_seed(cfg.seed, shard_id)
    model, stats = fit_model(data, cfg.model, seed=seed)
    return model, stats, seed


def fit_aggregator(
    cfg: RunConfig, shards: list[Recommender], data: InteractionData | None
) -> tuple[Aggregator, dict[str, Any], int, int | None]:
    """Fit ``aggregator.kind`` over frozen shard models on the retained rows (the mean has
    nothing to fit and reads neither): the aggregator, its stats, its seed and the training
    rows it saw."""
    seed = make_seed(cfg.seed, AGGREGATOR)
    kind = aggregator_kind(cfg.aggregator.kind)
    if kind.fit is None:  # the mean has no parameters: nothing trained on anyone's data
        stats = {"fit_seconds": 0.0, "epochs": 0, "valid_ndcg": None}
        return kind.load({"kind": kind.name}), stats, seed, None
    if data is None:
        raise ValueError(f"aggregator {kind.name} is fit on the retained rows: pass them")
    agg, stats = kind.fit(
        shards, data, cfg.aggregator, seed=seed, rng=numpy_rng(cfg.seed, "aggregator-sample")
    )
    return agg, stats, seed, int(data.train.nnz)


def component_meta(
    cfg: RunConfig,
    shard_id: int | None,
    stats: dict[str, Any],
    seed: int,
    version: int,
    job_id: str,
    *,
    table: str = "interactions",
    extra: dict[str, Any] | None = None,
) -> CheckpointMeta:
    """The sidecar of a component ``fit_component`` trained on the rows at ``version``."""
    return CheckpointMeta(
        shard_id=shard_id,
        delta_version=version,
        job_id=job_id,
        table=table,
        config_fingerprint=fingerprint(cfg.model),
        seed=seed,
        fit_seconds=round(stats["fit_seconds"], 3),
        epochs=stats["epochs"],
        valid_ndcg=stats["valid_ndcg"],
        n_users=stats["n_users"],
        n_train=stats["n_train"],
        kind=cfg.model.kind,
        extra=extra or {"best_epoch": stats["best_epoch"], "curve": stats["curve"]},
    )


@dataclass
class LocalDeployment:
    """A sharded model version held in memory, and the ``UpdateContext`` its unlearning runs
    with. ``shards`` are the rows of each shard now; ``before`` (set by :meth:`forget`) the
    rows as they were before the last delete."""

    cfg: RunConfig
    shards: dict[int, InteractionData]
    job_id: str = "local"
    delete_version: int = 0
    train_version: int = 0
    exact_guarantee: str = "exact (in process): the touched shards retrained from scratch"
    before: dict[int, InteractionData] = field(default_factory=dict)
    models: dict[str, Recommender] = field(default_factory=dict)  # component path -> model
    _ids: Any = field(default_factory=lambda: itertools.count())

    # ---- building a version
    @classmethod
    def train(
        cls, cfg: RunConfig, data: InteractionData, shard_of: np.ndarray, *, reference: bool = True
    ) -> tuple[LocalDeployment, ModelVersion]:
        """Split ``data``'s users by ``shard_of`` (a shard per user row), train every shard,
        the aggregator and (``reference``) the full model as the train job does."""
        dep = cls(cfg, {k: data.subset(shard_of == k) for k in range(cfg.sharding.n_shards)})
        trained = dep.retrain(list(dep.shards), reference=reference)
        version = ModelVersion(
            version=1,
            n_shards=cfg.sharding.n_shards,
            n_items=data.n_items,
            table_version=0,
            shards=trained["shards"],
            aggregator=dep.refit_aggregator(trained["shards"]),
            reference=trained["reference"],
            guarantee=dep.exact_guarantee,
            config_fingerprint=fingerprint(cfg),
        )
        return dep, version

    def forget(
        self,
        *,
        users: Sequence[str] = (),
        items: Sequence[int] = (),
        pairs: Sequence[tuple[str, int]] = (),
    ) -> Targets:
        """Delete rows as the unlearn job's delete does: keep each shard's rows as they were
        (``rows_before``), take the targets out, and return the targets with the shards that
        held any of them."""
        keys = np.asarray(list(users), dtype=str)
        self.before = dict(self.shards)
        touched = []
        for k, rows in self.shards.items():
            after = rows.without_users(keys)
            if len(items):
                after = after.without_items(np.asarray(list(items)))
            if len(pairs):  # pairs of users the shard does not hold are ignored
                after = after.without_pairs(
                    np.array([u for u, _ in pairs]), np.array([i for _, i in pairs])
                )
            if after.train.nnz != rows.train.nnz or after.n_users != rows.n_users:
                touched.append(k)
            self.shards[k] = after
        self.delete_version += 1
        self.train_version = self.delete_version
        return Targets(
            users=sorted(keys.tolist()),
            items=sorted(items),
            pairs=sorted(pairs),
            touched=touched,
            shards_of={"local": touched},
        )

    def retained(self) -> InteractionData:
        """Every shard's rows now, as one data set (users sorted)."""
        parts = [self.shards[k] for k in sorted(self.shards)]
        keys = np.concatenate([p.user_keys for p in parts])
        order = np.argsort(keys, kind="stable")

        def stack(mats: list[Any]) -> Any:
            return sp.vstack(mats).tocsr()[order]

        return InteractionData(
            keys[order],
            stack([p.train for p in parts]),
            stack([p.valid for p in parts]),
            stack([p.test for p in parts]),
        )

    # ---- the UpdateContext
    def load(self, component: Component) -> Recommender:
        return copy.deepcopy(self.models[component.path])

    def rows_before(self, shard: int) -> InteractionData:
        return self.before[shard]

    def save(self, shard: int | None, model: Recommender, meta: CheckpointMeta) -> Component:
        path = f"memory://{component_name(shard)}/{next(self._ids)}"
        self.models[path] = copy.deepcopy(model)
        return Component.of({**meta.to_json(), "path": path, "run_id": self.job_id})

    def retrain(self, shards: list[int], *, reference: bool) -> dict[str, Any]:
        def trained(shard: int | None, data: InteractionData) -> Component:
            model, stats, seed = fit_component(self.cfg, data, shard)
            meta = component_meta(self.cfg, shard, stats, seed, self.train_version, self.job_id)
            return self.save(shard, model, meta)

        out = {k: trained(k, self.shards[k]) for k in shards}
        ref = trained(None, self.retained()) if reference else None
        return {"shards": out, "reference": ref, "wall_seconds": None, "order": None}

    def refit_aggregator(self, shards: dict[int, Component]) -> Component:
        models = [self.models[shards[k].path] for k in sorted(shards)]
        agg, stats, seed, n_train = fit_aggregator(self.cfg, models, self.retained())
        path = f"memory://{AGGREGATOR}/{next(self._ids)}"
        self.models[path] = agg  # type: ignore[assignment]
        return Component(
            path=path,
            delta_version=self.train_version,
            seed=seed,
            fit_seconds=stats["fit_seconds"],
            n_train=n_train,
            kind=agg.kind,
        )
