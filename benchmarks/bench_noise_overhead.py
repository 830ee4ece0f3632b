"""Forward+backward of LeNet5-BN (batch 128, 1x28x28) with GaussAdd at all 16 sites vs NoNoise.

Prints JSON with the median times and the ratio noisy/clean (target <= 1.2), for the noise drawn
by the compiled kernel (noise.fast_rng, the default on CPU) and by torch.randn, side by side.
"""
from _common import emit, interleaved_medians, machine

import torch

from models import build_model
from noise import fast_rng

MODEL = {"model_class": "LeNet", "LeNet": {"conf_name": "LeNet5-BN"}}


def make_step(noise_settings, x, y, steps, torch_generator=False):
    torch.manual_seed(0)
    net = build_model(MODEL, noise_settings, (1, 28, 28), 10).to(x.device).train()
    loss_fn = torch.nn.CrossEntropyLoss()

    def run():
        for _ in range(steps):
            net.zero_grad(set_to_none=True)
            if torch_generator:
                with fast_rng.use_torch_generator():
                    loss_fn(net(x), y).backward()
            else:
                loss_fn(net(x), y).backward()
        if x.is_cuda:
            torch.cuda.synchronize()
    return run


def main(steps: int = 20, rounds: int = 21):
    device = "cuda" if torch.cuda.is_available() else "cpu"
    x = torch.randn(128, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (128,), device=device)
    noisy = {"default": {"noise_type": "GaussAdd", "GaussStd": 0.1}}
    medians = interleaved_medians({
        "no_noise": make_step(None, x, y, steps),
        "gauss_add_all_sites": make_step(noisy, x, y, steps),
        "gauss_add_all_sites_torch_randn": make_step(noisy, x, y, steps, torch_generator=True),
    }, rounds=rounds)
    emit({"benchmark": "noise_overhead_lenet5bn_fwd_bwd", "batch": 128, "steps_per_round": steps,
          "seconds_per_step": {k: v / steps for k, v in medians.items()},
          "ratio_noisy_over_clean": medians["gauss_add_all_sites"] / medians["no_noise"],
          "ratio_noisy_torch_randn_over_clean":
              medians["gauss_add_all_sites_torch_randn"] / medians["no_noise"],
          "fast_rng_kernel": str(fast_rng.library_path()),
          "target_ratio_max": 1.2, **machine()})


if __name__ == "__main__":
    main()
