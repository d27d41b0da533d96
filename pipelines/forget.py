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
from recunlearn.tables import PENDING, REJECTED, ForgetLedger, Layout, now_utc, table_exists

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
    rows: dict[str, dict[str, Any]] = {}
    outcomes: list[dict[str, Any]] = []
    for position, raw in enumerate(raw_ids):
        text = str(raw).strip()
        if not _VALID_ID.match(text):
            key = user_key(secret, f"malformed:{text}")
            rid = request_id_for("malformed", key)
            reason = "malformed user id (empty, too long, or characters outside [A-Za-z0-9_.@:+-])"
            rows.setdefault(rid, _row(rid, key, REJECTED, reason, stamp))
            outcomes.append({"position": position, "request_id": rid, "status": REJECTED,
                             "outcome": "rejected", "reason": reason})
            continue
        key = user_key(secret, text)
        rid = request_id_for("user", key)
        rows.setdefault(rid, _row(rid, key, PENDING, None, stamp))
        outcomes.append({"position": position, "request_id": rid, "user_key": key})
    keys = sorted({r["user_key"] for r in rows.values() if r["status"] == PENDING})
    known = _known_keys(spark, layout, keys)
    existing = {r["request_id"]: r for r in ledger.read()
                .where(F.col("request_id").isin(list(rows))).collect()}
    for rid, row in rows.items():
        if row["status"] == PENDING and row["user_key"] not in known and rid not in existing:
            row["status"], row["reason"] = REJECTED, "unknown user: no interactions under this key"
    new_rows = [r for rid, r in rows.items()
                if rid not in existing or (existing[rid]["status"] == REJECTED and r["status"] == PENDING)]
    ledger.append(new_rows)
    seen: set[str] = set()
    for o in outcomes:
        if "outcome" in o:
            continue
        rid = o["request_id"]
        if rid in existing and not any(r["request_id"] == rid for r in new_rows):
            o.update(status=existing[rid]["status"], outcome="duplicate", reason=existing[rid]["reason"])
        elif rid in seen:
            o.update(status=rows[rid]["status"], outcome="duplicate", reason=rows[rid]["reason"])
        else:
            o.update(status=rows[rid]["status"],
                     outcome="accepted" if rows[rid]["status"] == PENDING else "rejected",
                     reason=rows[rid]["reason"])
        seen.add(rid)
    n_ok = sum(o["outcome"] == "accepted" for o in outcomes)
    log.info("forget intake: %d accepted, %d duplicate, %d rejected", n_ok,
             sum(o["outcome"] == "duplicate" for o in outcomes),
             sum(o["outcome"] == "rejected" for o in outcomes))
    return outcomes


def _row(rid: str, key: str, status: str, reason: str | None, stamp: Any) -> dict[str, Any]:
    return {"request_id": rid, "target_type": "user", "user_key": key, "status": status,
            "reason": reason, "received_at": stamp, "updated_at": stamp}


def _known_keys(spark: SparkSession, layout: Layout, keys: list[str]) -> set[str]:
    if not keys or not table_exists(spark, layout.interactions):
        return set()
    probe = spark.createDataFrame([(k,) for k in keys], "user_key string")
    inter = spark.read.format("delta").load(layout.interactions).select("user_key")
    return {r["user_key"] for r in inter.join(probe, "user_key", "left_semi").distinct().collect()}
