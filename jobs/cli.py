"""The ``recunlearn`` command: one sub-command per job.

``recunlearn COMMAND ...`` imports only that command's module (the operator's commands stay
quick); ``recunlearn --help`` lists every command with a line each, and an unknown command is
named in the error."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from recunlearn.errors import RecUnlearnError

# name: (module, what it does), in the order a pipeline runs them
COMMANDS: dict[str, tuple[str, str]] = {
    "data": ("jobs.data", "fetch a public data set into data_dir/raw (checksummed)"),
    "ingest": (
        "jobs.ingest",
        "read a raw log into the Delta interactions table (keys, not ids; bad rows quarantined)",
    ),
    "partition": (
        "jobs.partition",
        "partition users (or items, interactions) into K balanced shards",
    ),
    "train": (
        "jobs.train",
        "train every shard, the aggregator and the reference on Ray; publish a version",
    ),
    "forget": (
        "jobs.forget",
        "file forget requests (users, items, interactions, attribute edits); no engine started",
    ),
    "unlearn": (
        "jobs.unlearn",
        "process open requests: delete, VACUUM, retrain or update, publish, audit",
    ),
    "audit": (
        "jobs.audit",
        "audit retrained requests (all, or --request ID) against disk, logs and "
        "the model; no engine started",
    ),
    "status": (
        "jobs.status",
        "requests by state, one request's history, the published version; no engine started",
    ),
    "evaluate": ("jobs.evaluate", "evaluate the published model version on the test split"),
    "run": ("jobs.run", "the whole pipeline on the configured data set (what `make run` calls)"),
    "report": ("jobs.report", "render the HTML report of a pipeline run or a benchmark suite"),
    "bench": (
        "jobs.bench",
        "benchmarks: exact, fast, e2e, intake, suite, attribute, scale (JSON + Markdown)",
    ),
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="recunlearn",
        description="Recommendation unlearning on Spark, Delta Lake, Ray and torch.",
        epilog="Run `recunlearn COMMAND --help` for a command's options. Every command takes "
        "--config FILE and --set KEY=VALUE.",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name, (_, summary) in COMMANDS.items():
        sub.add_parser(name, help=summary, add_help=False)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        p = parser()
        try:
            p.parse_args(argv)  # --help: the list (exit 0); an unknown word: named (exit 2)
        except SystemExit as exc:
            return int(exc.code or 0)
        p.print_help(sys.stderr)  # no command given
        return 2
    try:
        return importlib.import_module(COMMANDS[argv[0]][0]).main(argv[1:])
    except RecUnlearnError as exc:
        logging.getLogger("recunlearn").error("%s: %s", type(exc).__name__, exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
