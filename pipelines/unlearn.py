"""The unlearn job, one orchestrator for every unlearning method
(``recunlearn.unlearning.methods``):

open forget requests -> touched shards (``planned``) -> the touched shards' rows, when the
method needs them -> delete (MERGE with a batch table) -> VACUUM (``deleted``) -> the method's
update (retrain the touched shards and refit the aggregator; or update them in place, exactly
or approximately) -> attribute edits rebuilt (retraining methods) -> publish a new model version
and delete the checkpoints trained on the forgotten rows -> the ledger (``retrained``, or
``approximate``) -> audit each exactly answered request (``verified``). After an approximate
answer the policy (``recunlearn.unlearning.policy``) says whether the exact retrain is due; if
so it runs in the same job.

A new model version is published only after every step succeeded. When a step fails, each
request keeps the state it reached, with the error as its reason, and a later run goes on from
there: planning and the delete are idempotent, the touched shards were recorded before the
delete, and a request already ``retrained`` only needs its audit.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow.dataset as ds
from pyspark.sql import SparkSession

from pipelines.partition import PARTITION_GUARANTEE, STRICT_GUARANTEE, repartition_strict
from pipelines.train import (
    build_version,
    fit_aggregator,
    n_items_of,
    new_job_id,
    read_split_data,
    read_user_rows,
    shard_map_keys,
    train_models,
)
from recunlearn import faults
from recunlearn.config import RunConfig
from recunlearn.data.interactions import InteractionData
from recunlearn.errors import PipelineError
from recunlearn.evidence.evaluation import functional_evidence
from recunlearn.evidence.scan import folder_bytes, storage_bytes
from recunlearn.logs import context
from recunlearn.models import load_model
from recunlearn.models.base import Recommender
from recunlearn.seeding import make_seed, numpy_rng
from recunlearn.serving import load_ensemble, load_reference
from recunlearn.storage import checkpoints
from recunlearn.storage.delta import (
    delete_keys,
    delta_version,
    files_changed,
    read_rows,
    read_table,
    vacuum_now,
)
from recunlearn.storage.joblock import holds_tables
from recunlearn.storage.layout import Layout, now_utc
from recunlearn.storage.ledger import (
    APPROXIMATE,
    ATTRIBUTE,
    ATTRIBUTE_UNDO,
    DELETED,
    INTERACTION,
    ITEM,
    PLANNED,
    RECEIVED,
    RETRAINED,
    USER,
    ForgetLedger,
)
from recunlearn.storage.registry import ModelRegistry, publish_version, trained_on
from recunlearn.storage.requests import Request
from recunlearn.storage.versions import CheckpointMeta, Component, ModelVersion
from recunlearn.training import component_name
from recunlearn.unlearning.methods import Guarantee, UnlearningMethod, check_model, get_method
from recunlearn.unlearning.policy import exact_due
from recunlearn.unlearning.targets import Targets

log = logging.getLogger(__name__)


class Clock:
    """A job's step timer: ``with clock.step(name)`` times a step, logs it, and is the crash
    harness's kill point of that name."""

    def __init__(self, job_id: str | None = None) -> None:
        self.steps: dict[str, float] = {}
        self.marks: dict[str, float] = {}
        self.background: Any = None  # a Future the job started beside its main steps
        self.job_id = job_id  # for the step log lines

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
                log.info(
                    "step %s %s in %.2fs",
                    name,
                    "failed" if exc[0] else "done",
                    clock.steps[name],
                    extra=context(job_id=clock.job_id, step=name, seconds=clock.steps[name]),
                )

        return _T()


@holds_tables("unlearn")
def unlearn(
    spark: SparkSession, *, cfg: RunConfig, layout: Layout, method: str | None = None
) -> dict[str, Any]:
    """Process the open data requests with ``method`` (default ``cfg.unlearn.method``), then
    the open attribute requests.

    The exact retrain (``exact``) also completes the requests a fast method answered (status
    ``approximate``): their data is gone already, and their shards are retrained. After an
    approximate answer, the exact retrain runs in the same job when the policy says it is due."""
    m = get_method(method or cfg.unlearn.method)
    try:
        check_model(m, cfg.model.kind)
    except ValueError as exc:
        raise PipelineError(
            f"unlearn --method {m.name}: {exc}; train again after changing model.kind "
            "or pick another method"
        ) from None
    ledger = ForgetLedger(spark, layout.ledger)
    registry = ModelRegistry(layout)
    result = _process(spark, cfg=cfg, layout=layout, method=m, ledger=ledger, registry=registry)
    # after any method but the retrain itself, approximate answers may have made it due (also
    # with nothing new to process: the deadline runs)
    if not m.retrains:
        due, why = exact_due(
            ledger.requests((APPROXIMATE,)), registry.current_version(), cfg.unlearn.policy
        )
        result["policy"] = {"exact_due": due, "reason": why}
        if due:
            log.info("unlearn: exact retrain due (%s)", why)
            result["exact"] = _process(
                spark,
                cfg=cfg,
                layout=layout,
                method=get_method("exact"),
                ledger=ledger,
                registry=registry,
            )
    if ledger.open_requests((ATTRIBUTE, ATTRIBUTE_UNDO)):
        from pipelines.attribute import process_attribute_requests

        edits = process_attribute_requests(spark, cfg=cfg, layout=layout)
        if not result.get("requests") and "verification" not in result:
            return edits
        result["attribute"] = edits
    return result


def _process(
    spark: SparkSession,
    *,
    cfg: RunConfig,
    layout: Layout,
    method: UnlearningMethod,
    ledger: ForgetLedger,
    registry: ModelRegistry,
) -> dict[str, Any]:
    """One pass of ``method`` over the data requests it takes."""
    clock = Clock()
    with clock.step("read_requests"):
        # read once: the requests to process and the attribute edits in effect
        ledger_rows = ledger.requests()
    takes = (RECEIVED, PLANNED, *method.completes)
    data = [r for r in ledger_rows if r.is_data]
    # oldest first, a resumed exact run's deleted ones with them, then the fast-answered ones
    requests = [r for r in data if r.state in takes and r.state != APPROXIMATE] + [
        r for r in data if r.state == APPROXIMATE and APPROXIMATE in takes
    ]
    # published by a run that stopped before its audit: only the audit is left to do
    to_verify = [r.request_id for r in data if r.state == RETRAINED]
    if not requests:
        result: dict[str, Any] = {"requests": [], "status": "nothing to do", "method": method.name}
        if to_verify:
            result.update(
                status="verified earlier runs' requests",
                verification=verify_requests(
                    spark, layout=layout, request_ids=to_verify, job_id=new_job_id("unlearn")
                ),
            )
        elif not any(
            r.state in (RECEIVED, PLANNED) and r.target in (ATTRIBUTE, ATTRIBUTE_UNDO)
            for r in ledger_rows
        ):
            log.info("unlearn: no open requests")
        return result
    with clock.step("read_model_version"):
        current = registry.current_version()
    if current is None:
        raise PipelineError("unlearn: no published model version; run `recunlearn train` first")
    if current.attribute_overlay is not None and not method.retrains:
        raise PipelineError(
            f"unlearn --method {method.name}: attribute edits are in effect; only a "
            "retrain rebuilds them, run `recunlearn unlearn --method exact`"
        )
    job_id = clock.job_id = new_job_id("unlearn" if method.retrains else f"fast-{method.name}")
    ids = [r.request_id for r in requests]
    try:
        result = _run(
            spark,
            cfg=cfg,
            layout=layout,
            ledger=ledger,
            registry=registry,
            method=method,
            current=current,
            requests=requests,
            job_id=job_id,
            clock=clock,
            ledger_rows=ledger_rows,
        )
        if method.guarantee is Guarantee.EXACT:  # an exact answer is audited before it counts
            with clock.step("verify"):
                result["verification"] = verify_requests(
                    spark, layout=layout, request_ids=ids + to_verify, job_id=job_id
                )
    except Exception as exc:
        # Leave the requests open for the next run; the published model is unchanged.
        if clock.background is not None:  # one ledger writer at a time
            try:
                clock.background.result()
            except Exception:  # noqa: BLE001 - the job's own error is the one to report
                log.exception(
                    "unlearn %s: background record/vacuum failed too",
                    job_id,
                    extra=context(job_id=job_id, request_ids=ids),
                )
        log.error(
            "unlearn %s failed: %s: %s",
            job_id,
            type(exc).__name__,
            str(exc)[:400],
            extra=context(job_id=job_id, request_ids=ids),
        )
        ledger.note_error(ids, job_id=job_id, error=exc)
        raise
    result["steps_seconds"] = clock.steps
    return result


def verify_requests(
    spark: SparkSession, *, layout: Layout, request_ids: list[str], job_id: str
) -> dict[str, Any]:
    """Audit ``request_ids`` against the published version; those that pass move from
    ``retrained`` to ``verified``. A failure is recorded on the request and raised."""
    from pipelines.audit import audit

    report = audit(spark, layout=layout, secret=b"", request_ids=request_ids, job_id=job_id)
    failed = [r["request_id"] for r in report["requests"] if not r["passed"]]
    out = {
        "audited": len(report["requests"]),
        "verified": report.get("verified", 0),
        "failed": failed,
    }
    if failed:
        raise PipelineError(
            f"unlearn {job_id}: the audit failed for {len(failed)} request(s) "
            f"(e.g. {failed[0][:12]}); they stay retrained, see `recunlearn audit`"
        )
    return out


def determine_targets(
    spark: SparkSession,
    layout: Layout,
    ledger: ForgetLedger,
    requests: list[Request],
    job_id: str,
) -> Targets:
    """The shards holding each request's data, recorded in the ledger (``planned``) before
    anything is deleted: a user's shards from the shard map, an item's and an interaction's
    from the interactions table. Shards a request recorded earlier count too (a resumed
    request, or one the fast tier answered, whose data is gone already)."""
    users = sorted({r.user_key for r in requests if r.target == USER and r.user_key})
    pairs = sorted({r.pair for r in requests if r.target == INTERACTION})
    items = sorted({r.item for r in requests if r.target == ITEM})
    by_user: dict[str, set[int]] = {}
    by_item: dict[int, set[int]] = {}
    by_pair: dict[tuple[str, int], set[int]] = {}
    if (
        users
    ):  # one row per user with user shards, one per (user, shard) with item or interaction shards
        for mapped in read_rows(
            layout.shard_map, ds.field("user_key").isin(users), ["user_key", "shard_id"]
        ):
            by_user.setdefault(mapped["user_key"], set()).add(int(mapped["shard_id"]))
    inter = spark.read.format("delta").load(layout.interactions)
    if items:
        probe = spark.createDataFrame([(i,) for i in items], "item_idx int")
        for row in (
            inter.join(probe, "item_idx", "left_semi")
            .select("item_idx", "shard_id")
            .distinct()
            .collect()
        ):
            by_item.setdefault(int(row["item_idx"]), set()).add(int(row["shard_id"]))
    if pairs:  # the shard(s) holding the pair's own rows
        probe = spark.createDataFrame(pairs, "user_key string, item_idx int")
        for row in (
            inter.join(probe, ["user_key", "item_idx"], "left_semi")
            .select("user_key", "item_idx", "shard_id")
            .distinct()
            .collect()
        ):
            by_pair.setdefault((row["user_key"], int(row["item_idx"])), set()).add(
                int(row["shard_id"])
            )
    per_request: list[dict[str, Any]] = []
    for r in requests:
        found = (
            by_item.get(r.item, set())
            if r.target == ITEM
            else by_pair.get(r.pair, set())
            if r.target == INTERACTION
            else by_user.get(r.user_key or "", set())
        )
        shards = sorted(found | set(r.shards))
        per_request.append(
            {
                "request_id": r.request_id,
                "shards": shards,
                "started_at": now_utc(),
                "plan": r.state in (RECEIVED, PLANNED),
            }
        )
    # requests past planning (deleted, approximate) keep their record
    ledger.transition(
        [{k: v for k, v in p.items() if k != "plan"} for p in per_request if p["plan"]],
        PLANNED,
        job_id=job_id,
    )
    return Targets(
        users,
        items,
        pairs,
        sorted({s for p in per_request for s in p["shards"]}),
        {p["request_id"]: p["shards"] for p in per_request},
        [p["request_id"] for p in per_request if p["plan"]],
    )


def delete_and_vacuum(
    spark: SparkSession,
    *,
    cfg: RunConfig,
    layout: Layout,
    ledger: ForgetLedger,
    job_id: str,
    targets: Targets,
    clock: Clock,
    background: bool = False,
) -> tuple[int, Any]:
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
            delete_version = delete_keys(
                spark, layout.interactions, t.users, partition_filter=partition_filter
            )
            delete_keys(spark, layout.shard_map, t.users)
        if t.items:
            delete_version = delete_keys(
                spark,
                layout.interactions,
                t.items,
                on="item_idx",
                partition_filter=partition_filter,
            )
        if t.pairs:
            delete_version = delete_keys(
                spark,
                layout.interactions,
                t.pairs,
                on=("user_key", "item_idx"),
                partition_filter=partition_filter,
            )
    deleted_at = now_utc()

    def record_and_vacuum() -> None:
        with clock.step("vacuum"):
            if cfg.unlearn.vacuum:
                vacuum_now(spark, layout.interactions)
                vacuum_now(spark, layout.shard_map)
        with clock.step("record_deleted"):  # deleted: no longer on disk either
            ledger.transition(
                [
                    {"request_id": rid, "deleted_at": deleted_at, "delete_version": delete_version}
                    for rid in targets.planned
                ],
                DELETED,
                job_id=job_id,
            )

    if not background:
        record_and_vacuum()
        return delete_version, None
    pool = ThreadPoolExecutor(1, thread_name_prefix="record-and-vacuum")
    running = pool.submit(record_and_vacuum)
    pool.shutdown(wait=False)
    clock.background = running  # the job's error path waits for it before writing the ledger
    return delete_version, running


@dataclass
class _Context:
    """The job's side of a method's update (``recunlearn.unlearning.methods.UpdateContext``)."""

    cfg: RunConfig
    layout: Layout
    job_id: str
    clock: Clock
    current: ModelVersion
    n_items: int
    delete_version: int
    train_version: int
    exact_guarantee: str
    shard_rows: dict[int, InteractionData] = field(default_factory=dict)

    def load(self, component: Component) -> Recommender:
        state = checkpoints.load_state(component.path)
        if state.get("kind") != self.cfg.model.kind:
            raise PipelineError(
                f"the published model is {state.get('kind')}, the config says "
                f"model.kind={self.cfg.model.kind}: train again after changing it"
            )
        return load_model(state)

    def rows_before(self, shard: int) -> InteractionData:
        return self.shard_rows[shard]

    def save(self, shard: int | None, model: Recommender, meta: CheckpointMeta) -> Component:
        component = component_name(shard)
        saved = checkpoints.save(
            self.layout.checkpoints,
            component,
            f"{self.job_id}-{uuid.uuid4().hex[:6]}",
            model.state(),
            meta,
        )
        return Component.of(saved)

    def retrain(self, shards: list[int], *, reference: bool) -> dict[str, Any]:
        with self.clock.step("retrain_shards"):
            trained = train_models(
                self.cfg,
                self.layout,
                version=self.train_version,
                n_items=self.n_items,
                shard_ids=shards,
                reference=reference,
                job_id=self.job_id,
                current=self.current,
            )
        ref = trained["reference"]
        return {
            "shards": {k: Component.of(m) for k, m in trained["shards"].items()},
            "reference": Component.of(ref) if ref else None,
            "wall_seconds": trained["wall_seconds"],
            "order": trained["order"],
        }

    def refit_aggregator(self, shards: dict[int, Component]) -> Component:
        with self.clock.step("refit_aggregator"):
            agg = fit_aggregator(
                self.cfg,
                self.layout,
                version=self.train_version,
                n_items=self.n_items,
                shard_paths=[shards[k].path for k in range(self.current.n_shards)],
                job_id=self.job_id,
            )
        return Component.of(agg)


def _run(
    spark: SparkSession,
    *,
    cfg: RunConfig,
    layout: Layout,
    ledger: ForgetLedger,
    registry: ModelRegistry,
    method: UnlearningMethod,
    current: ModelVersion,
    requests: list[Request],
    job_id: str,
    clock: Clock,
    ledger_rows: list[Request],
) -> dict[str, Any]:
    t_start = time.perf_counter()
    ids = [r.request_id for r in requests]
    keys = sorted({r.user_key for r in requests if r.target == USER and r.user_key})
    n_items = n_items_of(layout)

    # 1. target determination: which shards hold each request's data (recorded before any delete).
    with clock.step("target_determination"):
        targets = determine_targets(spark, layout, ledger, requests, job_id)
    touched = targets.touched
    log.info(
        "unlearn %s (%s): %d request(s), shards touched %s",
        job_id,
        method.name,
        len(requests),
        touched,
        extra=context(job_id=job_id, request_ids=ids, shards=touched),
    )

    # 2. what must be read before the delete, held in memory only: the touched shards' rows
    # (a method that updates from them), the forgotten users' rows and the model as it was
    # (the functional check of a retrain)
    version_before = current.table_version
    shard_rows: dict[int, InteractionData] = {}
    if method.needs_rows:
        with clock.step("read_shards"):
            now = delta_version(spark, layout.interactions)
            shard_rows = {k: read_split_data(layout.interactions, now, n_items, k) for k in touched}
    forgotten, original = None, None
    if method.retrains:
        with clock.step("capture_evidence_inputs"):
            forgotten = _rows_of(layout, n_items, keys, touched)
            original = load_ensemble(current, fold_in_reg=cfg.aggregator.fold_in_reg)

    # 3. delete through a MERGE with a batch table, 4. vacuum: beside a retraining, which only
    # reads, unless strict mode rewrites the tables first
    strict_mode = cfg.unlearn.partition == "strict"
    pre_delete = delta_version(spark, layout.interactions)
    delete_version, vacuuming = delete_and_vacuum(
        spark,
        cfg=cfg,
        layout=layout,
        ledger=ledger,
        job_id=job_id,
        targets=targets,
        clock=clock,
        background=method.retrains and not strict_mode,
    )

    # 4b. strict partition mode: recompute the partition without the forgotten data; the
    # shards whose members change are retrained too.
    partition, train_version, exact_guarantee = (
        current.partition,
        delete_version,
        PARTITION_GUARANTEE,
    )
    if strict_mode:
        with clock.step("repartition"):
            strict = repartition_strict(spark, cfg=cfg, layout=layout)
        targets.also = sorted(strict["shards_changed"])
        train_version, exact_guarantee = strict["interactions_version"], STRICT_GUARANTEE
        partition = {**(partition or {}), **strict, "mode": "strict"}
        log.info(
            "unlearn %s: strict partition moved %d user(s); shards changed %s",
            job_id,
            strict["users_moved"],
            strict["shards_changed"],
        )

    # 5. the method's update: new components for the touched shards (and the reference)
    ctx = _Context(
        cfg=cfg,
        layout=layout,
        job_id=job_id,
        clock=clock,
        current=current,
        n_items=n_items,
        delete_version=delete_version,
        train_version=train_version,
        exact_guarantee=exact_guarantee,
        shard_rows=shard_rows,
    )
    # a retrain times its own steps (retrain_shards, refit_aggregator); an update in place is one
    with nullcontext() if method.retrains else clock.step("update"):
        update = method.update(current, targets, ctx)
    shard_rows.clear()
    shards = {**current.shards, **update.shards}
    aggregator = update.aggregator or current.aggregator

    # 6. attribute edits in effect are recomputed on retrained shards (a forgotten user's go).
    overlay = None
    if method.retrains:
        with clock.step("attribute_edits"):
            from pipelines.attribute import active_edits, build_overlay

            # attribute requests are not this job's: the ledger as the job found it
            edits = active_edits(ledger_rows, forgotten=set(keys))
            if edits:
                draft = current.replace(
                    shards=shards,
                    aggregator=aggregator,
                    table_version=train_version,
                    n_items=n_items,
                    attribute_overlay=None,
                )
                overlay, _ = build_overlay(cfg, layout, draft, edits, job_id=job_id)

    if vacuuming is not None:  # no version is published while the forgotten rows are on disk
        with clock.step("vacuum_wait"):
            vacuuming.result()

    # 7. publish; checkpoints trained on the forgotten rows go, older versions retire.
    with clock.step("manifest"):
        version = registry.next_version()
        new = build_version(
            version=version,
            cfg=cfg,
            shards=shards,
            aggregator=aggregator,
            reference=update.reference,
            table_version=train_version if method.retrains else delete_version,
            n_items=n_items,
            partition=partition,
            guarantee=update.guarantee,
            order=current.order,
            parent=current.version,
            job_id=job_id,
            ingest=current.ingest,
        ).replace(attribute_overlay=overlay, pending_exact=update.pending_exact)
    with clock.step("publish"):
        published = publish_version(
            registry,
            new,
            request_ids=ids,
            prune=trained_on(update.changed, delete_version),
            retire=f"superseded by v{version}: held data since forgotten",
            note=(
                f"unlearned {len(ids)} request(s), retrained shards {update.changed}"
                if method.retrains
                else f"{method.name}: {len(ids)} request(s), updated shards {update.changed}"
            ),
        )
    clock.mark("published")

    # 8. functional evidence (in memory -> ledger; rows themselves are never written).
    evidence: dict[str, dict[str, Any]] = {}
    if forgotten is not None:
        with clock.step("functional_check"):
            unlearned = load_ensemble(new, fold_in_reg=cfg.aggregator.fold_in_reg)
            retrained = (
                load_reference(new, fold_in_reg=cfg.aggregator.fold_in_reg)
                if update.reference
                else None
            )
            assert original is not None  # captured with the forgotten rows, before the delete
            evidence = functional_evidence(
                forgotten, original=original, unlearned=unlearned, retrained=retrained
            )
        if cfg.unlearn.membership and forgotten.n_users and cfg.model.kind == "bpr":  # BPR shadows
            with clock.step("membership_check"):
                _membership_evidence(
                    evidence,
                    forgotten,
                    original,
                    unlearned,
                    cfg=cfg,
                    layout=layout,
                    version=train_version,
                    n_items=n_items,
                    n_shards=current.n_shards,
                )

    def request_evidence(r: Request) -> dict[str, Any]:
        if not method.retrains:
            return {
                "method": method.name,
                "shards": {
                    str(k): update.details[k]
                    for k in targets.shards_of[r.request_id]
                    if k in update.details
                },
            }
        if r.state == APPROXIMATE:  # answered by the fast tier, which deleted the rows
            return {
                "note": "rows deleted by the fast tier; its shards are now retrained",
                "fast": json.loads(r.evidence) if r.evidence else None,
            }
        if r.target != USER:
            return {
                "note": f"{r.target} request: rows deleted and shards {list(r.shards)} "
                f"retrained; "
                "the functional and membership checks are per forgotten user"
            }
        return evidence.get(
            r.user_key or "", {"note": "rows already deleted by an earlier attempt"}
        )

    exact = method.guarantee is Guarantee.EXACT
    ledger.transition(
        [
            {
                "request_id": r.request_id,
                "published_at": published.published_at,
                "model_version": version,
                "guarantee": method.ledger_guarantee,
                "evidence": json.dumps(request_evidence(r)),
            }
            for r in requests
        ],
        RETRAINED if exact else APPROXIMATE,
        job_id=job_id,
    )
    result = {
        "job_id": job_id,
        "method": method.name,
        "guarantee": method.guarantee.value,
        "requests": ids,
        "shards_touched": touched,
        "shards_retrained" if method.retrains else "shards_updated": update.changed,
        "partition_mode": cfg.unlearn.partition,
        "partition": partition if strict_mode else None,
        "delete_version": delete_version,
        # the files the delete rewrote, against the table's size: the layout's cost per request
        "delete_rewrite": files_changed(layout.interactions, pre_delete, delete_version),
        "table_version_before": version_before,
        "model_version": version,
        "parent_version": current.version,
        "checkpoints_removed": published.removed,
        "compute": update.compute,
        "updates": {str(k): v for k, v in update.details.items()},
        "train_wall_seconds": update.compute.get("train_wall_seconds"),
        "end_to_end_seconds": round(time.perf_counter() - t_start, 3),
        # the job's start to the new version's publication (the checks after it excluded)
        "to_publish_seconds": round(clock.marks["published"] - t_start, 3),
        "functional": evidence,
        # what the job leaves on disk: every table (Delta) and the model artifacts
        "storage_bytes": {
            **{f"table:{k}": v for k, v in storage_bytes(layout.tables).items()},
            "checkpoints": folder_bytes(layout.checkpoints),
            "models": folder_bytes(layout.models),
        },
    }
    log.info(
        "unlearn %s: published v%d (%s, %s) in %.1fs",
        job_id,
        version,
        method.guarantee.value,
        method.name,
        result["end_to_end_seconds"],
        extra=context(
            job_id=job_id,
            request_ids=ids,
            shards=update.changed,
            model_version=version,
            seconds=result["end_to_end_seconds"],
        ),
    )
    return result


def _membership_evidence(
    evidence: dict[str, dict[str, Any]],
    forgotten: InteractionData,
    original: Any,
    unlearned: Any,
    *,
    cfg: RunConfig,
    layout: Layout,
    version: int,
    n_items: int,
    n_shards: int,
) -> None:
    """Add each forgotten user's membership evidence
    (``recunlearn.evidence.mia.membership_audit``) to ``evidence``; the attack's pool is a sample of
    retained users, so it never saw the forgotten ones."""
    from recunlearn.evidence.mia import membership_audit

    # the attack's pool: a seeded sample of the retained users, whose rows alone are read
    keys = shard_map_keys(layout)
    rng = numpy_rng(cfg.seed, "membership", version)
    sample = keys[np.sort(rng.permutation(len(keys))[: min(cfg.unlearn.shadow_users, len(keys))])]
    pool = read_user_rows(layout.interactions, version, n_items, sample)
    rows = membership_audit(
        original,
        unlearned,
        (forgotten.user_keys, forgotten.train),
        pool,
        n_shards=n_shards,
        model_cfg=cfg.model,
        seed=make_seed(cfg.seed, "membership", version) % 2**31,
        fold_in_reg=cfg.aggregator.fold_in_reg,
    )
    for key, row in zip(forgotten.user_keys, rows, strict=True):
        evidence.setdefault(str(key), {})["membership"] = row


def _rows_of(layout: Layout, n_items: int, keys: list[str], shards: list[int]) -> InteractionData:
    if not keys:
        return InteractionData.from_columns(
            np.array([], str), np.array([], np.int64), np.array([], str), n_items
        )
    parts = [("shard_id", "in", [str(int(s)) for s in shards])] if shards else None
    tbl = read_table(
        layout.interactions,
        columns=["user_key", "item_idx", "split"],
        partitions=parts,
        where=ds.field("user_key").isin(keys),
    )
    return InteractionData.from_columns(
        tbl.column("user_key").to_numpy(zero_copy_only=False),
        tbl.column("item_idx").to_numpy(zero_copy_only=False),
        tbl.column("split").to_numpy(zero_copy_only=False),
        n_items,
    )
