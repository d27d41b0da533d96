"""Render the HTML report (PNG plots embedded) of a pipeline run or of a benchmark suite.

``recunlearn report`` reads ``<data_dir>/reports/report.json`` and ``audit.json`` (written by
``recunlearn run`` and ``recunlearn audit``); ``recunlearn report --suite DIR`` reads the
cells of ``recunlearn bench suite --out DIR``. Prints the path of the HTML file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jobs._common import add_config_args, setup
from recunlearn.errors import PipelineError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="recunlearn report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_args(p)
    p.add_argument("--suite", type=Path, help="a benchmark suite's output folder")
    args = p.parse_args(argv)
    cfg, layout = setup(args)
    from pipelines.html_report import render_run_report, render_suite_report

    if args.suite:
        if not (args.suite / "cells").is_dir():
            raise PipelineError(
                f"report: {args.suite} holds no suite cells (run `recunlearn bench suite`)"
            )
        print(render_suite_report(args.suite))
        return 0
    if not (layout.reports / "report.json").exists():
        raise PipelineError(f"report: no run report in {layout.reports} (run `recunlearn run`)")
    print(render_run_report(layout.reports))
    return 0


if __name__ == "__main__":
    sys.exit(main())
