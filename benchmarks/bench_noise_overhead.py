"""Forward+backward of LeNet5-BN (batch 128, 1x28x28) with GaussAdd at all 16 sites vs NoNoise.

Prints JSON with the median times and the ratio noisy/clean (target <= 1.2), for the noise drawn
by the compiled kernel (noise.fast_rng, the default on CPU) and by torch.randn, side by side.

It also times what each fast path of :mod:`noise.speed` earns, all in one interleaved run:
the noisy step with every fast path on, with all off (``WN_FAST=0``: plain torch), and with one
path off at a time (the generator, the in-place noise, the fused ReLU); and, for the strided
max-pool (inference only), a clean inference forward of LeNet5-BN on 1000 images with it on and
off. Ratios ``*_over_fast`` > 1 say how much slower the step is without that path.
"""
from contextlib import ExitStack, contextmanager

from _common import emit, interleaved_medians, machine

import torch

from models import build_model
from noise import NoiseOperator, fast_rng, speed

MODEL = {"model_class": "LeNet", "LeNet": {"conf_name": "LeNet5-BN"}}


@contextmanager
def _patched(obj, name, value):
    orig = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, orig)


def _without(path: str):
    """A context in which one fast path is off (``"all"``: every one, as ``WN_FAST=0``)."""
    stack = ExitStack()
    if path == "all":
        stack.enter_context(speed.fast_paths(False))
    elif path == "generator":
        stack.enter_context(fast_rng.use_torch_generator())
    elif path == "in_place":
        stack.enter_context(_patched(speed, "overwritable", lambda x: False))
    elif path == "fused_relu":
        stack.enter_context(_patched(NoiseOperator, "relu_then",
                                     lambda op, x: op(torch.relu(x))))
    elif path == "strided_pool":
        stack.enter_context(_patched(speed, "strided_max_pool_applies", lambda pool, x: False))
    elif path != "none":
        raise ValueError(path)
    return stack


def make_step(noise_settings, x, y, steps, without="none"):
    torch.manual_seed(0)
    net = build_model(MODEL, noise_settings, (1, 28, 28), 10).to(x.device).train()
    loss_fn = torch.nn.CrossEntropyLoss()

    def run():
        with _without(without):
            for _ in range(steps):
                net.zero_grad(set_to_none=True)
                loss_fn(net(x), y).backward()
        if x.is_cuda:
            torch.cuda.synchronize()
    return run


def make_inference(x, steps, without="none"):
    torch.manual_seed(0)
    net = build_model(MODEL, None, (1, 28, 28), 10).to(x.device).eval()

    def run():
        with _without(without), torch.inference_mode():
            for _ in range(steps):
                net(x)
    return run


def main(steps: int = 20, rounds: int = 21):
    device = "cuda" if torch.cuda.is_available() else "cpu"
    x = torch.randn(128, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (128,), device=device)
    x_eval = torch.randn(1000, 1, 28, 28, device=device)
    noisy = {"default": {"noise_type": "GaussAdd", "GaussStd": 0.1}}
    fns = {
        "no_noise": make_step(None, x, y, steps),
        "gauss_add_all_sites": make_step(noisy, x, y, steps),
        "gauss_add_all_sites_torch_randn": make_step(noisy, x, y, steps, "generator"),
        "gauss_add_all_sites_plain_torch": make_step(noisy, x, y, steps, "all"),
        "no_noise_plain_torch": make_step(None, x, y, steps, "all"),
        "gauss_add_all_sites_no_in_place": make_step(noisy, x, y, steps, "in_place"),
        "gauss_add_all_sites_no_fused_relu": make_step(noisy, x, y, steps, "fused_relu"),
        "inference_1000": make_inference(x_eval, steps // 4),
        "inference_1000_no_strided_pool": make_inference(x_eval, steps // 4, "strided_pool"),
        "inference_1000_plain_torch": make_inference(x_eval, steps // 4, "all"),
    }
    medians = interleaved_medians(fns, rounds=rounds)
    fast, m = medians["gauss_add_all_sites"], medians
    emit({"benchmark": "noise_overhead_lenet5bn_fwd_bwd", "batch": 128, "steps_per_round": steps,
          "seconds_per_step": {k: v / steps for k, v in medians.items()
                               if not k.startswith("inference")},
          "ratio_noisy_over_clean": fast / m["no_noise"],
          "ratio_noisy_torch_randn_over_clean": m["gauss_add_all_sites_torch_randn"]
          / m["no_noise"],
          "ratio_noisy_plain_torch_over_clean_plain_torch":
              m["gauss_add_all_sites_plain_torch"] / m["no_noise_plain_torch"],
          "fast_paths_earn": {   # step time without the path / with every path on
              "all (WN_FAST=0)_over_fast": m["gauss_add_all_sites_plain_torch"] / fast,
              "generator_off_over_fast": m["gauss_add_all_sites_torch_randn"] / fast,
              "in_place_off_over_fast": m["gauss_add_all_sites_no_in_place"] / fast,
              "fused_relu_off_over_fast": m["gauss_add_all_sites_no_fused_relu"] / fast,
              "clean_step_plain_over_fast": m["no_noise_plain_torch"] / m["no_noise"],
              "inference_strided_pool_off_over_fast":
                  m["inference_1000_no_strided_pool"] / m["inference_1000"],
              "inference_plain_over_fast": m["inference_1000_plain_torch"] / m["inference_1000"],
          },
          "fast_rng_kernel": str(fast_rng.library_path()),
          "target_ratio_max": 1.2, **machine()})


if __name__ == "__main__":
    main()
