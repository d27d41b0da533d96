"""Data set fetching: the RecBole fallback yields the GroupLens files, checksums bite."""

import hashlib
import zipfile

import pytest
from conftest import shared_data_dir

from recunlearn.data import datasets
from recunlearn.errors import DataError


def fake_recbole_wheel(folder, inter: str, user: str):
    wheel = folder / "recbole-1.2.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(
            datasets.RECBOLE_ML100K + "ml-100k.inter",
            "user_id:token\titem_id:token\trating:float\ttimestamp:float\n" + inter,
        )
        zf.writestr(
            datasets.RECBOLE_ML100K + "ml-100k.user",
            "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n" + user,
        )
    return wheel


def test_recbole_copy_is_turned_back_into_grouplens_files(tmp_path, monkeypatch):
    inter = "196\t242\t3\t881250949\n186\t302\t3\t891717742\n"
    user = "1\t24\tM\ttechnician\t85711\n"

    def fake_pip(cmd, **kw):
        fake_recbole_wheel(__import__("pathlib").Path(cmd[cmd.index("-d") + 1]), inter, user)
        return type("P", (), {"returncode": 0, "stderr": ""})()

    monkeypatch.setattr(datasets.subprocess, "run", fake_pip)
    datasets._from_recbole_wheel(tmp_path, timeout=1)
    assert (tmp_path / "u.data").read_text() == inter
    assert (tmp_path / "u.user").read_text() == "1|24|M|technician|85711\n"


def test_checksum_mismatch_is_a_data_error(tmp_path):
    (tmp_path / "u.data").write_text("tampered\n")
    with pytest.raises(DataError, match="checksum mismatch"):
        datasets.verify(tmp_path, {"u.data": hashlib.sha256(b"original\n").hexdigest()})


def test_unknown_dataset_name(tmp_path):
    with pytest.raises(DataError, match="unknown data set 'ml-20m'"):
        datasets.fetch("ml-20m", tmp_path)


@pytest.mark.datasets
def test_pinned_checksums_are_the_grouplens_originals():
    root = shared_data_dir()
    if root is None or not (root / "movielens-100k").exists():
        pytest.skip("RECUNLEARN_DATA_DIR with movielens-100k not set")
    datasets.verify(root / "movielens-100k", datasets.ML100K_SHA256)
