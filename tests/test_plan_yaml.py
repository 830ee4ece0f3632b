"""analysis.plan_yaml: the plan's seml YAML reads back exactly as it was built, and seml reads it."""
from pathlib import Path

import pytest
import yaml

from analysis.plan_yaml import build_plan_yaml, plan_document, plan_yaml
from analysis.repetition import repetition_plan
from util.config import merged_with_defaults

TRICKY = {
    "fixed": {"tiny": 1e-10, "tenth": 0.1, "huge": 1e10, "third": 1 / 3, "negative": -2.5e-7,
              "integer": 3, "zero": 0.0, "flag": False, "nothing": None,
              "looks_like_int": "12", "looks_like_float": "1e5", "looks_like_bool": "true",
              "yes": "yes", "off": "off", "null_text": "null", "empty": "",
              "punctuation": "a: b # c, [d] {e} 'f' \"g\"", "unicode": "σ_mid · 1:conv1",
              "padded": " x "},
    "grid": {"noise_settings.default.GaussStd": {"type": "choice",
                                                 "options": [1e-10, 0.1, 1e10, 0.123456789]}},
    "slurm": [{"sbatch_options": {"time": "1-00:00"}}],
    "plan_b2": {"fixed": {"model.MLP.repetition_config.layer_wise_mapped": [1, 2, 3, 2]}},
}


def _same(a, b) -> bool:
    """Equal values of equal types, recursively (== alone takes 1 == 1.0 == True)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def test_every_value_reads_back_exactly_with_its_type():
    text = plan_yaml(TRICKY, ["a header: with # and σ", ""])
    assert text.startswith("# a header: with # and σ\n#\n\n")
    back = yaml.safe_load(text)
    assert back == TRICKY and _same(back, TRICKY)
    # lists of scalars stay on one line: one R per site reads as a row
    assert "layer_wise_mapped: [1, 2, 3, 2]" in text


def _mlp_config() -> dict:
    return merged_with_defaults({
        "general": {"num_epochs": 2},
        "data": {"dataset": "FashionMNIST", "batch_size": 64},
        "model": {"model_class": "MLP", "MLP": {"conf_name": "RL_TFC-noBN"}}})


CONDITION = {"dataset": "FashionMNIST", "conf_name": "RL_TFC-noBN", "noise_type": "GaussAdd",
             "enable_in_training": False, "std_ratio": float("nan"), "order": None,
             "weight_clamping": "none", "placement": "layer_wise"}
SIGMA_MID = [0.05, 0.5, 1.0, 0.7, 1.3, 2.0, 3.0, 9.0]


def test_plan_document_holds_the_plans_and_reads_back_from_the_written_file(tmp_path):
    out = tmp_path / "plan.yaml"
    kwargs = dict(config=_mlp_config(), sigma_mid=SIGMA_MID, condition=CONDITION,
                  budgets=[2.0, 1.5], scalings=["inverse_sqrt"], sigmas=[1e-10, 0.123456789],
                  repeats=2, out_path=out)
    doc = plan_document(n_sites=8, **kwargs)
    text = build_plan_yaml(kinds=["crossing"] * 8, site_names=[f"{i}:s" for i in range(8)],
                           source="runs/", sigma_note="given", **kwargs)
    out.write_text(text)
    assert yaml.safe_load(out.read_text()) == doc
    assert list(doc)[4:] == ["inverse_sqrt_b2", "uniform_b2", "inverse_sqrt_b1p5"]
    assert doc["inverse_sqrt_b2"]["fixed"][
        "model.MLP.repetition_config.layer_wise_mapped"] == repetition_plan(SIGMA_MID, 2.0,
                                                                            "inverse_sqrt")
    assert doc["grid"]["noise_settings.default.GaussStd"]["options"] == [1e-10, 0.123456789]
    assert (out.parent / doc["seml"]["project_root_dir"]).resolve() == \
        Path(__file__).resolve().parent.parent
    assert "# 3 plans x 2 σ x 2 repeats" in text and "# σ_mid per site: 0:s 0.05" in text


def test_seml_expands_the_written_plan_with_the_exact_sigmas(tmp_path):
    validate_configs = pytest.importorskip("util.validate_configs")
    out = tmp_path / "plan.yaml"
    out.write_text(build_plan_yaml(
        config=_mlp_config(), sigma_mid=SIGMA_MID, kinds=["crossing"] * 8,
        site_names=[f"{i}:s" for i in range(8)], condition=CONDITION, budgets=[2.0],
        scalings=["inverse_sqrt"], sigmas=[1e-10, 0.123456789, 1e10], repeats=1,
        source="runs/", out_path=out))
    report = validate_configs.validate_file(out)
    assert report.problems == [] and report.n_experiments == 2 * 3
    configs = [e.config for e in validate_configs.expand_file(out).experiments]
    assert sorted({c["noise_settings"]["default"]["GaussStd"] for c in configs}) == \
        [1e-10, 0.123456789, 1e10]
    assert {tuple(c["model"]["MLP"]["repetition_config"]["layer_wise_mapped"])
            for c in configs} == {tuple(repetition_plan(SIGMA_MID, 2.0, "inverse_sqrt")),
                                  (2,) * 8}
