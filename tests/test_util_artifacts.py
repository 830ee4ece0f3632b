"""Artifact root resolution order, atomic verified copies, path-escape rejection."""
import json
from pathlib import Path

import pytest

from util.artifacts import (ArtifactError, atomic_copy, load_torch, safe_path, save_torch,
                            verify)
from util.cluster import REPO_ROOT, artifact_root


def test_artifact_root_resolution_order(tmp_path):
    cmap = tmp_path / "clusters.json"
    cmap.write_text(json.dumps({"alpha": str(tmp_path / "alpha_root")}))
    env = {"WALKING_NOISE_ARTIFACT_ROOT": str(tmp_path / "env_root"),
           "SLURM_CLUSTER_NAME": "alpha", "WALKING_NOISE_CLUSTER_MAP": str(cmap)}
    assert artifact_root(tmp_path / "explicit", environ=env) == tmp_path / "explicit"
    assert artifact_root(None, environ=env) == tmp_path / "env_root"
    del env["WALKING_NOISE_ARTIFACT_ROOT"]
    assert artifact_root(None, environ=env) == tmp_path / "alpha_root"
    env["SLURM_CLUSTER_NAME"] = "unknown-cluster"  # not in the map: no KeyError, falls through
    assert artifact_root(None, environ=env) == REPO_ROOT / "artifacts"
    assert artifact_root(None, environ={}) == REPO_ROOT / "artifacts"


def test_cluster_map_in_yaml_and_broken_map_falls_through(tmp_path):
    good = tmp_path / "c.yaml"
    good.write_text("beta: /scratch/wn\n")
    assert artifact_root(None, environ={"SLURM_CLUSTER_NAME": "beta",
                                        "WALKING_NOISE_CLUSTER_MAP": str(good)}) == Path("/scratch/wn")
    bad = tmp_path / "bad.yaml"
    bad.write_text("{ not: yaml: at all")
    assert artifact_root(None, environ={"SLURM_CLUSTER_NAME": "beta",
                                        "WALKING_NOISE_CLUSTER_MAP": str(bad)}) == REPO_ROOT / "artifacts"


@pytest.mark.parametrize("name", ["../x.pt", "a/../../x.pt", "/etc/passwd", "", "~/x"])
def test_artifact_names_cannot_escape_the_root(tmp_path, name):
    with pytest.raises(ArtifactError):
        safe_path(tmp_path, name)


def test_atomic_copy_is_verified_and_leaves_no_temp_files(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"x" * 100_000)
    dst = atomic_copy(src, tmp_path / "root", "sub/ckpt.bin")
    assert dst.read_bytes() == src.read_bytes() and verify(dst)
    assert sorted(p.name for p in dst.parent.iterdir()) == ["ckpt.bin", "ckpt.bin.sha256"]
    dst.write_bytes(b"y" * 100_000)  # corruption is detected
    assert not verify(dst)


def test_torch_checkpoint_roundtrip_and_corruption(tmp_path):
    import torch
    path = save_torch({"w": torch.arange(5)}, tmp_path, "c/last.pt")
    assert torch.equal(load_torch(path)["w"], torch.arange(5))
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="checksum"):
        load_torch(path)


def test_epoch_checkpoints_survive_a_torn_write(tmp_path):
    """A kill between an epoch file and its checksum leaves the previous epoch usable."""
    from util.engine.checkpoints import latest_checkpoint, save_epoch_checkpoint
    d = tmp_path / "checkpoints" / "h"
    save_epoch_checkpoint(d, 1, {"epoch": 1})
    save_epoch_checkpoint(d, 2, {"epoch": 2})
    assert sorted(p.name for p in d.glob("epoch_*.pt")) == ["epoch_0002.pt"]
    assert load_torch(d / "last.pt")["epoch"] == 2
    # epoch 3's data landed but its sidecar did not (killed in between)
    (d / "epoch_0003.pt").write_bytes((d / "epoch_0002.pt").read_bytes() + b"torn")
    assert load_torch(latest_checkpoint(d))["epoch"] == 2


@pytest.mark.parametrize("write", ["bytes", "copy"])
def test_a_file_is_never_visible_before_its_checksum(tmp_path, monkeypatch, write):
    """A job killed between the two renames of a write: whatever is visible verifies."""
    import os

    import util.artifacts as A
    src = tmp_path / "src.bin"
    src.write_bytes(b"payload" * 1000)
    real_replace, calls = os.replace, []

    def replace_then_die(a, b):
        calls.append(str(b))
        if len(calls) == 2:
            raise KeyboardInterrupt("killed between the data file and its sidecar")
        return real_replace(a, b)

    monkeypatch.setattr(A.os, "replace", replace_then_die)
    with pytest.raises(KeyboardInterrupt):
        if write == "bytes":
            A.atomic_write_bytes(tmp_path / "out" / "f.bin", src.read_bytes())
        else:
            A.atomic_copy(src, tmp_path / "out", "f.bin")
    monkeypatch.setattr(A.os, "replace", real_replace)
    target = tmp_path / "out" / "f.bin"
    assert calls[0].endswith(".sha256")          # the sidecar went first
    assert not target.exists() or A.verify(target)
    assert not target.exists()
