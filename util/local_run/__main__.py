"""``python -m util.local_run``: the local runner's command line (see :mod:`util.local_run`).

An entry point like train.py, not a library module: it hands the runner train.py's sacred
experiment, imported only when something runs (a dry run or a refused file imports no torch).
"""
import sys

from util.cluster import REPO_ROOT


def train_experiment():
    """train.py's sacred experiment (the repository root made importable first)."""
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    import train
    return train.ex


if __name__ == "__main__":
    from util.local_run import main
    sys.exit(main(experiment=train_experiment))
