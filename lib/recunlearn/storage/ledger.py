"""The forget ledger: one row per request, its state machine and its history (delta-rs)."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any

from recunlearn.errors import LedgerConflictError
from recunlearn.storage.delta import (
    arrow_schema,
    create_table,
    merge_into,
    open_delta,
    read_rows,
    split_schema,
    table_arrow_schema,
    table_exists,
    with_retries,
)
from recunlearn.storage.layout import now_utc
from recunlearn.storage.requests import (
    AWAITING_STATES,
    OPEN_STATES,
    Request,
    State,
    Target,
)

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

# The request state machine. A data request (user, item, interaction) moves
#   received -> planned -> deleted -> retrained -> verified
# (planned: its shards are recorded; deleted: its rows are deleted and vacuumed; retrained: a
# version without them is published; verified: the audit found nothing of it), or to rejected
# with a reason. The fast tier answers between deleted and retrained: approximate (touched
# shard models updated in place and published) until the exact retrain of its shards. An
# attribute edit moves received -> planned -> applied, and to reverted when undone. A failed job
# leaves the state where it was, with the error in ``reason``: the rerun goes on from there.
RECEIVED, PLANNED, DELETED, APPROXIMATE = (
    State.RECEIVED,
    State.PLANNED,
    State.DELETED,
    State.APPROXIMATE,
)
RETRAINED, VERIFIED, REJECTED, APPLIED, REVERTED = (
    State.RETRAINED,
    State.VERIFIED,
    State.REJECTED,
    State.APPLIED,
    State.REVERTED,
)
STATES = tuple(State)
# the states each state is entered from (a state entered from itself: by a later job run)
TRANSITIONS: dict[State, tuple[State, ...]] = {
    RECEIVED: (REJECTED, REVERTED),  # a valid resubmission re-opens the request
    PLANNED: (RECEIVED, PLANNED),
    DELETED: (PLANNED,),
    APPROXIMATE: (DELETED,),
    RETRAINED: (DELETED, APPROXIMATE),
    VERIFIED: (RETRAINED,),
    REJECTED: (RECEIVED, PLANNED),
    APPLIED: (PLANNED,),
    REVERTED: (RECEIVED, PLANNED, APPLIED),
}
# the reasons a job run records without moving the state, cleared by the next transition
_ERROR_PREFIX, _AUDIT_PREFIX = "failed in ", "audit by "
# what an older ledger's statuses become (failed: the state its recorded fields show)
_LEGACY_STATUS = """CASE status
  WHEN 'pending' THEN 'received'
  WHEN 'in_progress' THEN 'planned'
  WHEN 'failed' THEN CASE WHEN target_type IN ('attribute', 'attribute-undo') THEN 'received'
                          WHEN deleted_at IS NOT NULL THEN 'deleted'
                          WHEN shards IS NOT NULL THEN 'planned' ELSE 'received' END
  WHEN 'completed' THEN CASE WHEN target_type IN ('attribute', 'attribute-undo') THEN 'applied'
                             ELSE 'retrained' END
  ELSE status END"""
# the guarantee column: what the published model version answering the request offers
EXACT = "exact"
USER, ITEM, INTERACTION, ATTRIBUTE, ATTRIBUTE_UNDO = tuple(Target)


LEDGER_SCHEMA = (
    "request_id string, target_type string, user_key string, status string, reason string, "
    "received_at timestamp, updated_at timestamp, started_at timestamp, deleted_at timestamp, "
    "published_at timestamp, completed_at timestamp, shards array<int>, delete_version long, "
    "model_version long, job_id string, evidence string, attribute string, guarantee string, "
    "item_idx int, history array<struct<state:string,job_id:string,at:timestamp>>"
)
LEDGER_COLUMNS = split_schema(LEDGER_SCHEMA)
LEDGER_FIELDS = [f.split()[0] for f in LEDGER_COLUMNS]


class ForgetLedger:
    """The ``forget_requests`` Delta table: one row per request id, its state and its history
    (one ``(state, job_id, at)`` entry per transition). Every access goes through delta-rs
    (see the module's note), creation and the upgrade of an older ledger too, so no JVM is
    needed to file or read requests; ``spark`` is unused."""

    def __init__(self, spark: SparkSession | None, path: str) -> None:
        self.spark = spark
        self.path = path
        self._ready = False

    def ensure(self) -> None:
        if self._ready:
            return
        if not table_exists(None, self.path):
            create_table(
                self.path, LEDGER_SCHEMA, stats_columns=["status", "received_at", "updated_at"]
            )
        else:
            dt = open_delta(self.path)
            have = set(table_arrow_schema(dt).names)
            missing = [f for f in LEDGER_COLUMNS if f.split()[0] not in have]
            if missing:  # a ledger from an older release: add the new columns (null for old rows)
                from deltalake import Schema

                dt.alter.add_columns(
                    list(Schema.from_arrow(arrow_schema(", ".join(missing))).fields)
                )
                if "history" in {f.split()[0] for f in missing}:  # its statuses predate the states
                    with_retries(
                        lambda: open_delta(self.path).update(updates={"status": _LEGACY_STATUS}),
                        what="ledger upgrade",
                    )
        self._ready = True

    def _merge(self, rows: list[dict[str, Any]], extra: tuple[tuple[str, Any], ...] = ()) -> Any:
        return merge_into(self.path, rows, "t.request_id = s.request_id", extra)

    def append(self, rows: list[dict[str, Any]]) -> None:
        """Insert requests that are not there yet; a known request id is left as it is (a
        rejected or reverted one is re-opened by ``transition(..., RECEIVED)``)."""
        if not rows:
            return
        self.ensure()
        stamp = now_utc()
        src = [
            {
                **r,
                "history": r.get("history")
                or [
                    {
                        "state": r["status"],
                        "job_id": r.get("job_id") or "intake",
                        "at": r.get("updated_at") or stamp,
                    }
                ],
            }
            for r in rows
        ]
        with_retries(
            lambda: self._merge(src).when_not_matched_insert_all().execute(), what="ledger append"
        )

    def transition(
        self, rows: list[dict[str, Any]], state: str, *, job_id: str, strict: bool = True
    ) -> int:
        """Move the requests of ``rows`` (each names ``request_id`` and the same other fields)
        to ``state`` in one Delta MERGE, keyed by request and job run: a request moves only from
        a state ``TRANSITIONS`` allows, and a transition this job run made already is not made
        again (a retried write changes nothing). A failed run's error in ``reason`` is cleared,
        unless the rows set ``reason``.

        The rows are read, their new history computed, and the MERGE updates a row only if its
        state and history length are still the ones read (compare-and-set: a transition another
        writer made in between is never overwritten).

        Returns how many requests moved. With ``strict``, a request that neither moved nor had
        moved already raises ``LedgerConflictError`` (another writer got there first)."""
        import pyarrow as pa

        if not rows:
            return 0
        if state not in TRANSITIONS:
            raise ValueError(f"unknown request state {state!r}")
        state = State(state)
        self.ensure()
        stamp = now_utc()
        rows = [
            {**r, "updated_at": r.get("updated_at", stamp), "status": state, "job_id": job_id}
            for r in rows
        ]
        fields = sorted(set(rows[0]) - {"request_id"})
        sets = {k: f"s.{k}" for k in fields} | {"history": "s.history"}
        if "reason" not in sets:  # an error of an earlier run goes; a reason of record stays
            sets["reason"] = (
                f"CASE WHEN t.reason LIKE '{_ERROR_PREFIX}%' OR t.reason LIKE '{_AUDIT_PREFIX}%' "
                "THEN NULL ELSE t.reason END"
            )
        cond = "t.status = s.from_status AND coalesce(array_length(t.history), 0) = s.from_length"

        ids = [r["request_id"] for r in rows]

        def run() -> int:
            now = {r.request_id: r for r in self.requests_for(ids)}
            moves = []
            for r in rows:
                cur = now.get(r["request_id"])
                if cur is None or cur.state not in TRANSITIONS[state] or cur.made(state, job_id):
                    continue  # not movable from where it is, or this job run moved it already
                moves.append(
                    {
                        **r,
                        "from_status": str(cur.state),
                        "from_length": len(cur.history),
                        "history": [
                            *cur.to_row()["history"],
                            {"state": state, "job_id": job_id, "at": r["updated_at"]},
                        ],
                    }
                )
            if not moves:
                return 0
            metrics = (
                self._merge(moves, (("from_status", pa.string()), ("from_length", pa.int64())))
                .when_matched_update(updates=sets, predicate=cond)
                .execute()
            )
            return int(metrics["num_target_rows_updated"])

        moved = with_retries(run, what=f"ledger -> {state}")
        if strict and moved < len(rows):
            now = {r.request_id: r for r in self.requests_for(ids)}
            stuck = [
                rid
                for rid in ids
                if not (rid in now and now[rid].state == state and now[rid].made(state, job_id))
            ]
            if stuck:
                found = sorted({str(now[r].state) if r in now else "missing" for r in stuck})
                raise LedgerConflictError(
                    f"ledger: {len(stuck)} request(s) could not move to {state} "
                    f"(now {found}; e.g. {stuck[0][:12]}): another job changed them"
                )
        return moved

    def note_error(self, request_ids: list[str], *, job_id: str, error: BaseException) -> None:
        """Record a failed job run's error on its requests; their state stays where it was."""
        if request_ids:
            self.update(
                request_ids,
                reason=f"{_ERROR_PREFIX}{job_id}: {type(error).__name__}: {str(error)[:400]}",
            )

    def note_audit_failure(self, request_ids: list[str], *, job_id: str, version: int) -> None:
        """Record a failed audit on its requests; their state stays where it was."""
        if request_ids:
            self.update(request_ids, reason=f"{_AUDIT_PREFIX}{job_id} failed against v{version}")

    def update(self, request_ids: list[str], **fields: Any) -> None:
        """Set the same ``fields`` (and ``updated_at``) on the given requests; not the state
        (``transition`` moves it)."""
        self.update_rows([{"request_id": rid, **fields} for rid in request_ids])

    def update_rows(self, rows: list[dict[str, Any]]) -> None:
        """Per-request updates of fields other than the state; every row names ``request_id``
        and the same set of fields."""
        if not rows:
            return
        if any("status" in r for r in rows):
            raise ValueError("ForgetLedger.update_rows does not change states: use transition()")
        self.ensure()
        stamp = now_utc()
        rows = [{**r, "updated_at": r.get("updated_at", stamp)} for r in rows]
        sets = {k: f"s.{k}" for k in sorted(set(rows[0]) - {"request_id"})}
        with_retries(
            lambda: self._merge(rows).when_matched_update(updates=sets).execute(),
            what="ledger update",
        )

    def rows(self, statuses: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
        """The ledger's rows as stored (in ``statuses``), oldest first; ``requests`` gives them
        as typed records."""
        import pyarrow.dataset as ds

        self.ensure()
        out = read_rows(self.path, ds.field("status").isin(list(statuses)) if statuses else None)
        # Spark's order: received_at ascending, nulls first, then the request id
        return sorted(
            out,
            key=lambda r: (
                r["received_at"] is not None,
                r["received_at"] or datetime.min,
                r["request_id"] or "",
            ),
        )

    def rows_for(self, request_ids: list[str]) -> list[dict[str, Any]]:
        import pyarrow.dataset as ds

        self.ensure()
        return read_rows(self.path, ds.field("request_id").isin(list(request_ids)))

    def requests(self, states: tuple[State, ...] | None = None) -> list[Request]:
        """The requests (in ``states``) as typed records, oldest first."""
        return [Request.from_row(r) for r in self.rows(states)]

    def requests_for(self, request_ids: list[str]) -> list[Request]:
        """The requests with these ids (those the ledger holds), as typed records."""
        return [Request.from_row(r) for r in self.rows_for(request_ids)]

    def open_requests(self, targets: tuple[Target, ...] | None = None) -> list[Request]:
        """Requests not yet through: data requests before ``retrained``, attribute requests
        before ``applied``."""
        return [r for r in self.requests(OPEN_STATES) if targets is None or r.target in targets]


def request_ages(
    requests: list[Request], *, deadline_days: float, now: datetime | None = None
) -> list[dict[str, Any]]:
    """Each request still awaiting its answer (``AWAITING_STATES``), oldest first: its id,
    target, state, age in days since receipt and whether that is past ``deadline_days``
    (timestamps as the ledger reads them: naive UTC)."""
    now = (now or now_utc()).replace(tzinfo=None)
    out: list[dict[str, Any]] = [
        {
            "request_id": r.request_id,
            "target_type": str(r.target),
            "status": str(r.state),
            "received_at": r.received_at,
            "age_days": round((now - r.received_at).total_seconds() / 86400, 3),
        }
        for r in requests
        if r.state in AWAITING_STATES and r.received_at is not None
    ]
    for r in out:
        r["overdue"] = r["age_days"] > deadline_days
    return sorted(out, key=lambda r: -r["age_days"])
