"""The shipped seml YAMLs (experiment_configs/) against the paper's experiment list, the offline
validator on broken YAMLs, and the seml settings / conda environment files."""
import math
import multiprocessing
import re
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
import yaml

from util import validate_configs as vcf
from util.config import strip_bookkeeping

pytestmark = pytest.mark.filterwarnings("ignore:pkg_resources is deprecated")

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "experiment_configs"
SHIPPED = sorted(CONFIGS.rglob("*.yaml"))

SITES = {"LeNet5": 12, "LeNet5-BN": 16, "RL_TFC-noBN": 8, "RL_TFC": 11, "CNN-S": 8,
         "CNN-S-BN": 11}
FAMILY_CONFS = {"LeNet": ["LeNet5", "LeNet5-BN", "LeNet5-BN-noNoise"],
                "MLP": ["RL_TFC-noBN", "RL_TFC", "RL_TFC-BN-noNoise"],
                "CNN": ["CNN-S", "CNN-S-BN", "CNN-S-BN-noNoise"]}
MODEL_CLASS = {"LeNet": "LeNet", "MLP": "MLP", "CNN": "CNN_HE"}
# dataset: ({family: epochs}, lr, batch size, weighted cross entropy, no-noise repeats)
TABLE = {"MNIST": ({"LeNet": 50, "MLP": 100}, 1e-3, 128, False, 10),
         "FashionMNIST": ({"LeNet": 200, "MLP": 250}, 1e-3, 128, False, 6),
         "CIFAR10": ({"LeNet": 300, "MLP": 200}, 1e-3, 128, False, 10),
         "SVHN": ({"LeNet": 200, "MLP": 300}, 1e-3, 128, False, 6),
         "GSC2": ({"CNN": 150, "MLP": 150}, 5e-4, 512, True, 10)}
RATIOS = [0.01, 0.1, 0.5, 0.9, 0.99]
MAX_RATIOS = [0.001, 0.00316, 0.01, 0.0316, 0.1, 0.25, 0.5, 0.75, 0.9, 0.93, 0.968, 0.99,
              0.9932, 0.9968, 0.999, 0.99932, 0.99968, 0.9999, 0.99993, 0.99999]
SIGMA_MID = {("CIFAR10", "LeNet5-BN"): 0.197, ("CIFAR10", "LeNet5"): 0.25,
             ("MNIST", "LeNet5-BN"): 0.238, ("MNIST", "LeNet5"): 0.607,
             ("CIFAR10", "RL_TFC"): 0.333, ("CIFAR10", "RL_TFC-noBN"): 1.634,
             ("MNIST", "RL_TFC"): 0.35, ("MNIST", "RL_TFC-noBN"): 0.471}


def log_grid(lo_exp, hi_exp, per_decade):
    n = (hi_exp - lo_exp) * per_decade + 1
    return [10 ** (lo_exp + i / per_decade) for i in range(n)]


def lin_grid(lo, hi, step=0.1):
    return [lo + i * step for i in range(round((hi - lo) / step) + 1)]


def expected_files():
    """{relative path: number of experiments after seml's duplicate removal} from the issue."""
    out = {}
    for ds, (epochs, *_, reps) in TABLE.items():
        mnist = ds == "MNIST"
        n_add = len(log_grid(-2, 8 if mnist else 10, 4))          # 41 / 49
        n_mul_lin = len(lin_grid(0, 6 if mnist else 2))            # 61 / 21
        per_site = 2 * n_add + n_mul_lin + len(log_grid(0, 10, 4)) + len(log_grid(-2, 10, 2)) * 5
        for fam in epochs:
            out[f"{ds}/{fam}_no_noise.yaml"] = 3 * reps * 2
            for conf in FAMILY_CONFS[fam][:2]:
                # sites x training {0, 1} x repeats 3..5 x σ points, minus GaussMul σ=1 twice
                out[f"{ds}/{conf}_layer_wise.yaml"] = SITES[conf] * 2 * 3 * (per_site - 1)
            mul_hi = 3 if fam == "CNN" or (fam == "MLP" and not mnist) else 2
            per_conf = len(log_grid(-2, 2, 4)) + len(lin_grid(0, mul_hi)) \
                + len(log_grid(-2, 2, 4)) * 5
            out[f"{ds}/{fam}_global.yaml"] = 3 * 2 * 3 * per_conf
            if ds in ("MNIST", "CIFAR10", "GSC2"):
                out[f"{ds}/{fam}_max_noise.yaml"] = 6 * (1 + 1 + 20 * 2)
    out["CIFAR10/LeNet5-BN_combined_site5.yaml"] = 5 * (35 * 35 * 2 + 25 * 25 * 2)
    for ds in ("MNIST", "CIFAR10"):
        for fam in ("LeNet", "MLP"):
            reps = 400 if (ds, fam) == ("MNIST", "LeNet") else 100
            out[f"multi_run_layers/{ds}_{fam}_uniform.yaml"] = 2 * 7 * reps
    out["examples/tiny_mnist.yaml"] = 9
    out["examples/resnet18_cifar10_walk.yaml"] = 3   # repeats
    out["walks/FashionMNIST.yaml"] = 4 * 3 * 2   # models x repeats x noise types
    # models x repeats x (GaussAdd, clamped GaussAdd, GaussMul, GaussCombined x 5 ratios)
    out["walks/FashionMNIST_noisy_training.yaml"] = 2 * 3 * 8
    return out


def _flat(d, prefix=""):
    for k, v in d.items():
        if isinstance(v, dict) and v:
            yield from _flat(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def summarize(path: Path) -> dict:
    """Expand and validate one file; collect every value each key takes per sub-experiment."""
    expansion = vcf.expand_file(path)
    errors, values, first_of = [], {}, {}
    for exp in expansion.experiments:
        message = vcf.check(exp)
        if message:
            errors.append(f"{exp.describe()}: {message}")
        if exp.sub_experiment not in first_of:  # the keys that do not vary, once per block
            first_of[exp.sub_experiment] = exp
            for key, value in _flat(strip_bookkeeping(exp.config)):
                values.setdefault((exp.sub_experiment, key), {})[repr(value)] = value
        for key, value in exp.grid_values:
            values.setdefault((exp.sub_experiment, key), {})[repr(value)] = value
    return {"n": len(expansion.experiments), "n_expanded": expansion.n_expanded,
            "errors": errors[:20], "n_errors": len(errors),
            "values": {k: list(vs.values()) for k, vs in values.items()}}


@pytest.fixture(scope="module")
def shipped():
    """Every shipped YAML expanded and validated, two processes at a time (~445k experiments)."""
    import models  # noqa: F401  (torch and the model registry, imported once before forking)
    ctx = multiprocessing.get_context("fork")
    order = sorted(SHIPPED, key=lambda p: -p.stat().st_size)
    with ProcessPoolExecutor(max_workers=2, mp_context=ctx) as pool:
        results = dict(zip(order, pool.map(summarize, order)))
    return {str(p.relative_to(CONFIGS)): results[p] for p in SHIPPED}


def values(summary, key, sub=None):
    """Sorted distinct values of ``key`` over the sub-experiment(s)."""
    out = set()
    for (s, k), vs in summary["values"].items():
        if k == key and (sub is None or s == sub):
            out.update(vs)
    return sorted(out, key=lambda v: (str(type(v)), v))


def close(a, b):
    return len(a) == len(b) and all(math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-12)
                                    for x, y in zip(a, b))


# ---- the shipped files --------------------------------------------------------------------

def test_every_shipped_yaml_expands_and_validates(shipped):
    bad = {f: s["errors"] for f, s in shipped.items() if s["n_errors"]}
    assert not bad


def test_experiment_counts_are_the_issues(shipped):
    counts = {f: s["n"] for f, s in shipped.items()}
    assert counts == expected_files()
    assert sum(counts.values()) == 445237 + 24 + 48 + 3


def test_layer_wise_walks_every_site_of_its_model_and_no_more(shipped):
    files = [f for f in shipped if f.endswith("_layer_wise.yaml")]
    assert len(files) == 20
    for f in files:
        conf = Path(f).name.removesuffix("_layer_wise.yaml")
        assert values(shipped[f], "noise_settings.layer_wise.layer_index") \
            == list(range(SITES[conf])), f
        assert values(shipped[f], "noise_settings.layer_wise.enable_in_training") == [0, 1]
        assert values(shipped[f], "general.repeat_number") == [3, 4, 5]


def test_walks_reuse_the_no_noise_models_and_walk_every_site(shipped):
    from util.config import training_hash, validate_config

    def hashes(rel):
        return {training_hash(validate_config(e.config))
                for e in vcf.expand_file(CONFIGS / rel).experiments}

    s = shipped["walks/FashionMNIST.yaml"]
    assert values(s, "walk.enabled") == [True] and values(s, "walk.search") == ["midpoint"]
    assert values(s, "walk.sites") == [None]   # every site of the model
    assert values(s, "walk.noise_type") == ["GaussAdd", "GaussMul"]
    walks = hashes("walks/FashionMNIST.yaml")
    assert len(walks) == 4 * 3  # one trained model per (model, repeat), shared by noise types
    assert walks <= hashes("FashionMNIST/LeNet_no_noise.yaml") | \
        hashes("FashionMNIST/MLP_no_noise.yaml")


def test_layer_wise_noise_grids(shipped):
    for f in (f for f in shipped if f.endswith("_layer_wise.yaml")):
        s, mnist = shipped[f], f.startswith("MNIST/")
        key = "noise_settings.layer_wise.GaussStd"
        add = log_grid(-2, 8 if mnist else 10, 4)
        assert close(values(s, key, "gauss_add"), add), f
        assert close(values(s, key, "gauss_add_weight_clamped"), add), f
        assert values(s, "general.weight_clamping.min", "gauss_add_weight_clamped") == [-1.0]
        assert values(s, "general.weight_clamping.max", "gauss_add_weight_clamped") == [1.0]
        assert values(s, "general.weight_clamping.min", "gauss_add") == [None]
        assert close(values(s, key, "gauss_mul_linear"), lin_grid(0, 6 if mnist else 2))
        # σ = 1 is in both GaussMul grids; seml keeps it once, in gauss_mul_linear (first)
        assert close(values(s, key, "gauss_mul_log"), log_grid(0, 10, 4)[1:])
        assert close(values(s, "noise_settings.layer_wise.StdAmplitude", "gauss_combined"),
                     log_grid(-2, 10, 2))
        assert values(s, "noise_settings.layer_wise.StdRatio", "gauss_combined") == RATIOS
        assert values(s, "noise_settings.layer_wise.FirstMulThenAdd", "gauss_combined") == [1]
        assert values(s, "noise_settings.default.noise_type") == ["NoNoise"]


def test_training_settings_follow_the_papers_table(shipped):
    for f, s in shipped.items():
        ds = f.split("/")[0]
        if ds not in TABLE:
            continue
        epochs, lr, batch, weighted, _ = TABLE[ds]
        (model_class,) = values(s, "model.model_class")
        (fam,) = [fam for fam, mc in MODEL_CLASS.items() if mc == model_class]
        assert values(s, "data.dataset") == [ds], f
        assert values(s, "general.num_epochs") == [epochs[fam]], f
        assert values(s, "optimizer.lr") == [lr], f
        assert values(s, "data.batch_size") == [batch], f
        assert values(s, "model.weight_criterion") == [weighted], f
        assert values(s, "optimizer.optimizer_type") == ["Adam"]
        assert values(s, "optimizer.lr_scheduler") == ["CosineAnnealingLR"]


def test_no_noise_baselines_cover_every_conf_name_plain_and_clamped(shipped):
    for ds, (epochs, *_, reps) in TABLE.items():
        for fam in epochs:
            s = shipped[f"{ds}/{fam}_no_noise.yaml"]
            assert values(s, f"model.{MODEL_CLASS[fam]}.conf_name") == sorted(FAMILY_CONFS[fam])
            assert values(s, "general.repeat_number") == list(range(reps))
            assert values(s, "general.weight_clamping.min", "weight_clamped") == [-1.0]
            assert values(s, "general.weight_clamping.min", "plain") == [None]
            assert values(s, "noise_settings.default.noise_type") == ["NoNoise"]


def test_global_noise_at_every_site_for_every_conf_name(shipped):
    for f in (f for f in shipped if f.endswith("_global.yaml")):
        s = shipped[f]
        ds, fam = f.split("/")[0], Path(f).name.split("_")[0]
        assert values(s, f"model.{MODEL_CLASS[fam]}.conf_name") == sorted(FAMILY_CONFS[fam])
        assert values(s, "noise_settings.layer_wise") == [None]
        assert values(s, "noise_settings.default.enable_in_training") == [0, 1]
        key = "noise_settings.default.GaussStd"
        assert close(values(s, key, "gauss_add"), log_grid(-2, 2, 4))
        mul_hi = 3 if fam == "CNN" or (fam == "MLP" and ds != "MNIST") else 2
        assert close(values(s, key, "gauss_mul"), lin_grid(0, mul_hi)), f
        assert close(values(s, "noise_settings.default.StdAmplitude", "gauss_combined"),
                     log_grid(-2, 2, 4))
        assert values(s, "noise_settings.default.StdRatio", "gauss_combined") == RATIOS


def test_max_noise_on_bn_models_with_noisy_training_only(shipped):
    files = sorted(f for f in shipped if f.endswith("_max_noise.yaml"))
    assert [f.split("/")[0] for f in files] == ["CIFAR10"] * 2 + ["GSC2"] * 2 + ["MNIST"] * 2
    for f in files:
        s = shipped[f]
        (model_class,) = values(s, "model.model_class")
        (conf,) = values(s, f"model.{model_class}.conf_name")
        assert conf in ("LeNet5-BN", "RL_TFC", "CNN-S-BN")
        assert values(s, "noise_settings.default.enable_in_training") == [1]
        assert values(s, "general.repeat_number") == list(range(6))
        assert values(s, "noise_settings.default.GaussStd") == [1e10]
        assert values(s, "noise_settings.default.StdAmplitude") == [1e10]
        assert values(s, "noise_settings.default.StdRatio") == MAX_RATIOS
        assert values(s, "noise_settings.default.FirstMulThenAdd", "gauss_combined") == [0, 1]


def test_combined_noise_at_site_5_of_cifar10_lenet5_bn(shipped):
    s = shipped["CIFAR10/LeNet5-BN_combined_site5.yaml"]
    assert values(s, "noise_settings.layer_wise.layer_index") == [5]
    assert values(s, "noise_settings.layer_wise.enable_in_training") == [1]
    assert values(s, "noise_settings.layer_wise.FirstMulThenAdd") == [0, 1]
    assert close(values(s, "noise_settings.layer_wise.StdAmplitude"), log_grid(-4, 13, 2))
    ratios = values(s, "noise_settings.layer_wise.StdRatio", "amplitude_ratio")
    small = [10.0 ** -k for k in range(17, 0, -1)]
    assert close(ratios, small + [0.5] + [1 - r for r in reversed(small)])
    for key in ("GaussStdMul", "GaussStdAdd"):
        assert close(values(s, f"noise_settings.layer_wise.{key}", "direct"), lin_grid(0.1, 2.5))


def test_multi_run_layers_uniform_repetition_at_global_sigma_mid(shipped):
    for (ds, conf), sigma in SIGMA_MID.items():
        fam = "LeNet" if conf.startswith("LeNet") else "MLP"
        s = shipped[f"multi_run_layers/{ds}_{fam}_uniform.yaml"]
        sub = conf.replace("-", "_")
        assert values(s, f"model.{fam}.conf_name", sub) == [conf]
        assert values(s, "noise_settings.default.GaussStd", sub) == [sigma]
        assert values(s, f"model.{fam}.repetition_config.global", sub) == [1, 2, 3, 5, 7, 10, 20]
        reps = 400 if (ds, fam) == ("MNIST", "LeNet") else 100
        assert values(s, "general.repeat_number", sub) == list(range(reps))
        assert values(s, "noise_settings.default.enable_in_training") == [0]
        assert values(s, "noise_settings.default.noise_type") == ["GaussAdd"]


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_file_has_the_seml_block_and_a_slurm_entry_without_gpu(path):
    raw = yaml.safe_load(path.read_text())
    seml = raw["seml"]
    assert seml["executable"] == "train.py"
    for key in ("name", "description", "output_dir", "project_root_dir"):
        assert seml.get(key), key
    assert (path.parent / seml["project_root_dir"]).resolve() == ROOT
    assert isinstance(raw["slurm"], list) and raw["slurm"]
    for entry in raw["slurm"]:
        assert "experiments_per_job" not in entry  # it comes from seml's settings
        assert "gres" not in (entry.get("sbatch_options") or {})
    assert "random" not in raw and "${" not in path.read_text()


# ---- the validator on broken files --------------------------------------------------------

def write_yaml(path: Path, body: str, seml_extra: str = "  description: broken on purpose\n"):
    path.write_text(f"seml:\n  executable: train.py\n  name: broken\n{seml_extra}"
                    f"  output_dir: logs\n  project_root_dir: {ROOT}\nslurm:\n"
                    f"  - sbatch_options: {{}}\n{body}")
    return path


BASE = """fixed:
  data.dataset: MNIST
  model.model_class: LeNet
  model.LeNet.conf_name: LeNet5
"""


@pytest.mark.parametrize("block, expected", [
    ("""  noise_settings.layer_wise.noise_type: GaussAdd
  noise_settings.layer_wise.GaussStd: 0.1
 grid:
  noise_settings.layer_wise.layer_index:
   type: range
   min: 0
   max: 13
   step: 1
""", [r"noise_settings\.layer_wise\.layer_index: site index 12 is out of range .* 12 sites",
      r"1 experiment, e\.g\. bad #\d+ \(noise_settings\.layer_wise\.layer_index=12\)"]),
    ("""  noise_settings.default.noise_type: GaussAdd
 grid:
  noise_settings.default.GaussStd:
   type: choice
   options: [0.1, -0.5]
""", [r"GaussStd' must be >= 0.0, got -0.5", r"GaussStd=-0\.5"]),
    ("""  noise_settings.default.noise_type: GaussAdded
  noise_settings.default.GaussStd: 0.1
""", [r"unknown noise_type 'GaussAdded'; known: \[.*'GaussAdd'"]),
    ("""  noise_settings.default.noise_type: GaussAdd
  noise_settings.default.GausStd: 0.1
""", [r"unknown key 'GausStd' .* allowed keys: .*'GaussStd'"]),
    ("""  general.num_epoch: 3
""", [r"general: unknown key 'num_epoch'; allowed: \['num_epochs'"]),
    ("""  data.dataset: CIFAR100
""", [r"data\.dataset 'CIFAR100' is unknown; allowed: \[.*'CIFAR10'"]),
], ids=["site_past_the_model", "negative_sigma", "unknown_noise_type", "misspelled_noise_key",
        "misspelled_general_key", "unknown_dataset"])
def test_validator_names_file_sub_experiment_and_key_of_each_error(block, expected, tmp_path,
                                                                   capsys):
    good = write_yaml(tmp_path / "good.yaml", BASE)
    bad = write_yaml(tmp_path / "bad.yaml", BASE + "ok:\n fixed:\n  general.num_epochs: 2\n"
                     + "bad:\n fixed:\n" + block)
    code = vcf.main([str(good), str(bad), "-j", "1"])
    out = capsys.readouterr().out
    assert code == 1
    assert re.search(r"good\.yaml: 1 experiments\s+OK", out)
    errors = [line for line in out.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "bad.yaml: [bad]" in errors[0], out
    for pattern in expected:
        assert re.search(pattern, errors[0]), errors[0]
    assert "1 error(s) in 1 file(s)" in out


@pytest.mark.parametrize("text, expected", [
    ("fixed:\n  data.dataset: MNIST\ngrid:\n  optimizer.lr:\n    type: logspace\n"
     "    min: 1.0e-4\n    max: 1.0e-2\n    num: 3\n", "Parameter logspace not implemented"),
    ("fixed:\n  data.dataset: MNIST\n  data.dataset: SVHN\n", "duplicate"),
    ("fixed: [not, a, mapping]\n", "No parameters defined"),
], ids=["unknown_grid_type", "duplicate_key", "no_parameters"])
def test_validator_reports_files_seml_cannot_expand(text, expected, tmp_path):
    report = vcf.validate_file(write_yaml(tmp_path / "x.yaml", text))
    assert not report.ok and expected in str(report.problems[0]), report.problems


def test_validator_requires_a_description_and_a_slurm_entry(tmp_path):
    no_description = write_yaml(tmp_path / "a.yaml", BASE, seml_extra="")
    report = vcf.validate_file(no_description)
    assert "seml.description" in str(report.problems[0])
    no_slurm = tmp_path / "b.yaml"
    no_slurm.write_text(write_yaml(tmp_path / "c.yaml", BASE).read_text()
                        .replace("slurm:\n  - sbatch_options: {}\n", ""))
    assert "slurm" in str(vcf.validate_file(no_slurm).problems[0])


def test_expansion_matches_sacreds_own_resolution_of_the_config():
    """What the validator checks is what train.py gets: seml's resolve_configs runs sacred,
    and seml add's sanity check (check_config) accepts the resolved configs."""
    from seml.experiment.config import check_config, resolve_configs
    picked = []
    for name in ("examples/tiny_mnist.yaml", "GSC2/CNN-S-BN_layer_wise.yaml",
                 "multi_run_layers/MNIST_MLP_uniform.yaml", "MNIST/LeNet_no_noise.yaml"):
        exps = vcf.expand_file(CONFIGS / name).experiments
        picked += exps[:2] + exps[len(exps) // 2:len(exps) // 2 + 1] + exps[-2:]
    resolved = resolve_configs("train.py", None, [e.updates for e in picked],
                               [[] for _ in picked], str(ROOT))
    for exp, config in zip(picked, resolved):
        assert strip_bookkeeping(config) == strip_bookkeeping(exp.config), exp.describe()
    check_config("train.py", None, resolved, str(ROOT))


def test_duplicates_are_dropped_like_seml_add():
    exps = vcf.expand_file(CONFIGS / "MNIST" / "RL_TFC-noBN_layer_wise.yaml")
    assert exps.n_expanded - len(exps.experiments) == 8 * 2 * 3  # GaussMul σ = 1 twice
    assert len({e.config_hash for e in exps.experiments}) == len(exps.experiments)


# ---- seml settings and environment files --------------------------------------------------

def test_settings_example_gives_ten_experiments_per_gpu_job_only_when_installed(monkeypatch,
                                                                               tmp_path):
    import seml.experiment.config as seml_config
    from seml.settings import SETTINGS
    from seml.utils import merge_dicts

    namespace = {}
    exec((ROOT / "seml_settings_example.py").read_text(), namespace)
    _, slurm, _ = seml_config.read_config(str(CONFIGS / "MNIST" / "LeNet_no_noise.yaml"))
    plain = seml_config.assemble_slurm_config_dict(dict(slurm[0]))
    assert plain["experiments_per_job"] == 1 and "gres" not in plain["sbatch_options"]

    merged = merge_dicts(SETTINGS.toDict(), namespace["SETTINGS"])
    monkeypatch.setattr(SETTINGS, "SLURM_DEFAULT", merged["SLURM_DEFAULT"])
    gpu = seml_config.assemble_slurm_config_dict(dict(slurm[0]))
    assert gpu["experiments_per_job"] == 10
    assert gpu["sbatch_options"]["gres"] == "gpu:1"
    own_time = slurm[0]["sbatch_options"]["time"]
    assert gpu["sbatch_options"]["time"] == own_time  # the YAML's own limit still wins

    # the settings file's recipe for sending one YAML to CPU nodes
    cpu_yaml = write_yaml(tmp_path / "cpu.yaml", BASE).read_text().replace(
        "sbatch_options: {}", "sbatch_options:\n      partition: cpu\n      gres: !remove")
    (tmp_path / "cpu.yaml").write_text(cpu_yaml)
    _, slurm, _ = seml_config.read_config(str(tmp_path / "cpu.yaml"))
    cpu = seml_config.assemble_slurm_config_dict(dict(slurm[0]))
    assert "gres" not in cpu["sbatch_options"] and cpu["sbatch_options"]["partition"] == "cpu"
    assert cpu["experiments_per_job"] == 10


def _names(specs):
    out = {}
    for spec in specs:
        name = re.split(r"[<>=!~ ]", spec.strip(), maxsplit=1)[0].lower()
        out[{"pytorch": "torch"}.get(name, name)] = spec.strip()[len(name):].replace(" ", "")
    return out


def test_conda_environment_lists_the_same_packages_as_requirements():
    req = [line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text()
           .splitlines()]
    env = yaml.safe_load((ROOT / "seml_pyt-tf_environment.yml").read_text())
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    pip = [p for d in env["dependencies"] if isinstance(d, dict) for p in d.get("pip", [])]
    listed = _names(conda + pip)
    listed.pop("python"), listed.pop("pip")
    assert listed == _names(r for r in req if r)
    assert "tensorflow" not in listed
    assert "TensorFlow is no" in (ROOT / "seml_pyt-tf_environment.yml").read_text()
