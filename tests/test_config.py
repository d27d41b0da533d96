import pytest
from conftest import ROOT

from recunlearn.config import RunConfig, load_config
from recunlearn.errors import ConfigError
from recunlearn.hashing import fingerprint
from recunlearn.seeding import make_seed


def test_extends_and_overrides_apply():
    cfg = load_config(ROOT / "conf" / "test.yaml", ["sharding.n_shards=5", "model.lr=0.02"])
    assert cfg.sharding.n_shards == 5
    assert cfg.model.lr == 0.02
    assert cfg.dataset.name == "movielens-100k"  # inherited from default.yaml


def test_unknown_key_is_rejected():
    with pytest.raises(ConfigError, match="n_shard"):
        load_config(None, ["sharding.n_shard=5"])


def test_cross_field_check():
    with pytest.raises(ConfigError, match="leaves too little to train"):
        load_config(None, ["split.valid=0.3", "split.test=0.3"])


def test_fingerprint_tracks_values_not_dict_order():
    a = RunConfig()
    assert fingerprint(a) == fingerprint(RunConfig.model_validate(a.model_dump()))
    assert fingerprint(a) != fingerprint(load_config(None, ["seed=7"]))


def test_seeds_are_per_component_and_stable():
    assert make_seed(1, "shard", 3) == make_seed(1, "shard", 3)
    assert make_seed(1, "shard", 3) != make_seed(1, "shard", 4)
    assert make_seed(1, "shard", 3) != make_seed(2, "shard", 3)


def test_each_model_kind_has_its_own_settings_class():
    from recunlearn.config import EASESettings, ModelSettings, WMFSettings, model_settings
    from recunlearn.models import MODELS

    cfg = load_config(None, ["model.kind=wmf", "model.wmf_alpha=3", "model.dim=16"])
    assert isinstance(cfg.model, WMFSettings) and cfg.model.wmf_alpha == 3
    # another kind's setting is refused by name, not silently carried
    with pytest.raises(ConfigError, match="ease_lambda"):
        load_config(None, ["model.kind=wmf", "model.ease_lambda=700"])
    with pytest.raises(ConfigError, match="wmf_alpha"):
        load_config(None, ["model.wmf_alpha=3"])  # the default kind is bpr
    # a kind with settings of its own cannot be built as the shared class
    with pytest.raises(ValueError, match="settings of its own"):
        ModelSettings(kind="ease")
    # switching kind keeps the shared fields and drops the old kind's own
    ease = cfg.model.with_kind("ease", ease_lambda=700)
    assert isinstance(ease, EASESettings) and ease.dim == 16 and ease.ease_lambda == 700
    assert type(ease.with_kind("bpr")) is ModelSettings
    # the sparse optimiser is BPR-MF's: refused elsewhere, dropped by a switch of kind
    with pytest.raises(ConfigError, match="sparse_adam is BPR-MF's"):
        load_config(None, ["model.kind=ncf", "model.optimizer=sparse_adam"])
    sparse = model_settings(kind="bpr", optimizer="sparse_adam")
    assert sparse.with_kind("wmf").optimizer == "adam"
    for kind in MODELS:  # every registered kind builds, under its own name
        assert model_settings(kind=kind).kind == kind
    with pytest.raises(ConfigError, match="unknown model kind"):
        model_settings(kind="svd")


def test_size_classes_pick_a_fits_settings_by_its_training_rows():
    """A shard at K = 10 is a small data set: WMF's defaults carry a class for such fits, a
    fit names the class it used, and a class may only set its own kind's fields."""
    from recunlearn.config import model_settings
    from recunlearn.models import fit_model
    from recunlearn.testing import checkerboard

    wmf = model_settings(kind="wmf", dim=4)
    small, mid = sorted(wmf.size_classes, key=lambda c: c.max_train)
    assert wmf.for_rows(small.max_train).wmf_reg == small.set["wmf_reg"] != wmf.wmf_reg
    assert wmf.for_rows(small.max_train + 1).wmf_reg == mid.set["wmf_reg"] != small.set["wmf_reg"]
    assert wmf.for_rows(mid.max_train + 1) == wmf
    data = checkerboard(n_users=20, n_items=10)
    model, stats = fit_model(data, wmf, seed=0)
    assert stats["size_class"] == small.max_train and model.reg == small.set["wmf_reg"]
    mine = model_settings(
        kind="wmf", dim=4, size_classes=[{"max_train": 10, "set": {"wmf_reg": 3.0}}]
    )
    assert fit_model(data, mine, seed=0)[1]["size_class"] is None  # 80 rows > 10
    with pytest.raises(ConfigError, match="not settings of kind wmf"):
        model_settings(kind="wmf", size_classes=[{"max_train": 10, "set": {"knn_k": 3}}])
    # a setting given explicitly wins over the kind's default classes, not over explicit ones
    assert model_settings(kind="wmf", wmf_reg=7.0).for_rows(10).wmf_reg == 7.0
    assert model_settings(kind="wmf", wmf_reg=7.0).for_rows(10).wmf_alpha == small.set["wmf_alpha"]
    assert mine.for_rows(10).wmf_reg == 3.0
    # ... and still after the JSON round trip the workers' configs make
    again = RunConfig.model_validate_json(
        RunConfig(model={"kind": "wmf", "wmf_reg": 7.0}).model_dump_json()
    )
    assert again.model.for_rows(10).wmf_reg == 7.0
    # another kind starts from its own defaults, not WMF's classes
    assert wmf.with_kind("bpr").size_classes == ()
