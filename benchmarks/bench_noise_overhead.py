"""Forward+backward of LeNet5-BN (batch 128, 1x28x28) with GaussAdd at all 16 sites vs NoNoise.

Prints JSON with the median times of both and their ratio (target: noisy/clean <= 1.2).
"""
from _common import emit, interleaved_medians, machine

import torch

from models import build_model

MODEL = {"model_class": "LeNet", "LeNet": {"conf_name": "LeNet5-BN"}}


def make_step(noise_settings, x, y, steps):
    torch.manual_seed(0)
    net = build_model(MODEL, noise_settings, (1, 28, 28), 10).to(x.device).train()
    loss_fn = torch.nn.CrossEntropyLoss()

    def run():
        for _ in range(steps):
            net.zero_grad(set_to_none=True)
            loss_fn(net(x), y).backward()
        if x.is_cuda:
            torch.cuda.synchronize()
    return run


def main(steps: int = 20, rounds: int = 9):
    device = "cuda" if torch.cuda.is_available() else "cpu"
    x = torch.randn(128, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (128,), device=device)
    medians = interleaved_medians({
        "no_noise": make_step(None, x, y, steps),
        "gauss_add_all_sites": make_step({"default": {"noise_type": "GaussAdd", "GaussStd": 0.1}},
                                         x, y, steps),
    }, rounds=rounds)
    emit({"benchmark": "noise_overhead_lenet5bn_fwd_bwd", "batch": 128, "steps_per_round": steps,
          "seconds_per_step": {k: v / steps for k, v in medians.items()},
          "ratio_noisy_over_clean": medians["gauss_add_all_sites"] / medians["no_noise"],
          "target_ratio_max": 1.2, **machine()})


if __name__ == "__main__":
    main()
