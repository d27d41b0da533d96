"""Train: one Ray task per shard (BPR-MF on the shard's rows at a recorded Delta version),
the aggregator, and the full reference model (K=1); then publish a model version.

Tasks are stateless, so plain Ray tasks (``num_cpus=1``, retried if a worker dies) rather
than actors. Data travels by reference: each task reads its own partition of the Delta
table at the given version with delta-rs (no JVM on the workers), never through the driver.
"""

from __future__ import annotations

import functools
import logging
import sys
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable

import numpy as np
import ray

from recunlearn import training
from recunlearn.config import RunConfig
from recunlearn.data.interactions import InteractionData
from recunlearn.engines import ray_cpus
from recunlearn.errors import PipelineError
from recunlearn.hashing import fingerprint
from recunlearn.storage import checkpoints
from recunlearn.storage.delta import commit_metadata, read_table, scan_table
from recunlearn.storage.joblock import holds_tables
from recunlearn.storage.layout import Layout, new_job_id
from recunlearn.storage.registry import ModelRegistry, publish_version
from recunlearn.storage.versions import CheckpointMeta, Component, ModelVersion, relative_to
from recunlearn.training import (
    AGGREGATOR,
    component_meta,
    component_name,
    fit_component,
    sequential_seed,
)

log = logging.getLogger(__name__)


def read_split_data(
    table: str, version: int, n_items: int, shard_id: int | None
) -> InteractionData:
    """A shard's (or, with ``shard_id=None``, every shard's) rows at ``version``, streamed in
    Arrow batches into the matrices (``InteractionData.from_batches``): memory is one batch
    and the matrices, whatever the table's size."""
    parts = [("shard_id", "=", str(int(shard_id)))] if shard_id is not None else None
    batches = scan_table(
        table, version=version, columns=["user_key", "item_idx", "split"], partitions=parts
    )
    return InteractionData.from_batches(batches, n_items)


def read_user_rows(table: str, version: int, n_items: int, keys: np.ndarray) -> InteractionData:
    """The rows of the users ``keys`` at ``version``, streamed in Arrow batches, each filtered
    to those users: the driver holds their interactions, never the table's."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    batches = scan_table(
        table,
        version=version,
        columns=["user_key", "item_idx", "split"],
        where=ds.field("user_key").isin(pa.array(np.asarray(keys, dtype=str))),
    )
    return InteractionData.from_batches(batches, n_items)


def shard_map_keys(layout: Layout) -> np.ndarray:
    """Every user key the shard map holds, sorted (one row per user, or per (user, shard))."""
    keys = read_table(layout.shard_map, columns=["user_key"]).column("user_key")
    return np.unique(keys.to_numpy(zero_copy_only=False).astype(str))


def read_grouped_data(table: str, version: int, n_items: int) -> tuple[InteractionData, np.ndarray]:
    """Every row at ``version`` and each user's shard (group), aligned with the data's keys."""
    tbl = read_table(table, version=version, columns=["user_key", "item_idx", "split", "shard_id"])
    keys = tbl.column("user_key").to_numpy(zero_copy_only=False).astype(str)
    data = InteractionData.from_columns(
        keys,
        tbl.column("item_idx").to_numpy(zero_copy_only=False),
        tbl.column("split").to_numpy(zero_copy_only=False),
        n_items,
    )
    shard = tbl.column("shard_id").to_numpy(zero_copy_only=False).astype(np.int64)
    uniq, first = np.unique(keys, return_index=True)
    labels = shard[first[np.searchsorted(uniq, data.user_keys)]]
    return data, labels


def torch_setup(threads: int, deterministic: bool) -> None:
    import torch

    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)
    # The first optimiser a process builds imports torch's compiler stack (~1-2 s). Pay it
    # here, outside the fit timers, so fit_seconds measure training, not a one-off import.
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])


def train_component(
    cfg_json: str,
    table: str,
    version: int,
    n_items: int,
    shard_id: int | None,
    ckpt_root: str,
    job_id: str,
) -> dict[str, Any]:
    """Train one sub-model (``model.kind``; a shard, or the reference when ``shard_id`` is
    None); save it."""
    cfg = RunConfig.model_validate_json(cfg_json)
    torch_setup(cfg.train.threads_per_task, cfg.train.deterministic)
    t0 = time.perf_counter()
    data = read_split_data(table, version, n_items, shard_id)
    t_read = time.perf_counter() - t0
    if data.n_users == 0:
        raise PipelineError(f"shard {shard_id}: no training rows at table version {version}")
    component = component_name(shard_id)
    model, stats, seed = fit_component(cfg, data, shard_id)
    meta = component_meta(
        cfg,
        shard_id,
        stats,
        seed,
        version,
        job_id,
        table=Path(table).name,
        extra={
            "read_seconds": round(t_read, 3),
            "best_epoch": stats["best_epoch"],
            "curve": stats["curve"],
        },
    )
    model.meta = meta.to_json()
    saved = checkpoints.save(
        Path(ckpt_root), component, f"{job_id}-{uuid.uuid4().hex[:6]}", model.state(), meta
    )
    saved["task_seconds"] = round(time.perf_counter() - t0, 3)
    return saved


def train_sequential_component(
    cfg_json: str,
    table: str,
    version: int,
    n_items: int,
    order: list[int] | None,
    start: int,
    init_path: str | None,
    ckpt_root: str,
    job_id: str,
) -> dict[str, Any]:
    """LASER: the stages from curriculum position ``start`` on, one after the other, warm-
    started from ``init_path`` (stage ``start - 1``); each stage saved as its group's shard
    checkpoint. ``order=None`` (first training) puts the groups in curriculum order here."""
    from recunlearn.models import load_model
    from recunlearn.sharding.sequential import curriculum, fit_sequential

    cfg = RunConfig.model_validate_json(cfg_json)
    torch_setup(cfg.train.threads_per_task, cfg.train.deterministic)
    t0 = time.perf_counter()
    data, labels = read_grouped_data(table, version, n_items)
    t_read = time.perf_counter() - t0
    if order is None:
        order = curriculum(np.diff(data.train.indptr), labels, cfg.sharding.n_shards).tolist()
    init = load_model(checkpoints.load_state(init_path)) if init_path else None
    seed = sequential_seed(cfg.seed)
    stages, stats = fit_sequential(
        data,
        labels,
        np.asarray(order),
        cfg.model,
        seed=seed,
        group_epochs=cfg.sharding.group_epochs,
        start=start,
        init=init,
    )
    metas = []
    for model, st in zip(stages, stats, strict=True):
        meta = component_meta(
            cfg,
            st["group"],
            st,
            seed,
            version,
            job_id,
            table=Path(table).name,
            extra={
                "stage": st["stage"],
                "order": order,
                "read_seconds": round(t_read, 3),
                "best_epoch": st["best_epoch"],
                "curve": st["curve"],
                "init": init_path if st["stage"] == start else None,
            },
        )
        model.meta = meta.to_json()
        metas.append(
            checkpoints.save(
                Path(ckpt_root),
                checkpoints.shard_component(st["group"]),
                f"{job_id}-{uuid.uuid4().hex[:6]}",
                model.state(),
                meta,
            )
        )
    return {"order": order, "stages": metas, "task_seconds": round(time.perf_counter() - t0, 3)}


def fit_aggregator_component(
    cfg_json: str,
    table: str,
    version: int,
    n_items: int,
    shard_paths: list[str],
    ckpt_root: str,
    job_id: str,
) -> dict[str, Any]:
    """Fit the aggregator on retained training data at ``version``, shard models frozen."""
    from recunlearn.models import load_model
    from recunlearn.sharding.ensemble import aggregator_kind

    cfg = RunConfig.model_validate_json(cfg_json)
    torch_setup(cfg.train.threads_per_task, cfg.train.deterministic)
    t0 = time.perf_counter()
    # the mean has no parameters: nothing is read, nothing trained on anyone's data
    fitted = aggregator_kind(cfg.aggregator.kind).fit is not None
    data = read_split_data(table, version, n_items, None) if fitted else None
    shards = [load_model(checkpoints.load_state(p)) for p in shard_paths] if fitted else []
    agg, stats, seed, n_train = training.fit_aggregator(cfg, shards, data)
    state = agg.state()
    meta = CheckpointMeta(
        shard_id=None,
        delta_version=version,
        job_id=job_id,
        table=Path(table).name,
        config_fingerprint=fingerprint(cfg.aggregator),
        seed=seed,
        kind=cfg.aggregator.kind,
        fit_seconds=round(stats["fit_seconds"], 3),
        epochs=stats["epochs"],
        valid_ndcg=stats["valid_ndcg"],
        n_train=n_train,
        extra={"shard_checkpoints": [relative_to(p, Path(ckpt_root)) for p in shard_paths]},
    )
    saved = checkpoints.save(
        Path(ckpt_root), AGGREGATOR, f"{job_id}-{uuid.uuid4().hex[:6]}", state, meta
    )
    saved["task_seconds"] = round(time.perf_counter() - t0, 3)
    return saved


@functools.cache
def _remote(fn):  # noqa: ANN001, ANN202
    # Workers import this module by name from the installed package (the same environment as
    # the driver).
    return ray.remote(fn)


def run_tasks(
    cfg: RunConfig,
    calls: list[tuple[Any, tuple]],
    *,
    label: str,
    names: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Submit (fn, args) calls as Ray tasks, at most 2x the cluster's CPUs in flight; each
    task carries its name from ``names`` (what the Ray dashboard lists it as)."""
    from tqdm import tqdm

    limit = 2 * ray_cpus()
    pending: list[Any] = []
    results: dict[int, dict[str, Any]] = {}
    order: dict[Any, int] = {}
    queue = list(enumerate(calls))
    bar = tqdm(total=len(calls), desc=label, disable=not sys.stderr.isatty(), leave=False)
    try:
        while queue or pending:
            while queue and len(pending) < limit:
                i, (fn, args) = queue.pop(0)
                # one CPU per task; a task whose worker dies is retried
                options: dict[str, Any] = {
                    "num_cpus": 1,
                    "max_retries": cfg.ray.max_retries,
                    "retry_exceptions": False,
                }
                if names:
                    options["name"] = names[i]
                ref = _remote(fn).options(**options).remote(*args)
                order[ref] = i
                pending.append(ref)
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                try:
                    results[order[ref]] = ray.get(ref)
                except ray.exceptions.RayError as exc:
                    raise PipelineError(f"{label}: task {order[ref]} failed: {exc}") from exc
                bar.update(1)
    finally:
        bar.close()
        for ref in pending:
            ray.cancel(ref, force=True)
    return [results[i] for i in range(len(calls))]


def train_models(
    cfg: RunConfig,
    layout: Layout,
    *,
    version: int,
    n_items: int,
    shard_ids: list[int],
    reference: bool,
    job_id: str,
    current: ModelVersion | None = None,
) -> dict[str, Any]:
    """Train the given shards (and the reference) in parallel on Ray. In sequential mode the
    shards are groups: one task trains the stages from the earliest of ``shard_ids`` in the
    curriculum order of ``current`` (a fresh order without one) to the last, beside the
    reference's task."""
    cfg_json = cfg.model_dump_json()
    table, root = layout.interactions, str(layout.checkpoints)
    sequential = cfg.train.mode == "sequential"
    calls: list[tuple[Callable[..., dict[str, Any]], tuple[Any, ...]]] = (
        []
        if sequential
        else [
            (train_component, (cfg_json, table, version, n_items, k, root, job_id))
            for k in shard_ids
        ]
    )
    order = None
    if sequential and shard_ids:
        order, start, init = sequential_restart(current, shard_ids)
        calls.append(
            (
                train_sequential_component,
                (cfg_json, table, version, n_items, order, start, init, root, job_id),
            )
        )
    if reference:
        calls.append((train_component, (cfg_json, table, version, n_items, None, root, job_id)))
    tag = f"table v{version}, job {job_id}"
    names = (
        [f"train shard {k} ({tag})" for k in shard_ids]
        if not sequential
        else ([f"train groups from {shard_ids} ({tag})"] if shard_ids else [])
    )
    names += [f"train reference ({tag})"] if reference else []
    t0 = time.perf_counter()
    metas = run_tasks(cfg, calls, label="train", names=names)
    if sequential and shard_ids:
        run, metas = metas[0], metas[1:]
        order = run["order"]
        metas = run["stages"] + metas
    out = {
        "shards": {m["shard_id"]: m for m in metas if m["shard_id"] is not None},
        "reference": next((m for m in metas if m["shard_id"] is None), None),
        "wall_seconds": round(time.perf_counter() - t0, 3),
        "order": order,
    }
    return out


def sequential_restart(
    current: ModelVersion | None, groups: list[int]
) -> tuple[list[int] | None, int, str | None]:
    """(curriculum order, first stage to train, checkpoint of the stage before it) for
    retraining ``groups`` of a sequential version (None: a first training, from stage 0)."""
    if current is None or current.order is None:
        return None, 0, None
    order = list(current.order)
    start = min(order.index(k) for k in groups)
    return order, start, current.shards[order[start - 1]].path if start else None


def fit_aggregator(
    cfg: RunConfig,
    layout: Layout,
    *,
    version: int,
    n_items: int,
    shard_paths: list[str],
    job_id: str,
) -> dict[str, Any]:
    t0 = time.perf_counter()
    [meta] = run_tasks(
        cfg,
        [
            (
                fit_aggregator_component,
                (
                    cfg.model_dump_json(),
                    layout.interactions,
                    version,
                    n_items,
                    shard_paths,
                    str(layout.checkpoints),
                    job_id,
                ),
            )
        ],
        label="aggregate",
        names=[f"fit aggregator {cfg.aggregator.kind} (table v{version}, job {job_id})"],
    )
    meta["wall_seconds"] = round(time.perf_counter() - t0, 3)
    return meta


def build_version(
    *,
    version: int,
    cfg: RunConfig,
    shards: Mapping[int, Component | dict[str, Any]],
    aggregator: Component | dict[str, Any],
    reference: Component | dict[str, Any] | None,
    table_version: int,
    n_items: int,
    partition: dict[str, Any] | None,
    guarantee: str,
    order: list[int] | None = None,
    parent: int | None = None,
    job_id: str | None = None,
    ingest: dict[str, Any] | None = None,
) -> ModelVersion:
    """The model version of these components (each a ``Component`` or a checkpoint's metadata
    as a training task returns it)."""

    def comp(c: Component | dict[str, Any]) -> Component:
        return c if isinstance(c, Component) else Component.of(c)

    if sorted(shards) != list(range(cfg.sharding.n_shards)):
        raise PipelineError(
            f"model version: shards {sorted(shards)} do not cover 0..{cfg.sharding.n_shards - 1}"
        )
    return ModelVersion(
        version=version,
        n_shards=cfg.sharding.n_shards,
        n_items=n_items,
        table_version=table_version,
        shards={k: comp(shards[k]) for k in sorted(shards)},
        aggregator=comp(aggregator),
        reference=comp(reference) if reference else None,
        guarantee=guarantee,
        config_fingerprint=fingerprint(cfg),
        partition=partition,
        ingest=ingest,
        order=list(order) if order is not None else None,
        parent=parent,
        job_id=job_id,
    )


def n_items_of(layout: Layout) -> int:
    tbl = read_table(layout.items, columns=["item_idx"])
    return int(np.max(tbl.column("item_idx").to_numpy())) + 1 if tbl.num_rows else 0


def _last_epoch(curve: Any) -> int | None:
    """The epoch of a training curve's last entry ((epoch, loss, score) rows), if it has one."""
    try:
        return int(curve[-1][0])
    except (TypeError, IndexError, KeyError, ValueError):
        return None


@holds_tables("train")
def train_all(
    spark: Any, *, cfg: RunConfig, layout: Layout, partition: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Train every shard, the reference and the aggregator on the current table version,
    then publish a model version."""
    from pipelines.partition import PARTITION_GUARANTEE
    from recunlearn.storage.delta import delta_version

    registry = ModelRegistry(layout)
    registry.ensure()
    version = delta_version(spark, layout.interactions)
    n_items = n_items_of(layout)
    job_id = new_job_id("train")
    t0 = time.perf_counter()
    trained = train_models(
        cfg,
        layout,
        version=version,
        n_items=n_items,
        shard_ids=list(range(cfg.sharding.n_shards)),
        reference=cfg.train.reference_model,
        job_id=job_id,
    )
    paths = [trained["shards"][k]["path"] for k in range(cfg.sharding.n_shards)]
    t_agg = time.perf_counter()
    agg = fit_aggregator(
        cfg, layout, version=version, n_items=n_items, shard_paths=paths, job_id=job_id
    )
    model_version = registry.next_version()
    published = build_version(
        version=model_version,
        cfg=cfg,
        shards=trained["shards"],
        aggregator=agg,
        reference=trained["reference"],
        table_version=version,
        n_items=n_items,
        partition=partition,
        guarantee=PARTITION_GUARANTEE,
        order=trained["order"],
        ingest=commit_metadata(layout.interactions, "ingest", upto=version),
    )
    # a first training supersedes nothing forgotten: no checkpoint is pruned, no version retired
    publish_version(registry, published, request_ids=[], note=f"full training {job_id}")
    ref = trained["reference"]
    return {
        "job_id": job_id,
        "model_version": model_version,
        "table_version": version,
        "shards_wall_seconds": trained["wall_seconds"],
        "aggregator_wall_seconds": round(time.perf_counter() - t_agg, 3),
        "wall_seconds": round(time.perf_counter() - t0, 3),
        "shard_fit_seconds": {str(k): m["fit_seconds"] for k, m in trained["shards"].items()},
        # reading a shard from Delta against fitting it: what a warm worker would save
        "shard_read_seconds": {str(k): m.get("read_seconds") for k, m in trained["shards"].items()},
        "reference_read_seconds": ref.get("read_seconds") if ref else None,
        # epochs run and the best one, per shard and for the reference: how training time
        # splits between the cost of an epoch and the number of epochs
        "epochs": {
            ("reference" if k is None else str(k)): {
                "best": m.get("best_epoch"),
                "run": _last_epoch(m.get("curve")),
            }
            for k, m in [*trained["shards"].items(), *([(None, ref)] if ref else [])]
        },
        "aggregator_fit_seconds": agg["fit_seconds"],
        "reference_fit_seconds": ref["fit_seconds"] if ref else None,
        "reference_task_seconds": ref["task_seconds"] if ref else None,
    }
