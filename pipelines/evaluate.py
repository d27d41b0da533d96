"""Evaluate the published model: the ensemble (with its aggregator, and with the plain mean)
and the full reference model, on one split and protocol (full ranking, NDCG@20, Recall@20)."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import numpy as np
from pyspark.sql import SparkSession

from pipelines.train import n_items_of, read_split_data, read_user_rows, shard_map_keys
from recunlearn.config import RunConfig
from recunlearn.data.interactions import InteractionData
from recunlearn.errors import PipelineError
from recunlearn.evidence.evaluation import evaluate_users, evaluate_with_fairness, home_shards
from recunlearn.seeding import numpy_rng
from recunlearn.serving import load_ensemble, load_reference
from recunlearn.sharding.ensemble import MeanAggregator, ShardedEnsemble
from recunlearn.storage.layout import Layout
from recunlearn.storage.registry import ModelRegistry

log = logging.getLogger(__name__)


def evaluation_users(
    cfg: RunConfig, layout: Layout, version: int, exclude_keys: list[str] | None
) -> tuple[InteractionData, np.ndarray, int]:
    """The rows to evaluate on, the users (rows of it) to average over, and how many users
    they were drawn from. Up to ``evaluation.max_users`` users, every user's rows are read;
    past it, a seeded sample of the shard map's keys is drawn first and only those users'
    rows are read (streamed and filtered batch by batch), so the driver holds the sample's
    interactions, not the table's."""
    excluded = np.asarray(exclude_keys or [], dtype=str)
    keys = shard_map_keys(layout)
    keys = keys[~np.isin(keys, excluded)]
    n_items = n_items_of(layout)
    if len(keys) <= cfg.evaluation.max_users:
        data = read_split_data(layout.interactions, version, n_items, None)
        users = np.flatnonzero(~np.isin(data.user_keys, excluded))
        return data, users, len(users)
    sample = np.sort(
        numpy_rng(cfg.seed, "evaluate-users").choice(keys, cfg.evaluation.max_users, replace=False)
    )
    data = read_user_rows(layout.interactions, version, n_items, sample)
    return data, np.arange(data.n_users), len(keys)


def evaluate_published(
    spark: SparkSession,
    *,
    cfg: RunConfig,
    layout: Layout,
    exclude_keys: list[str] | None = None,
    label: str | None = None,
) -> dict[str, Any]:
    manifest = ModelRegistry(layout).current_version()
    if manifest is None:
        raise PipelineError("evaluate: no published model version")
    t0 = time.perf_counter()
    data, users, population = evaluation_users(cfg, layout, manifest.table_version, exclude_keys)
    reg = cfg.aggregator.fold_in_reg
    out: dict[str, Any] = {
        "model_version": manifest.version,
        "users": int(len(users)),
        "users_sampled_from": int(population),
        "table_version": manifest.table_version,
        "protocol": "full ranking over all items; the user's train and "
        "validation items excluded; test items as truth",
    }
    ens = load_ensemble(manifest, fold_in_reg=reg)
    out["aggregator"] = ens.aggregator.kind  # what the published ensemble combines its shards with
    # utility, and from the same scores fairness: A-IGF (the 5% most active users against the
    # rest) and the spread over home shards
    out["ensemble"], fair_ens = evaluate_with_fairness(
        ens, data, users, shard_of=home_shards(ens, data.user_keys)
    )
    # the same shard models under the plain mean (no second evaluation when that is the
    # published one)
    out["ensemble_mean"] = (
        out["ensemble"]
        if isinstance(ens.aggregator, MeanAggregator)
        else evaluate_users(ShardedEnsemble(ens.shards, MeanAggregator()), data, users)
    )
    ref = load_reference(manifest, fold_in_reg=reg)
    out["reference"], fair_ref = (
        evaluate_with_fairness(ref, data, users) if ref is not None else (None, None)
    )
    out["fairness"] = {"ensemble": fair_ens, "reference": fair_ref}
    out["seconds"] = round(time.perf_counter() - t0, 2)
    if label:
        layout.reports.mkdir(parents=True, exist_ok=True)
        (layout.reports / f"evaluation-{label}.json").write_text(json.dumps(out, indent=2))
    log.info(
        "evaluated v%s: ensemble %s reference %s",
        manifest.version,
        out["ensemble"],
        out["reference"],
    )
    return out
