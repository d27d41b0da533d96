"""Pseudonymous user keys: HMAC-SHA256 of the raw user id under a secret key.

Raw user ids never reach a table, a log or a checkpoint: everything is keyed by ``user_key``.
The same construction runs natively in Spark (``spark_user_key``) and in Python
(``user_key``) so that a forget request typed by an operator finds the rows that ingest wrote.
Whoever holds the secret can re-derive keys from raw ids; rotate it only together with a
re-ingest.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

from recunlearn.errors import ConfigError

if TYPE_CHECKING:
    from recunlearn.config import PseudonymConfig

KEY_ENV = "RECUNLEARN_PSEUDONYM_KEY"
_BLOCK = 64  # SHA-256 block size in bytes
_KEY_CHARS = 32  # 128 bits of the digest, as hex


def load_secret(*, key_file: Path | None, create: bool = False) -> bytes:
    """The pseudonymisation secret: the environment wins, then ``key_file``.

    With ``create`` a missing key file is generated (0600); that is what a local run wants.
    On a cluster, set ``RECUNLEARN_PSEUDONYM_KEY`` from the secret store instead.
    """
    env = os.environ.get(KEY_ENV)
    if env:
        if len(env) < 16:
            raise ConfigError(f"{KEY_ENV} must be at least 16 characters, got {len(env)}")
        return env.encode()
    if key_file is None:
        raise ConfigError(f"no pseudonymisation key: set {KEY_ENV} or pseudonym.key_file")
    if key_file.exists():
        data = key_file.read_bytes().strip()
        if len(data) < 16:
            raise ConfigError(f"pseudonym key file {key_file} holds fewer than 16 bytes")
        return data
    if not create:
        raise ConfigError(f"pseudonym key file {key_file} does not exist")
    key_file.parent.mkdir(parents=True, exist_ok=True)
    data = secrets.token_hex(32).encode()
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    return data


def secret_from_config(cfg: PseudonymConfig, data_dir: Path) -> bytes:
    """The secret as configured: ``key_file`` is relative to the data directory."""
    key_file = data_dir / cfg.key_file if cfg.key_file else None
    return load_secret(key_file=key_file, create=cfg.create_if_missing)


def user_key(secret: bytes, raw_user_id: str) -> str:
    """The pseudonymous key of one raw user id."""
    return hmac.new(secret, str(raw_user_id).encode(), hashlib.sha256).hexdigest()[:_KEY_CHARS]


def _pads(secret: bytes) -> tuple[bytes, bytes]:
    k = hashlib.sha256(secret).digest() if len(secret) > _BLOCK else secret
    k = k.ljust(_BLOCK, b"\0")
    return bytes(b ^ 0x36 for b in k), bytes(b ^ 0x5C for b in k)


def spark_user_key(secret: bytes, raw_col):  # noqa: ANN001, ANN201 (pyspark Column in, out)
    """HMAC-SHA256 as a Spark column expression, equal to :func:`user_key` row by row.

    Built from ``sha2`` over binary concatenations, so it runs in the JVM without a Python UDF.
    """
    from pyspark.sql import functions as F

    ipad, opad = _pads(secret)
    inner = F.unhex(F.sha2(F.concat(F.lit(ipad), F.encode(raw_col.cast("string"), "UTF-8")), 256))
    return F.substring(F.sha2(F.concat(F.lit(opad), inner), 256), 1, _KEY_CHARS)
