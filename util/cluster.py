"""Where artifacts (checkpoints, walk tables) and datasets live, on a laptop or a cluster.

Resolution order of the artifact root, first match wins (never a KeyError):

1. an explicit setting (the config's ``artifact_root``, or a function argument);
2. the environment variable ``WALKING_NOISE_ARTIFACT_ROOT``;
3. a per-cluster map keyed by ``SLURM_CLUSTER_NAME``, read from the JSON or YAML file named by
   ``WALKING_NOISE_CLUSTER_MAP`` (default ``~/.config/walking-noise/clusters.yaml``), e.g.
   ``{my-cluster: /scratch/shared/walking-noise}``; an unknown cluster falls through;
4. ``artifacts/`` in the repository root.

The data root: ``WALKING_NOISE_DATA_ROOT`` or ``data_cache/`` in the repository root.
No host or user names live in code.
"""
from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Mapping

log = logging.getLogger(__name__)

# The temporary folders seml copies a code checkpoint into: `seml_sources.XXXXXXXX` (SLURM jobs)
# and a uuid4 (`seml start --local`).
_SEML_SOURCE_COPY = re.compile(r"seml_sources\.\w+|[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}")


def _project_root() -> Path:
    """The repository root. A seml job with a code checkpoint (``project_root_dir`` in the YAML)
    runs a copy of the sources from a temporary folder that is deleted when the job ends, with
    the project root as its working directory: defaults (artifacts, data, runs) must not land
    in that copy."""
    here = Path(__file__).resolve().parent.parent
    if _SEML_SOURCE_COPY.fullmatch(here.name):
        return Path.cwd().resolve()
    return here


REPO_ROOT = _project_root()
ENV_ARTIFACT_ROOT = "WALKING_NOISE_ARTIFACT_ROOT"
ENV_CLUSTER_MAP = "WALKING_NOISE_CLUSTER_MAP"
ENV_DATA_ROOT = "WALKING_NOISE_DATA_ROOT"
DEFAULT_CLUSTER_MAP = Path("~/.config/walking-noise/clusters.yaml")


def load_cluster_map(path: str | os.PathLike | None = None) -> dict[str, str]:
    """The cluster name -> artifact root map; empty when the file is missing."""
    path = Path(path or os.environ.get(ENV_CLUSTER_MAP) or DEFAULT_CLUSTER_MAP).expanduser()
    if not path.is_file():
        return {}
    text = path.read_text()
    try:
        if path.suffix == ".json":
            data = json.loads(text)
        else:
            import yaml
            data = yaml.safe_load(text)
    except Exception as err:  # a broken map must not kill a job: say so and fall through
        log.warning("ignoring unreadable cluster map %s: %s", path, err)
        return {}
    if not isinstance(data, Mapping):
        log.warning("ignoring cluster map %s: expected a mapping, got %s", path, type(data))
        return {}
    return {str(k): str(v) for k, v in data.items()}


def artifact_root(explicit: str | os.PathLike | None = None,
                  environ: Mapping[str, str] | None = None) -> Path:
    """The artifact root by the resolution order of the module docstring (absolute path)."""
    env = os.environ if environ is None else environ
    if explicit:
        return Path(explicit).expanduser().resolve()
    if env.get(ENV_ARTIFACT_ROOT):
        return Path(env[ENV_ARTIFACT_ROOT]).expanduser().resolve()
    cluster = env.get("SLURM_CLUSTER_NAME")
    if cluster:
        mapped = load_cluster_map(env.get(ENV_CLUSTER_MAP)).get(cluster)
        if mapped:
            return Path(mapped).expanduser().resolve()
    return REPO_ROOT / "artifacts"


def data_root(explicit: str | os.PathLike | None = None) -> Path:
    if explicit:
        return Path(explicit).expanduser().resolve()
    if os.environ.get(ENV_DATA_ROOT):
        return Path(os.environ[ENV_DATA_ROOT]).expanduser().resolve()
    return REPO_ROOT / "data_cache"
