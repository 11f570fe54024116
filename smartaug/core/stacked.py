"""K trainings of one model as one: the seeds of a study's grid trained together.

Two ways to stack. ``StackedLeNet`` (LeNet models, on any device) holds K LeNets
(``smartaug.models.lenet.LeNet``, same shape, each its own weights): the convolutions are grouped
(group k = model k), the fully connected layers batched matrix products, every batch norm
one channel per model and channel. Each model sees its own batch (channel block k of the
input), so its forward pass, its batch statistics and, with the losses summed, its
gradients are those of its lone training; Adam and SGD update each element on its own, so
one optimizer step is K lone steps. ``train_stacked`` is
``smartaug.core.train.train`` for K (model, images, labels, config) at once: each with its
own seed's batch order (``torch.randperm`` from its own generator, as a lone training draws
it), loss and counts, and it returns K histories. ``VmapStack`` (any other model, on CUDA)
stacks the K models' parameters and buffers (``torch.func.stack_module_state``) and runs the
model's own forward under ``torch.func.vmap``, batch norm statistics included; on the CPU
that is slower than training each alone, so there only LeNet models stack.

Equal up to floating-point reassociation: a grouped convolution sums in another order than
a lone one, so one step's updates differ as a lone training's on one and on two threads do,
and the trained models' accuracies by a few test images (``tests/test_stacked.py`` states
and checks the bounds). What cannot stack (``stackable`` says why): another model on the
CPU, a model ``torch.func`` cannot vmap, a curriculum, online augmentation, trainings of
different lengths; those train alone.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from smartaug.config import TrainConfig
from smartaug.core.losses import compute_loss
from smartaug.core.train import (
    Distinct,
    _optimizer,
    as_batch,
    check_labels,
    check_weights,
    diverged,
    due_sets,
    epoch_row,
    fresh_draws,
    resolve_device,
    with_draws,
)
from smartaug.models.lenet import LeNet

__all__ = ["StackedLeNet", "VmapStack", "stackable", "train_stacked"]

_ONLINE = "online augmentation draws each training's images as it goes"


def stackable(model: nn.Module, cfg: TrainConfig) -> str | None:
    """Why ``model`` trained by ``cfg`` cannot be stacked, or None when it can: a LeNet
    anywhere, any other model on CUDA when ``torch.func`` can vmap its training step."""
    if cfg.augment == "online":
        return _ONLINE
    if type(model) is LeNet:
        return None
    device = resolve_device(cfg.device)
    if device.type != "cuda":
        return (f"{type(model).__name__} would stack through torch.func's vmap, which on the "
                f"CPU is slower than training alone (only LeNet models stack faster there)")
    return vmap_refusal(model, device)


def vmap_refusal(model: nn.Module, device: torch.device) -> str | None:
    """Why ``torch.func`` cannot train two copies of ``model`` as one (a forward and
    backward pass on two images each), or None when it can."""
    try:
        twins = [copy.deepcopy(model).to(device).train() for _ in range(2)]
        stack = VmapStack(twins)
        x = stack.inputs([torch.zeros(2, *_image_shape(model), dtype=torch.uint8,
                                      device=device)] * 2)
        f, logits = stack(x)
        (f.float().sum() + logits.float().sum()).backward()
    except Exception as e:  # noqa: BLE001 - any failure means: train it alone
        return f"torch.func cannot stack {type(model).__name__}: {type(e).__name__}: {e}"
    return None


def _image_shape(model: nn.Module) -> tuple[int, int, int]:
    """(H, W, C) of the images ``model`` takes (``make_model`` records them on it)."""
    spec = getattr(model, "spec", {})
    side = spec.get("image_size", 32)
    return side, side, spec.get("in_channels", 3)


def _cat(tensors: Sequence[Tensor]) -> nn.Parameter:
    return nn.Parameter(torch.cat([t.detach() for t in tensors]).clone())


def _stack(tensors: Sequence[Tensor]) -> nn.Parameter:
    return nn.Parameter(torch.stack([t.detach() for t in tensors]).clone())


def _bn(bns: Sequence[nn.modules.batchnorm._BatchNorm], cls) -> nn.Module:
    """One batch norm over the K models' channels, side by side."""
    b0 = bns[0]
    out = cls(sum(b.num_features for b in bns), eps=b0.eps, momentum=b0.momentum)
    with torch.no_grad():
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(out, name).copy_(torch.cat([getattr(b, name) for b in bns]))
        out.num_batches_tracked.copy_(b0.num_batches_tracked)
    return out


class StackedLeNet(nn.Module):
    """K LeNets as one module. ``features(x)``: x [B, K*C, H, W] (model k's batch in channels
    k*C..(k+1)*C) -> [K, B, D]; ``logits(f)`` -> [K, B, classes]. ``unstack()`` writes the
    weights and batch-norm statistics back into the K models it was made from."""

    def __init__(self, models: Sequence[LeNet]):
        super().__init__()
        self.models = list(models)
        self.k = k = len(models)
        convs = [m.conv for m in models]
        fcs = [m.fc for m in models]
        c1, c2 = convs[0][0], convs[0][4]
        self.register_buffer("mean", torch.cat([m.normalize.mean for m in models], 1))
        self.register_buffer("std", torch.cat([m.normalize.std for m in models], 1))
        self.conv1 = nn.Conv2d(k * c1.in_channels, k * c1.out_channels, c1.kernel_size,
                               padding=c1.padding, groups=k, bias=False)
        self.conv1.weight = _cat([c[0].weight for c in convs])
        self.bn1 = _bn([c[1] for c in convs], nn.BatchNorm2d)
        self.conv2 = nn.Conv2d(k * c2.in_channels, k * c2.out_channels, c2.kernel_size,
                               padding=c2.padding, groups=k, bias=False)
        self.conv2.weight = _cat([c[4].weight for c in convs])
        self.bn2 = _bn([c[5] for c in convs], nn.BatchNorm2d)
        self.fc1 = _stack([f[1].weight for f in fcs])  # (K, f1, c2*side*side)
        self.bn3 = _bn([f[2] for f in fcs], nn.BatchNorm1d)
        self.fc2 = _stack([f[4].weight for f in fcs])  # (K, f2, f1)
        self.bn4 = _bn([f[5] for f in fcs], nn.BatchNorm1d)
        self.head_weight = _stack([m.head.weight for m in models])  # (K, classes, f2)
        self.head_bias = _stack([m.head.bias for m in models])  # (K, classes)

    def _fc(self, x: Tensor, weight: Tensor, bn: nn.Module) -> Tensor:
        """[K, B, in] -> linear -> BN -> ReLU -> [K, B, out]."""
        h = torch.bmm(x, weight.transpose(1, 2))
        b = h.shape[1]
        h = bn(h.transpose(0, 1).reshape(b, -1))
        return F.relu(h).reshape(b, self.k, -1).transpose(0, 1)

    def features(self, x: Tensor) -> Tensor:
        x = (x - self.mean) / self.std
        # ReLU after the pooling: the same values and gradients as LeNet's pool(relu(.))
        # (both are monotone; a window's max is positive exactly where its ReLU is), on a
        # quarter of the elements
        x = F.relu(F.max_pool2d(self.bn1(self.conv1(x)), 2))
        x = F.relu(F.max_pool2d(self.bn2(self.conv2(x)), 2))
        b = x.shape[0]
        x = x.reshape(b, self.k, -1).transpose(0, 1)  # model k's (c2, side, side), flattened
        return self._fc(self._fc(x, self.fc1, self.bn3), self.fc2, self.bn4)

    def logits(self, f: Tensor) -> Tensor:
        return torch.baddbmm(self.head_bias.unsqueeze(1), f, self.head_weight.transpose(1, 2))

    def inputs(self, batches: Sequence[Tensor]) -> Tensor:
        """K uint8 batches [B, H, W, C] -> the stack's input [B, K*C, H, W] in [0, 1]
        (channels_last: grouped convolutions on the CPU run ~1.8x faster in NHWC)."""
        return as_batch(torch.cat(list(batches), dim=3), True)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(features [K, B, D], logits [K, B, classes])."""
        f = self.features(x)
        return f, self.logits(f)

    @torch.no_grad()
    def unstack(self) -> list[LeNet]:
        """The K models, each with its slice of the weights and batch-norm statistics."""
        def put(chunks, targets):
            for t, c in zip(targets, chunks, strict=True):
                t.copy_(c)

        for bn, mods in ((self.bn1, [m.conv[1] for m in self.models]),
                         (self.bn2, [m.conv[5] for m in self.models]),
                         (self.bn3, [m.fc[2] for m in self.models]),
                         (self.bn4, [m.fc[5] for m in self.models])):
            for attr in ("weight", "bias", "running_mean", "running_var"):
                put(getattr(bn, attr).chunk(self.k), [getattr(b, attr) for b in mods])
            for b in mods:
                b.num_batches_tracked.copy_(bn.num_batches_tracked)
        put(self.conv1.weight.chunk(self.k), [m.conv[0].weight for m in self.models])
        put(self.conv2.weight.chunk(self.k), [m.conv[4].weight for m in self.models])
        put(self.fc1, [m.fc[1].weight for m in self.models])
        put(self.fc2, [m.fc[4].weight for m in self.models])
        put(self.head_weight, [m.head.weight for m in self.models])
        put(self.head_bias, [m.head.bias for m in self.models])
        return self.models


class _FeaturesAndLogits(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.m = model

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        f = self.m.features(x)
        return f, self.m.head(f)


class VmapStack(nn.Module):
    """K copies of any model (``features`` + ``head``, as every smartaug model) as one:
    their parameters and buffers stacked along a new first dimension, the model's own
    forward run under ``torch.func.vmap``. ``forward(x)``: x [K, B, C, H, W] -> (features
    [K, B, D], logits [K, B, classes]); ``unstack()`` writes back into the K models."""

    def __init__(self, models: Sequence[nn.Module]):
        super().__init__()
        self.models = list(models)
        self.k = len(models)
        wrapped = [_FeaturesAndLogits(m) for m in models]
        params, buffers = stack_module_state(wrapped)
        self.names = list(params)
        self.buffer_names = list(buffers)
        self.stacked = nn.ParameterList([nn.Parameter(params[n].detach().clone())
                                         for n in self.names])
        for i, n in enumerate(self.buffer_names):
            self.register_buffer(f"b{i}", buffers[n].clone())
        # the code to run, without weights (a list: not a submodule, so .to() leaves it)
        self._base = [copy.deepcopy(wrapped[0]).to("meta")]

    @property
    def head_weight(self) -> Tensor:
        return self.stacked[self.names.index("m.head.weight")]

    def inputs(self, batches: Sequence[Tensor]) -> Tensor:
        cuda = batches[0].device.type == "cuda"
        return torch.stack([as_batch(b, cuda) for b in batches])

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        buffers = [getattr(self, f"b{i}") for i in range(len(self.buffer_names))]
        names, bnames, base = self.names, self.buffer_names, self._base[0]

        def one(params, bufs, xb):
            return functional_call(base, ({**dict(zip(names, params, strict=True)),
                                           **dict(zip(bnames, bufs, strict=True))}), (xb,))

        return vmap(one, in_dims=(0, 0, 0))(list(self.stacked), buffers, x)

    @torch.no_grad()
    def unstack(self) -> list[nn.Module]:
        for j, m in enumerate(self.models):
            state = {n[2:]: p[j] for n, p in zip(self.names, self.stacked, strict=True)}
            state.update({n[2:]: getattr(self, f"b{i}")[j]
                          for i, n in enumerate(self.buffer_names)})
            m.load_state_dict(state)
        return self.models


def stack_models(models: Sequence[nn.Module]) -> StackedLeNet | VmapStack:
    """The stack for ``models``: grouped LeNets, else ``torch.func``'s vmap."""
    if all(type(m) is LeNet for m in models):
        return StackedLeNet(models)
    return VmapStack(models)


def _check(models, data, cfgs, online) -> int:
    if not (len(models) == len(data) == len(cfgs)) or not models:
        raise ValueError("train_stacked takes as many models, datasets and configs, >= 1")
    lengths = {len(y) for _, y in data}
    if len(lengths) != 1:
        raise ValueError(f"stacked trainings must have equal training sets; got sizes "
                         f"{sorted(lengths)}")
    shared = {(c.epochs, c.batch_size, c.lr, c.optimizer, c.weight_decay, c.device)
              for c in cfgs}
    if len(shared) != 1:
        raise ValueError("stacked trainings must share epochs, batch size, optimizer and device")
    if len({type(m) for m in models}) != 1:
        raise ValueError("stacked trainings must train one kind of model")
    if online is None and any(c.augment == "online" for c in cfgs):
        raise ValueError(f"cannot stack: {_ONLINE} (give train_stacked their sources)")
    if online is not None and len(online) != len(models):
        raise ValueError("train_stacked takes one online source per model")
    return lengths.pop()


def train_stacked(
    models: Sequence[nn.Module],
    data: Sequence[tuple[np.ndarray, np.ndarray]],
    cfgs: Sequence[TrainConfig],
    *,
    eval_sets: dict[str, tuple] | None = None,
    log: Callable[[str], None] | None = None,
    eval_last: bool | frozenset[str] = False,
    n_originals: int | None = None,
    online: Sequence | None = None,
) -> list[list[dict]]:
    """Train model k on ``data[k]`` (uint8 images [N, H, W, C], labels [N]; N equal for all)
    with ``cfgs[k]`` (its seed and loss; the rest shared), all K as one model
    (``StackedLeNet`` for LeNets, else ``VmapStack``); the models are trained in place.
    ``online``: K sources of fresh augmentations (``smartaug.core.online.Online``, each
    drawing as many an epoch): every epoch model k trains on ``data[k]`` plus source k's
    draws, the next epoch's made in a thread while this one trains, as ``train`` does.
    Returns K histories, each what ``train`` returns for that model alone (``seconds``: the
    stack's time over K); the epoch's bookkeeping is ``train``'s own."""
    n = _check(models, data, cfgs, online)
    cfg0, k = cfgs[0], len(models)
    if cfg0.epochs < 0 or cfg0.batch_size < 1:
        raise ValueError("epochs must be >= 0 and batch_size >= 1")
    device = resolve_device(cfg0.device)
    xs = [torch.as_tensor(x).to(device) for x, _ in data]
    ys = [torch.as_tensor(y).to(device=device, dtype=torch.long) for _, y in data]
    for y in ys:
        check_labels(y, models[0].head.out_features)
    run = _StackedRun(models, cfgs, device)
    gens = [torch.Generator().manual_seed(c.seed) for c in cfgs]
    n_orig = n if n_originals is None else n_originals
    distinct = [Distinct(n - n_orig, device, src.fresh if online else None)
                for src in (online or [None] * k)]
    histories: list[list[dict]] = [[] for _ in range(k)]
    draw = (lambda e: [src.epoch(e) for src in online]) if online is not None else None
    with fresh_draws(draw, cfg0.epochs) as take:
        for epoch in range(1, cfg0.epochs + 1):
            fresh = take(epoch)
            xs_e, ys_e = (xs, ys) if fresh is None else map(list, zip(*(  # + fresh draws
                with_draws(x, y, f) for x, y, f in zip(xs, ys, fresh, strict=True)), strict=True))
            if len({len(y) for y in ys_e}) != 1:
                raise ValueError("stacked online sources must draw as many images each")
            n = len(ys_e[0])
            t0 = time.perf_counter()
            perms = [torch.randperm(n, generator=g).to(device) for g in gens]
            loss_sum, correct, samples, steps = run.epoch(xs_e, ys_e, perms)
            diverged(loss_sum, epoch, cfg0, seeds=[c.seed for c in cfgs])
            seconds = (time.perf_counter() - t0) / k
            due = due_sets(eval_sets, eval_last, epoch, cfg0.epochs)
            trained = run.stack.unstack() if due else None
            for j in range(k):
                used = perms[j][:samples]
                aug = used[used >= n_orig]
                histories[j].append(epoch_row(
                    epoch, loss_sum=loss_sum[j], correct=correct[j], n=n, seconds=seconds,
                    plan_seconds=0.0, samples=samples, steps=steps, augmented=len(aug),
                    distinct=distinct[j].add(aug - n_orig), head_weight=run.stack.head_weight[j],
                    model=trained[j] if trained else None, eval_sets=due, device=device))
            if log is not None:
                log(f"epoch {epoch:3d}/{cfg0.epochs} ({k} trainings stacked) loss "
                    + " ".join(f"{float(v) / n:.4f}" for v in loss_sum)
                    + f" ({seconds * k:.1f}s, {k * n / (seconds * k):.0f} img/s)")
    for c, m in zip(cfgs, run.stack.unstack(), strict=True):
        check_weights(m, f"seed {c.seed}'s trained model")
        m.eval()
    return histories


class _StackedRun:
    """What every epoch of K stacked trainings shares: the stack, its optimizer and losses."""

    def __init__(self, models: Sequence[nn.Module], cfgs: Sequence[TrainConfig],
                 device: torch.device):
        self.cuda = device.type == "cuda"
        self.stack = stack_models([m.to(device) for m in models]).to(device)
        if isinstance(self.stack, StackedLeNet) or self.cuda:
            self.stack.to(memory_format=torch.channels_last)
        self.cfgs, self.k = cfgs, len(models)
        self.opt = _optimizer(self.stack, cfgs[0])
        self.plain = all(c.loss.kind == "none" for c in cfgs)
        self.num_classes = models[0].head.out_features

    def epoch(self, xs: list[Tensor], ys: list[Tensor], perms: list[Tensor]):
        """One pass, model k over ``perms[k]``: (loss sums [K], correct [K], samples, steps)."""
        stack, k, bs, n = self.stack, self.k, self.cfgs[0].batch_size, len(perms[0])
        stack.train()
        loss_sum = torch.zeros(k, device=perms[0].device)
        correct = torch.zeros(k, device=perms[0].device)
        samples = steps = 0
        for i in range(0, n, bs):
            idx = [p[i : i + bs] for p in perms]
            if len(idx[0]) < 2 and n > 1:  # batch norm needs 2 samples
                continue
            x = stack.inputs([x_all[j] for x_all, j in zip(xs, idx, strict=True)])
            y = torch.stack([y_all[j] for y_all, j in zip(ys, idx, strict=True)])  # (K, B)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.cuda):
                f, logits = stack(x)
            f, logits = f.float(), logits.float()
            if self.plain:  # each model's mean cross-entropy, summed: independent gradients
                per = F.cross_entropy(logits.reshape(-1, self.num_classes), y.reshape(-1),
                                      reduction="none").view(k, -1).mean(1)
            else:
                per = torch.stack([compute_loss(c.loss, logits[j], f[j], stack.head_weight[j],
                                                y[j])[0] for j, c in enumerate(self.cfgs)])
            self.opt.zero_grad(set_to_none=True)
            per.sum().backward()
            self.opt.step()
            loss_sum += per.detach() * y.shape[1]
            correct += (logits.detach().argmax(2) == y).sum(1)
            samples += y.shape[1]
            steps += 1
        return loss_sum, correct, samples, steps
