"""Train and evaluate a classifier over in-memory uint8 tensors.

The whole split stays one uint8 tensor on the device; each batch is indexed, scaled to
[0, 1] and fed to the model (no per-sample DataLoader work). One log line per epoch.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np
import torch
from torch import Tensor, nn

from smartaug.config import TrainConfig
from smartaug.core.curriculum import Plan
from smartaug.core.hardness import _angles64, _avh64
from smartaug.core.losses import compute_loss
from smartaug.core.online import Online
from smartaug.errors import InputError, UserError
from smartaug.models import make_model

__all__ = ["Distinct", "TrainConfig", "TrainingError", "as_batch", "build_model",
           "check_labels", "check_weights", "diverged", "epoch_row", "evaluate", "fresh_draws",
           "resolve_device", "train", "with_draws"]


class TrainingError(UserError, RuntimeError):
    """A training that cannot give a usable model (its loss or weights went non-finite)."""


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` (CUDA when PyTorch sees a GPU, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``;
    ValueError for a device this machine does not have (never a silent CPU run)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise InputError(f"unknown device {device!r}; valid: auto, cpu, cuda, cuda:N") from e
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device {device!r} asked for, but PyTorch sees no CUDA GPU on this "
                             f"machine (torch {torch.__version__}, CUDA build "
                             f"{torch.version.cuda or 'none'}); use --device cpu, or auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(f"device {device!r}: this machine has {torch.cuda.device_count()} "
                             f"CUDA device(s), numbered from 0")
    elif dev.type != "cpu":
        raise InputError(f"unsupported device {device!r}; valid: auto, cpu, cuda, cuda:N")
    return dev


def build_model(name: str, num_classes: int, in_channels: int, image_size: int, *,
                seed: int, **kwargs) -> nn.Module:
    """``make_model`` with weights drawn from ``seed`` (the global RNG is left untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make_model(name, num_classes, in_channels, image_size, **kwargs)


def as_batch(x_u8: Tensor, channels_last: bool) -> Tensor:
    """uint8 [B, H, W, C] -> float [B, C, H, W] in [0, 1]."""
    x = x_u8.permute(0, 3, 1, 2).float().div_(255.0)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


@torch.inference_mode()
def evaluate(model: nn.Module, images: Tensor | np.ndarray, labels: Tensor | np.ndarray, *,
             batch_size: int = 1024, device: torch.device | None = None) -> dict[str, float]:
    """Accuracy, mean CE, mean AVH and mean feature norm of ``model`` on uint8 images.

    images: [N, H, W, C] uint8, labels: [N] int. AVH is averaged over samples where it is
    defined (non-zero feature).
    """
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    x_all = torch.as_tensor(images).to(device)
    y_all = torch.as_tensor(labels).to(device)
    correct = loss = avh_sum = avh_n = fnorm = 0.0
    w = model.head.weight
    cuda = device.type == "cuda"
    for i in range(0, len(y_all), batch_size):
        x = as_batch(x_all[i : i + batch_size], cuda)
        y = y_all[i : i + batch_size]
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            f = model.features(x)
        f = f.float()
        logits = model.head(f)
        correct += float((logits.argmax(1) == y).sum())
        loss += float(nn.functional.cross_entropy(logits.float(), y, reduction="sum"))
        a = _avh64(_angles64(f, w), y)
        ok = torch.isfinite(a)
        avh_sum += float(a[ok].sum())
        avh_n += float(ok.sum())
        fnorm += float(f.float().norm(dim=1).sum())
    model.train(was_training)
    n = max(len(y_all), 1)
    # no sample with a defined AVH (all features zero or non-finite): undefined, never 0.0
    return {"acc": correct / n, "loss": loss / n,
            "avh": avh_sum / avh_n if avh_n else float("nan"), "feature_norm": fnorm / n}


def _optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9, nesterov=True,
                               weight_decay=cfg.weight_decay)
    raise InputError(f"unknown optimizer {cfg.optimizer!r}; valid: adam, sgd")


def _online(cfg: TrainConfig, images, labels) -> Online | None:
    """The per-epoch source of fresh augmentations when ``cfg.augment`` is online."""
    if cfg.augment != "online":
        return None
    return Online(cfg.policy, np.asarray(images), np.asarray(labels), cfg.seed,
                  cfg.augmentations)


# ---------------------------------------------------- an epoch's bookkeeping (train and stacked)


def check_labels(y: Tensor, num_classes: int) -> None:
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise InputError(f"labels must lie in 0..{num_classes - 1}; got "
                         f"{int(y.min())}..{int(y.max())}")


@contextmanager
def fresh_draws(draw: Callable[[int], object] | None, epochs: int) -> Iterator[Callable]:
    """``take(epoch)``: epoch's draw of ``draw`` (an online source's fresh augmentations),
    the next epoch's made in a thread while this one trains; None without a source."""
    if draw is None:
        yield lambda epoch: None
        return
    pool = ThreadPoolExecutor(1)
    ahead = [pool.submit(draw, 1)]

    def take(epoch: int):
        out = ahead[0].result()
        ahead[0] = pool.submit(draw, epoch + 1) if epoch < epochs else None
        return out

    try:
        yield take
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def with_draws(x: Tensor, y: Tensor, draws: tuple) -> tuple[Tensor, Tensor]:
    """The originals ``x``, ``y`` followed by an online source's ``draws`` (images, labels)."""
    return (torch.cat([x, torch.as_tensor(draws[0]).to(x.device)]),
            torch.cat([y, torch.as_tensor(draws[1]).to(device=y.device, dtype=torch.long)]))


class Distinct:
    """The distinct augmentations a training has seen: a fixed set's rows marked once seen
    (``fresh`` None); an online source's draws each new (``fresh`` True) or not counted."""

    def __init__(self, n_augmentations: int, device, fresh: bool | None = None):
        self.fresh, self.count = fresh, 0
        self.seen = None if fresh is not None else torch.zeros(
            max(n_augmentations, 0), dtype=torch.bool, device=device)

    def add(self, positions: Tensor) -> int:
        """Count an epoch's augmentations (their positions among the augmentations)."""
        if self.seen is None:
            self.count += len(positions) if self.fresh else 0
        else:
            self.seen[positions] = True
            self.count = int(self.seen.sum())
        return self.count


def epoch_row(epoch: int, *, loss_sum, correct, n: int, seconds: float, plan_seconds: float,
              samples: int, steps: int, augmented: int, distinct: int, head_weight: Tensor,
              model: nn.Module | None = None, eval_sets: dict | None = None, device=None
              ) -> dict:
    """One history row: the epoch's training figures, then each eval set's accuracy, AVH and
    feature norm when ``model`` is given (the epochs that evaluate)."""
    row = {"epoch": epoch, "train_loss": float(loss_sum) / n, "train_acc": float(correct) / n,
           "seconds": seconds, "plan_seconds": plan_seconds, "samples": samples,
           "steps": steps, "augmented": augmented, "distinct": distinct,
           "weight_norm_mean": float(head_weight.detach().norm(dim=1).mean())}
    for name, (xe, ye) in (eval_sets or {}).items() if model is not None else ():
        m = evaluate(model, xe, ye, device=device)
        row.update({f"{name}_acc": m["acc"], f"{name}_avh": m["avh"],
                    f"{name}_feature_norm": m["feature_norm"]})
    return row


def due_sets(eval_sets: dict | None, eval_last, epoch: int, epochs: int) -> dict | None:
    """The eval sets epoch ``epoch`` evaluates: all of them after the last epoch; before it
    none when ``eval_last`` is True, those not named in it when it is a collection of names
    (``{"test"}``: the test split once, at the end; the validation split every epoch)."""
    if not eval_sets or epoch == epochs or not eval_last:
        return eval_sets or None
    if eval_last is True:
        return None
    return {k: v for k, v in eval_sets.items() if k not in eval_last} or None


def diverged(loss_sum: Tensor, epoch: int, cfg: TrainConfig, seeds=None) -> None:
    """TrainingError when an epoch's loss (one per stacked model, with their ``seeds``) is
    not finite: one check an epoch, as the sum is read anyway."""
    if seeds is None:
        if not torch.isfinite(loss_sum):
            raise TrainingError(
                f"the training diverged: its loss became {float(loss_sum)} in epoch {epoch} "
                f"(lr {cfg.lr}, {cfg.optimizer}); nothing was registered. Lower the learning "
                f"rate (--lr), or check the starting weights")
        return
    bad = [s for s, v in zip(seeds, loss_sum, strict=True) if not torch.isfinite(v)]
    if bad:
        raise TrainingError(f"the training of seed(s) {bad} diverged in epoch {epoch} (lr "
                            f"{cfg.lr}, {cfg.optimizer}); nothing was registered. Lower "
                            f"the learning rate (--lr), or check the starting weights")


def check_weights(model: nn.Module, who: str = "the trained model") -> None:
    """TrainingError when a trained model holds a non-finite weight."""
    bad = next((k for k, v in model.state_dict().items()
                if v.is_floating_point() and not torch.isfinite(v).all()), None)
    if bad is not None:
        raise TrainingError(f"{who}'s {bad} holds non-finite values; nothing was "
                            f"registered. Check the starting weights, or lower the learning rate")


# ------------------------------------------------------------------ one training


def train(
    model: nn.Module,
    images: Tensor | np.ndarray,
    labels: Tensor | np.ndarray,
    cfg: TrainConfig,
    *,
    eval_sets: dict[str, tuple] | None = None,
    log: Callable[[str], None] | None = print,
    eval_last: bool | frozenset[str] = False,
    curriculum=None,
    n_originals: int | None = None,
    online_source: Online | None = None,
) -> list[dict]:
    """Train ``model`` in place on uint8 images [N, H, W, C] and int labels [N].

    After every epoch records train loss / accuracy, then accuracy, AVH and feature norm on
    each ``eval_sets`` entry (name -> (images, labels)), and the mean class-weight norm
    (``eval_last``: the eval sets after the last epoch only, as a grid of trainings needs;
    a set of names: those only then, the others every epoch, ``due_sets``).
    Returns that history (one dict per epoch). Deterministic on CPU for a given ``cfg.seed``.

    ``curriculum`` (``smartaug.core.curriculum``): the images are the originals then the whole
    pool, and its ``plan(epoch, model)`` gives the rows (and loss weights) each epoch trains
    on; without one every epoch's plan is every row. ``n_originals``: how many leading rows
    are originals (default: all), for the counts each history row carries: ``samples`` (rows
    through a backward pass), ``augmented`` (of them, augmentations), ``distinct`` (distinct
    augmentations seen so far: an online policy's draws are each new) and ``steps``
    (optimizer steps). ``online_source``: the fresh augmentations every epoch
    (``smartaug.core.online.Online``) in place of the one ``cfg``'s policy names.
    """
    if cfg.epochs < 0 or cfg.batch_size < 1:
        raise ValueError("epochs must be >= 0 and batch_size >= 1")
    device = resolve_device(cfg.device)
    run = _Run(model, cfg, device, curriculum)
    originals = torch.as_tensor(images).to(device)  # (N, H, W, C) uint8
    y_orig = torch.as_tensor(labels).to(device=device, dtype=torch.long)  # (N,)
    check_labels(y_orig, model.head.out_features)
    x_all, y_all = originals, y_orig
    online = online_source if online_source is not None else _online(cfg, images, labels)
    if curriculum is not None and online is not None:
        raise InputError("a training is either online (fresh augmentations every epoch) or "
                         "on a curriculum over a pool, not both")
    n_orig = len(y_all) if n_originals is None else n_originals
    distinct = Distinct(len(y_all) - n_orig, device, online.fresh if online else None)
    gen = torch.Generator().manual_seed(cfg.seed)
    history = []
    with fresh_draws(online.epoch if online is not None else None, cfg.epochs) as take:
        for epoch in range(1, cfg.epochs + 1):
            fresh = take(epoch)
            if fresh is not None:  # the originals + this epoch's fresh draws
                x_all, y_all = with_draws(originals, y_orig, fresh)
            t0 = time.perf_counter()
            plan = curriculum.plan(epoch, model) if curriculum is not None else \
                Plan(np.arange(len(y_all)))
            plan_seconds = time.perf_counter() - t0
            # the plan's rows, shuffled (its weights follow them)
            order = torch.randperm(len(plan.rows), generator=gen)
            perm = torch.as_tensor(plan.rows)[order].to(device)
            weights = None if plan.weights is None else torch.as_tensor(
                plan.weights, dtype=torch.float32)[order].to(device)
            loss_sum, correct, samples, steps = run.epoch(x_all, y_all, perm, weights)
            diverged(loss_sum, epoch, cfg)
            used = perm[:samples]  # a last batch of one is skipped
            aug = used[used >= n_orig]
            due = due_sets(eval_sets, eval_last, epoch, cfg.epochs)
            row = epoch_row(epoch, loss_sum=loss_sum, correct=correct, n=len(perm),
                            seconds=time.perf_counter() - t0, plan_seconds=plan_seconds,
                            samples=samples, steps=steps, augmented=len(aug),
                            distinct=distinct.add(aug - n_orig), head_weight=model.head.weight,
                            model=model if due else None, eval_sets=due, device=device)
            history.append(row)
            _log_epoch(log, row, cfg.epochs, len(perm))
    check_weights(model)
    model.eval()
    return history


def _log_epoch(log, row: dict, epochs: int, n: int) -> None:
    if log is not None:
        extra = " ".join(f"{k} {v:.4f}" for k, v in row.items()
                         if k.endswith(("_acc", "_avh")) and not k.startswith("train"))
        log(f"epoch {row['epoch']:3d}/{epochs} loss {row['train_loss']:.4f} "
            f"acc {row['train_acc']:.4f} {extra} ({row['seconds']:.1f}s, "
            f"{n / row['seconds']:.0f} img/s)")


CHANNELS_LAST_ENV = "SMARTAUG_CHANNELS_LAST"


def channels_last(cuda: bool, batch_size: int) -> bool:
    """Whether a training lays its batches out channels-last (NHWC): on CUDA always; on the CPU
    for batches of 512 or more, where oneDNN's NHWC kernels pay off. ``SMARTAUG_CHANNELS_LAST``
    = 1 or 0 forces either layout (the figures agree within float tolerance either way; the
    test suite runs under both)."""
    forced = os.environ.get(CHANNELS_LAST_ENV, "")
    if forced in ("0", "1"):
        return forced == "1"
    if forced:
        raise InputError(f"{CHANNELS_LAST_ENV} must be 1 or 0 (or unset), got {forced!r}")
    return cuda or batch_size >= 512


class _Run:
    """What every epoch of one training shares: the model, its optimizer, its loss and how its
    batches are laid out (channels_last; bf16 autocast on CUDA)."""

    def __init__(self, model: nn.Module, cfg: TrainConfig, device: torch.device, curriculum):
        model.to(device)
        # channels_last: tensor cores on CUDA; on the CPU oneDNN's NHWC kernels pay off for
        # large batches (lenet5-wide, batch 1000, 2 cores: 1.6x faster) and cost ~10 % on
        # small ones (LeNet-5, batch 128): ``channels_last``. On CUDA also bf16 autocast (no
        # loss scaling), and the whole dataset resident on the device as uint8
        self.cuda = device.type == "cuda"
        self.channels_last = channels_last(self.cuda, cfg.batch_size)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        self.model, self.cfg, self.curriculum = model, cfg, curriculum
        self.opt = _optimizer(model, cfg)
        self.weighted = curriculum is not None and curriculum.needs_losses
        if self.weighted and cfg.loss.kind != "none":
            raise InputError(f"a pruning curriculum rescales each item's cross-entropy; it "
                             f"cannot take the loss {cfg.loss.label()}: train it with loss ce")

    def epoch(self, x_all: Tensor, y_all: Tensor, perm: Tensor, weights: Tensor | None):
        """One pass over ``perm``'s rows in batches: (loss sum, correct, samples, steps)."""
        model, bs = self.model, self.cfg.batch_size
        model.train()
        loss_sum = torch.zeros((), device=perm.device)
        correct = torch.zeros((), device=perm.device)
        samples = steps = 0
        n = len(perm)
        for i in range(0, n, bs):
            idx = perm[i : i + bs]
            if len(idx) < 2 and n > 1:  # batch norm needs 2 samples
                continue
            x = as_batch(x_all[idx], self.channels_last)
            y = y_all[idx]
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.cuda):
                f = model.features(x)
                logits = model.head(f)
            # the loss (and AVH's angles) in fp32; on the CPU these are the tensors themselves
            f, logits = f.float(), logits.float()
            if self.weighted:  # per-item cross-entropy, rescaled where the plan says
                ce = nn.functional.cross_entropy(logits, y, reduction="none")
                w = weights[i : i + bs] if weights is not None else None
                loss = (ce * w).mean() if w is not None else ce.mean()
                self.curriculum.observe(idx.cpu().numpy(), ce.detach().cpu().numpy())
            else:
                loss, _ = compute_loss(self.cfg.loss, logits, f, model.head.weight, y)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            loss_sum += loss.detach() * len(y)
            correct += (logits.detach().argmax(1) == y).sum()
            samples += len(idx)
            steps += 1
        return loss_sum, correct, samples, steps
