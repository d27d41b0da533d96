"""The dependency direction jobs -> pipelines -> recunlearn (setup.cfg's import-linter
contract), and the library's promise not to start an engine at import time."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contract_is_kept():
    exe = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(exe), "--config", str(ROOT / "setup.cfg")], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 kept, 0 broken" in proc.stdout


def test_importing_the_library_starts_no_engine():
    code = ("import sys, recunlearn.ensemble, recunlearn.tables, recunlearn.engines, "
            "recunlearn.readers, recunlearn.scan; "
            "print('pyspark' in sys.modules, 'ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["False", "False"], out.stderr
