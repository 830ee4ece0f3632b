"""Vectorised cohort training: K members of one architecture trained as one network.

A :class:`StackedNetwork` takes the K built networks of a cohort's members (models of
:mod:`models`: one sequence of layers with their noise operators) and holds, per layer, the K
members' parameters stacked along a new first dimension. One forward and backward pass of it
computes what the K members' own passes compute on the same batch:

- convolutions as one grouped convolution (member k's channels are block k; a convolution of
  an input the members share, such as the clean network input, as one plain convolution of all
  K members' filters), linear layers as one batched matmul (one plain matmul on a shared input),
  batch norm over K x C channels (each member's statistics and running buffers its own);
- activations in two layouts: images ``(B, K*C, H, W)`` (member-major channel blocks) and
  features ``(B, K, F)``; a tensor that no member has changed yet (the network input, before
  any layer with parameters or noise) stays shared, without a member dimension;
- every noise site applies each member's own noise config, repetition and enable flags to that
  member's block only (:class:`StackedNoise`); members without noise there are passed through
  untouched. Draws are independent across members; with a generator per member (what a
  cohort gives) a member's draws do not depend on which members share its network.

:func:`stack_adam` / :func:`unstack_adam` move the members' Adam states in and out (Adam is
elementwise, so one Adam over the stacked tensors is K Adams), :meth:`StackedNetwork.unstack`
writes the trained parameters and buffers back into the members' own networks, so that after
an epoch each member's model and optimizer are what its single run would hold (up to float
rounding: batched kernels sum in another order), and everything after the epoch (evaluation,
checkpoints) is the single run's code.

Not every network can be stacked: a layer of another type (an injected torchvision model,
say) raises :class:`NotStackable`; the cohort then trains member after member.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from noise import fast_rng
from noise.config import GaussAdd, GaussCombined, GaussCombined_direct, GaussMul, NoiseConfig
from noise.operator import NoiseOperator, apply_noise
from noise.weights import has_weight_noise

__all__ = ["NotStackable", "StackedNetwork", "StackedNoise", "stack_adam", "unstack_adam",
           "train_epoch_stacked"]


class NotStackable(TypeError):
    """The members' networks cannot be trained as one stacked network."""


# ---- layouts ----------------------------------------------------------------------------------
# A tensor flowing through the stack is (x, shared): shared=True means no member dimension yet
# (the same for every member). Per member: images (B, K*C, H, W), features (B, K, F); the
# member dimension is dim 1 either way, with blocks of C channels (images) or of 1 (features).

def _block(x: torch.Tensor, k: int) -> int:
    """Width of one member's block along dim 1."""
    return x.shape[1] // k


def _per_member(x: torch.Tensor, k: int) -> torch.Tensor:
    """A shared tensor given a member dimension (each member's copy of the same values)."""
    if x.dim() == 4:
        return x.repeat(1, k, 1, 1)
    return x.unsqueeze(1).expand(x.shape[0], k, *x.shape[1:])


class _Stacked(nn.Module):
    """A layer holding K members' tensors stacked; remembers where they came from."""

    def __init__(self, k: int):
        super().__init__()
        self.k = k
        self._sources: list[tuple[str, list[torch.Tensor], bool]] = []

    def _stack(self, name: str, tensors: list[torch.Tensor | None], parameter: bool) -> None:
        if any(t is None for t in tensors):
            if not all(t is None for t in tensors):
                raise NotStackable(f"{name}: some members have it, some do not")
            setattr(self, name, None)
            return
        value = torch.stack([t.detach() for t in tensors]).clone()
        if parameter:
            setattr(self, name, nn.Parameter(value))
        else:
            self.register_buffer(name, value)
        self._sources.append((name, list(tensors), parameter))

    def sources(self):
        """(stacked tensor, [member k's tensor]) for every stacked tensor."""
        return [(getattr(self, name), tensors) for name, tensors, _ in self._sources]

    @torch.no_grad()
    def unstack(self) -> None:
        for name, tensors, _ in self._sources:
            stacked = getattr(self, name)
            for k, t in enumerate(tensors):
                t.copy_(stacked[k])


class StackedConv2d(_Stacked):
    def __init__(self, convs: Sequence[nn.Conv2d]):
        super().__init__(len(convs))
        c = convs[0]
        if c.groups != 1 or c.padding_mode != "zeros" or isinstance(c.padding, str):
            raise NotStackable("convolutions with groups, non-zero padding modes or 'same' "
                               "padding are not stackable")
        self.stride, self.padding, self.dilation = c.stride, c.padding, c.dilation
        self._stack("weight", [m.weight for m in convs], True)
        self._stack("bias", [m.bias for m in convs], True)

    def forward(self, x, shared):
        w = self.weight.flatten(0, 1)
        b = None if self.bias is None else self.bias.flatten()
        groups = 1 if shared else self.k
        return F.conv2d(x, w, b, self.stride, self.padding, self.dilation, groups), False


class StackedLinear(_Stacked):
    def __init__(self, linears: Sequence[nn.Linear]):
        super().__init__(len(linears))
        self._stack("weight", [m.weight for m in linears], True)
        self._stack("bias", [m.bias for m in linears], True)

    def forward(self, x, shared):
        k, out = self.k, self.weight.shape[1]
        if shared:  # (B, F): one matmul with every member's rows
            b = None if self.bias is None else self.bias.flatten()
            return F.linear(x, self.weight.flatten(0, 1), b).view(x.shape[0], k, out), False
        xk = x.transpose(0, 1)  # (K, B, F)
        wt = self.weight.transpose(1, 2)
        y = torch.bmm(xk, wt) if self.bias is None else torch.baddbmm(
            self.bias.unsqueeze(1), xk, wt)
        return y.transpose(0, 1), False


class StackedBatchNorm(_Stacked):
    """K members' batch norms as one over K x C channels (their statistics stay apart)."""

    def __init__(self, bns: Sequence[nn.modules.batchnorm._BatchNorm]):
        super().__init__(len(bns))
        b = bns[0]
        if not (b.affine and b.track_running_stats) or b.momentum is None:
            raise NotStackable("batch norm without affine parameters, running statistics or "
                               "with a cumulative momentum is not stackable")
        if any(m.momentum != b.momentum or m.eps != b.eps for m in bns):
            raise NotStackable("batch norms with different momentum or eps")
        self.momentum, self.eps = b.momentum, b.eps
        for name in ("weight", "bias"):
            self._stack(name, [getattr(m, name) for m in bns], True)
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            self._stack(name, [getattr(m, name) for m in bns], False)

    def forward(self, x, shared):
        if shared:
            x = _per_member(x, self.k)
        shape = x.shape
        flat = x.reshape(shape[0], -1, *shape[3:]) if x.dim() == 3 else x
        if self.training:
            self.num_batches_tracked.add_(1)
        y = F.batch_norm(flat, self.running_mean.view(-1), self.running_var.view(-1),
                         self.weight.flatten(), self.bias.flatten(), self.training,
                         self.momentum, self.eps)
        return y.view(shape), False


class _Stateless(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x, shared):
        return self.fn(x), shared


class _Flatten(nn.Module):
    def __init__(self, k: int, flatten: nn.Flatten):
        super().__init__()
        if flatten.start_dim != 1 or flatten.end_dim != -1:
            raise NotStackable("only Flatten() of everything after the batch dimension")
        self.k = k

    def forward(self, x, shared):
        if shared:
            return x.flatten(1), True
        if x.dim() == 4:   # (B, K*C, H, W) -> (B, K, C*H*W): member blocks are contiguous
            return x.reshape(x.shape[0], self.k, -1), False
        return x, False


# ---- noise ------------------------------------------------------------------------------------

#: per member: ("id",) | ("affine", μm, σm, μa, σa, normalize) -- y = x(μm + σm z1) + μa + σa z2
#: | ("addmul", ...) -- y = (x + μa + σa z2)(μm + σm z1) | ("loop", config, R) -- apply_noise
def _plan(config: NoiseConfig, repetition: int) -> tuple:
    if not config.active(True):
        return ("id",)
    r = math.sqrt(repetition)
    norm = bool(config.normalize_to_input_size)
    if isinstance(config, GaussAdd):
        return ("affine", 1.0, 0.0, config.GaussMean, config.GaussStd / r, norm)
    if isinstance(config, GaussMul):
        return ("affine", config.GaussMean, config.GaussStd / r, 0.0, 0.0, norm)
    if isinstance(config, (GaussCombined, GaussCombined_direct)):
        s_add, s_mul = config.std_pair()
        kind = "affine" if config.FirstMulThenAdd else "addmul"
        if kind == "addmul" and repetition > 1 and s_add and s_mul:
            return ("loop", config, repetition)   # a product of two noises: drawn R times
        return (kind, config.GaussMeanMul, s_mul / r, config.GaussMeanAdd, s_add / r, norm)
    return ("loop", config, repetition)


class StackedNoise(nn.Module):
    """The members' noise operators at one site: each member's own noise on its block.

    Neighbouring members with the same formula form a run that draws its noise in one call
    (each member's σ and mean broadcast over its block); the output is assembled from the
    untouched blocks and the noisy runs. A cohort orders its members by their noisy sites, so
    the layer-wise case (one noisy site per member) is one run per site."""

    def __init__(self, ops: Sequence[NoiseOperator],
                 generators: Sequence[torch.Generator] | None = None):
        super().__init__()
        self.k = len(ops)
        self.generators = generators
        self._columns: dict[tuple, list[torch.Tensor]] = {}
        # a relative σ (sigma_relative_to: rms) as the operator applies it: times its site's RMS
        self.plans = [_plan(op.effective_config if op.config.active(True) else op.config,
                            op.repetition) for op in ops]
        self.runs: list[tuple[str, int, int]] = []   # (kind, first member, end member)
        for i, plan in enumerate(self.plans):
            kind = plan[0]
            if kind == "id":
                continue
            last = self.runs[-1] if self.runs else None
            if last and last[0] == kind != "loop" and last[2] == i:
                self.runs[-1] = (kind, last[1], i + 1)
            else:
                self.runs.append((kind, i, i + 1))

    def _normal(self, x, a, block, sigmas):
        """z ~ N(0, 1) shaped like ``x`` (the blocks of members a, a+1, ...; ``sigmas``: the
        σ each block's z is scaled by): from each member's own generator when the network has
        them, so that a member's draws do not depend on which members share its network (a
        block with σ = 0 draws nothing)."""
        if self.generators is None:
            return fast_rng.normal_like(x)
        z = torch.empty_like(x)
        for j, sigma in enumerate(sigmas):
            part = z.narrow(1, j * block, block)
            if sigma:   # drawn contiguous: the same values whatever the view's strides
                part.copy_(torch.randn(part.shape, generator=self.generators[a + j],
                                       dtype=x.dtype, device=x.device))
            else:
                part.zero_()
        return z

    def _noisy(self, x, kind, a, b, block, numel):
        """The noise of members a..b-1 applied to their blocks ``x`` (dim 1: b-a blocks)."""
        if kind == "loop":
            _, config, repetition = self.plans[a]
            if self.generators is None:
                return apply_noise(x, config, repetition)
            seed = int(torch.randint(2 ** 62, (), generator=self.generators[a]))
            with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
                torch.manual_seed(seed)
                return apply_noise(x, config, repetition)
        rows = []
        for _, mu_m, s_m, mu_a, s_a, norm in self.plans[a:b]:
            scale = 1.0 / numel if norm else 1.0
            rows.append((mu_m, s_m * scale, mu_a, s_a * scale))
        key = (a, x.dim(), block, numel, x.dtype, x.device)
        columns = self._columns.get(key)
        if columns is None:   # made once per layout: no host-to-device copy per step
            shape = [1] * x.dim()
            shape[1] = (b - a) * block
            values = torch.tensor(rows, dtype=x.dtype, device=x.device)   # (b - a, 4)
            columns = [values[:, j].repeat_interleave(block).view(shape) for j in range(4)]
            self._columns[key] = columns

        def column(j):
            return columns[j]
        mul = add = None
        if any(r[1] for r in rows):
            mul = column(0) + column(1) * self._normal(x, a, block, [r[1] for r in rows])
        elif any(r[0] != 1.0 for r in rows):
            mul = column(0)
        if any(r[3] for r in rows):
            add = column(2) + column(3) * self._normal(x, a, block, [r[3] for r in rows])
        elif any(r[2] for r in rows):
            add = column(2)
        if kind == "affine":   # x·m + a
            y = x * mul if mul is not None else x
            return y + add if add is not None else y
        y = x + add if add is not None else x   # (x + a)·m
        return y * mul if mul is not None else y

    def forward(self, x, shared):
        if not self.runs:
            return x, shared
        if shared:
            x = _per_member(x, self.k)
        block = _block(x, self.k)
        numel = x[0].numel() // self.k   # elements of one sample of one member
        pieces, at = [], 0
        for kind, a, b in self.runs:
            if a > at:
                pieces.append(x.narrow(1, at * block, (a - at) * block))
            pieces.append(self._noisy(x.narrow(1, a * block, (b - a) * block), kind, a, b,
                                      block, numel))
            at = b
        if at < self.k:
            pieces.append(x.narrow(1, at * block, (self.k - at) * block))
        return torch.cat(pieces, 1), False


# ---- the network ------------------------------------------------------------------------------

class StackedNetwork(nn.Module):
    """K members' networks (of one architecture) as one network; ``forward(x)`` on a batch
    the members share gives their logits as ``(B, K, classes)``."""

    def __init__(self, nets: Sequence[nn.Module],
                 generators: Sequence[torch.Generator] | None = None):
        """``generators``: one per member, the source of its noise (None: torch's global
        generator, one draw per run of neighbouring members)."""
        super().__init__()
        if not nets:
            raise ValueError("a stacked network needs at least one member")
        if not all(isinstance(n, nn.Sequential) and hasattr(n, "noise_sites") for n in nets):
            raise NotStackable("only the networks of models' builder (a sequence of layers "
                               "with their noise operators) are stackable")
        if any(has_weight_noise(n) for n in nets):
            raise NotStackable("weight noise (weight_noise) is not vectorised: a member with "
                               "it trains member-serial")
        k = len(nets)
        names = list(nets[0]._modules)
        for n in nets[1:]:
            if list(n._modules) != names or any(
                    type(a) is not type(b) for a, b in zip(n.children(), nets[0].children())):
                raise NotStackable("the members' networks differ in their layers")
        self.k = k
        layers = []
        for j, name in enumerate(names):
            mods = [list(n.children())[j] for n in nets]
            m = mods[0]
            if isinstance(m, NoiseOperator):
                layers.append(StackedNoise(mods, generators))
            elif type(m) is nn.Conv2d:
                layers.append(StackedConv2d(mods))
            elif type(m) is nn.Linear:
                layers.append(StackedLinear(mods))
            elif type(m) in (nn.BatchNorm1d, nn.BatchNorm2d):
                layers.append(StackedBatchNorm(mods))
            elif type(m) is nn.ReLU:
                layers.append(_Stateless(torch.relu))
            elif isinstance(m, nn.MaxPool2d):
                layers.append(_Stateless(lambda x, m=m: F.max_pool2d(
                    x, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode)))
            elif type(m) is nn.Flatten:
                layers.append(_Flatten(k, m))
            else:
                raise NotStackable(f"layer {name} ({type(m).__name__}) is not stackable")
        self.stack = nn.ModuleList(layers)
        self.train(nets[0].training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shared = True
        for layer in self.stack:
            x, shared = layer(x, shared)
        if shared:   # a network without parameters or noise: every member the same
            x = _per_member(x, self.k)
        return x

    def stacked_tensors(self):
        """(stacked tensor, [member k's tensor]) for every parameter and buffer."""
        return [pair for layer in self.stack if isinstance(layer, _Stacked)
                for pair in layer.sources()]

    def clampable(self):
        """The stacked parameters outside batch norm (those weight clamping bounds)."""
        return [p for layer in self.stack
                if isinstance(layer, (StackedConv2d, StackedLinear))
                for p in layer.parameters() if p is not None]

    def unstack(self) -> None:
        """Write every member's parameters and buffers back into its own network."""
        for layer in self.stack:
            if isinstance(layer, _Stacked):
                layer.unstack()


# ---- the optimizer ----------------------------------------------------------------------------

def stack_adam(net: StackedNetwork, optimizers: Sequence[torch.optim.Optimizer]
               ) -> torch.optim.Adam:
    """One Adam over ``net``'s stacked parameters holding the members' Adam states (their
    hyper-parameters must agree; a cohort's members share optimizer and lr)."""
    groups = [o.param_groups for o in optimizers]
    if any(type(o) is not torch.optim.Adam or len(g) != 1 for o, g in zip(optimizers, groups)):
        raise NotStackable("only members with one Adam parameter group are stackable")
    hyper = ("lr", "betas", "eps", "weight_decay", "amsgrad", "maximize")
    g0 = groups[0][0]
    for g in groups[1:]:
        if any(g[0][h] != g0[h] for h in hyper):
            raise NotStackable("the members' Adam settings differ")
    opt = torch.optim.Adam(net.parameters(), **{h: g0[h] for h in hyper})
    for stacked, tensors in net.stacked_tensors():
        if not isinstance(stacked, nn.Parameter):
            continue
        states = [o.state.get(t) for o, t in zip(optimizers, tensors)]
        if all(not s for s in states):
            continue
        if any(not s for s in states) or len({float(s["step"]) for s in states}) != 1:
            raise NotStackable("the members' Adam states are at different steps")
        state = {"step": states[0]["step"].clone()}
        for key in states[0]:
            if key != "step":
                state[key] = torch.stack([s[key] for s in states])
        opt.state[stacked] = state
    return opt


def unstack_adam(net: StackedNetwork, opt: torch.optim.Adam,
                 optimizers: Sequence[torch.optim.Optimizer]) -> None:
    """Hand every member's slice of ``opt``'s state back to the member's own Adam."""
    for stacked, tensors in net.stacked_tensors():
        state = opt.state.get(stacked)
        if not isinstance(stacked, nn.Parameter) or not state:
            continue
        for k, (o, t) in enumerate(zip(optimizers, tensors)):
            o.state[t] = {key: (v.clone() if key == "step" else v[k].clone())
                          for key, v in state.items()}


# ---- one epoch --------------------------------------------------------------------------------

def _member_losses(out: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None
                   ) -> torch.Tensor:
    """Each member's mean cross-entropy on the batch, as ``nn.CrossEntropyLoss(weight)``
    computes it: (K,)."""
    k = out.shape[1]
    per = F.cross_entropy(out.permute(0, 2, 1), y.unsqueeze(1).expand(-1, k),
                          reduction="none")   # (B, K)
    if weight is None:
        return per.mean(0)
    w = weight[y].unsqueeze(1)
    return (per * w).sum(0) / w.sum()


def train_epoch_stacked(net: StackedNetwork, opt: torch.optim.Adam, loader,
                        weight: torch.Tensor | None, clamps: Sequence[tuple | None], *,
                        progress=None) -> list[tuple[float, float]]:
    """One epoch of every member on ``loader``'s batches; (mean loss, accuracy %) per member,
    as :func:`util.engine.loops.train_epoch` reports them. ``clamps``: each member's weight
    clamping bounds (or None). ``progress``: called after every batch."""
    net.train()
    k = net.k
    bounds = None
    if any(c is not None for c in clamps):
        lo = [(c[0] if c and c[0] is not None else -math.inf) for c in clamps]
        hi = [(c[1] if c and c[1] is not None else math.inf) for c in clamps]
        bounds = []
        for p in net.clampable():
            shape = (k,) + (1,) * (p.dim() - 1)
            bounds.append((p, torch.tensor(lo, dtype=p.dtype, device=p.device).view(shape),
                           torch.tensor(hi, dtype=p.dtype, device=p.device).view(shape)))
    loss_sum = correct = None
    n = 0
    for x, y in loader:
        opt.zero_grad(set_to_none=True)
        out = net(x)
        losses = _member_losses(out, y, weight)
        losses.sum().backward()
        opt.step()
        if bounds is not None:
            with torch.no_grad():
                for p, lo_t, hi_t in bounds:
                    torch.clamp(p, lo_t, hi_t, out=p)
        with torch.no_grad():
            batch_loss = losses.detach().double() * y.shape[0]
            o = out.detach()
            # util.engine.loops.correct_predictions per member: a row that is not all finite
            # predicts nothing
            batch_correct = ((o.argmax(2) == y.unsqueeze(1))
                             & torch.isfinite(o).all(2)).sum(0)
        loss_sum = batch_loss if loss_sum is None else loss_sum + batch_loss
        correct = batch_correct if correct is None else correct + batch_correct
        n += y.shape[0]
        if progress is not None:
            progress()
    if n == 0:
        raise RuntimeError("the training loader yielded no batches")
    return [(float(l_) / n, 100.0 * float(c) / n)
            for l_, c in zip(loss_sum.tolist(), correct.tolist())]

