"""The ``recunlearn`` command itself: the list of commands, the choices that come from the
registries, and the errors for what it does not know (no engine is started here)."""

from __future__ import annotations

import subprocess
import sys

from jobs import cli
from recunlearn.unlearning.methods import METHODS


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "jobs.cli", *args], capture_output=True, text=True, timeout=120
    )


def test_help_lists_every_command_with_its_line():
    out = _run("--help")
    assert out.returncode == 0
    for name, (_, summary) in cli.COMMANDS.items():
        assert name in out.stdout and summary[:40] in " ".join(out.stdout.split())


def test_an_unknown_command_is_named_and_no_command_prints_the_list(capsys):
    assert cli.main(["unlern"]) == 2
    assert "unlern" in capsys.readouterr().err
    assert cli.main([]) == 2
    assert "commands" in capsys.readouterr().err


def test_unlearn_offers_every_registered_method_and_refuses_others():
    out = _run("unlearn", "--help")
    assert out.returncode == 0
    for name in METHODS:
        assert name in out.stdout
    assert {"knn", "als", "ease", "exact", "scif"} <= set(METHODS)
    bad = _run("unlearn", "--method", "magic")
    assert bad.returncode == 2 and "invalid choice: 'magic'" in bad.stderr


def test_bench_help_names_each_benchmark():
    from jobs.bench import BENCHES

    out = _run("bench", "--help")
    assert out.returncode == 0
    for bench in BENCHES:
        assert f"recunlearn bench {bench}" in out.stdout
