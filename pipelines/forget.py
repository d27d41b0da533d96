"""Forget-request intake: raw ids in, ledger rows keyed by pseudonymous keys out.

Idempotent: the request id is derived from the target, so the same request twice is one
row. An unknown user or a malformed id is rejected with a recorded reason; nothing is lost.

No engine: the checks read the Delta tables through delta-rs (the shard map says which shard
partitions of the interaction table to read), and the ledger is written through delta-rs, so
filing a request from the CLI starts no JVM and no Ray. ``spark`` is accepted and unused.
"""

from __future__ import annotations

import hashlib
import logging
import re
from typing import TYPE_CHECKING, Any

from recunlearn.data.pseudonym import user_key
from recunlearn.storage.delta import read_rows, scan_table, table_exists
from recunlearn.storage.layout import Layout, new_job_id, now_utc
from recunlearn.storage.ledger import INTERACTION, ITEM, RECEIVED, REJECTED, ForgetLedger

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

VALID_ID = re.compile(r"^[\w.@:+-]{1,256}$")


def request_id_for(target_type: str, key: str) -> str:
    return hashlib.sha256(f"{target_type}:{key}".encode()).hexdigest()[:24]


def submit_user_requests(
    spark: SparkSession | None = None, *, layout: Layout, secret: bytes, raw_ids: list[str]
) -> list[dict[str, Any]]:
    """Record one request per raw user id; return outcomes (never the raw ids)."""
    ledger = ForgetLedger(spark, layout.ledger)
    ledger.ensure()
    stamp = now_utc()
    candidates: list[tuple[int, dict[str, Any]]] = []
    for position, raw in enumerate(raw_ids):
        text = str(raw).strip()
        if not VALID_ID.match(text):
            key = user_key(secret, f"malformed:{text}")
            reason = "malformed user id (empty, too long, or characters outside [A-Za-z0-9_.@:+-])"
            candidates.append(
                (position, _row(request_id_for("malformed", key), key, REJECTED, reason, stamp))
            )
            continue
        key = user_key(secret, text)
        candidates.append((position, _row(request_id_for("user", key), key, RECEIVED, None, stamp)))
    known = known_users(
        layout, sorted({r["user_key"] for _, r in candidates if r["status"] == RECEIVED})
    )
    for _, row in candidates:
        if row["status"] == RECEIVED and row["user_key"] not in known:
            row["status"], row["reason"] = REJECTED, "unknown user: no interactions under this key"
    outcomes = _record(ledger, candidates)
    for o, (_, row) in zip(outcomes, candidates, strict=True):
        if row["user_key"] in known:
            o["user_key"] = row["user_key"]
    return outcomes


def _row(
    rid: str,
    key: str | None,
    status: str,
    reason: str | None,
    stamp: Any,
    target_type: str = "user",
    item_idx: int | None = None,
) -> dict[str, Any]:
    return {
        "request_id": rid,
        "target_type": target_type,
        "user_key": key,
        "status": status,
        "reason": reason,
        "received_at": stamp,
        "updated_at": stamp,
        "item_idx": item_idx,
    }


def submit_data_requests(
    spark: SparkSession | None = None,
    *,
    layout: Layout,
    secret: bytes,
    items: list[str] | None = None,
    interactions: list[tuple[str, str]] | None = None,
) -> list[dict[str, Any]]:
    """Record requests to forget items (every interaction with each) and single interactions
    (raw user id, raw item id). Unknown items or interactions and malformed ids are rejected with
    a recorded reason; a repeated request is a duplicate. Outcomes never carry raw ids."""
    ledger = ForgetLedger(spark, layout.ledger)
    ledger.ensure()
    stamp = now_utc()
    items, interactions = list(items or []), list(interactions or [])
    raw_items = sorted({str(i).strip() for i in items} | {str(i).strip() for _, i in interactions})
    index = item_index(layout, [i for i in raw_items if VALID_ID.match(i)])
    candidates: list[tuple[int, dict[str, Any]]] = []
    for position, raw in enumerate(items):
        text = str(raw).strip()
        if not VALID_ID.match(text) or text not in index:
            reason = (
                "malformed item id"
                if not VALID_ID.match(text)
                else "unknown item: not in the items table"
            )
            rid = request_id_for("rejected-item", hashlib.sha256(text.encode()).hexdigest())
            candidates.append((position, _row(rid, None, REJECTED, reason, stamp, ITEM)))
            continue
        idx = index[text]
        candidates.append(
            (position, _row(request_id_for(ITEM, str(idx)), None, RECEIVED, None, stamp, ITEM, idx))
        )
    pairs = []
    for position, (raw_user, raw_item) in enumerate(interactions, start=len(items)):
        u, i = str(raw_user).strip(), str(raw_item).strip()
        key = user_key(secret, u if VALID_ID.match(u) else f"malformed:{u}")
        if not (VALID_ID.match(u) and VALID_ID.match(i)) or i not in index:
            reason = (
                "malformed user or item id"
                if not (VALID_ID.match(u) and VALID_ID.match(i))
                else "unknown item: not in the items table"
            )
            rid = request_id_for(
                "rejected-interaction", f"{key}:{hashlib.sha256(i.encode()).hexdigest()}"
            )
            candidates.append((position, _row(rid, key, REJECTED, reason, stamp, INTERACTION)))
            continue
        idx = index[i]
        pairs.append((key, idx))
        candidates.append(
            (
                position,
                _row(
                    request_id_for(INTERACTION, f"{key}:{idx}"),
                    key,
                    RECEIVED,
                    None,
                    stamp,
                    INTERACTION,
                    idx,
                ),
            )
        )
    known = known_pairs(layout, pairs)
    for _, row in candidates:
        if (
            row["target_type"] == INTERACTION
            and row["status"] == RECEIVED
            and (row["user_key"], row["item_idx"]) not in known
        ):
            row["status"], row["reason"] = (
                REJECTED,
                "unknown interaction: this user has no row with this item",
            )
    return _record(ledger, candidates)


def _record(
    ledger: ForgetLedger, candidates: list[tuple[int, dict[str, Any]]]
) -> list[dict[str, Any]]:
    """Record the new requests (a rejected one re-opens in place when valid again) and say,
    per position, accepted / duplicate / rejected."""
    ids = sorted({row["request_id"] for _, row in candidates})
    existing = {r.request_id: r for r in ledger.requests_for(ids)} if ids else {}
    new: dict[str, dict[str, Any]] = {}
    outcomes = []
    for position, row in candidates:
        rid = row["request_id"]
        old = existing.get(rid)
        # (state, reason) of the request as the ledger or this intake holds it already
        recorded = (
            (old.state, old.reason)
            if old
            else (new[rid]["status"], new[rid]["reason"])
            if rid in new
            else None
        )
        if recorded and not (recorded[0] == REJECTED and row["status"] == RECEIVED):
            outcomes.append(
                {
                    "position": position,
                    "request_id": rid,
                    "outcome": "duplicate",
                    "status": recorded[0],
                    "reason": recorded[1],
                }
            )
            continue
        new[rid] = row
        outcomes.append(
            {
                "position": position,
                "request_id": rid,
                "outcome": "accepted" if row["status"] == RECEIVED else "rejected",
                "status": row["status"],
                "reason": row["reason"],
            }
        )
    # one ledger row per request id: new ones appended, a rejected one that is valid now reopened
    job_id = new_job_id("intake")
    ledger.append([{**r, "job_id": job_id} for rid, r in new.items() if rid not in existing])
    ledger.transition(
        [
            {"request_id": rid, "received_at": r["received_at"], "reason": None}
            for rid, r in new.items()
            if rid in existing
        ],
        RECEIVED,
        job_id=job_id,
    )
    log.info(
        "forget intake: %d accepted, %d duplicate, %d rejected",
        *(sum(o["outcome"] == k for o in outcomes) for k in ("accepted", "duplicate", "rejected")),
    )
    return outcomes


def item_index(layout: Layout, raw_items: list[str]) -> dict[str, int]:
    """The item index of each raw item id that the items table holds."""
    import pyarrow.dataset as ds

    if not raw_items or not table_exists(None, layout.items):
        return {}
    rows = read_rows(layout.items, ds.field("item_id").isin(raw_items), ["item_id", "item_idx"])
    return {r["item_id"]: int(r["item_idx"]) for r in rows}


def known_pairs(layout: Layout, pairs: list[tuple[str, int]]) -> set[tuple[str, int]]:
    """The (user key, item index) pairs that have a row in the interaction table."""
    wanted = set(pairs)
    hits = _rows_of_users(layout, sorted({k for k, _ in wanted}), ["user_key", "item_idx"])
    return {
        (k, int(i))
        for k, i in zip(hits["user_key"], hits["item_idx"], strict=True)
        if (k, int(i)) in wanted
    }


def known_users(layout: Layout, keys: list[str]) -> set[str]:
    """The user keys that have a row in the interaction table."""
    return set(_rows_of_users(layout, keys, ["user_key"])["user_key"])


def _rows_of_users(layout: Layout, keys: list[str], columns: list[str]) -> dict[str, list]:
    """``columns`` of the interaction rows of ``keys``, read by delta-rs in bounded batches:
    first only the shard partitions that the shard map names for them, then, for keys not
    found there (not partitioned yet, or the map is older than the table), the whole table."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    out: dict[str, list] = {c: [] for c in columns}
    if not keys or not table_exists(None, layout.interactions):
        return out
    rest = set(keys)
    attempts: list[list[tuple[str, str, list[str]]] | None] = []
    if table_exists(None, layout.shard_map):
        shards = {
            str(r["shard_id"])
            for r in read_rows(
                layout.shard_map, ds.field("user_key").isin(keys), ["user_key", "shard_id"]
            )
        }
        if shards:
            attempts.append([("shard_id", "in", sorted(shards))])
    attempts.append(None)
    for partitions in attempts:
        if not rest:
            break
        found: set[str] = set()
        for tbl in scan_table(
            layout.interactions,
            columns=columns,
            partitions=partitions,
            where=ds.field("user_key").isin(pa.array(sorted(rest))),
        ):
            for c in columns:
                out[c] += tbl.column(c).to_pylist()
            found |= set(tbl.column("user_key").to_pylist())
        rest -= found
    return out
