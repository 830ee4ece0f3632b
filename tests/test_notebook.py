"""notebooks/results.ipynb runs top to bottom against a seml collection in MongoDB.

The test inserts a small collection shaped like seml's documents (``_id``, ``config``,
``result``, ``status: COMPLETED``, ``seml``) into the MongoDB-wire server that seml's config
names, executes the notebook with nbclient, checks the σ_mid table it saved against the
known midpoints and that it drew the figures, and drops the collection. It needs the server:
CI starts it with ``bash scripts/cluster.sh start`` and sets ``WN_CLUSTER_UP=1``.
"""
import os
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import analysis_fixtures as F

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "results.ipynb"

pytestmark = pytest.mark.skipif(
    os.environ.get("WN_CLUSTER_UP") != "1",
    reason="needs the MongoDB-wire server: set WN_CLUSTER_UP=1 after `bash scripts/cluster.sh "
           "start` (seml reads the connection from ~/.config/seml/mongodb.config)")


@pytest.fixture()
def collection(tmp_path):
    """A small seml-shaped collection on the server of seml's config; dropped afterwards."""
    import pymongo
    from seml.database import get_mongodb_config

    cfg = get_mongodb_config()
    client = pymongo.MongoClient(cfg["host"], int(cfg["port"]), serverSelectionTimeoutMS=5000)
    try:
        client.admin.command("ping")
    except pymongo.errors.PyMongoError as err:
        pytest.fail(f"WN_CLUSTER_UP=1 but MongoDB at {cfg['host']}:{cfg['port']} does not "
                    f"answer: {err}")
    runs = F.build_sweep_store(tmp_path / "runs", tmp_path / "art", repeats=(0,))
    name = f"wn_test_notebook_{uuid.uuid4().hex[:8]}"
    db = client[cfg["db_name"]]
    db[name].insert_many(F.mongo_documents(runs))
    yield name
    db.drop_collection(name)
    client.close()


def test_results_notebook_runs_against_a_seml_collection(collection, tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    out_dir = tmp_path / "notebook_out"
    monkeypatch.setenv("WN_NOTEBOOK_COLLECTION", collection)
    monkeypatch.setenv("WN_NOTEBOOK_OUT_DIR", str(out_dir))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()

    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    n_runs = 1 + len(F.SITE_NAMES) * len(F.SIGMAS) + len(F.SIGMAS) \
        + len(F.NOISY_SITES) * len(F.SIGMAS)
    assert f"{n_runs} rows from {n_runs} runs of '{collection}'" in text
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 3   # curves: clean and noisy training; σ_mid per site

    table = pd.read_csv(out_dir / "sigma_mid.csv")
    clean = table[(table["site"] >= 0) & ~table["enable_in_training"]].sort_values("site")
    np.testing.assert_allclose(np.log10(clean["sigma_mid"]), F.LOG_MID_CLEAN, atol=1e-9)
    noisy = table[table["enable_in_training"]].sort_values("site")
    np.testing.assert_allclose(np.log10(noisy["sigma_mid"]), list(F.NOISY_SITES.values()),
                               atol=1e-9)
    assert sorted(p.suffix for p in out_dir.glob("walking_noise_*")) == \
        [".pdf", ".pdf", ".png", ".png"]
