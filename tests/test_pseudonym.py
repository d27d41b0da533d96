import hashlib
import hmac

import pytest

from recunlearn.data.pseudonym import KEY_ENV, load_secret, spark_user_key, user_key
from recunlearn.errors import ConfigError


def test_user_key_is_hmac_sha256():
    want = hmac.new(b"k" * 20, b"196", hashlib.sha256).hexdigest()[:32]
    assert user_key(b"k" * 20, "196") == want
    assert user_key(b"k" * 20, "196") != user_key(b"j" * 20, "196")


def test_secret_from_env_wins_and_file_is_created_private(tmp_path, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    f = tmp_path / "s" / "key"
    created = load_secret(key_file=f, create=True)
    assert (f.stat().st_mode & 0o777) == 0o600
    assert load_secret(key_file=f) == created
    monkeypatch.setenv(KEY_ENV, "x" * 20)
    assert load_secret(key_file=f) == b"x" * 20


def test_short_or_missing_secret_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "short")
    with pytest.raises(ConfigError, match="at least 16"):
        load_secret(key_file=None)
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(ConfigError, match="does not exist"):
        load_secret(key_file=tmp_path / "nope")


@pytest.mark.spark
def test_spark_hmac_matches_python(spark):
    from pyspark.sql import functions as F

    secret = b"a-secret-longer-than-sixteen"
    ids = ["1", "196", "user@example.org", "é-ünïcode", "x" * 300]
    df = spark.createDataFrame([(i,) for i in ids], "raw string")
    got = [r["k"] for r in df.select(spark_user_key(secret, F.col("raw")).alias("k")).collect()]
    assert got == [user_key(secret, i) for i in ids]
    long_secret = b"s" * 100  # longer than the block size: hashed first, as HMAC requires
    got = df.select(spark_user_key(long_secret, F.col("raw")).alias("k")).first()["k"]
    assert got == user_key(long_secret, "1")
