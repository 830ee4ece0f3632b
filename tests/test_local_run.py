"""util.local_run on tiny on-disk MNIST: order, reuse, skipping completed runs, failures that
do not stop the others, validation before anything runs, filters, --max, --dry-run."""
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from data_fixtures import write_idx_dataset
from util import local_run
from util.local_run.__main__ import train_experiment

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "experiment_configs" / "examples" / "tiny_mnist.yaml"


@pytest.fixture(scope="module")
def mnist_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_idx_dataset(root / "MNIST" / "raw", n_train=256, n_test=64)
    return root


def local_settings(data_root, art):
    """--set values that keep a run on the tiny data, the CPU and tmp (no download)."""
    return ["--set", f"data.root={str(data_root)!r}", "--set", "data.download=False",
            "--set", f"artifact_root={str(art)!r}", "--set", "device='cpu'",
            "--set", "data.batch_size=64"]


def run_main(args):
    out = io.StringIO()
    code = local_run.main(["--no-progress", "-q", *args], out=out, experiment=train_experiment)
    return code, out.getvalue()


def stored(store: Path) -> list[dict]:
    runs = []
    for d in sorted((p for p in store.iterdir() if p.name.isdigit()), key=lambda p: int(p.name)):
        run = json.loads((d / "run.json").read_text())
        run["config"] = json.loads((d / "config.json").read_text())
        runs.append(run)
    return runs


def write_yaml(path: Path, body: str) -> Path:
    path.write_text(f"""seml:
  executable: train.py
  name: test_local_run
  description: local runner test
  output_dir: logs
  project_root_dir: {ROOT}
slurm:
  - sbatch_options: {{}}
{body}""")
    return path


def test_example_trains_once_then_reuses_and_a_second_invocation_skips_all(mnist_root, tmp_path):
    store, art = tmp_path / "runs", tmp_path / "art"
    code, out = run_main([str(EXAMPLE), "-F", str(store), *local_settings(mnist_root, art)])
    assert code == 0, out
    runs = stored(store)
    assert len(runs) == 9 and all(r["status"] == "COMPLETED" for r in runs)
    # the noise-free experiment (listed last in the file) ran first and trained the model
    first = runs[0]
    assert first["config"]["noise_settings"]["layer_wise"] is None
    assert first["result"]["trained"] is True
    # every eval-only experiment evaluated that model without training
    eval_only = runs[1:]
    assert {r["config"]["noise_settings"]["layer_wise"]["layer_index"] for r in eval_only} \
        == {0, 4, 7, 11}
    assert all(r["result"]["trained"] is False for r in eval_only)
    assert {r["result"]["checkpoint_used"] for r in eval_only} \
        == {first["result"]["checkpoint_used"]}
    assert "9 done (1 trained a model, 8 reused one)" in out

    # as a user runs it: a fresh interpreter finds all 9 completed and runs nothing
    proc = subprocess.run(
        [sys.executable, "-m", "util.local_run", str(EXAMPLE), "-F", str(store),
         "--no-progress", *local_settings(mnist_root, art)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env=dict(os.environ, PYTHONUNBUFFERED="1"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "9 already completed (skipped)" in proc.stdout
    assert "0 done" in proc.stdout and "9 skipped" in proc.stdout
    assert len(stored(store)) == 9


def test_a_failing_experiment_is_reported_and_the_others_complete(mnist_root, tmp_path):
    empty = tmp_path / "no_data"
    empty.mkdir()
    yaml_file = write_yaml(tmp_path / "mixed.yaml", f"""
fixed:
  general.num_epochs: 1
  data.dataset: MNIST
  data.download: false
  data.batch_size: 64
  artifact_root: {tmp_path / "art"}
  device: cpu
  model.model_class: MLP
  model.MLP.conf_name: RL_TFC
good:
  fixed:
    data.root: {mnist_root}
  grid:
    general.repeat_number:
      type: choice
      options: [0, 1]
broken:
  fixed:
    data.root: {empty}
    general.repeat_number: 2
""")
    store = tmp_path / "runs"
    code, out = run_main([str(yaml_file), "-F", str(store)])
    assert code == 1
    assert "2 done" in out and "1 failed" in out
    failed_line = next(line for line in out.splitlines() if "FAILED" in line)
    assert "broken" in failed_line and "Error" in failed_line
    statuses = sorted(r["status"] for r in stored(store))
    assert statuses == ["COMPLETED", "COMPLETED", "FAILED"]

    # a second invocation retries only the failed one
    code, out = run_main([str(yaml_file), "-F", str(store), "--dry-run"])
    assert code == 0
    assert "2 already completed (skipped)" in out and "1 to run" in out
    assert "would run [noise-free] broken" in out


def test_an_invalid_experiment_stops_everything_before_anything_runs(tmp_path, capsys):
    yaml_file = write_yaml(tmp_path / "bad.yaml", """
fixed:
  general.num_epochs: 1
  data.dataset: MNIST
  model.model_class: LeNet
  model.LeNet.conf_name: LeNet5
  noise_settings.layer_wise.noise_type: GaussAdd
  noise_settings.layer_wise.GaussStd: 0.1
grid:
  noise_settings.layer_wise.layer_index:
    type: range
    min: 10
    max: 13
    step: 1
""")
    store = tmp_path / "runs"
    code, _ = run_main([str(yaml_file), "-F", str(store)])
    err = capsys.readouterr().err
    assert code == 2
    assert "1 invalid experiment(s); nothing was run" in err
    assert "layer_index=12" in err and "12 sites" in err
    assert not store.exists()


def test_filter_max_and_dry_run_select_without_running(tmp_path):
    store = tmp_path / "runs"
    code, out = run_main([str(EXAMPLE), "-F", str(store), "--dry-run",
                          "--filter", "noise_settings.layer_wise.layer_index=4",
                          "--filter", "noise_settings.layer_wise.layer_index=11",
                          "--filter", "noise_settings.layer_wise.GaussStd=1"])
    assert code == 0
    assert "7 filtered out" in out and "2 to run" in out
    would = [line for line in out.splitlines() if "would run" in line]
    assert len(would) == 2 and all("GaussStd=1.0" in line for line in would)
    assert all("[eval-only noise]" in line for line in would)

    code, out = run_main([str(EXAMPLE), "-F", str(store), "--dry-run", "--max", "3"])
    would = [line for line in out.splitlines() if "would run" in line]
    assert code == 0 and len(would) == 3 and "6 left for later (--max)" in out
    assert "[noise-free]" in would[0]  # the model is trained before it is evaluated
    assert not store.exists()


def test_a_filter_on_a_key_no_experiment_has_is_an_error(tmp_path, capsys):
    code, _ = run_main([str(EXAMPLE), "-F", str(tmp_path / "runs"), "--dry-run",
                        "--filter", "noise_settings.layer_wise.layer_indx=4"])
    assert code == 2
    assert "layer_indx" in capsys.readouterr().err


def test_a_filter_matches_close_numbers_list_elements_and_either_value_of_a_repeated_key():
    exps = [SimpleNamespace(config={"noise": {"GaussStd": std}, "walk": {"sites": sites}})
            for std, sites in ((0.30000000000000004, [1, 2]), (0.5, [3]), (0.7, [2]))]
    assert local_run._select(exps, [("noise.GaussStd", 0.3)]) == [exps[0]]
    assert local_run._select(exps, [("walk.sites", 2)]) == [exps[0], exps[2]]
    assert local_run._select(exps, [("walk.sites.0", 3)]) == [exps[1]]
    assert local_run._select(exps, [("noise.GaussStd", 0.3), ("noise.GaussStd", 0.5),
                                    ("walk.sites", 3)]) == [exps[1]]
    assert local_run._select(exps, [("noise.GaussStd", "0.5")]) == []


def test_plan_orders_noise_free_then_eval_only_then_noisy_training(tmp_path):
    yaml_file = write_yaml(tmp_path / "order.yaml", """
fixed:
  data.dataset: MNIST
  model.model_class: LeNet
  model.LeNet.conf_name: LeNet5
noisy_training:
  fixed:
    noise_settings.default.noise_type: GaussAdd
    noise_settings.default.GaussStd: 0.1
eval_only:
  fixed:
    noise_settings.default.noise_type: GaussAdd
    noise_settings.default.GaussStd: 0.1
    noise_settings.default.enable_in_training: 0
noise_free:
  fixed:
    noise_settings.default.noise_type: NoNoise
""")
    p = local_run.plan(yaml_file, store=tmp_path / "runs")
    assert [e.sub_experiment for e in p.to_run] == ["noise_free", "eval_only", "noisy_training"]
    assert [p.kind(e) for e in p.to_run] == ["noise-free", "eval-only noise", "noisy training"]


def test_set_values_are_read_as_python_literals():
    assert local_run.parse_assignments(["a.b=1e-2", "c=False", "d=/x/y", "e='cpu'"], "--set") \
        == [("a.b", 0.01), ("c", False), ("d", "/x/y"), ("e", "cpu")]
    with pytest.raises(ValueError, match="--filter"):
        local_run.parse_assignments(["no_equals_sign"], "--filter")
