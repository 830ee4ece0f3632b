"""Give any torch model noise sites, without touching its parameters.

:func:`inject` runs one forward pass on an example input to record the order in which the
site-bearing layers (:data:`~noise.placement.SITE_LAYER_KINDS`, the rule the model builder
follows too) execute (forward order, not registration order: a ReLU module called twice
in a residual block gives two sites), then installs hooks that apply each site's
:class:`~noise.operator.NoiseOperator`, reachable as ``model.noise_sites``.

The operators are deliberately not submodules of the model: a container that calls its
children in turn (``nn.Sequential``, or any forward that loops over ``self.children()``) would
call them as layers. So injection leaves the model's modules, ``state_dict`` and printout as
they were; the operators hold no parameters or buffers (nothing for ``.to(device)`` to move),
and the model's forward pre-hook hands them its train/eval mode at the start of every forward
pass, so ``model.train()``/``.eval()`` govern them as they would govern children.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from .operator import NoiseOperator
from .placement import SITE_LAYER_TYPES, NoiseSite, configure, layer_site_kind
from .speed import any_global_hooks

__all__ = ["inject", "SITE_LAYER_TYPES"]


def _trace_calls(model: nn.Module, example: torch.Tensor, layer_types
                 ) -> list[tuple[str, int, nn.Module]]:
    """(module path, k-th call, module) of every site-bearing layer, in execution order."""
    order: list[tuple[str, int, nn.Module]] = []
    counts: dict[str, int] = {}
    handles = []

    def make_hook(path):
        def hook(module, _inputs, _output):
            k = counts.get(path, 0)
            counts[path] = k + 1
            order.append((path, k, module))
        return hook

    for path, module in model.named_modules():
        if path and isinstance(module, layer_types) and not any(True for _ in module.children()):
            handles.append(module.register_forward_hook(make_hook(path)))
    was_training = model.training
    model.eval()  # no BN statistics are updated by the trace
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return order


def _site_kind(module: nn.Module) -> str:
    """The site kind after ``module``; for a type outside :data:`SITE_LAYER_TYPES` (given in
    ``layer_types``) its class name in lower case (``'dropout'``)."""
    return layer_site_kind(module) or type(module).__name__.lower()


class _HookState:
    """What the hooks of one model share: its operators and the per-forward call counts.

    Hooks are objects, not closures, so that ``copy.deepcopy(model)`` gives the copy hooks
    bound to its own operators.
    """

    def __init__(self, ops: list[NoiseOperator], site_of_call: dict[tuple[str, int], int]):
        self.ops = ops
        self.site_of_call = site_of_call
        self.counts: dict[str, int] = {}


class _InputHook:
    def __init__(self, state: _HookState):
        self.state = state

    def __call__(self, model, args):
        self.state.counts.clear()  # a new forward pass: call numbering starts again
        for op in self.state.ops:  # not children of the model: they take its mode here
            op.training = model.training
        if not args:
            return None
        return (self.state.ops[0](args[0]),) + tuple(args[1:])


class _SiteHook:
    def __init__(self, state: _HookState, path: str):
        self.state, self.path = state, path

    def __call__(self, module, _inputs, output):
        counts = self.state.counts
        k = counts.get(self.path, 0)
        counts[self.path] = k + 1
        site = self.state.site_of_call.get((self.path, k))
        if site is None:  # a call the trace did not see (data-dependent control flow)
            return None
        if isinstance(output, torch.Tensor) and (len(module._forward_hooks) > 1
                                                 or any_global_hooks()):
            # another hook may have kept the output: a view makes the noise leave it alone
            output = output.view_as(output)
        return self.state.ops[site](output)


def inject(model: nn.Module, noise_settings: Mapping[str, Any] | None = None, *,
           input_shape: tuple[int, ...] | None = None, example_input: torch.Tensor | None = None,
           repetition_config: Mapping[str, Any] | None = None,
           layer_types: tuple[type[nn.Module], ...] = SITE_LAYER_TYPES) -> nn.Module:
    """Add noise sites to ``model`` in place and return it.

    Sites: 0 is the model input, then one per execution of a layer of ``layer_types``, in
    forward order; names are ``'<index>:<module path>'`` with ``#k`` for the k-th extra call of
    a module used more than once. Each site's ``kind`` is the kind of its layer type
    (:data:`~noise.placement.SITE_LAYER_KINDS`), ``'logits'`` for a last site after a linear
    layer, as for the model families. Give ``input_shape`` (one sample, e.g. ``(3, 32, 32)``) or an
    ``example_input`` batch for the tracing pass. With every site ``NoNoise`` the outputs are
    bit-identical to the original model's. The model's own modules are left as they were (see
    the module docstring), so this works for an ``nn.Sequential`` too.
    """
    if getattr(model, "noise_sites", None):
        raise ValueError("this model already has noise sites; use noise.configure to change them")
    if example_input is None:
        if input_shape is None:
            raise ValueError("inject needs input_shape (one sample's shape) or example_input")
        example_input = torch.zeros((1, *input_shape))
    try:
        param = next(model.parameters())
        example_input = example_input.to(param.device, param.dtype)
    except StopIteration:
        pass
    calls = _trace_calls(model, example_input, layer_types)

    ops = [NoiseOperator() for _ in range(len(calls) + 1)]
    names = ["0:input"] + [f"{i}:{path}" + (f"#{k + 1}" if k else "")
                           for i, (path, k, _) in enumerate(calls, start=1)]
    state = _HookState(ops, {(path, k): i for i, (path, k, _) in enumerate(calls, start=1)})
    model.register_forward_pre_hook(_InputHook(state))
    for path in dict.fromkeys(p for p, _, _ in calls):
        model.get_submodule(path).register_forward_hook(_SiteHook(state, path))
    kinds = ["input"] + [_site_kind(module) for _, _, module in calls]
    if kinds[-1] == "fc":  # no site after the last linear layer: its output is the logits
        kinds[-1] = "logits"
    model.noise_sites = [NoiseSite(i, name, kind, op)
                         for i, (name, kind, op) in enumerate(zip(names, kinds, ops))]
    configure(model, noise_settings, repetition_config)
    return model
