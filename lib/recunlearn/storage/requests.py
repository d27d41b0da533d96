"""A forget request as a typed record: its state, its target and the ledger row it comes from.

The ledger (``recunlearn.storage.ledger``) stores one row per request; ``Request.from_row``
reads one (a missing ``target_type`` of an older ledger is a user request) and the pipelines
work on ``Request`` objects instead of the row's dict. ``State`` and ``Target`` are string enums,
so a member equals the string stored in the table (``State.RECEIVED == "received"``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from enum import StrEnum
from typing import Any


class State(StrEnum):
    """Where a request is in its state machine (``recunlearn.storage.ledger.TRANSITIONS``).

    A data request moves received -> planned -> deleted -> retrained -> verified, or to
    rejected with a reason; the fast tier answers between deleted and retrained (approximate).
    An attribute edit moves received -> planned -> applied, and to reverted when undone."""

    RECEIVED = "received"
    PLANNED = "planned"
    DELETED = "deleted"
    APPROXIMATE = "approximate"
    RETRAINED = "retrained"
    VERIFIED = "verified"
    REJECTED = "rejected"
    APPLIED = "applied"
    REVERTED = "reverted"


class Target(StrEnum):
    """What a request removes: a whole user, an item (every interaction with it), one
    interaction (user_key + item_idx); or an attribute edit and its undo."""

    USER = "user"
    ITEM = "item"
    INTERACTION = "interaction"
    ATTRIBUTE = "attribute"
    ATTRIBUTE_UNDO = "attribute-undo"


DATA_TARGETS = (Target.USER, Target.ITEM, Target.INTERACTION)  # delete rows, retrain shards
ATTRIBUTE_TARGETS = (Target.ATTRIBUTE, Target.ATTRIBUTE_UNDO)
OPEN_STATES = (State.RECEIVED, State.PLANNED, State.DELETED)  # the exact path has still to run
# not yet answered exactly (an approximate answer leaves the exact retrain due): the deadline runs
AWAITING_STATES = (*OPEN_STATES, State.APPROXIMATE)
FORGOTTEN_STATES = (State.DELETED, State.APPROXIMATE, State.RETRAINED, State.VERIFIED)


@dataclass(frozen=True)
class Transition:
    """One entry of a request's history: the state it entered, by which job run, when."""

    state: State
    job_id: str
    at: datetime | None


@dataclass(frozen=True)
class Request:
    """One row of the forget ledger. ``user_key`` is the pseudonymous key (never a raw id);
    ``item_idx`` is set for item and interaction requests, ``attribute`` for attribute edits;
    ``shards`` are the shards the request's data was found in (recorded when planned)."""

    request_id: str
    target: Target
    state: State
    user_key: str | None = None
    item_idx: int | None = None
    attribute: str | None = None
    reason: str | None = None
    shards: tuple[int, ...] = ()
    delete_version: int | None = None
    model_version: int | None = None
    guarantee: str | None = None
    evidence: str | None = None
    job_id: str | None = None
    received_at: datetime | None = None
    updated_at: datetime | None = None
    started_at: datetime | None = None
    deleted_at: datetime | None = None
    published_at: datetime | None = None
    completed_at: datetime | None = None
    history: tuple[Transition, ...] = field(default=())

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Request:
        """The request of a ledger row (as ``ForgetLedger.rows`` reads it)."""
        names = {f.name for f in fields(cls)} - {"target", "state", "shards", "history"}
        plain: dict[str, Any] = {k: row.get(k) for k in names}
        return cls(
            target=Target(row.get("target_type") or Target.USER),
            state=State(row["status"]),
            shards=tuple(int(k) for k in row.get("shards") or ()),
            history=tuple(
                Transition(State(h["state"]), h["job_id"], h["at"])
                for h in row.get("history") or ()
            ),
            **plain,
        )

    def to_row(self) -> dict[str, Any]:
        """The ledger row of this request (the inverse of ``from_row``)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out.pop("target"), out.pop("state")
        out.update(
            target_type=str(self.target),
            status=str(self.state),
            shards=list(self.shards),
            history=[{"state": str(h.state), "job_id": h.job_id, "at": h.at} for h in self.history],
        )
        return out

    @property
    def is_data(self) -> bool:
        """A request that deletes rows and retrains shards (not an attribute edit)."""
        return self.target in DATA_TARGETS

    @property
    def item(self) -> int:
        """The item_idx of an item or interaction request."""
        if self.item_idx is None:
            raise ValueError(f"{self.target} request {self.request_id[:12]} names no item")
        return int(self.item_idx)

    @property
    def pair(self) -> tuple[str, int]:
        """The (user_key, item_idx) of an interaction request."""
        if self.target is not Target.INTERACTION or self.user_key is None or self.item_idx is None:
            raise ValueError(f"request {self.request_id[:12]} is not an interaction request")
        return self.user_key, int(self.item_idx)

    def made(self, state: State, job_id: str) -> bool:
        """Whether job run ``job_id`` moved this request to ``state`` already."""
        return any(h.state == state and h.job_id == job_id for h in self.history)
