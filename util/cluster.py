"""Where artifacts (checkpoints, walk tables) and datasets live, on a laptop or a cluster.

Resolution order of the artifact root, first match wins (never a KeyError):

1. an explicit setting (the config's ``artifact_root``, or a function argument);
2. the environment variable ``WALKING_NOISE_ARTIFACT_ROOT``;
3. a per-cluster map keyed by ``SLURM_CLUSTER_NAME``, read from the JSON or YAML file named by
   ``WALKING_NOISE_CLUSTER_MAP`` (default ``~/.config/walking-noise/clusters.yaml``), e.g.
   ``{my-cluster: /scratch/shared/walking-noise}``; an unknown cluster falls through;
4. ``artifacts/`` in the repository root.

The data root: the config's ``data.root``, else ``WALKING_NOISE_DATA_ROOT``, else ``data_cache/``
in the repository root. No host or user names live in code.

Relative paths (in the config, the environment variables or the cluster map) are resolved
against the repository root :data:`REPO_ROOT`, never the current directory, and may not climb
out of it with ``..`` (a :class:`LocationError`; config validation reports it as the
config key's error); ``~`` and absolute paths are the
user's explicit choice. :func:`ensure_writable_dir` checks a location before a run writes into
it (:class:`LocationError` names the setting and the path).
"""
from __future__ import annotations

import json
import logging
import os
import re
import tempfile
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


class LocationError(ValueError):
    """A folder a run must write into is a file, or cannot be created or written."""


def resolve_location(path: str | os.PathLike, what: str) -> Path:
    """``path`` as an absolute path: relative ones against :data:`REPO_ROOT` (never the cwd),
    without climbing out of it; ``~`` is expanded. ``what`` names the setting in errors."""
    p = Path(path).expanduser()
    if p.is_absolute():
        return p.resolve()
    joined = Path(os.path.normpath(REPO_ROOT / p))
    if joined != REPO_ROOT and REPO_ROOT not in joined.parents:
        raise LocationError(f"{what}={str(path)!r}: a relative path is taken relative to the "
                          f"repository root {REPO_ROOT} and may not leave it with '..'; "
                          f"give an absolute path for a folder outside it")
    return joined.resolve()


def ensure_writable_dir(path: str | os.PathLike, what: str) -> Path:
    """``path`` if it is a folder this process can write into, or can be created; else raise
    :class:`LocationError` naming ``what`` and the path. Creates nothing that stays: it writes
    and removes a probe file in the folder (or in its nearest existing parent)."""
    path = Path(path)
    existing = path
    while not existing.exists() and existing != existing.parent:
        if existing.is_symlink():  # a dangling link cannot be created through
            raise LocationError(f"{what}: {path} cannot be created: {existing} is a broken link")
        existing = existing.parent
    if not existing.is_dir():
        if existing == path:
            raise LocationError(f"{what}: {path} is a file, not a folder")
        raise LocationError(f"{what}: {path} cannot be created: {existing} is a file")
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".wn-write-probe.")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        if existing == path:
            raise LocationError(f"{what}: cannot write into {path} ({err.strerror})") from None
        raise LocationError(f"{what}: {path} cannot be created in {existing} "
                            f"({err.strerror})") from None
    return path


def artifact_root(explicit: str | os.PathLike | None = None,
                  environ: Mapping[str, str] | None = None) -> Path:
    """The artifact root by the resolution order of the module docstring (absolute path)."""
    env = os.environ if environ is None else environ
    if explicit:
        return resolve_location(explicit, "artifact_root")
    if env.get(ENV_ARTIFACT_ROOT):
        return resolve_location(env[ENV_ARTIFACT_ROOT], ENV_ARTIFACT_ROOT)
    cluster = env.get("SLURM_CLUSTER_NAME")
    if cluster:
        mapped = load_cluster_map(env.get(ENV_CLUSTER_MAP)).get(cluster)
        if mapped:
            return resolve_location(mapped, f"cluster map entry {cluster!r}")
    return REPO_ROOT / "artifacts"


def data_root(explicit: str | os.PathLike | None = None,
              environ: Mapping[str, str] | None = None) -> Path:
    """The data root (absolute path): ``data.root``, ``WALKING_NOISE_DATA_ROOT``, the default."""
    env = os.environ if environ is None else environ
    if explicit:
        return resolve_location(explicit, "data.root")
    if env.get(ENV_DATA_ROOT):
        return resolve_location(env[ENV_DATA_ROOT], ENV_DATA_ROOT)
    return REPO_ROOT / "data_cache"
