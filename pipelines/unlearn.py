"""The unlearn job: pending forget requests -> touched shards -> delete (MERGE with a batch
table) -> VACUUM -> retrain touched shards on Ray -> refit the aggregator -> publish a new
model version -> delete checkpoints trained on the forgotten rows -> statuses.

A new model version is published only after every step succeeded. Requests stay open
(``failed``, with the reason) when a step fails, and a later run resumes them: the delete
is idempotent and the touched shards were recorded in the ledger before it.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from pyspark.sql import SparkSession

from recunlearn import checkpoints
from recunlearn.config import RunConfig
from recunlearn.ensemble import load_ensemble, load_reference
from recunlearn.errors import PipelineError
from recunlearn.evaluation import functional_evidence
from recunlearn.models.data import InteractionData
from recunlearn.scan import folder_bytes, storage_bytes
from recunlearn.seeding import make_seed, numpy_rng
from recunlearn.tables import (ATTRIBUTE, ATTRIBUTE_UNDO, COMPLETED, FAILED, IN_PROGRESS, USER,
                               ForgetLedger, Layout, ModelRegistry, delete_keys, now_utc, vacuum_now)
from pipelines.partition import PARTITION_GUARANTEE
from pipelines.train import (build_manifest, fit_aggregator, n_items_of, new_job_id,
                             read_split_data, shard_paths_of, train_models)

log = logging.getLogger(__name__)


class _Clock:
    def __init__(self) -> None:
        self.steps: dict[str, float] = {}

    def step(self, name: str):  # noqa: ANN201
        clock = self

        class _T:
            def __enter__(self) -> None:
                self.t0 = time.perf_counter()

            def __exit__(self, *exc: object) -> None:
                clock.steps[name] = round(time.perf_counter() - self.t0, 3)

        return _T()


def unlearn(spark: SparkSession, *, cfg: RunConfig, layout: Layout) -> dict[str, Any]:
    ledger = ForgetLedger(spark, layout.ledger)
    requests = ledger.open_requests((USER,))
    if not requests:
        if ledger.open_requests((ATTRIBUTE, ATTRIBUTE_UNDO)):
            from pipelines.attribute import process_attribute_requests

            return process_attribute_requests(spark, cfg=cfg, layout=layout)
        log.info("unlearn: no open requests")
        return {"requests": [], "status": "nothing to do"}
    registry = ModelRegistry(spark, layout)
    current = registry.current()
    if current is None:
        raise PipelineError("unlearn: no published model version; run `recunlearn train` first")
    manifest = json.loads(open(current["manifest"]).read())
    job_id = new_job_id("unlearn")
    ids = [r["request_id"] for r in requests]
    clock = _Clock()
    t_start = time.perf_counter()
    try:
        result = _run(spark, cfg=cfg, layout=layout, ledger=ledger, registry=registry,
                      current=current, manifest=manifest, requests=requests, job_id=job_id,
                      clock=clock, t_start=t_start)
    except Exception as exc:
        # Leave the requests open for the next run; the published model is unchanged.
        ledger.update(ids, status=FAILED, reason=f"{type(exc).__name__}: {str(exc)[:400]}", job_id=job_id)
        raise
    if ledger.open_requests((ATTRIBUTE, ATTRIBUTE_UNDO)):
        from pipelines.attribute import process_attribute_requests

        result["attribute"] = process_attribute_requests(spark, cfg=cfg, layout=layout)
    return result


def _run(spark: SparkSession, *, cfg: RunConfig, layout: Layout, ledger: ForgetLedger,
         registry: ModelRegistry, current: dict[str, Any], manifest: dict[str, Any],
         requests: list[dict[str, Any]], job_id: str, clock: _Clock, t_start: float) -> dict[str, Any]:
    ids = [r["request_id"] for r in requests]
    keys = sorted({r["user_key"] for r in requests})
    n_items = n_items_of(layout)

    # 1. target determination: which shards hold each user (recorded before any delete).
    with clock.step("target_determination"):
        probe = spark.createDataFrame([(k,) for k in keys], "user_key string")
        smap = spark.read.format("delta").load(layout.shard_map)
        found: dict[str, list[int]] = {}
        for row in smap.join(probe, "user_key", "left_semi").select("user_key", "shard_id").collect():
            found.setdefault(row["user_key"], []).append(int(row["shard_id"]))
        per_request = []
        for r in requests:
            shards = sorted(set(found.get(r["user_key"], []) or (r["shards"] or [])))
            per_request.append({"request_id": r["request_id"], "shards": shards,
                                "status": IN_PROGRESS, "started_at": now_utc(), "job_id": job_id,
                                "reason": None})
        touched = sorted({s for p in per_request for s in p["shards"]})
        ledger.update_rows(per_request)
    log.info("unlearn %s: %d request(s), shards touched %s", job_id, len(requests), touched)

    # 2. the forgotten users' rows, held in memory only, for the functional check.
    with clock.step("capture_evidence_inputs"):
        version_before = int(manifest["table_version"])
        forgotten = _rows_of(layout, n_items, keys, touched)
        original = load_ensemble(manifest, fold_in_reg=cfg.aggregator.fold_in_reg)

    # 3. delete through a MERGE with a batch table, 4. vacuum.
    with clock.step("delete"):
        partition_filter = f"t.shard_id IN ({','.join(map(str, touched))})" if touched else None
        delete_version = delete_keys(spark, layout.interactions, probe, partition_filter=partition_filter)
        delete_keys(spark, layout.shard_map, probe)
    ledger.update(ids, deleted_at=now_utc(), delete_version=delete_version)
    with clock.step("vacuum"):
        if cfg.unlearn.vacuum:
            vacuum_now(spark, layout.interactions)
            vacuum_now(spark, layout.shard_map)

    # 5. retrain the touched shards (and the reference) from scratch at the new version.
    with clock.step("retrain_shards"):
        trained = train_models(cfg, layout, version=delete_version, n_items=n_items,
                               shard_ids=touched, reference=cfg.unlearn.retrain_reference
                               and manifest.get("reference") is not None, job_id=job_id)
    shards = {int(k): v for k, v in manifest["shards"].items()}
    shards.update(trained["shards"])

    # 6. refit the aggregator on retained data.
    with clock.step("refit_aggregator"):
        new_paths = [shards[k]["path"] for k in range(manifest["n_shards"])]
        agg = fit_aggregator(cfg, layout, version=delete_version, n_items=n_items,
                             shard_paths=new_paths, job_id=job_id)

    # 7. attribute edits in effect are recomputed on the new shards (a forgotten user's go).
    with clock.step("attribute_edits"):
        from pipelines.attribute import active_edits, build_overlay

        edits = active_edits(ledger.rows(), forgotten=set(keys))
        overlay = None
        if edits:
            draft = {"n_shards": manifest["n_shards"], "shards": {str(k): v for k, v in shards.items()},
                     "aggregator": agg,
                     "table_version": delete_version, "n_items": n_items}
            overlay, _ = build_overlay(cfg, layout, draft, edits, job_id=job_id)

    # 8. publish.
    with clock.step("publish"):
        version = registry.next_version()
        # A reference trained before the delete held the forgotten rows: only a retrained one stays.
        reference = trained["reference"]
        new_manifest = build_manifest(
            version=version, cfg=cfg, shards=shards, aggregator=agg, reference=reference,
            table_version=delete_version, n_items=n_items, partition=manifest.get("partition"),
            guarantee=PARTITION_GUARANTEE)
        new_manifest["parent"] = current["version"]
        new_manifest["unlearn_job"] = job_id
        new_manifest["attribute_overlay"] = overlay
        registry.publish(new_manifest, parent=current["version"], request_ids=ids,
                         note=f"unlearned {len(ids)} request(s), retrained shards {touched}")
    published_at = now_utc()

    # 9. checkpoints trained on the forgotten rows go; model versions that used them retire.
    with clock.step("delete_superseded"):
        removed = _delete_superseded(layout, new_manifest, touched, delete_version)
        registry.retire([v["version"] for v in registry.versions()
                         if v["status"] == "published" and v["version"] < version],
                        note=f"superseded by v{version}: trained on data since forgotten")

    # 10. functional evidence (in memory -> ledger; rows themselves are never written).
    with clock.step("functional_check"):
        unlearned = load_ensemble(new_manifest, fold_in_reg=cfg.aggregator.fold_in_reg)
        retrained = load_reference(new_manifest, fold_in_reg=cfg.aggregator.fold_in_reg) \
            if trained["reference"] else None
        evidence = functional_evidence(forgotten, original=original, unlearned=unlearned,
                                       retrained=retrained)
    if cfg.unlearn.membership and forgotten.n_users:
        with clock.step("membership_check"):
            _membership_evidence(evidence, forgotten, original, unlearned, cfg=cfg, layout=layout,
                                 version=delete_version, n_items=n_items,
                                 n_shards=manifest["n_shards"])
    done = now_utc()
    ledger.update_rows([{
        "request_id": r["request_id"], "status": COMPLETED, "published_at": published_at,
        "completed_at": done, "model_version": version,
        "evidence": json.dumps(evidence.get(r["user_key"],
                                            {"note": "rows already deleted by an earlier attempt"})),
    } for r in requests])
    compute = {
        "shard_fit_seconds": {str(k): m["fit_seconds"] for k, m in trained["shards"].items()},
        "aggregator_fit_seconds": agg["fit_seconds"],
        "reference_fit_seconds": trained["reference"]["fit_seconds"] if trained["reference"] else None,
    }
    result = {
        "job_id": job_id, "requests": ids, "shards_touched": touched,
        "delete_version": delete_version, "table_version_before": version_before,
        "model_version": version, "parent_version": current["version"],
        "checkpoints_removed": removed, "steps_seconds": clock.steps, "compute": compute,
        "train_wall_seconds": trained["wall_seconds"],
        "end_to_end_seconds": round(time.perf_counter() - t_start, 3),
        "functional": evidence,
        # what the job leaves on disk: every table (Delta) and the model artifacts
        "storage_bytes": {**{f"table:{k}": v for k, v in storage_bytes(layout.tables).items()},
                          "checkpoints": folder_bytes(layout.checkpoints),
                          "models": folder_bytes(layout.models)},
    }
    log.info("unlearn %s: published v%d in %.1fs", job_id, version, result["end_to_end_seconds"])
    return result


def _membership_evidence(evidence: dict[str, dict[str, Any]], forgotten: InteractionData,
                         original: Any, unlearned: Any, *, cfg: RunConfig, layout: Layout,
                         version: int, n_items: int, n_shards: int) -> None:
    """Add each forgotten user's membership evidence (``recunlearn.mia.membership_audit``) to
    ``evidence``; the attack's pool is a sample of retained users, so it never saw the
    forgotten ones."""
    from recunlearn.mia import membership_audit

    retained = read_split_data(layout.interactions, version, n_items, None)
    rng = numpy_rng(cfg.seed, "membership", version)
    pool = retained.subset(rng.permutation(retained.n_users)[:min(cfg.unlearn.shadow_users, retained.n_users)])
    rows = membership_audit(original, unlearned, (forgotten.user_keys, forgotten.train), pool,
                            n_shards=n_shards, model_cfg=cfg.model,
                            seed=make_seed(cfg.seed, "membership", version) % 2**31,
                            fold_in_reg=cfg.aggregator.fold_in_reg)
    for key, row in zip(forgotten.user_keys, rows):
        evidence.setdefault(str(key), {})["membership"] = row


def _rows_of(layout: Layout, n_items: int, keys: list[str], shards: list[int]) -> InteractionData:
    from deltalake import DeltaTable

    dt = DeltaTable(layout.interactions)
    filters = [("user_key", "in", keys)]
    if shards:
        filters.append(("shard_id", "in", [int(s) for s in shards]))
    tbl = dt.to_pyarrow_table(columns=["user_key", "item_idx", "split"], filters=filters)
    return InteractionData.from_columns(
        tbl.column("user_key").to_numpy(zero_copy_only=False),
        tbl.column("item_idx").to_numpy(zero_copy_only=False),
        tbl.column("split").to_numpy(zero_copy_only=False), n_items)


def _delete_superseded(layout: Layout, manifest: dict[str, Any], touched: list[int],
                       delete_version: int) -> list[str]:
    """Remove every checkpoint of a touched component (touched shards, aggregator, reference)
    that the new version does not use: those trained while the forgotten rows were present,
    and orphans of an earlier failed attempt."""
    keep = set(shard_paths_of(manifest)) | {manifest["aggregator"]["path"]}
    if manifest.get("attribute_overlay"):
        keep.add(manifest["attribute_overlay"]["path"])
    if manifest.get("reference"):
        keep.add(manifest["reference"]["path"])
    removed = []
    for meta in checkpoints.all_metas(layout.checkpoints):
        whole = meta.get("shard_id") is None  # reference or aggregator: trained on every shard
        if meta["path"] in keep or not (whole or meta["shard_id"] in touched):
            continue
        checkpoints.delete(meta)
        removed.append(meta["component"] + "/" + meta["run_id"]
                       + ("" if meta["delta_version"] < delete_version else " (orphan)"))
    return removed
