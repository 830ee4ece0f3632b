"""The config schema declared once: docs/config.md lists exactly the declared keys and defaults;
``training_hash`` holds exactly the keys declared to shape training; a left-out key takes its
declared default; configs made before the declaration keep their three hashes (pinned by the
code of that time in tests/data/config_hashes.json) and a checkpoint that code trained is
reused; the model builder takes the resolved config."""
import copy
import dataclasses
import json
import re
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from data_fixtures import write_idx_dataset
from models import MODEL_SUBKEYS, build_model, build_model_from
from noise.placement import NOISE_SETTINGS_KEYS, REPETITION_KEYS
from util.config import (COHORT_DEFAULTS, COHORT_KEYS, DEFAULT_CONFIG, KEYS, WALK_DEFAULTS, WALK_KEYS, ConfigError,
                         config_hash, eval_noise_hash, merged_with_defaults, training_hash,
                         validate_config)
from util.config.schema import Data, General, Optimizer
from util.config.walk import LATE_KEYS
from util.config.weight_noise import WEIGHT_NOISE_DEFAULTS, WEIGHT_NOISE_KEYS
from util.engine.experiment import run_experiment

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "data"
HASHES = json.loads((FIXTURES / "config_hashes.json").read_text())
ALL_KEYS = (*KEYS, *WALK_KEYS, *WEIGHT_NOISE_KEYS, *COHORT_KEYS)


# ---- the documented schema is the declared one ----------------------------------------------

def documented_keys() -> dict[str, tuple[object, bool]]:
    """{key: (default, in training hash)} from the tables of docs/config.md."""
    rows = {}
    row = re.compile(r"^\| `([^`]+)` \| `([^`]*)` \| (yes|no) \|")
    for line in (ROOT / "docs" / "config.md").read_text().splitlines():
        m = row.match(line)
        if m:
            assert m.group(1) not in rows, f"docs/config.md lists {m.group(1)} twice"
            rows[m.group(1)] = (yaml.safe_load(m.group(2)), m.group(3) == "yes")
    return rows


def test_docs_config_md_lists_exactly_the_declared_keys_defaults_and_training_hash():
    documented = documented_keys()
    declared = {k.path: (k.default, k.training_hash) for k in ALL_KEYS}
    assert sorted(set(declared) - set(documented)) == [], "declared but not documented"
    assert sorted(set(documented) - set(declared)) == [], "documented but not declared"
    wrong = {p: (documented[p], declared[p]) for p in declared if documented[p] != declared[p]}
    assert wrong == {}


def test_the_doc_table_reader_sees_a_changed_default():
    """Guards the reader: the real file's rows are parsed to the values they show."""
    documented = documented_keys()
    assert documented["optimizer.lr"] == (0.001, True)
    assert documented["walk.sigma_range"] == ([0.01, 1e10], False)
    assert documented["general.weight_clamping"] == ({"min": None, "max": None}, True)
    assert len(documented) == len(ALL_KEYS) > 30


# ---- defaults and unknown keys are derived from the declaration ------------------------------

def test_default_config_is_the_declared_defaults_and_what_it_was_before():
    # what it was before, order too, plus the cohort section added after it (at the end) and
    # the walk keys declared later (at the walk section's end; config_hash leaves them out at
    # their defaults; the weight_noise section, left out of config_hash at its defaults too)
    before = {k: v for k, v in DEFAULT_CONFIG.items() if k not in ("cohort", "weight_noise")}
    assert list(before["walk"])[-len(LATE_KEYS):] == list(LATE_KEYS)
    before["walk"] = {k: v for k, v in before["walk"].items() if k not in LATE_KEYS}
    assert json.dumps(before) == json.dumps(HASHES["default_config"])
    assert list(DEFAULT_CONFIG)[-1] == "cohort" and DEFAULT_CONFIG["cohort"] == COHORT_DEFAULTS
    assert DEFAULT_CONFIG["weight_noise"] == WEIGHT_NOISE_DEFAULTS
    assert WALK_DEFAULTS == DEFAULT_CONFIG["walk"] == {k.name: k.default for k in WALK_KEYS}
    for key in KEYS:
        node = DEFAULT_CONFIG
        for part in key.path.split("."):
            node = node[part]
        assert node == key.default, key.path


def test_typed_sections_have_one_field_per_declared_key():
    for section, cls in (("general", General), ("optimizer", Optimizer), ("data", Data)):
        assert [f.name for f in dataclasses.fields(cls)] == \
            [k.name for k in KEYS if k.section == section]


def test_sub_sections_with_their_own_parsers_default_to_what_those_parsers_read():
    assert tuple(DEFAULT_CONFIG["noise_settings"]) == NOISE_SETTINGS_KEYS
    assert tuple(DEFAULT_CONFIG["model"]["LeNet"]) == MODEL_SUBKEYS
    assert tuple(DEFAULT_CONFIG["model"]["LeNet"]["repetition_config"]) == REPETITION_KEYS


@pytest.mark.parametrize("section", ["general", "optimizer", "data", "model", "walk", None])
def test_an_unknown_key_in_any_section_is_refused_naming_it(section):
    config = merged_with_defaults({})
    (config[section] if section else config)["bogus_key"] = 1
    with pytest.raises(ConfigError, match=rf"{section or 'config'}: unknown key 'bogus_key'"):
        validate_config(config, walk=True)


def resolved(vc):
    return {f.name: getattr(vc, f.name) for f in dataclasses.fields(vc) if f.name != "config"}


@pytest.mark.parametrize("key", [k.path for k in KEYS], ids=lambda p: p)
def test_a_left_out_key_takes_its_declared_default(key):
    full = merged_with_defaults({})
    partial = copy.deepcopy(full)
    *sections, name = key.split(".")
    node = partial
    for s in sections:
        node = node[s]
    del node[name]
    assert resolved(validate_config(partial)) == resolved(validate_config(full))


# ---- the training hash holds exactly the keys declared for it ------------------------------

MLP = {"model_class": "MLP", "MLP": {"conf_name": "RL_TFC"}}

#: another allowed value of every key (None: the default is the only one allowed)
OTHER = {
    "general.num_epochs": 2, "general.repeat_number": 1,
    "general.weight_clamping": {"min": -1.0, "max": 1.0}, "general.experiment_name": "other",
    "general.seed": 3, "general.train_repeat_number": 4,
    "optimizer.optimizer_type": None, "optimizer.lr_scheduler": "None", "optimizer.lr": 0.01,
    "data.dataset": "MNIST", "data.batch_size": 64, "data.root": "/tmp/other-data",
    "data.val_split": 0.1, "data.download": False,
    "model.model_class": MLP, "model.criterion": None, "model.weight_criterion": True,
    "model.LeNet": {"conf_name": "LeNet5", "repetition_config": {"global": 1}},
    "noise_settings": {"default": {"noise_type": "GaussAdd", "GaussStd": 0.1}},
    "artifact_root": "/tmp/other-artifacts", "device": "cpu",
    "walk.enabled": True, "walk.noise_type": "GaussMul", "walk.sigmas": [0.1, 1.0],
    "walk.sigma_key": "GaussStd", "walk.params": {"GaussMean": 0.5}, "walk.repeats": 2,
    "walk.sites": [0, 3], "walk.search": "midpoint", "walk.sigma_range": [0.1, 10.0],
    "walk.max_evals": 5, "walk.tolerance_decades": 0.1, "walk.eval_split": "test",
    "walk.chunk_size": 64, "walk.batch_evals": 2,
    "walk.train": True, "walk.sigma_factors": [0.5, 2.0], "walk.target": "weights",
    "weight_noise.default": {"noise_type": "GaussAdd", "GaussStd": 0.1},
    "weight_noise.layer_wise": {"layer_index": 1, "noise_type": "GaussMul", "GaussStd": 0.1},
    "weight_noise.layer_mapped": {"noise_type": "GaussAdd", "std_map": {0: 0.1}},
    "cohort.enabled": True, "cohort.members": [{"general": {"repeat_number": 1}}],
    "cohort.grid": {"noise_type": "GaussMul", "sites": [1], "sigmas": [0.1, 1.0]},
    "cohort.strategy": "vectorised", "cohort.max_members": 8,
}


#: what a key's other value needs beside it (walk.sigma_factors sets the σ of noisy training)
NEEDS = {"walk.eval_split": {"data": {"val_split": 0.2}},
         "walk.sigma_factors": {"walk": {"train": True}}}


def with_value(path, value):
    base = NEEDS.get(path, {})
    if path == "model.model_class":
        return merged_with_defaults({**base, "model": value})
    config = merged_with_defaults(base)
    *sections, name = path.split(".")
    node = config
    for s in sections:
        node = node.setdefault(s, {})
    node[name] = value
    return config


def test_every_declared_key_has_another_value_to_test_with():
    assert sorted(OTHER) == sorted(k.path for k in ALL_KEYS)


@pytest.mark.parametrize("key", ALL_KEYS, ids=lambda k: k.path)
def test_training_hash_changes_exactly_with_the_keys_declared_for_it(key):
    base = NEEDS.get(key.path, {})
    before = training_hash(validate_config(merged_with_defaults(base), walk=True))
    if OTHER[key.path] is None:  # one allowed value: nothing else can reach the hash
        with pytest.raises(ConfigError, match=re.escape(key.path)):
            validate_config(with_value(key.path, "Other"))
        return
    after = training_hash(validate_config(with_value(key.path, OTHER[key.path]), walk=True))
    assert (after != before) is key.training_hash


# ---- configs and a checkpoint made before the declaration -----------------------------------

@pytest.mark.parametrize("name", sorted(HASHES["cases"]))
def test_the_hashes_of_configs_made_before_are_unchanged(name):
    case = HASHES["cases"][name]
    vc = validate_config(case["config"], walk=True)
    assert (config_hash(case["config"]), training_hash(vc), eval_noise_hash(vc)) == \
        (case["config_hash"], case["training_hash"], case["eval_noise_hash"])
    assert config_hash(vc.config) == case["config_hash"]


def test_a_checkpoint_trained_before_is_reused_with_its_metrics(tmp_path):
    stored = json.loads((FIXTURES / "checkpoint_mlp" / "result.json").read_text())
    shutil.copytree(FIXTURES / "checkpoint_mlp" / "checkpoints", tmp_path / "art" / "checkpoints")
    write_idx_dataset(tmp_path / "data" / "MNIST" / "raw", n_train=64, n_test=32)
    config = merged_with_defaults(stored["updates"])
    config["data"]["root"], config["artifact_root"] = str(tmp_path / "data"), str(tmp_path / "art")
    result = run_experiment(config, progress=False)
    assert result["trained"] is False and result["checkpoint_source"] == "artifact_root"
    assert result["training_hash"] == stored["training_hash"]
    assert result["checkpoint_used"] == str(tmp_path / "art" / "checkpoints"
                                            / stored["training_hash"] / "final.pt")
    final = stored["final"]
    assert result["final"]["validation_accuracy"] == final["validation_accuracy"]
    assert result["final"]["validation_loss"] == pytest.approx(final["validation_loss"],
                                                               rel=1e-6)
    assert result["training"] == stored["history"]["training"]


# ---- the model builder takes the resolved config --------------------------------------------

def test_build_model_from_the_resolved_config_equals_build_model_from_the_dict():
    config = merged_with_defaults({
        "model": {"LeNet": {"conf_name": "LeNet5", "repetition_config": {
            "global": 2, "layer_wise_mapped": {3: 5}}}},
        "noise_settings": {"default": {"noise_type": "GaussAdd", "GaussStd": 0.1},
                           "layer_wise": {"layer_index": 4, "noise_type": "GaussMul",
                                          "GaussStd": 0.3}}})
    vc = validate_config(config)
    torch.manual_seed(1)
    a = build_model(config["model"], config["noise_settings"], (1, 28, 28), 10)
    torch.manual_seed(1)
    b = build_model_from(vc.model_class, vc.conf_name, vc.site_configs, vc.repetitions,
                         (1, 28, 28), 10)
    assert (b.model_class, b.conf_name) == ("LeNet", "LeNet5")
    assert [s.repetition for s in b.noise_sites] == list(vc.repetitions)
    assert [s.repetition for s in b.noise_sites][3:5] == [5, 2]
    assert [s.operator.config for s in b.noise_sites] == [s.operator.config
                                                          for s in a.noise_sites]
    assert type(b.noise_sites[4].operator.config).__name__ == "GaussMul"
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)


@pytest.mark.parametrize("given, expected", [(False, False), ("false", False), ("True", True),
                                             (0, False), (1, True)])
def test_a_true_or_false_key_reads_sacreds_command_line_strings(given, expected):
    vc = validate_config(merged_with_defaults({"data": {"download": given},
                                               "model": {"weight_criterion": given}}))
    assert vc.data.download is expected and vc.model.weight_criterion is expected
    with pytest.raises(ConfigError, match="data.download must be true or false, got 'no'"):
        validate_config(merged_with_defaults({"data": {"download": "no"}}))
