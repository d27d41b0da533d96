"""The dependency direction jobs -> pipelines -> recunlearn and the library's own layers, with
no import cycle (setup.cfg's import-linter contracts); no private name imported across
modules; and the library's promise not to start an engine at import time."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contract_is_kept():
    exe = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run(
        [str(exe), "--config", str(ROOT / "setup.cfg")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "4 kept, 0 broken" in proc.stdout


def test_no_private_name_is_imported_across_modules():
    found = []
    for folder in ("lib", "pipelines", "jobs", "tests"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if (
                    isinstance(node, ast.ImportFrom)
                    and node.module
                    and node.module.split(".")[0] in ("recunlearn", "pipelines", "jobs")
                ):
                    found += [
                        f"{path.relative_to(ROOT)}:{node.lineno} {node.module}.{a.name}"
                        for a in node.names
                        if a.name.startswith("_")
                    ]
    assert found == []


def test_importing_the_library_starts_no_engine():
    code = (
        "import sys, recunlearn.sharding.ensemble, recunlearn.storage.ledger, recunlearn.engines, "
        "recunlearn.data.readers, recunlearn.evidence.scan; "
        "print('pyspark' in sys.modules, 'ray' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["False", "False"], out.stderr
