"""Fetching and locating data sets.

``fetch_movielens_100k`` downloads the GroupLens archive; where that host cannot be reached it
takes the copy that the ``recbole==1.2.1`` wheel on PyPI carries (downloaded with pip
``--no-deps`` and unpacked, never installed). Either way the result is the original GroupLens
``u.data`` / ``u.user`` pair, byte for byte, checked against pinned SHA-256 sums.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from recunlearn.errors import DataError, FetchError
from recunlearn.hashing import sha256_file

log = logging.getLogger(__name__)

SHARED_DATA_ENV = "RECUNLEARN_DATA_DIR"
GROUPLENS_ML100K = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
RECBOLE_WHEEL = "recbole==1.2.1"
RECBOLE_ML100K = "recbole/dataset_example/ml-100k/"

# SHA-256 of the original GroupLens files (identical whichever source delivered them).
ML100K_SHA256 = {
    "u.data": "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490",
    "u.user": "f120e114da2e8cf314fd28f99417c94ae9ddf1cb6db8ce0e4b5995d40e90e62c",
}
KNOWN = ("movielens-100k",)


def verify(folder: Path, sums: dict[str, str]) -> None:
    for name, want in sums.items():
        p = folder / name
        if not p.exists():
            raise DataError(f"{p} is missing")
        got = sha256_file(p)
        if got != want:
            raise DataError(f"checksum mismatch for {p}: sha256 {got}, expected {want}")


def fetch(name: str, dest_root: Path, *, timeout: float = 20.0) -> Path:
    """Fetch data set ``name`` into ``dest_root/name`` (verified); return that folder."""
    if name != "movielens-100k":
        raise DataError(f"unknown data set {name!r}; known: {', '.join(KNOWN)}")
    return fetch_movielens_100k(dest_root / name, timeout=timeout)


def fetch_movielens_100k(dest: Path, *, timeout: float = 20.0) -> Path:
    try:
        verify(dest, ML100K_SHA256)
        log.info("movielens-100k already present and verified at %s", dest)
        return dest
    except DataError:
        pass
    dest.parent.mkdir(parents=True, exist_ok=True)
    # A sibling temp folder, so the final rename stays on one file system (atomic).
    tmp = Path(tempfile.mkdtemp(prefix=".ml100k-", dir=dest.parent))
    try:
        errors = []
        for source in (_from_grouplens, _from_recbole_wheel):
            try:
                source(tmp, timeout=timeout)
                verify(tmp, ML100K_SHA256)
                break
            except (FetchError, DataError, OSError) as exc:
                errors.append(f"{source.__name__}: {exc}")
                log.warning("movielens-100k source failed: %s", errors[-1])
        else:
            raise FetchError("could not fetch movielens-100k: " + "; ".join(errors))
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)  # atomic on one file system: a half-written copy is never visible
        return dest
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _from_grouplens(out: Path, *, timeout: float) -> None:
    try:
        with urllib.request.urlopen(GROUPLENS_ML100K, timeout=timeout) as resp:  # noqa: S310
            payload = resp.read()
    except (urllib.error.URLError, TimeoutError) as exc:
        raise FetchError(f"{GROUPLENS_ML100K} unreachable ({exc})") from exc
    with zipfile.ZipFile(io.BytesIO(payload)) as zf:
        for name in ML100K_SHA256:
            (out / name).write_bytes(zf.read(f"ml-100k/{name}"))


def _from_recbole_wheel(out: Path, *, timeout: float) -> None:
    with tempfile.TemporaryDirectory() as wheel_dir:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--quiet",
            "--disable-pip-version-check",
            "-d",
            wheel_dir,
            RECBOLE_WHEEL,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=max(timeout, 120))
        if proc.returncode != 0:
            raise FetchError(f"pip download {RECBOLE_WHEEL} failed: {proc.stderr.strip()[-500:]}")
        wheels = list(Path(wheel_dir).glob("recbole-*.whl"))
        if not wheels:
            raise FetchError(f"pip download {RECBOLE_WHEEL} produced no wheel")
        with zipfile.ZipFile(wheels[0]) as zf:
            inter = zf.read(RECBOLE_ML100K + "ml-100k.inter").decode()
            users = zf.read(RECBOLE_ML100K + "ml-100k.user").decode()
    # RecBole's atomic files are the GroupLens files plus a typed header line; the user file
    # is tab-separated where GroupLens uses '|'. Undo both to get the originals back.
    (out / "u.data").write_text(inter.split("\n", 1)[1])
    (out / "u.user").write_text(users.split("\n", 1)[1].replace("\t", "|"))


def shared_dataset(name: str) -> Path | None:
    """``$RECUNLEARN_DATA_DIR/name`` when that folder exists (benchmarks, opt-in tests)."""
    root = os.environ.get(SHARED_DATA_ENV)
    if not root:
        return None
    p = Path(root) / name
    return p if p.exists() else None
