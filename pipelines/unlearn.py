"""The unlearn job: open forget requests -> touched shards (``planned``) -> delete (MERGE with
a batch table) -> VACUUM (``deleted``) -> retrain touched shards on Ray -> refit the aggregator
-> publish a new model version (``retrained``) -> delete checkpoints trained on the forgotten
rows -> audit each request (``verified``).

A new model version is published only after every step succeeded. When a step fails, each
request keeps the state it reached, with the error as its reason, and a later run goes on from
there: planning and the delete are idempotent, the touched shards were recorded before the
delete, and a request already ``retrained`` only needs its audit.
"""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow.dataset as ds
from pyspark.sql import SparkSession

from recunlearn import checkpoints, faults
from recunlearn.config import RunConfig
from recunlearn.ensemble import load_ensemble, load_reference
from recunlearn.errors import PipelineError
from recunlearn.evaluation import functional_evidence
from recunlearn.joblock import holds_tables
from recunlearn.logs import context
from recunlearn.models.data import InteractionData
from recunlearn.scan import folder_bytes, storage_bytes
from recunlearn.seeding import make_seed, numpy_rng
from recunlearn.tables import (APPROXIMATE, ATTRIBUTE, ATTRIBUTE_UNDO, DATA_TARGETS, DELETED, EXACT, INTERACTION,
                               ITEM, OPEN_STATUSES, PLANNED, RECEIVED, RETRAINED, USER,
                               ForgetLedger, Layout, ModelRegistry, delete_keys, delta_version, now_utc,
                               read_rows, read_table, vacuum_now)
from pipelines.partition import PARTITION_GUARANTEE, STRICT_GUARANTEE, repartition_strict
from pipelines.train import (build_manifest, fit_aggregator, n_items_of, new_job_id,
                             read_split_data, sequential_groups, shard_paths_of, train_models)

log = logging.getLogger(__name__)


class _Clock:
    def __init__(self) -> None:
        self.steps: dict[str, float] = {}
        self.marks: dict[str, float] = {}
        self.background: Any = None  # a Future the job started beside its main steps
        self.job_id: str | None = None  # for the step log lines, once the job has one

    def mark(self, name: str) -> None:
        self.marks[name] = time.perf_counter()

    def step(self, name: str):  # noqa: ANN201
        clock = self

        class _T:
            def __enter__(self) -> None:
                faults.at(name)  # the crash harness's kill point (RECUNLEARN_FAULT; off otherwise)
                self.t0 = time.perf_counter()

            def __exit__(self, *exc: object) -> None:
                clock.steps[name] = round(time.perf_counter() - self.t0, 3)
                log.info("step %s %s in %.2fs", name, "failed" if exc[0] else "done", clock.steps[name],
                         extra=context(job_id=clock.job_id, step=name, seconds=clock.steps[name]))

        return _T()


@holds_tables("unlearn")
def unlearn(spark: SparkSession, *, cfg: RunConfig, layout: Layout,
            method: str | None = None) -> dict[str, Any]:
    """Process open forget requests with ``method`` (default ``cfg.unlearn.method``).

    ``exact`` also completes the requests a fast method answered (status ``approximate``): their
    data is gone already, and their shards are retrained. A fast method answers the open
    requests at once, then runs the exact path when the policy says it is due
    (``pipelines.fast_unlearn.exact_due``)."""
    method = method or cfg.unlearn.method
    if method != "exact":
        from pipelines.fast_unlearn import exact_due, unlearn_fast

        result = unlearn_fast(spark, cfg=cfg, layout=layout, method=method)
        due, why = exact_due(spark, cfg=cfg, layout=layout)
        result["policy"] = {"exact_due": due, "reason": why}
        if due:
            log.info("unlearn: exact retrain due (%s)", why)
            result["exact"] = unlearn(spark, cfg=cfg, layout=layout, method="exact")
        return result
    t_start = time.perf_counter()
    clock = _Clock()
    ledger = ForgetLedger(spark, layout.ledger)
    registry = ModelRegistry(spark, layout)
    with clock.step("read_requests"):
        rows = ledger.rows()  # read once: the requests to process and the attribute edits in effect
    with clock.step("read_model_version"):
        current = registry.current()
    data = [r for r in rows if (r["target_type"] or USER) in DATA_TARGETS]
    requests = [r for r in data if r["status"] in OPEN_STATUSES] + [r for r in data if r["status"] == APPROXIMATE]
    # published by a run that stopped before its audit: only the audit is left to do
    to_verify = [r["request_id"] for r in data if r["status"] == RETRAINED]
    if not requests:
        result: dict[str, Any] = {"requests": [], "status": "nothing to do"}
        if to_verify:
            result.update(status="verified earlier runs' requests", verification=verify_requests(
                spark, layout=layout, request_ids=to_verify, job_id=new_job_id("unlearn")))
        if any(r["status"] in (RECEIVED, PLANNED) and r["target_type"] in (ATTRIBUTE, ATTRIBUTE_UNDO)
               for r in rows):
            from pipelines.attribute import process_attribute_requests

            edits = process_attribute_requests(spark, cfg=cfg, layout=layout)
            return {**result, "attribute": edits} if to_verify else edits
        if not to_verify:
            log.info("unlearn: no open requests")
        return result
    if current is None:
        raise PipelineError("unlearn: no published model version; run `recunlearn train` first")
    manifest = json.loads(open(current["manifest"]).read())
    job_id = clock.job_id = new_job_id("unlearn")
    ids = [r["request_id"] for r in requests]
    try:
        result = _run(spark, cfg=cfg, layout=layout, ledger=ledger, registry=registry,
                      current=current, manifest=manifest, requests=requests, job_id=job_id,
                      clock=clock, t_start=t_start, ledger_rows=rows)
        with clock.step("verify"):
            result["verification"] = verify_requests(spark, layout=layout, request_ids=ids + to_verify,
                                                     job_id=job_id)
    except Exception as exc:
        # Leave the requests open for the next run; the published model is unchanged.
        if clock.background is not None:  # one ledger writer at a time
            try:
                clock.background.result()
            except Exception:  # noqa: BLE001 - the job's own error is the one to report
                log.exception("unlearn %s: background record/vacuum failed too", job_id,
                              extra=context(job_id=job_id, request_ids=ids))
        log.error("unlearn %s failed: %s: %s", job_id, type(exc).__name__, str(exc)[:400],
                  extra=context(job_id=job_id, request_ids=ids))
        ledger.note_error(ids, job_id=job_id, error=exc)
        raise
    if ledger.open_requests((ATTRIBUTE, ATTRIBUTE_UNDO)):
        from pipelines.attribute import process_attribute_requests

        result["attribute"] = process_attribute_requests(spark, cfg=cfg, layout=layout)
    return result


@dataclass
class Targets:
    """What a batch of requests deletes: whole users (keys), items (every interaction with
    each) and single interactions (key, item), and the shards holding any of it."""

    users: list[str]
    items: list[int]
    pairs: list[tuple[str, int]]
    touched: list[int]
    shards_of: dict[str, list[int]]  # request id -> the shards holding its data
    planned: list[str] = field(default_factory=list)  # the requests this run planned (to delete)


def verify_requests(spark: SparkSession, *, layout: Layout, request_ids: list[str],
                    job_id: str) -> dict[str, Any]:
    """Audit ``request_ids`` against the published version; those that pass move from
    ``retrained`` to ``verified``. A failure is recorded on the request and raised."""
    from pipelines.audit import audit

    report = audit(spark, layout=layout, secret=b"", request_ids=request_ids, job_id=job_id)
    failed = [r["request_id"] for r in report["requests"] if not r["passed"]]
    out = {"audited": len(report["requests"]), "verified": report.get("verified", 0), "failed": failed}
    if failed:
        raise PipelineError(f"unlearn {job_id}: the audit failed for {len(failed)} request(s) "
                            f"(e.g. {failed[0][:12]}); they stay retrained, see `recunlearn audit`")
    return out


def determine_targets(spark: SparkSession, layout: Layout, ledger: ForgetLedger,
                      requests: list[dict[str, Any]], job_id: str) -> Targets:
    """The shards holding each request's data, recorded in the ledger (``planned``) before
    anything is deleted: a user's shards from the shard map, an item's and an interaction's
    from the interactions table. Shards a request recorded earlier count too (a resumed
    request, or one the fast tier answered, whose data is gone already)."""
    users = sorted({r["user_key"] for r in requests if (r["target_type"] or USER) == USER})
    pairs = sorted({(r["user_key"], int(r["item_idx"])) for r in requests if r["target_type"] == INTERACTION})
    items = sorted({int(r["item_idx"]) for r in requests if r["target_type"] == ITEM})
    by_user: dict[str, set[int]] = {}
    by_item: dict[int, set[int]] = {}
    by_pair: dict[tuple[str, int], set[int]] = {}
    if users:  # one row per user with user shards, one per (user, shard) with item or interaction shards
        for row in read_rows(layout.shard_map, ds.field("user_key").isin(users), ["user_key", "shard_id"]):
            by_user.setdefault(row["user_key"], set()).add(int(row["shard_id"]))
    inter = spark.read.format("delta").load(layout.interactions)
    if items:
        probe = spark.createDataFrame([(i,) for i in items], "item_idx int")
        for row in inter.join(probe, "item_idx", "left_semi").select("item_idx", "shard_id").distinct().collect():
            by_item.setdefault(int(row["item_idx"]), set()).add(int(row["shard_id"]))
    if pairs:  # the shard(s) holding the pair's own rows
        probe = spark.createDataFrame(pairs, "user_key string, item_idx int")
        for row in inter.join(probe, ["user_key", "item_idx"], "left_semi") \
                .select("user_key", "item_idx", "shard_id").distinct().collect():
            by_pair.setdefault((row["user_key"], int(row["item_idx"])), set()).add(int(row["shard_id"]))
    per_request = []
    for r in requests:
        t = r["target_type"] or USER
        found = by_item.get(int(r["item_idx"]), set()) if t == ITEM else \
            by_pair.get((r["user_key"], int(r["item_idx"])), set()) if t == INTERACTION else \
            by_user.get(r["user_key"], set())
        shards = sorted(found | set(r["shards"] or []))
        per_request.append({"request_id": r["request_id"], "shards": shards, "started_at": now_utc(),
                            "plan": r["status"] in (RECEIVED, PLANNED)})
    # requests past planning (deleted, approximate) keep their record
    ledger.transition([{k: v for k, v in p.items() if k != "plan"} for p in per_request if p["plan"]],
                      PLANNED, job_id=job_id)
    return Targets(users, items, pairs, sorted({s for p in per_request for s in p["shards"]}),
                   {p["request_id"]: p["shards"] for p in per_request},
                   [p["request_id"] for p in per_request if p["plan"]])


def delete_and_vacuum(spark: SparkSession, *, cfg: RunConfig, layout: Layout, ledger: ForgetLedger,
                      job_id: str, targets: Targets, clock: _Clock, background: bool = False) -> tuple[int, Any]:
    """Delete the targets' rows (users also from the shard map) through MERGEs with batch
    tables, so no value enters ``_delta_log``; VACUUM with zero retention, then move the
    requests this run planned to ``deleted`` with the delete version. Returns the delete version
    of the interactions table and, with ``background``, the running VACUUM and ledger record (a
    Future; else None).

    In the background both overlap the retraining, which only reads the current version's
    files (the ones VACUUM keeps) and writes neither the ledger nor these tables: the caller
    must wait for it before publishing, and must not write either table meanwhile (a
    zero-retention VACUUM can remove a concurrent writer's new files)."""
    with clock.step("delete"):
        t = targets
        partition_filter = f"t.shard_id IN ({','.join(map(str, t.touched))})" if t.touched else None
        delete_version = delta_version(spark, layout.interactions)
        if t.users:
            delete_version = delete_keys(spark, layout.interactions, t.users, partition_filter=partition_filter)
            delete_keys(spark, layout.shard_map, t.users)
        if t.items:
            delete_version = delete_keys(spark, layout.interactions, t.items, on="item_idx",
                                         partition_filter=partition_filter)
        if t.pairs:
            delete_version = delete_keys(spark, layout.interactions, t.pairs, on=("user_key", "item_idx"),
                                         partition_filter=partition_filter)
    deleted_at = now_utc()

    def record_and_vacuum() -> None:
        with clock.step("vacuum"):
            if cfg.unlearn.vacuum:
                vacuum_now(spark, layout.interactions)
                vacuum_now(spark, layout.shard_map)
        with clock.step("record_deleted"):  # deleted: no longer on disk either
            ledger.transition([{"request_id": rid, "deleted_at": deleted_at, "delete_version": delete_version}
                               for rid in targets.planned], DELETED, job_id=job_id)

    if not background:
        record_and_vacuum()
        return delete_version, None
    pool = ThreadPoolExecutor(1, thread_name_prefix="record-and-vacuum")
    running = pool.submit(record_and_vacuum)
    pool.shutdown(wait=False)
    clock.background = running  # the job's error path waits for it before writing the ledger
    return delete_version, running


def publish_and_clean(registry: ModelRegistry, layout: Layout, manifest: dict[str, Any], *,
                      parent: int, ids: list[str], touched: list[int], delete_version: int,
                      clock: _Clock, note: str) -> tuple[Any, list[str]]:
    """Publish ``manifest``, then delete every checkpoint of a touched component it does not use
    (trained on the forgotten rows) and retire the older versions. Returns the publication time
    and the checkpoints removed."""
    with clock.step("publish"):
        registry.publish(manifest, parent=parent, request_ids=ids, note=note)
    clock.mark("published")
    published_at = now_utc()
    with clock.step("delete_superseded"):
        removed = _delete_superseded(layout, manifest, touched, delete_version)
        registry.retire([v["version"] for v in registry.versions()
                         if v["status"] == "published" and v["version"] < manifest["version"]],
                        note=f"superseded by v{manifest['version']}: held data since forgotten")
    return published_at, removed


def _run(spark: SparkSession, *, cfg: RunConfig, layout: Layout, ledger: ForgetLedger,
         registry: ModelRegistry, current: dict[str, Any], manifest: dict[str, Any],
         requests: list[dict[str, Any]], job_id: str, clock: _Clock, t_start: float,
         ledger_rows: list[dict[str, Any]]) -> dict[str, Any]:
    ids = [r["request_id"] for r in requests]
    keys = sorted({r["user_key"] for r in requests if (r["target_type"] or USER) == USER})
    n_items = n_items_of(layout)

    # 1. target determination: which shards hold each user (recorded before any delete).
    with clock.step("target_determination"):
        targets = determine_targets(spark, layout, ledger, requests, job_id)
    touched = targets.touched
    log.info("unlearn %s: %d request(s), shards touched %s", job_id, len(requests), touched,
             extra=context(job_id=job_id, request_ids=ids, shards=touched))

    # 2. the forgotten users' rows, held in memory only, for the functional check.
    with clock.step("capture_evidence_inputs"):
        version_before = int(manifest["table_version"])
        forgotten = _rows_of(layout, n_items, keys, touched)
        original = load_ensemble(manifest, fold_in_reg=cfg.aggregator.fold_in_reg)

    # 3. delete through a MERGE with a batch table, 4. vacuum: beside the retraining (5-7),
    # which only reads, unless strict mode rewrites the tables first
    strict_mode = cfg.unlearn.partition == "strict"
    delete_version, vacuuming = delete_and_vacuum(spark, cfg=cfg, layout=layout, ledger=ledger, job_id=job_id,
                                                  targets=targets, clock=clock, background=not strict_mode)

    # 4b. strict partition mode: recompute the partition without the forgotten data; the
    # shards whose members change are retrained too.
    partition, guarantee, train_version, retrain = manifest.get("partition"), PARTITION_GUARANTEE, \
        delete_version, touched
    if strict_mode:
        with clock.step("repartition"):
            strict = repartition_strict(spark, cfg=cfg, layout=layout)
        retrain = sorted(set(touched) | set(strict["shards_changed"]))
        train_version, guarantee = strict["interactions_version"], STRICT_GUARANTEE
        partition = {**(partition or {}), **strict, "mode": "strict"}
        log.info("unlearn %s: strict partition moved %d user(s); shards changed %s",
                 job_id, strict["users_moved"], strict["shards_changed"])

    # sequential training (LASER): every group from the earliest touched one on
    if manifest.get("sequential"):
        retrain = sequential_groups(manifest, retrain)

    # 5. retrain those shards (and the reference) from scratch at the new version.
    with clock.step("retrain_shards"):
        # a fast-tier version dropped the reference (trained on what it forgot): retrain it too
        trained = train_models(cfg, layout, version=train_version, n_items=n_items,
                               shard_ids=retrain, reference=cfg.unlearn.retrain_reference
                               and (manifest.get("reference") is not None
                                    or bool(manifest.get("pending_exact"))), job_id=job_id,
                               manifest=manifest)
    shards = {int(k): v for k, v in manifest["shards"].items()}
    shards.update(trained["shards"])

    # 6. refit the aggregator on retained data.
    with clock.step("refit_aggregator"):
        new_paths = [shards[k]["path"] for k in range(manifest["n_shards"])]
        agg = fit_aggregator(cfg, layout, version=train_version, n_items=n_items,
                             shard_paths=new_paths, job_id=job_id)

    # 7. attribute edits in effect are recomputed on the new shards (a forgotten user's go).
    with clock.step("attribute_edits"):
        from pipelines.attribute import active_edits, build_overlay

        # attribute requests are not this job's: the ledger as the job found it
        edits = active_edits(ledger_rows, forgotten=set(keys))
        overlay = None
        if edits:
            draft = {"n_shards": manifest["n_shards"], "shards": {str(k): v for k, v in shards.items()},
                     "aggregator": agg,
                     "table_version": train_version, "n_items": n_items}
            overlay, _ = build_overlay(cfg, layout, draft, edits, job_id=job_id)

    if vacuuming is not None:  # no version is published while the forgotten rows are on disk
        with clock.step("vacuum_wait"):
            vacuuming.result()

    # 8. publish.
    with clock.step("manifest"):
        version = registry.next_version()
        # A reference trained before the delete held the forgotten rows: only a retrained one stays.
        reference = trained["reference"]
        new_manifest = build_manifest(
            version=version, cfg=cfg, shards=shards, aggregator=agg, reference=reference,
            table_version=train_version, n_items=n_items, partition=partition, guarantee=guarantee,
            order=(manifest.get("sequential") or {}).get("order"))
        new_manifest["parent"] = current["version"]
        new_manifest["unlearn_job"] = job_id
        new_manifest["attribute_overlay"] = overlay
    # 9. checkpoints trained on the forgotten rows go; model versions that used them retire.
    published_at, removed = publish_and_clean(
        registry, layout, new_manifest, parent=current["version"], ids=ids, touched=retrain,
        delete_version=delete_version, clock=clock,
        note=f"unlearned {len(ids)} request(s), retrained shards {retrain}")

    # 10. functional evidence (in memory -> ledger; rows themselves are never written).
    with clock.step("functional_check"):
        unlearned = load_ensemble(new_manifest, fold_in_reg=cfg.aggregator.fold_in_reg)
        retrained = load_reference(new_manifest, fold_in_reg=cfg.aggregator.fold_in_reg) \
            if trained["reference"] else None
        evidence = functional_evidence(forgotten, original=original, unlearned=unlearned,
                                       retrained=retrained)
    if cfg.unlearn.membership and forgotten.n_users and cfg.model.kind == "bpr":  # BPR shadows
        with clock.step("membership_check"):
            _membership_evidence(evidence, forgotten, original, unlearned, cfg=cfg, layout=layout,
                                 version=train_version, n_items=n_items,
                                 n_shards=manifest["n_shards"])
    def request_evidence(r: dict[str, Any]) -> dict[str, Any]:
        if r["status"] == APPROXIMATE:  # answered by the fast tier, which deleted the rows
            return {"note": "rows deleted by the fast tier; its shards are now retrained",
                    "fast": json.loads(r["evidence"]) if r["evidence"] else None}
        if (r["target_type"] or USER) != USER:
            return {"note": f"{r['target_type']} request: rows deleted and shards {r['shards']} retrained; "
                    "the functional and membership checks are per forgotten user"}
        return evidence.get(r["user_key"], {"note": "rows already deleted by an earlier attempt"})

    ledger.transition([{
        "request_id": r["request_id"], "published_at": published_at, "model_version": version,
        "guarantee": EXACT, "evidence": json.dumps(request_evidence(r)),
    } for r in requests], RETRAINED, job_id=job_id)
    compute = {
        "shard_fit_seconds": {str(k): m["fit_seconds"] for k, m in trained["shards"].items()},
        "aggregator_fit_seconds": agg["fit_seconds"],
        "reference_fit_seconds": trained["reference"]["fit_seconds"] if trained["reference"] else None,
    }
    result = {
        "job_id": job_id, "requests": ids, "shards_touched": touched, "shards_retrained": retrain,
        "partition_mode": cfg.unlearn.partition,
        "partition": partition if cfg.unlearn.partition == "strict" else None,
        "delete_version": delete_version, "table_version_before": version_before,
        "model_version": version, "parent_version": current["version"],
        "checkpoints_removed": removed, "steps_seconds": clock.steps, "compute": compute,
        "train_wall_seconds": trained["wall_seconds"],
        "end_to_end_seconds": round(time.perf_counter() - t_start, 3),
        # the job's start to the new version's publication (the checks after it excluded)
        "to_publish_seconds": round(clock.marks["published"] - t_start, 3),
        "functional": evidence,
        # what the job leaves on disk: every table (Delta) and the model artifacts
        "storage_bytes": {**{f"table:{k}": v for k, v in storage_bytes(layout.tables).items()},
                          "checkpoints": folder_bytes(layout.checkpoints),
                          "models": folder_bytes(layout.models)},
    }
    log.info("unlearn %s: published v%d in %.1fs", job_id, version, result["end_to_end_seconds"],
             extra=context(job_id=job_id, request_ids=ids, shards=retrain, model_version=version,
                           seconds=result["end_to_end_seconds"]))
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
    if not keys:
        return InteractionData.from_columns(np.array([], str), np.array([], np.int64), np.array([], str), n_items)
    parts = [("shard_id", "in", [str(int(s)) for s in shards])] if shards else None
    tbl = read_table(layout.interactions, columns=["user_key", "item_idx", "split"], partitions=parts,
                     where=ds.field("user_key").isin(keys))
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
