"""The typed forget request: a ledger row read into ``Request`` and back, unchanged."""

from datetime import datetime

import pytest

from recunlearn.storage.ledger import LEDGER_FIELDS, TRANSITIONS
from recunlearn.storage.requests import Request, State, Target, Transition

AT = datetime(2026, 12, 1, 12, 0)


def _row(**over):
    row = {f: None for f in LEDGER_FIELDS}
    row.update(
        request_id="r1",
        target_type="interaction",
        user_key="k" * 64,
        status="approximate",
        item_idx=7,
        shards=[3, 1],
        delete_version=12,
        received_at=AT,
        history=[
            {"state": "received", "job_id": "intake-1", "at": AT},
            {"state": "planned", "job_id": "fast-1", "at": AT},
        ],
    )
    row.update(over)
    return row


def test_a_ledger_row_round_trips():
    r = Request.from_row(_row())
    assert r.target is Target.INTERACTION and r.state is State.APPROXIMATE
    assert r.shards == (3, 1) and r.pair == ("k" * 64, 7) and r.item == 7
    assert r.history[1] == Transition(State.PLANNED, "fast-1", AT)
    assert r.made(State.PLANNED, "fast-1") and not r.made(State.PLANNED, "fast-2")
    assert r.to_row() == _row()
    assert set(r.to_row()) == set(LEDGER_FIELDS)  # every column of the table, no other


def test_an_older_ledgers_row_is_a_user_request():
    r = Request.from_row(_row(target_type=None, item_idx=None, shards=None, history=None))
    assert r.target is Target.USER and r.is_data and r.shards == () and r.history == ()
    with pytest.raises(ValueError, match="not an interaction"):
        _ = r.pair
    with pytest.raises(ValueError, match="names no item"):
        _ = r.item


def test_unknown_states_and_targets_are_refused():
    with pytest.raises(ValueError):
        Request.from_row(_row(status="pending"))  # a legacy status the ledger upgrade rewrites
    with pytest.raises(ValueError):
        Request.from_row(_row(target_type="album"))


def test_enums_are_the_stored_strings_and_the_machine_covers_them():
    assert State.RECEIVED == "received" and f"{Target.ATTRIBUTE_UNDO}" == "attribute-undo"
    assert set(TRANSITIONS) == set(State)
    assert not Request.from_row(_row(target_type="attribute")).is_data
