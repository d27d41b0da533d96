"""The ``recunlearn`` command: one sub-command per job."""

from __future__ import annotations

import importlib
import logging
import sys

from recunlearn.errors import RecUnlearnError

COMMANDS = {
    "data": "jobs.data", "ingest": "jobs.ingest", "partition": "jobs.partition",
    "train": "jobs.train", "forget": "jobs.forget", "unlearn": "jobs.unlearn",
    "audit": "jobs.audit", "evaluate": "jobs.evaluate", "status": "jobs.status", "run": "jobs.run",
    "bench": "jobs.bench", "report": "jobs.report",
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print("usage: recunlearn {" + ",".join(COMMANDS) + "} [options]", file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    try:
        return importlib.import_module(COMMANDS[argv[0]]).main(argv[1:])
    except RecUnlearnError as exc:
        logging.getLogger("recunlearn").error("%s: %s", type(exc).__name__, exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
