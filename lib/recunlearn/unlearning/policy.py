"""When the exact tier is due after approximate answers (``unlearn.policy``)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

from recunlearn.storage.layout import now_utc

if TYPE_CHECKING:
    from recunlearn.config import PolicyConfig
    from recunlearn.storage.requests import Request
    from recunlearn.storage.versions import ModelVersion


def exact_due(
    approximate: list[Request],
    version: ModelVersion | None,
    policy: PolicyConfig,
    *,
    now: datetime | None = None,
) -> tuple[bool, str]:
    """Whether the exact retrain of the fast-answered requests (``approximate``: their ledger
    ledger records) is due, and why: enough of them, the oldest past its deadline, or a shard whose
    approximately removed rows exceed a share of its training rows (the drift of a model that
    was not retrained)."""
    if not approximate:
        return False, "no request has an approximate guarantee"
    if len(approximate) >= policy.max_pending:
        return True, f"{len(approximate)} approximate requests >= max_pending {policy.max_pending}"
    # the ledger hands timestamps back as naive UTC times
    stamps = [r.published_at or r.updated_at for r in approximate]
    oldest = min(s for s in stamps if s is not None)
    oldest = oldest.replace(tzinfo=timezone.utc) if oldest.tzinfo is None else oldest
    if (now or now_utc()) - oldest >= timedelta(hours=policy.deadline_hours):
        return True, f"oldest approximate request is older than {policy.deadline_hours} h"
    pending = (version.pending_exact if version is not None else None) or {}
    for k, n in (pending.get("removed_rows") or {}).items():
        n_train = (version.shards[int(k)].n_train if version is not None else 0) or 0
        share = n / max(n + n_train, 1)
        if share >= policy.max_share:
            return (
                True,
                f"shard {k}: {share:.3f} of its rows removed approximately >= max_share "
                f"{policy.max_share}",
            )
    return (
        False,
        f"{len(approximate)} approximate request(s), within max_pending, deadline and max_share",
    )
