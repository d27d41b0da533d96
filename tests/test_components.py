"""Every registered sub-model and aggregator against the library's contract suites
(``recunlearn.testing``): adding a component is its module, one registry line and two lines
here."""

from typing import get_args

import pytest

from recunlearn.config import AggregatorConfig, load_config
from recunlearn.engines import PROJECT_ROOT
from recunlearn.errors import ConfigError
from recunlearn.models import MODELS, load_model, model_kind
from recunlearn.sharding.ensemble import AGGREGATORS, aggregator_kind, load_aggregator
from recunlearn.testing import AggregatorContract, ForgettableContract, SubModelContract
from recunlearn.unlearning.methods import METHODS, get_method


class TestPopularity(ForgettableContract):
    kind, personalised, tolerance = "popularity", False, 0.0


class TestEASE(ForgettableContract):
    kind, tolerance = "ease", 1e-9


class TestItemKNN(ForgettableContract):
    kind, tolerance = "itemknn", 0.0


class TestBPR(SubModelContract):
    kind = "bpr"


class TestWMF(SubModelContract):
    kind = "wmf"


class TestLightGCN(SubModelContract):
    kind = "lightgcn"


class TestNCF(SubModelContract):
    kind = "ncf"


class TestMeanAggregator(AggregatorContract):
    kind = "mean"


class TestAttentionAggregator(AggregatorContract):
    kind = "attention"


class TestLearnedWeights(AggregatorContract):
    kind = "learned"


def test_every_model_kind_has_a_contract_test():
    tested = {
        c.kind
        for c in globals().values()
        if isinstance(c, type)
        and issubclass(c, SubModelContract)
        and c is not SubModelContract
        and c is not ForgettableContract
    }
    assert tested == set(MODELS)
    forgets = {
        c.kind
        for c in globals().values()
        if isinstance(c, type)
        and issubclass(c, ForgettableContract)
        and c is not ForgettableContract
    }
    # WMF forgets by re-converging (equal to a refit only up to its tolerance): tested in test_wmf
    assert forgets | {"wmf"} == {k for k, m in MODELS.items() if m.forgets}


def test_registries_refuse_unknown_names():
    with pytest.raises(ValueError, match="unknown model kind 'nope'"):
        model_kind("nope")
    with pytest.raises(ValueError, match="unknown model kind"):
        load_model({"kind": "nope"})
    with pytest.raises(ValueError, match="names no model kind"):
        load_model({"user_keys": []})
    with pytest.raises(ValueError, match="unknown aggregator kind 'nope'"):
        load_aggregator({"kind": "nope"})
    with pytest.raises(ValueError, match="unknown unlearning method 'nope'"):
        get_method("nope")
    conf = PROJECT_ROOT / "conf" / "test.yaml"
    with pytest.raises(ConfigError, match="unknown model kind 'nope'"):
        load_config(conf, ["model.kind=nope"])
    with pytest.raises(ConfigError, match="unknown unlearning method 'nope'"):
        load_config(conf, ["unlearn.method=nope"])
    # the config's aggregator choices are the registry's (the config module stays torch-free)
    assert set(get_args(AggregatorConfig.model_fields["kind"].annotation)) == set(AGGREGATORS)
    assert aggregator_kind("mean").fit is None


def test_the_generic_in_place_method_takes_every_forgetting_model():
    conf = PROJECT_ROOT / "conf" / "test.yaml"
    assert get_method("inplace").models == {"wmf", "itemknn", "ease", "popularity"}
    assert (
        load_config(conf, ["model.kind=popularity", "unlearn.method=inplace"]).model.kind
        == "popularity"
    )
    with pytest.raises(ConfigError, match="updates"):
        load_config(conf, ["model.kind=bpr", "unlearn.method=inplace"])
    assert set(METHODS) >= {
        "exact",
        "scif",
        "influence",
        "finetune",
        "ascent",
        "als",
        "knn",
        "ease",
        "inplace",
    }
