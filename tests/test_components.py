"""Every registered sub-model and aggregator against the library's contract suites
(``recunlearn.testing``): adding a component is its module, one registry line and two lines
here."""

from typing import get_args

import numpy as np
import pytest

from recunlearn.config import AggregatorConfig, ShardingConfig, load_config
from recunlearn.engines import PROJECT_ROOT
from recunlearn.errors import ConfigError
from recunlearn.models import MODELS, load_model, model_kind
from recunlearn.sharding.ensemble import AGGREGATORS, aggregator_kind, load_aggregator
from recunlearn.sharding.partition import PARTITIONERS, partition_with
from recunlearn.testing import (
    AggregatorContract,
    ForgettableContract,
    SubModelContract,
    UnlearningMethodContract,
)
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


def _tested(contract: type, attr: str) -> set[str]:
    """The values of ``attr`` over this module's concrete subclasses of ``contract``."""
    mixins = (SubModelContract, ForgettableContract, UnlearningMethodContract, AggregatorContract)
    return {
        getattr(c, attr)
        for c in globals().values()
        if isinstance(c, type) and issubclass(c, contract) and c not in mixins
    }


def test_every_model_kind_has_a_contract_test():
    assert _tested(SubModelContract, "kind") == set(MODELS)
    # WMF forgets by re-converging (equal to a refit only up to its tolerance): tested in test_wmf
    forgets = {k for k, m in MODELS.items() if m.forgets}
    assert _tested(ForgettableContract, "kind") | {"wmf"} == forgets
    assert _tested(AggregatorContract, "kind") == set(AGGREGATORS)


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
    with pytest.raises(ValueError, match="unknown partitioner 'nope'"):
        partition_with("nope", np.zeros((4, 2)), 2, np.random.default_rng(0), None)
    # the config's aggregator and partitioner choices are the registries' (the config module
    # stays torch-free)
    assert set(get_args(AggregatorConfig.model_fields["kind"].annotation)) == set(AGGREGATORS)
    assert set(get_args(ShardingConfig.model_fields["method"].annotation)) == set(PARTITIONERS)
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


class TestExactRetrain(UnlearningMethodContract):
    method = "exact"


class TestExactRetrainOfEASEShards(UnlearningMethodContract):
    method, kind = "exact", "ease"


class TestSCIF(UnlearningMethodContract):
    method = "scif"


class TestFineTune(UnlearningMethodContract):
    method = "finetune"


class TestKNNInPlace(UnlearningMethodContract):
    method, kind = "knn", "itemknn"


class TestEASEInPlace(UnlearningMethodContract):
    method, kind, tolerance = "ease", "ease", 1e-9


class TestALSInPlace(UnlearningMethodContract):
    method, kind, equals_refit = "als", "wmf", False  # exact by its convergence test (test_wmf)


class TestPopularityInPlace(UnlearningMethodContract):
    method, kind = "inplace", "popularity"


def test_every_method_has_a_contract_test():
    # influence and ascent share scif's and finetune's update path (Approximate) and are
    # tested in test_fast_bpr against their own figures
    assert _tested(UnlearningMethodContract, "method") | {"influence", "ascent"} == set(METHODS)
