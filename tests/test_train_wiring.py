"""train.py's sacred wiring, in process: the default local run store chosen by sacred's option
hook (not by parsing argv), new keys accepted under the open sections (sacred's and `seml
add`'s "added new config entry" check), the short result line."""
import json
import logging
import warnings
from pathlib import Path

import pytest

warnings.filterwarnings("ignore", message="pkg_resources is deprecated")

from docopt import docopt  # noqa: E402  (sacred's own command-line parser)
from sacred.initialize import create_run  # noqa: E402
from sacred.utils import ConfigAddedError  # noqa: E402

import train  # noqa: E402
from learnable_fixtures import write_learnable_mnist  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def parsed(*args: str) -> dict:
    """The options sacred's command line hands to option hooks for ``train.py <args>``."""
    return docopt(train.ex.get_usage()[2], list(args), default_help=False)


@pytest.fixture
def default_store(tmp_path, monkeypatch):
    store = tmp_path / "default_runs"
    monkeypatch.setattr(train, "DEFAULT_RUN_STORE", store)
    return store


@pytest.mark.parametrize("args, chosen", [
    ((), "default"),
    (("with", "general.num_epochs=1"), "default"),
    (("walk", "with", "walk.repeats=1"), "default"),
    (("-F", "{tmp}/mine"), "{tmp}/mine"),
    (("--file_storage={tmp}/mine", "with", "general.num_epochs=1"), "{tmp}/mine"),
    (("-m", "localhost:27017:wn"), None),
    (("-t", "{tmp}/tiny"), None),
    (("-u",), None),
    (("with", "db_collection='wn_test'", "overwrite=7"), None),  # how seml starts a job
    (("print_config",), None),
    (("print_config", "with", "general.num_epochs=1"), None),
    (("save_config",), None),
])
def test_option_hook_sets_the_default_run_store_only_when_no_observer_is_chosen(
        args, chosen, default_store, tmp_path):
    options = parsed(*(a.format(tmp=tmp_path) for a in args))
    given = options["--file_storage"]
    train.run_store(options)
    if chosen == "default":
        assert options["--file_storage"] == str(default_store)
    else:
        assert options["--file_storage"] == given  # untouched: the user's -F or nothing
        assert options["--file_storage"] == (chosen.format(tmp=tmp_path) if chosen else None)


def test_a_run_started_from_python_keeps_the_observers_its_caller_gave(default_store):
    options = train.ex.get_default_options()  # what ex.run(...) hands the option hooks
    train.run_store(options)
    assert options["--file_storage"] is None


def test_option_hook_refuses_a_run_store_that_is_a_file(default_store, tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(Exception, match="unusable location"):
        train.run_store(parsed("-F", str(tmp_path / "afile")))
    default_store.write_text("x")  # the default store too, once chosen
    with pytest.raises(Exception, match="unusable location"):
        train.run_store(parsed())


@pytest.fixture(scope="module")
def tiny_updates(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_learnable_mnist(root / "MNIST" / "raw", n_train=128, n_test=64)
    art = tmp_path_factory.mktemp("art")
    return [f"data.root={root}", "data.dataset=MNIST", "data.download=False",
            "data.batch_size=64", "general.num_epochs=1", f"artifact_root={art}",
            "device=cpu", "model.model_class=MLP", "model.MLP.conf_name=RL_TFC-noBN"]


def run_dirs(store: Path) -> list[Path]:
    return sorted(d for d in store.iterdir() if d.name.isdigit()) if store.exists() else []


def test_command_line_run_without_observer_is_stored_in_the_default_store_only(
        tiny_updates, default_store, tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        run = train.ex.run_commandline(["train.py", "with", *tiny_updates])
    assert run.status == "COMPLETED"
    (stored,) = run_dirs(default_store)
    assert json.loads((stored / "run.json").read_text())["status"] == "COMPLETED"
    # sacred's own result line goes through the short form; the stored result is complete
    results = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Result: ")]
    assert len(results) == 1 and results[0].startswith("Result: stored (")
    assert json.loads((stored / "run.json").read_text())["result"]["final"] \
        == json.loads(json.dumps(run.result["final"]))


def test_command_line_run_with_f_is_stored_only_there_and_unobserved_nowhere(
        tiny_updates, default_store, tmp_path):
    mine = tmp_path / "mine"
    run = train.ex.run_commandline(["train.py", "-F", str(mine), "with", *tiny_updates])
    assert run.status == "COMPLETED"
    assert len(run_dirs(mine)) == 1 and not default_store.exists()
    run = train.ex.run_commandline(["train.py", "-u", "with", *tiny_updates])
    assert run.status == "COMPLETED"
    assert len(run_dirs(mine)) == 1 and not default_store.exists()


def test_result_line_filter_shortens_only_long_results():
    long = logging.LogRecord(train.log.name, logging.INFO, __file__, 1,
                             "Result: " + "x" * 400, None, None)
    short = logging.LogRecord(train.log.name, logging.INFO, __file__, 1, "Result: 0.5",
                              None, None)
    assert train.log.filter(long) and train.log.filter(short)
    assert long.getMessage() == "Result: stored (408 characters)"
    assert short.getMessage() == "Result: 0.5"


NEW_KEYS = {"model": {"model_class": "MLP", "MLP": {"conf_name": "RL_TFC"}},
            "noise_settings": {"layer_wise": {"noise_type": "GaussAdd", "GaussStd": 0.1,
                                              "layer_index": 2}},
            "walk": {"params": {"StdRatio": 0.5}}}


def test_sacred_takes_new_keys_under_the_open_sections_into_the_config():
    run = create_run(train.ex, "print_config", config_updates=NEW_KEYS)
    assert run.config["model"]["MLP"] == {"conf_name": "RL_TFC"}
    assert run.config["noise_settings"]["layer_wise"]["GaussStd"] == 0.1
    assert run.config["walk"]["params"] == {"StdRatio": 0.5}


def test_seml_add_sanity_check_accepts_new_keys_under_the_open_sections_only():
    """seml add's check (captured function arguments, like sacred's own "added new config
    entry" check, which seml's config scopes leave nothing to catch at run time)."""
    from seml.experiment.config import check_config
    check_config("train.py", None, [NEW_KEYS], str(ROOT))
    with pytest.raises(ConfigAddedError, match="optimizer.not_a_key"):
        check_config("train.py", None, [{"optimizer": {"not_a_key": 1}}], str(ROOT))
