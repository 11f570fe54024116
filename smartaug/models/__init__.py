"""Model registry and self-contained checkpoints.

Every model takes float images in [0, 1], shape [N, C, H, W] (normalisation is inside the
model), exposes ``features(x) -> [N, D]`` (the input of the last linear layer) and
``head: nn.Linear(D, num_classes)``; ``forward`` returns logits [N, num_classes].
"""

from __future__ import annotations

import copy
import hashlib
import io
import os
import pickle
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from smartaug.models.common import ModelError
from smartaug.models.external import build_external, check_name, is_external
from smartaug.models.lenet import lenet5, lenet5_wide
from smartaug.models.resnet import resnet

__all__ = ["MODELS", "ModelError", "TRUST_ENV", "check_model", "check_trusted", "make_model",
           "save_checkpoint", "load_checkpoint", "weights_sha256"]

MODELS: dict[str, Callable[..., nn.Module]] = {
    "lenet5": lenet5,
    "lenet5-wide": lenet5_wide,
    "resnet": resnet,
}
# the keyword arguments each registered model takes (beyond num_classes, in_channels,
# image_size); a checkpoint's spec may hold these and no others
MODEL_OPTIONS: dict[str, tuple[str, ...]] = {
    "lenet5": ("channels", "hidden", "mean", "std"),
    "lenet5-wide": ("channels", "hidden", "mean", "std"),
    "resnet": ("blocks", "widths", "mean", "std"),
}
EXTERNAL_OPTIONS = ("mean", "std")
TRUST_ENV = "SMARTAUG_TRUST_MODELS"  # comma-separated package.module:factory names
_FORMAT = "smartaug-checkpoint/1"


def _library_model(name: str) -> bool:
    """torchvision:NAME and timm:NAME build from those libraries' registries (a name, never
    an import path, a hub id or a directory), like the built-in models."""
    if not name.startswith(("torchvision:", "timm:")):
        return False
    check_name(name)  # a scheme (timm:hf-hub:ORG/REPO) or a path is refused, not trusted
    return True


def check_model(name: str) -> None:
    """ModelError unless ``name`` names a model smartaug can build, checked before any work
    (a run that trains for hours must not fail at its first model): a built-in, a name of
    torchvision's registry, a timm registry name (timm installed), or package.module:factory
    whose module can be found."""
    import importlib.util

    if not isinstance(name, str) or not name:
        raise ModelError(f"a model name must be a non-empty string, got {name!r}")
    if name in MODELS:
        return
    if not is_external(name):
        raise ModelError(f"unknown model {name!r}; valid: {', '.join(sorted(MODELS))}, "
                         f"torchvision:NAME, timm:NAME or package.module:factory")
    check_name(name)
    source, _, ref = name.partition(":")
    if source == "torchvision":
        import torchvision

        if ref not in torchvision.models.list_models(module=torchvision.models):
            raise ModelError(f"torchvision has no classification model {ref!r} "
                             f"(torchvision.models.list_models())")
    elif source == "timm":
        if importlib.util.find_spec("timm") is None:
            raise ModelError(f"{name}: timm is not installed (pip install 'smartaug[timm]')")
        import timm

        if not timm.is_model(ref.split(".")[0]):
            raise ModelError(f"timm has no model {ref!r} (timm.list_models())")
    else:
        import sys

        if os.getcwd() not in sys.path:  # where the run imports it from (build_external)
            sys.path.insert(0, os.getcwd())
        try:
            found = importlib.util.find_spec(source) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise ModelError(f"model {name!r}: no module {source!r} can be imported from here "
                             f"(its package installed, or the module in the current "
                             f"directory)")


def check_trusted(name: str, trust: str | Iterable[str] | None = ()) -> None:
    """Refuse to rebuild model ``name`` unless it is a built-in, a torchvision or timm model,
    or code the user named for this run: in ``trust`` (the run's ``--model`` or config) or in
    the ``SMARTAUG_TRUST_MODELS`` allow-list. A name read from the lake alone never chooses
    what is imported."""
    if not isinstance(name, str):
        raise ModelError(f"a checkpoint's model name must be a string, got {type(name).__name__}")
    if name in MODELS or _library_model(name):
        return
    trusted = {trust} if isinstance(trust, str) else set(trust or ())
    trusted |= {t.strip() for t in os.environ.get(TRUST_ENV, "").split(",") if t.strip()}
    if name in trusted:
        return
    raise ModelError(
        f"the checkpoint names model {name!r}, code outside smartaug; smartaug does not import "
        f"code because a lake names it. If you trust it, name it for this run (--model {name}, "
        f"or --trust-model {name}) or add it to {TRUST_ENV} (comma-separated)")


def _check_options(name: str, kwargs: dict) -> None:
    """A spec's keyword arguments must be ones the model takes, with plain values."""
    valid = MODEL_OPTIONS.get(name, EXTERNAL_OPTIONS)
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise ModelError(f"model {name!r} takes no argument {unknown[0]!r}; valid: "
                         f"{', '.join(valid)}")
    for key, value in kwargs.items():
        if value is not None and not (isinstance(value, list | tuple) and all(
                isinstance(v, int | float) and not isinstance(v, bool) for v in value)):
            raise ModelError(f"model {name!r}: {key} = {value!r} is not a list of numbers")


def make_model(
    name: str, num_classes: int, in_channels: int, image_size: int, **kwargs
) -> nn.Module:
    """Build a registered model, or your own (``torchvision:NAME``, ``timm:NAME``,
    ``package.module:factory``: ``smartaug.models.external``). ``kwargs`` go to the model (e.g.
    ``mean``, ``std``).

    The name and arguments are kept on the module (``model.spec``) for ``save_checkpoint``.
    """
    if name not in MODELS and not is_external(name):
        raise ModelError(f"unknown model {name!r}; valid: {', '.join(sorted(MODELS))}, "
                         f"torchvision:NAME, timm:NAME or package.module:factory")
    if num_classes < 2:
        raise ModelError(f"num_classes must be >= 2, got {num_classes}")
    if in_channels < 1:
        raise ModelError(f"in_channels must be >= 1, got {in_channels}")
    _check_options(name, kwargs)
    if is_external(name):
        model = build_external(name, num_classes, in_channels, image_size, **kwargs)
    else:
        try:
            model = MODELS[name](num_classes, in_channels=in_channels, image_size=image_size,
                                 **kwargs)
        except (TypeError, ValueError) as e:  # arguments of the right names, wrong values
            raise ModelError(f"model {name!r} cannot be built with {kwargs}: {e}") from None
    model.spec = {
        "name": name,
        "num_classes": int(num_classes),
        "in_channels": int(in_channels),
        "image_size": int(image_size),
        "kwargs": dict(kwargs),
    }
    return model


def weights_sha256(state_dict: dict[str, torch.Tensor]) -> str:
    """sha256 over names, dtypes, shapes and raw bytes of a state dict (order-independent)."""
    h = hashlib.sha256()
    for key in sorted(state_dict):
        t = state_dict[key].detach().cpu().contiguous()
        h.update(key.encode())
        h.update(str(t.dtype).encode())
        h.update(repr(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def save_checkpoint(model: nn.Module, path: str | os.PathLike, *, extra: dict | None = None) -> str:
    """Write weights + model name + arguments + sha256 to ``path``; return the sha256.
    (The pipeline writes through ``smartaug.lake.atomic_path``, so a file appears whole.)

    ``model`` must come from ``make_model`` (it carries ``model.spec``). ``extra`` is stored
    as-is (plain Python values: config, ids, git SHA).
    """
    spec = getattr(model, "spec", None)
    if spec is None:
        raise ValueError("model has no .spec: build it with smartaug.models.make_model(...)")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    digest = weights_sha256(state)
    payload = {
        "format": _FORMAT,
        "spec": spec,
        "state_dict": state,
        "sha256": digest,
        "extra": extra or {},
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()  # serialised first: a full disk is then an OSError (errno 28),
    torch.save(payload, buffer)  # not torch's RuntimeError from inside its writer
    with open(path, "wb") as fh:
        fh.write(buffer.getbuffer())
    return digest


def read_checkpoint(path: str | os.PathLike) -> dict:
    """The raw checkpoint dict (spec, state_dict, sha256, extra), sha256 verified."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ModelError(
            f"{path} was refused: it is not a plain checkpoint ({_refusal(e)}). smartaug reads "
            f"checkpoints with PyTorch's safe loader (weights_only=True), which loads tensors "
            f"and plain values and never runs code from a file; it does not retry with the "
            f"unsafe loader. Re-create the model (smartaug baseline) or save a state dict "
            f"(torch.save(model.state_dict(), path))") from None
    except Exception as e:  # noqa: BLE001 - any unpickling failure means the file is bad
        raise ModelError(f"{path} is not a readable smartaug checkpoint "
                         f"({type(e).__name__}: {e}); re-create it with smartaug baseline") from None
    if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
        raise ModelError(f"{path} is not a smartaug checkpoint (format {_FORMAT})")
    digest = weights_sha256(payload["state_dict"])
    if digest != payload["sha256"]:
        raise ModelError(
            f"{path}: weights sha256 {digest[:12]} does not match the recorded "
            f"{payload['sha256'][:12]}; the file is corrupt"
        )
    return payload


def _refusal(e: Exception) -> str:
    """What the safe loader refused, without PyTorch's advice to load the file unsafely."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    why = [ln for ln in lines if "GLOBAL" in ln or "Unsupported" in ln or "unpickl" in ln.lower()]
    why = [ln for ln in why if "weights_only" not in ln]
    return why[0].rstrip(".") if why else "it holds objects other than tensors and plain values"


def load_checkpoint(path: str | os.PathLike, *, map_location: str | torch.device = "cpu",
                    arch: str | None = None, trust: str | Iterable[str] | None = ()
                    ) -> nn.Module:
    """Rebuild the model saved by ``save_checkpoint``, in eval mode, with identical outputs.
    ``arch``: the model name the models table recorded; a checkpoint naming another is
    refused. Code outside smartaug is imported only when named in ``trust`` or in
    ``SMARTAUG_TRUST_MODELS`` (``check_trusted``), and the spec's arguments are checked
    against the model's before anything is built."""
    payload = read_checkpoint(path)
    s = payload["spec"]
    if not isinstance(s, dict):
        raise ModelError(f"{path}: the checkpoint's model spec is not a table")
    name = s.get("name")
    if arch is not None and name != arch:
        raise ModelError(f"{path} names model {name!r}, the models table recorded "
                         f"{arch!r}: refused (the file was replaced)")
    check_trusted(name, trust)
    sizes = [s.get(k) for k in ("num_classes", "in_channels", "image_size")]
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in sizes):
        raise ModelError(f"{path}: the checkpoint's num_classes, in_channels and image_size "
                         f"must be integers, got {sizes}")
    kwargs = s.get("kwargs") or {}
    if not isinstance(kwargs, dict):
        raise ModelError(f"{path}: the checkpoint's model arguments are not a table")
    _check_options(name, kwargs)
    model = make_model(name, *sizes, **kwargs)
    try:
        model.load_state_dict(payload["state_dict"])
    except (RuntimeError, TypeError, AttributeError) as e:  # names or shapes that differ
        first = str(e).strip().splitlines()
        raise ModelError(f"{path}: its weights do not fit model {name!r} as it is built now "
                         f"({' '.join(x.strip() for x in first[:3])[:400]}): the model's code "
                         f"changed since the checkpoint was written, or the file is another "
                         f"model's") from None
    model.sha256 = payload["sha256"]
    return model.to(map_location).eval()


def fuse_for_inference(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode with every batch norm folded into the convolution or
    linear layer before it (same outputs up to float rounding, ~20 % faster on a CPU).

    Folds (Conv2d, BatchNorm2d) and (Linear, BatchNorm1d) pairs that follow each other in an
    ``nn.Sequential`` and ``convN``/``bnN`` attribute pairs (residual blocks). ``features``,
    ``head`` and ``spec`` are kept.
    """
    fused = copy.deepcopy(model).eval()

    def fold(layer, bn):
        if isinstance(layer, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
            return fuse_conv_bn_eval(layer, bn)
        if isinstance(layer, nn.Linear) and isinstance(bn, nn.BatchNorm1d):
            return fuse_linear_bn_eval(layer, bn)
        return None

    for module in list(fused.modules()):
        if isinstance(module, nn.Sequential):
            for i in range(len(module) - 1):
                new = fold(module[i], module[i + 1])
                if new is not None:
                    module[i], module[i + 1] = new, nn.Identity()
        for k in range(1, 10):
            conv, bn = getattr(module, f"conv{k}", None), getattr(module, f"bn{k}", None)
            new = fold(conv, bn) if conv is not None and bn is not None else None
            if new is not None:
                setattr(module, f"conv{k}", new)
                setattr(module, f"bn{k}", nn.Identity())
    return fused
