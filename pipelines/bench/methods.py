"""Unlearning methods as the benchmarks run them: in one process, on in-memory data.

The production path is ``recunlearn unlearn`` (Spark + Delta + Ray). The benchmarks run the
same library code without the engines: the train job's component and aggregator trainers with
its per-component seeds (``recunlearn.training``), its partitioner dispatch
(``partition_with``) and sequential training, so a
matrix of cells fits one machine and every method is timed on the same footing (compute, no
I/O). Each method answers three questions:
- ``fit``: train on the data;
- ``unlearn``: given the fitted model and the retained data, forget some users;
- ``replay``: train from scratch on the retained data, same seed, same (frozen) partition:
  the model an exact method must equal.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.sparse.linalg import svds

from recunlearn.config import RunConfig
from recunlearn.data.interactions import InteractionData
from recunlearn.models import FACTOR_MODELS, load_model
from recunlearn.models.base import Recommender, lookup_rows
from recunlearn.seeding import make_seed
from recunlearn.sharding.ensemble import ShardedEnsemble, load_aggregator
from recunlearn.sharding.partition import partition_with
from recunlearn.sharding.sequential import (
    SequentialModel,
    fit_sequential,
    train_sequential,
    unlearn_sequential,
)
from recunlearn.training import fit_aggregator, fit_component, sequential_seed


@dataclass
class Fitted:
    model: Any  # a Recommender or ShardedEnsemble
    keys: np.ndarray  # the users it was trained on (sorted)
    shard_of: np.ndarray | None = None  # shard per key (sharded methods)
    seconds: dict[str, float] = field(default_factory=dict)
    shards_touched: list[int] | None = None
    run: SequentialModel | None = None  # sequential training: every stage's checkpoint

    @property
    def labels(self) -> np.ndarray:
        """The shard of each key (sharded methods only)."""
        if self.shard_of is None:
            raise ValueError("not a sharded model")
        return self.shard_of

    @property
    def sequential(self) -> SequentialModel:
        """Every stage's checkpoint (sequential training only)."""
        if self.run is None:
            raise ValueError("not a sequential model")
        return self.run

    def storage_bytes(self) -> int:
        buf = io.BytesIO()
        torch.save(_state(self), buf)
        return buf.tell()


def _state(f: Fitted) -> dict[str, Any]:
    if isinstance(f.model, ShardedEnsemble):
        model = {
            "shards": [m.state() for m in f.model.shards],
            "aggregator": f.model.aggregator.state(),
        }
    elif f.run is not None:
        model = {
            "stages": [m.state() for m in f.run.stages],
            "order": f.run.order.tolist(),
            "labels": torch.from_numpy(f.run.labels.astype(np.int64)),
        }
    else:
        model = {"single": f.model.state()}
    return {
        "model": model,
        "keys": f.keys.tolist(),
        "seconds": f.seconds,
        "shard_of": None if f.shard_of is None else torch.from_numpy(f.shard_of.astype(np.int64)),
        "shards_touched": f.shards_touched,
    }


def save_fitted(f: Fitted, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(_state(f), tmp)
    tmp.replace(path)


def load_fitted(path: Path, fold_in_reg: float) -> Fitted:
    st = torch.load(path, weights_only=True)
    keys = np.asarray(st["keys"], dtype=str)
    run = None
    if "single" in st["model"]:
        model: Any = _loaded(st["model"]["single"], fold_in_reg)
    elif "stages" in st["model"]:
        stages = [_loaded(s, fold_in_reg) for s in st["model"]["stages"]]
        run = SequentialModel(
            stages, keys, st["model"]["labels"].numpy(), np.asarray(st["model"]["order"])
        )
        model = stages[-1]
    else:
        shards = [_loaded(s, fold_in_reg) for s in st["model"]["shards"]]
        model = ShardedEnsemble(shards, load_aggregator(st["model"]["aggregator"]))
    shard_of = None if st["shard_of"] is None else st["shard_of"].numpy()
    return Fitted(model, keys, shard_of, st["seconds"], st["shards_touched"], run)


def _loaded(state: dict[str, Any], fold_in_reg: float) -> Recommender:
    return _with_fold_in(load_model(state), fold_in_reg)


def _with_fold_in(m: Recommender, reg: float) -> Recommender:
    """``m`` with its least-squares fold-in's ridge term set (factor models have one)."""
    if hasattr(m, "fold_in_reg"):
        m.fold_in_reg = reg
    return m


class Method:
    name = "method"
    sharded = False

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg

    def fit(self, data: InteractionData, seed: int) -> Fitted:
        raise NotImplementedError

    def unlearn(
        self, fitted: Fitted, retained: InteractionData, forget_keys: np.ndarray, seed: int
    ) -> Fitted:
        raise NotImplementedError

    def replay(self, fitted: Fitted, retained: InteractionData, seed: int) -> Fitted:
        return self.fit(retained, seed)

    def _seeded(self, seed: int, **aggregator: Any) -> RunConfig:
        """The config with the bench's seed as the run's seed (and aggregator settings)."""
        agg = self.cfg.aggregator.model_copy(update=aggregator)
        return self.cfg.model_copy(update={"seed": seed, "aggregator": agg})

    def _fit(
        self, data: InteractionData, seed: int, shard: int | None = None
    ) -> tuple[Recommender, float]:
        """The train job's component trainer, seed per component (the shard's, or the full
        reference's for ``shard=None``)."""
        m, st, _ = fit_component(self._seeded(seed), data, shard)
        return _with_fold_in(m, self.cfg.aggregator.fold_in_reg), st["fit_seconds"]

    def _single(self, data: InteractionData, seed: int) -> Fitted:
        m, secs = self._fit(data, seed)
        return Fitted(m, data.user_keys, seconds={"fit": secs})


class FullRetrain(Method):
    """One model (K=1); unlearning retrains it from scratch without the forgotten data."""

    name = "full"

    def fit(self, data: InteractionData, seed: int) -> Fitted:
        return self._single(data, seed)

    def unlearn(
        self, fitted: Fitted, retained: InteractionData, forget_keys: np.ndarray, seed: int
    ) -> Fitted:
        return self._single(retained, seed)


class NoUnlearning(FullRetrain):
    """The control: the original model, served unchanged. Its completeness evidence shows
    what the checks report when nothing was forgotten."""

    name = "none"

    def unlearn(
        self, fitted: Fitted, retained: InteractionData, forget_keys: np.ndarray, seed: int
    ) -> Fitted:
        return Fitted(fitted.model, fitted.keys, seconds={"fit": 0.0}, shards_touched=[])


class Sharded(Method):
    """Exact sharded unlearning: users split into K shards (a random split as in SISA,
    UltraRE's balanced OT k-means or RecEraser's capacity-capped k-means of SVD user
    factors), one model per shard, an aggregator (mean, or learned weights or attention refit
    on retained data). Unlearning retrains the shards that held a forgotten user with their
    original seeds; the partition stays frozen."""

    sharded = True

    def __init__(self, cfg: RunConfig, *, partition: str, aggregator: str, n_shards: int) -> None:
        super().__init__(cfg)
        self.partition, self.aggregator, self.k = partition, aggregator, n_shards
        self.name = NAMES.get((partition, aggregator), f"{partition}-{aggregator}")
        if cfg.model.kind not in FACTOR_MODELS:
            # attention and learned weights read the shards' user vectors: other sub-models
            # (WMF, item-kNN, NCF) combine by the mean, as the production config requires
            self.aggregator = "mean"

    def _labels(self, data: InteractionData, seed: int) -> np.ndarray:
        return user_groups(self.partition, data, self.k, self.cfg, seed)

    def _fit_shard(
        self, data: InteractionData, rows: np.ndarray, k: int, seed: int
    ) -> tuple[Recommender, float]:
        return self._fit(data.subset(rows), seed, k)

    def _aggregate(
        self, shards: list[Recommender], data: InteractionData, seed: int
    ) -> tuple[Any, float]:
        agg, st, _, _ = fit_aggregator(self._seeded(seed, kind=self.aggregator), shards, data)
        return agg, st["fit_seconds"]

    def _train(
        self,
        data: InteractionData,
        labels: np.ndarray,
        seed: int,
        keep: dict[int, Recommender] | None = None,
    ) -> Fitted:
        shards, secs = [], {}
        for k in range(self.k):
            if keep and k in keep:
                shards.append(keep[k])
                continue
            m, s = self._fit_shard(data, np.flatnonzero(labels == k), k, seed)
            shards.append(m)
            secs[f"shard{k}"] = s
        agg, a = self._aggregate(shards, data, seed)
        secs["aggregator"] = a
        secs["fit"] = sum(secs.values())
        return Fitted(
            ShardedEnsemble(shards, agg),
            data.user_keys,
            labels,
            secs,
            sorted(set(range(self.k)) - set(keep or {})),
        )

    def fit(self, data: InteractionData, seed: int) -> Fitted:
        t0 = time.perf_counter()
        labels = self._labels(data, seed)
        t_part = time.perf_counter() - t0
        f = self._train(data, labels, seed)
        f.seconds["partition"] = t_part
        return f

    def _retained_labels(self, fitted: Fitted, retained: InteractionData) -> np.ndarray:
        rows = lookup_rows(fitted.keys, retained.user_keys)
        if (rows < 0).any():
            raise ValueError("retained users that the fitted model never saw")
        return fitted.labels[rows]

    def unlearn(
        self, fitted: Fitted, retained: InteractionData, forget_keys: np.ndarray, seed: int
    ) -> Fitted:
        hit = lookup_rows(fitted.keys, forget_keys)
        touched = set(np.unique(fitted.labels[hit[hit >= 0]]).tolist())
        keep = {k: m for k, m in enumerate(fitted.model.shards) if k not in touched}
        return self._train(retained, self._retained_labels(fitted, retained), seed, keep=keep)

    def replay(self, fitted: Fitted, retained: InteractionData, seed: int) -> Fitted:
        return self._train(retained, self._retained_labels(fitted, retained), seed)


def user_groups(
    partition: str, data: InteractionData, k: int, cfg: RunConfig, seed: int
) -> np.ndarray:
    """K user groups: random (SISA), RecEraser's capacity-capped k-means ("kmeans") or
    UltraRE's OT k-means ("ot") of SVD user factors of the training matrix."""
    rng = np.random.default_rng(make_seed(seed, "partition"))
    method = {v: k for k, v in BENCH_PARTITION.items()}.get(partition, partition)
    if method == "random":
        x = np.empty((data.n_users, 0))
    else:  # the partition job embeds users with Spark ALS; in memory, SVD of the matrix
        s = cfg.sharding
        train = data.train.astype(np.float64)
        u, sig, _ = svds(
            train,
            k=min(s.embedding_rank, min(train.shape) - 1),
            v0=np.random.default_rng(make_seed(seed, "svd")).standard_normal(min(train.shape)),
        )
        x = u * sig
    return partition_with(method, x, k, rng, cfg.sharding, rows=np.diff(data.train.indptr)).labels


class Sequential(Method):
    """LASER: one model trained group after group (RecEraser's balanced k-means groups in a
    curriculum order, ``recunlearn.sharding.sequential``); a request restarts from the stage before
    the earliest group it touches."""

    name = "laser"
    sharded = True

    def __init__(self, cfg: RunConfig, *, n_groups: int, partition: str = "kmeans") -> None:
        super().__init__(cfg)
        self.k, self.partition = n_groups, partition

    def fit(self, data: InteractionData, seed: int) -> Fitted:
        t0 = time.perf_counter()
        labels = user_groups(self.partition, data, self.k, self.cfg, seed)
        t_part = time.perf_counter() - t0
        run = train_sequential(
            data,
            labels,
            self.k,
            self.cfg.model,
            seed=sequential_seed(seed),
            group_epochs=self.cfg.sharding.group_epochs,
        )
        return self._fitted(run, list(range(self.k)), {"partition": t_part})

    def _fitted(self, run: SequentialModel, touched: list[int], secs: dict[str, float]) -> Fitted:
        for m in run.stages:
            _with_fold_in(m, self.cfg.aggregator.fold_in_reg)
        secs = {
            **secs,
            **{f"stage{i}": s for i, s in enumerate(run.seconds)},
            "fit": sum(run.seconds),
        }
        return Fitted(run.model, run.keys, run.labels, secs, touched, run)

    def unlearn(
        self, fitted: Fitted, retained: InteractionData, forget_keys: np.ndarray, seed: int
    ) -> Fitted:
        run, n = unlearn_sequential(
            fitted.sequential,
            retained,
            forget_keys,
            self.cfg.model,
            seed=sequential_seed(seed),
            group_epochs=self.cfg.sharding.group_epochs,
        )
        # "shards touched": the groups whose stages were retrained
        return self._fitted(run, sorted(run.order[len(run.order) - n :].tolist()), {})

    def replay(self, fitted: Fitted, retained: InteractionData, seed: int) -> Fitted:
        # every stage from scratch, with the groups and their curriculum order frozen
        labels = fitted.sequential.labels[lookup_rows(fitted.keys, retained.user_keys)]
        stages, stats = fit_sequential(
            retained,
            labels,
            fitted.sequential.order,
            self.cfg.model,
            seed=sequential_seed(seed),
            group_epochs=self.cfg.sharding.group_epochs,
        )
        run = SequentialModel(
            stages,
            retained.user_keys,
            labels,
            fitted.sequential.order,
            [s["fit_seconds"] for s in stats],
        )
        return self._fitted(run, list(range(self.k)), {})


# the field's names for (partition, aggregator); any other pair is "<partition>-<aggregator>"
NAMES = {
    ("random", "mean"): "sisa",
    ("kmeans", "attention"): "receraser",
    ("ot", "learned"): "ultrare",
}
PARTITIONS, AGGREGATORS = ("random", "ot", "kmeans"), ("mean", "learned", "attention")
# sharding.method's names that the benchmarks spell otherwise
BENCH_PARTITION = {"sinkhorn": "ot"}


def production_method(cfg: RunConfig) -> str:
    """The bench method name of the configured sharding: partition x aggregator."""
    part = BENCH_PARTITION.get(cfg.sharding.method, cfg.sharding.method)
    return NAMES.get((part, cfg.aggregator.kind), f"{part}-{cfg.aggregator.kind}")


METHODS = (
    "none",
    "full",
    *NAMES.values(),
    "laser",
    *(f"{p}-{a}" for p in PARTITIONS for a in AGGREGATORS if (p, a) not in NAMES),
)


def make_method(name: str, cfg: RunConfig, n_shards: int) -> Method:
    if name == "none":
        return NoUnlearning(cfg)
    if name == "full":
        return FullRetrain(cfg)
    if name == "laser":
        return Sequential(cfg, n_groups=n_shards)
    named = {v: k for k, v in NAMES.items()}
    if name in named:
        part, agg = named[name]
        return Sharded(cfg, partition=part, aggregator=agg, n_shards=n_shards)
    part, _, agg = name.partition("-")
    if part in PARTITIONS and agg in AGGREGATORS:
        return Sharded(cfg, partition=part, aggregator=agg, n_shards=n_shards)
    raise ValueError(f"unknown method {name!r}; expected one of {METHODS}")
