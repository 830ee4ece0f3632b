"""One LeNet5 training epoch on Fashion-MNIST: the in-memory batched pipeline of ``data`` vs
torchvision's per-sample PIL pipeline in a ``DataLoader`` (same transforms, same model, same
optimiser), timed in alternation in one process.

Prints JSON with the median epoch times and their ratio (target: fast / PIL <= 0.5), plus the
time of the data pipelines alone. Needs Fashion-MNIST on disk (Debian's dataset-fashion-mnist,
$WALKING_NOISE_FASHION_MNIST_DIR, or <root>/FashionMNIST/raw).
"""
from _common import emit, interleaved_medians, machine

import argparse
import gzip
import shutil
import tempfile
from pathlib import Path

import torch
import torchvision
import torchvision.transforms as T

from data import get_dataset
from models import build_model

MODEL = {"model_class": "LeNet", "LeNet": {"conf_name": "LeNet5"}}


def torchvision_root(located: dict, folder: Path) -> Path:
    """A torchvision FashionMNIST root made of plain copies of the located IDX files."""
    raw = folder / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for stem, path in located.items():
        opener = gzip.open if path.read_bytes()[:2] == b"\x1f\x8b" else open
        with opener(path, "rb") as src, open(raw / stem, "wb") as dst:
            shutil.copyfileobj(src, dst)
    return folder


def pil_loader(root: Path, batch_size: int, num_workers: int) -> torch.utils.data.DataLoader:
    transform = T.Compose([T.RandomCrop(28, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                           T.Normalize((0.5,), (0.5,))])
    dataset = torchvision.datasets.FashionMNIST(str(root), train=True, transform=transform)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True,
                                       num_workers=num_workers,
                                       persistent_workers=num_workers > 0)


def training_epoch(batches_of_epoch, device):
    """A function that trains a fresh LeNet5 for one epoch over ``batches_of_epoch(epoch)``."""
    state = {"epoch": 0}

    def run():
        torch.manual_seed(0)
        net = build_model(MODEL, {}, (1, 28, 28), 10).to(device).train()
        optimiser = torch.optim.Adam(net.parameters(), lr=1e-3)
        loss_fn = torch.nn.CrossEntropyLoss()
        for x, y in batches_of_epoch(state["epoch"]):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            optimiser.zero_grad(set_to_none=True)
            loss_fn(net(x), y).backward()
            optimiser.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        state["epoch"] += 1
    return run


def data_only(batches_of_epoch, device):
    state = {"epoch": 0}

    def run():
        for x, y in batches_of_epoch(state["epoch"]):
            x.to(device), y.to(device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        state["epoch"] += 1
    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(Path(tempfile.gettempdir()) / "walking_noise_data"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--pil-workers", type=int, default=0,
                        help="DataLoader workers of the PIL pipeline (0: in the main process)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's choice); 1 keeps the "
                             "timing stable on a machine shared with other jobs")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    ds = get_dataset("FashionMNIST", args.root, batch_size=args.batch_size, download=True)
    ds.prepare()
    fast = lambda epoch: ds.train_loader(device=device, epoch=epoch, seed=0)  # noqa: E731
    fast(0)  # read the files once, as a run does before its first epoch
    with tempfile.TemporaryDirectory() as tmp:
        pil = pil_loader(torchvision_root(ds._locate(), Path(tmp)), args.batch_size,
                         args.pil_workers)
        pil_epoch = lambda epoch: pil  # noqa: E731
        epochs = interleaved_medians({"fast": training_epoch(fast, device),
                                      "pil": training_epoch(pil_epoch, device)},
                                     rounds=args.rounds)
        pipelines = interleaved_medians({"fast": data_only(fast, device),
                                         "pil": data_only(pil_epoch, device)},
                                        rounds=args.rounds)
    emit({"benchmark": "data_pipeline_fashion_mnist_lenet5_epoch", "batch": args.batch_size,
          "train_samples": ds.num_train, "pil_workers": args.pil_workers,
          "epoch_seconds": epochs, "data_only_seconds": pipelines,
          "ratio_fast_over_pil": epochs["fast"] / epochs["pil"],
          "data_only_ratio_fast_over_pil": pipelines["fast"] / pipelines["pil"],
          "target_ratio_max": 0.5, **machine()})


if __name__ == "__main__":
    main()
