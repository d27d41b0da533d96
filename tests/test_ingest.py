"""Ingest on real Spark + Delta: keys instead of ids, a per-user split that does not depend
on the secret, no user_key statistics in the log."""

import pytest
from deltalake import DeltaTable

from recunlearn.pseudonym import user_key
from recunlearn.scan import delta_log_hits
from pipelines.ingest import ingest

from conftest import write_ml100k

pytestmark = pytest.mark.spark


def splits(layout, secret, raw_users):
    t = DeltaTable(layout.interactions).to_pandas(columns=["user_key", "item_idx", "split"])
    back = {user_key(secret, str(u)): str(u) for u in raw_users}
    assert set(t.user_key) <= set(back)  # every key maps back: no raw id was stored instead
    t["raw"] = t.user_key.map(back)
    return t


def test_split_is_per_user_and_independent_of_the_secret(spark, cfg, layout, tmp_path):
    raw = tmp_path / "raw"
    groups = write_ml100k(raw, n_users=30)
    users = [u for g in groups.values() for u in g]
    a, b = b"first-secret-0123456789", b"second-secret-0123456789"
    stats = ingest(spark, cfg=cfg, layout=layout, raw_path=raw, secret=a)
    assert stats["users"] == 30
    first = splits(layout, a, users)
    ingest(spark, cfg=cfg, layout=layout, raw_path=raw, secret=b)
    second = splits(layout, b, users)
    key = ["raw", "item_idx", "split"]
    assert sorted(map(tuple, first[key].values)) == sorted(map(tuple, second[key].values))
    per_user = first.groupby(["raw", "split"]).size().unstack(fill_value=0)
    assert (per_user["train"] >= 1).all()
    n = per_user.sum(1)
    assert ((per_user["test"] == (n * 0.1).astype(int))).all()
    assert ((per_user["valid"] == (n * 0.1).astype(int))).all()
    assert not delta_log_hits(layout.tables, keys=list(first.user_key.unique()), raw_ids=[])
