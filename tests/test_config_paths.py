"""util.config_paths: dotted paths into nested configs and documents, and the one matcher that
the local runner's --filter, the config check and the run-store reader of the analysis share."""
import pytest

from util.config_paths import MISSING, matches, matches_query, value_at

CONFIG = {"model": {"LeNet": {"conf_name": "LeNet5-BN"}},
          "noise": {"GaussStd": 0.30000000000000004, "layer_index": 4, "flag": True,
                    "off": None, "sigmas": [0.1, 0.2, {"deep": 7}], "name": "1"}}


def test_value_at_reads_nested_keys_and_list_indices():
    assert value_at(CONFIG, "model.LeNet.conf_name") == "LeNet5-BN"
    assert value_at(CONFIG, "model.LeNet") == {"conf_name": "LeNet5-BN"}
    assert value_at(CONFIG, "noise.sigmas.1") == 0.2
    assert value_at(CONFIG, "noise.sigmas.2.deep") == 7


def test_value_at_tells_a_missing_key_from_a_none_value():
    assert value_at(CONFIG, "noise.off") is None
    for path in ("noise.GaussMean", "model.MLP.conf_name", "noise.sigmas.3",
                 "noise.sigmas.x", "noise.sigmas.-1", "noise.GaussStd.value",
                 "noise.off.value", "noise.name.0"):
        assert value_at(CONFIG, path) is MISSING, path
    assert value_at(None, "a") is MISSING
    assert repr(MISSING) == "<missing>"


def test_numbers_match_within_1e_9_and_never_a_string():
    assert matches(0.30000000000000004, 0.3) and matches(4, 4.0)
    assert not matches(0.3001, 0.3) and not matches(1e-9, 2e-9)
    assert not matches("1", 1) and not matches(1, "1") and not matches("0.3", 0.3)
    # a flag written 0/1 in a YAML is the bool a user filters by, as in Python
    assert matches(0, False) and matches(True, 1.0) and not matches(True, 0)


def test_none_matches_only_none_and_a_missing_key_nothing():
    assert matches(None, None)
    assert not matches(None, 0) and not matches(0, None)
    assert not matches(MISSING, None) and not matches(MISSING, MISSING)


def test_a_list_matches_one_of_its_elements_or_the_whole_list():
    assert matches([1, 2], 2) and matches([1, 2], 2.0)
    assert matches([1, 2], [1, 2]) and matches([1.0, 2.0], [1, 2])
    assert matches([[1, 2], 3], [1, 2])
    assert not matches([1, 2], [2, 1]) and not matches([1, 2], 3) and not matches(2, [2])
    assert matches({"a": [0.1]}, {"a": [0.1 + 1e-12]}) and not matches({"a": 1}, {"b": 1})


def test_filter_matching_follows_mongodb_semantics():
    doc = {"_id": 3, "config": {"a": {"b": [1, 2]}, "c": None}, "status": "COMPLETED"}
    assert matches_query(doc, {"config.a.b": 2})           # an array matches one of its elements
    assert matches_query(doc, {"config.a.b.0": 1})
    assert matches_query(doc, {"config.c": None, "_id": {"$gt": 2, "$lte": 3}})
    assert not matches_query(doc, {"config.x": {"$exists": True}})
    assert matches_query(doc, {"config.x": {"$ne": 5}})
    with pytest.raises(ValueError, match=r"\$regex.*not supported"):
        matches_query(doc, {"status": {"$regex": "COMP"}})


def test_query_operators_on_missing_keys_none_and_mixed_types():
    doc = {"config": CONFIG}
    assert matches_query(doc, {"config.noise.layer_index": {"$in": [3, 4]}})
    assert not matches_query(doc, {"config.noise.layer_index": {"$nin": [4.0]}})
    assert matches_query(doc, {"config.noise.missing": {"$nin": [4]}})
    assert matches_query(doc, {"config.noise.missing": {"$exists": False},
                               "config.noise.off": {"$exists": True}})
    # an order against None, a missing key or another type matches nothing
    for path in ("config.noise.off", "config.noise.missing", "config.noise.name"):
        assert not matches_query(doc, {path: {"$gte": 0}}), path
    assert matches_query(doc, {"config.noise.GaussStd": {"$gt": 0.3 - 1e-6, "$lt": 0.31}})
    assert matches_query(doc, {"$or": [{"config.noise.flag": 0}, {"config.noise.flag": True}]})
    assert not matches_query(doc, {"$and": [{"config.noise.flag": True},
                                            {"config.noise.name": 1}]})
    with pytest.raises(ValueError, match=r"'\$where'.*not supported"):
        matches_query(doc, {"$where": "1"})


def test_a_dict_of_plain_keys_is_a_value_not_operators():
    doc = {"config": {"model": {"LeNet": {"conf_name": "LeNet5"}}}}
    assert matches_query(doc, {"config.model": {"LeNet": {"conf_name": "LeNet5"}}})
    assert not matches_query(doc, {"config.model": {"LeNet": {"conf_name": "LeNet5-BN"}}})
