"""Forget-request intake: raw ids in, ledger rows keyed by pseudonymous keys out.

Idempotent: the request id is derived from the target, so the same request twice is one
row. An unknown user or a malformed id is rejected with a recorded reason; nothing is lost.
"""

from __future__ import annotations

import hashlib
import logging
import re
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from recunlearn.pseudonym import user_key
from recunlearn.tables import (INTERACTION, ITEM, RECEIVED, REJECTED, ForgetLedger, Layout, new_job_id,
                               now_utc, table_exists)

log = logging.getLogger(__name__)

_VALID_ID = re.compile(r"^[\w.@:+-]{1,256}$")


def request_id_for(target_type: str, key: str) -> str:
    return hashlib.sha256(f"{target_type}:{key}".encode()).hexdigest()[:24]


def submit_user_requests(spark: SparkSession, *, layout: Layout, secret: bytes,
                         raw_ids: list[str]) -> list[dict[str, Any]]:
    """Record one request per raw user id; return outcomes (never the raw ids)."""
    ledger = ForgetLedger(spark, layout.ledger)
    ledger.ensure()
    stamp = now_utc()
    candidates: list[tuple[int, dict[str, Any]]] = []
    for position, raw in enumerate(raw_ids):
        text = str(raw).strip()
        if not _VALID_ID.match(text):
            key = user_key(secret, f"malformed:{text}")
            reason = "malformed user id (empty, too long, or characters outside [A-Za-z0-9_.@:+-])"
            candidates.append((position, _row(request_id_for("malformed", key), key, REJECTED, reason, stamp)))
            continue
        key = user_key(secret, text)
        candidates.append((position, _row(request_id_for("user", key), key, RECEIVED, None, stamp)))
    known = _known_keys(spark, layout, sorted({r["user_key"] for _, r in candidates if r["status"] == RECEIVED}))
    for _, row in candidates:
        if row["status"] == RECEIVED and row["user_key"] not in known:
            row["status"], row["reason"] = REJECTED, "unknown user: no interactions under this key"
    outcomes = _record(ledger, candidates)
    for o, (_, row) in zip(outcomes, candidates):
        if row["user_key"] in known:
            o["user_key"] = row["user_key"]
    return outcomes


def _row(rid: str, key: str | None, status: str, reason: str | None, stamp: Any,
         target_type: str = "user", item_idx: int | None = None) -> dict[str, Any]:
    return {"request_id": rid, "target_type": target_type, "user_key": key, "status": status,
            "reason": reason, "received_at": stamp, "updated_at": stamp, "item_idx": item_idx}


def submit_data_requests(spark: SparkSession, *, layout: Layout, secret: bytes,
                         items: list[str] | None = None,
                         interactions: list[tuple[str, str]] | None = None) -> list[dict[str, Any]]:
    """Record requests to forget items (every interaction with each) and single interactions
    (raw user id, raw item id). Unknown items or interactions and malformed ids are rejected with
    a recorded reason; a repeated request is a duplicate. Outcomes never carry raw ids."""
    ledger = ForgetLedger(spark, layout.ledger)
    ledger.ensure()
    stamp = now_utc()
    items, interactions = list(items or []), list(interactions or [])
    raw_items = sorted({str(i).strip() for i in items} | {str(i).strip() for _, i in interactions})
    index = _item_index(spark, layout, [i for i in raw_items if _VALID_ID.match(i)])
    candidates: list[tuple[int, dict[str, Any]]] = []
    for position, raw in enumerate(items):
        text = str(raw).strip()
        if not _VALID_ID.match(text) or text not in index:
            reason = ("malformed item id" if not _VALID_ID.match(text)
                      else "unknown item: not in the items table")
            rid = request_id_for("rejected-item", hashlib.sha256(text.encode()).hexdigest())
            candidates.append((position, _row(rid, None, REJECTED, reason, stamp, ITEM)))
            continue
        idx = index[text]
        candidates.append((position, _row(request_id_for(ITEM, str(idx)), None, RECEIVED, None, stamp,
                                          ITEM, idx)))
    pairs = []
    for position, (raw_user, raw_item) in enumerate(interactions, start=len(items)):
        u, i = str(raw_user).strip(), str(raw_item).strip()
        key = user_key(secret, u if _VALID_ID.match(u) else f"malformed:{u}")
        if not (_VALID_ID.match(u) and _VALID_ID.match(i)) or i not in index:
            reason = ("malformed user or item id" if not (_VALID_ID.match(u) and _VALID_ID.match(i))
                      else "unknown item: not in the items table")
            rid = request_id_for("rejected-interaction", f"{key}:{hashlib.sha256(i.encode()).hexdigest()}")
            candidates.append((position, _row(rid, key, REJECTED, reason, stamp, INTERACTION)))
            continue
        idx = index[i]
        pairs.append((key, idx))
        candidates.append((position, _row(request_id_for(INTERACTION, f"{key}:{idx}"), key, RECEIVED,
                                          None, stamp, INTERACTION, idx)))
    known = _known_pairs(spark, layout, pairs)
    for _, row in candidates:
        if row["target_type"] == INTERACTION and row["status"] == RECEIVED \
                and (row["user_key"], row["item_idx"]) not in known:
            row["status"], row["reason"] = REJECTED, "unknown interaction: this user has no row with this item"
    return _record(ledger, candidates)


def _record(ledger: ForgetLedger, candidates: list[tuple[int, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Record the new requests (a rejected one re-opens in place when valid again) and say,
    per position, accepted / duplicate / rejected."""
    ids = sorted({row["request_id"] for _, row in candidates})
    existing = {r["request_id"]: r.asDict() for r in ledger.read()
                .where(F.col("request_id").isin(ids)).collect()} if ids else {}
    new: dict[str, dict[str, Any]] = {}
    outcomes = []
    for position, row in candidates:
        rid = row["request_id"]
        old = existing.get(rid) or new.get(rid)
        if old is not None and not (old["status"] == REJECTED and row["status"] == RECEIVED):
            outcomes.append({"position": position, "request_id": rid, "outcome": "duplicate",
                             "status": old["status"], "reason": old["reason"]})
            continue
        new[rid] = row
        outcomes.append({"position": position, "request_id": rid,
                         "outcome": "accepted" if row["status"] == RECEIVED else "rejected",
                         "status": row["status"], "reason": row["reason"]})
    # one ledger row per request id: new ones appended, a rejected one that is valid now reopened
    job_id = new_job_id("intake")
    ledger.append([{**r, "job_id": job_id} for rid, r in new.items() if rid not in existing])
    ledger.transition([{"request_id": rid, "received_at": r["received_at"], "reason": None} for rid, r in new.items()
                       if rid in existing], RECEIVED, job_id=job_id)
    log.info("forget intake: %d accepted, %d duplicate, %d rejected",
             *(sum(o["outcome"] == k for o in outcomes) for k in ("accepted", "duplicate", "rejected")))
    return outcomes


def _item_index(spark: SparkSession, layout: Layout, raw_items: list[str]) -> dict[str, int]:
    if not raw_items or not table_exists(spark, layout.items):
        return {}
    probe = spark.createDataFrame([(i,) for i in raw_items], "item_id string")
    items = spark.read.format("delta").load(layout.items)
    return {r["item_id"]: int(r["item_idx"]) for r in items.join(probe, "item_id", "left_semi").collect()}


def _known_pairs(spark: SparkSession, layout: Layout, pairs: list[tuple[str, int]]) -> set[tuple[str, int]]:
    if not pairs or not table_exists(spark, layout.interactions):
        return set()
    probe = spark.createDataFrame(sorted(set(pairs)), "user_key string, item_idx int")
    inter = spark.read.format("delta").load(layout.interactions).select("user_key", "item_idx")
    return {(r["user_key"], int(r["item_idx"]))
            for r in inter.join(probe, ["user_key", "item_idx"], "left_semi").distinct().collect()}


def _known_keys(spark: SparkSession, layout: Layout, keys: list[str]) -> set[str]:
    if not keys or not table_exists(spark, layout.interactions):
        return set()
    probe = spark.createDataFrame([(k,) for k in keys], "user_key string")
    inter = spark.read.format("delta").load(layout.interactions).select("user_key")
    return {r["user_key"] for r in inter.join(probe, "user_key", "left_semi").distinct().collect()}
