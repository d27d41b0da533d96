"""Job logs: JSON lines carry the context fields, plain lines show them as key=value, and
``auto`` picks text on a terminal and JSON otherwise (pure logic, no engines)."""

from __future__ import annotations

import io
import json
import logging

import pytest

from recunlearn.logs import configure, context, resolve_format


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _restore_root():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)


def test_json_lines_carry_context_and_exceptions():
    buf = io.StringIO()
    assert configure("auto", stream=buf) == "json"  # not a terminal
    log = logging.getLogger("recunlearn.test")
    log.info(
        "published v%d",
        3,
        extra=context(job_id="unlearn-1", request_ids=["ab12"], shards=[0, 2], model_version=3),
    )
    try:
        raise RuntimeError("worker lost")
    except RuntimeError:
        log.exception("step failed", extra=context(job_id="unlearn-1", step="retrain_shards"))
    first, second = (json.loads(x) for x in buf.getvalue().splitlines())
    assert (
        first["msg"] == "published v3"
        and first["level"] == "INFO"
        and first["logger"] == "recunlearn.test"
    )
    assert (first["job_id"], first["request_ids"], first["shards"], first["model_version"]) == (
        "unlearn-1",
        ["ab12"],
        [0, 2],
        3,
    )
    assert "step" not in first and second["step"] == "retrain_shards"
    assert "RuntimeError: worker lost" in second["exc"] and first["ts"].endswith("+00:00")


def test_text_on_a_terminal_and_unknown_fields_refused():
    buf = _Tty()
    assert configure("auto", stream=buf) == "text"
    logging.getLogger("recunlearn.test").info("hello", extra=context(job_id="j", shards=[1]))
    line = buf.getvalue().strip()
    assert line.endswith("hello [job_id=j shards=[1]]") and not line.startswith("{")
    with pytest.raises(ValueError, match="unknown log context"):
        context(user_id="196")
    with pytest.raises(ValueError):
        resolve_format("xml")
    assert resolve_format("json", _Tty()) == "json"
