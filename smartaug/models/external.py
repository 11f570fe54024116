"""Your model on smartaug's protocol (``features(x) -> [N, D]``, ``head: nn.Linear(D, C)``),
without glue code. Three kinds of name:

* ``torchvision:NAME``: any torchvision classification builder (``torchvision.models
  .get_model(NAME, weights=None, num_classes=C)``), e.g. ``torchvision:resnet18``;
* ``timm:NAME``: a timm model (``timm.create_model(NAME, num_classes=C, in_chans=channels)``,
  and ``img_size`` for models with a fixed input size such as ViTs; the optional extra
  ``pip install smartaug[timm]``);
* ``package.module:factory``: your callable returning an ``nn.Module``; it is given
  ``num_classes``, ``in_channels`` and ``image_size`` when its signature takes them. The
  module is imported from ``sys.path`` and the current directory; it must be importable
  wherever the model's checkpoint is loaded again (scoring, retraining, curriculum rounds).

The head is the network's last ``nn.Linear`` (replaced by a new ``nn.Linear(D, C)`` when it
does not already produce C logits); the features are its input. A check at build time runs the
network and requires the head to be its final layer (the logits are the head's output).
Inputs are images in [0, 1]: they are normalised inside the model (ImageNet's mean and std for
torchvision and timm, 0.5 / 0.25 otherwise), and a 1-channel image is repeated to 3 channels
for a network whose first convolution takes 3. Image size: the network's own (torchvision and
timm classifiers pool adaptively, so small images work; ResNets on 28x28 inputs end at 1x1).
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import sys

import torch
from torch import Tensor, nn

from smartaug.models.common import ModelError, Normalize

__all__ = ["ExternalModel", "build_external", "is_external", "load_weights"]

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def is_external(name: str) -> bool:
    return ":" in name


# a timm registry name, with its pretrained tag (``vit_small_patch16_224.augreg_in21k``): no
# ``hf-hub:`` or ``local-dir:`` scheme, no path, nothing but the library's own registry
_TIMM_NAME = re.compile(r"^[a-z0-9_]{1,100}(\.[a-z0-9_]{1,100})?$")


def check_name(name: str) -> None:
    """ModelError unless ``name`` can name a model before anything is imported: a
    ``torchvision:NAME`` or ``timm:NAME`` of the library's registry (a name, never a scheme
    or a path), or ``package.module:factory`` (absolute, identifiers only)."""
    source, _, ref = name.partition(":")
    if source == "timm":
        if not _TIMM_NAME.match(ref):
            raise ModelError(f"model {name!r}: timm:NAME takes a model of timm's registry "
                             f"(timm.list_models(), e.g. timm:resnet18); hub (hf-hub:), local "
                             f"(local-dir:) and other sources are not read")
    elif source == "torchvision":
        if not re.fullmatch(r"[a-z0-9_]{1,100}", ref):
            raise ModelError(f"model {name!r}: torchvision:NAME takes a name of "
                             f"torchvision.models.list_models(), e.g. torchvision:resnet18")
    elif not all(p.isidentifier() for p in source.split(".")) or not ref.isidentifier():
        raise ModelError(f"model {name!r}: a model of yours is package.module:factory, an "
                         f"absolute module path and a name (no relative or file paths)")


def _network(name: str, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    check_name(name)
    source, _, ref = name.partition(":")
    if source == "torchvision":
        import torchvision

        valid = torchvision.models.list_models(module=torchvision.models)
        if ref not in valid:
            raise ModelError(f"torchvision has no classification model {ref!r}; e.g. "
                             f"{', '.join(sorted(valid)[:8])}, ... "
                             f"(torchvision.models.list_models())")
        return torchvision.models.get_model(ref, weights=None, num_classes=num_classes)
    if source == "timm":
        try:
            import timm
        except ImportError as e:
            raise ModelError(f"{name}: timm is not installed (pip install 'smartaug[timm]')"
                             ) from e
        kw = {"pretrained": False, "num_classes": num_classes, "in_chans": in_channels}
        try:
            try:  # models with a fixed input size (ViTs) take the data's
                return timm.create_model(ref, img_size=image_size, **kw)
            except TypeError:
                return timm.create_model(ref, **kw)
        except (RuntimeError, ValueError, AssertionError) as e:
            raise ModelError(f"{name}: {e}") from e
    if os.getcwd() not in sys.path:  # like uvicorn's APP:app, a module in the current directory
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(source)
    except ImportError as e:
        raise ModelError(f"model {name!r}: cannot import module {source!r} ({e}); a model "
                         f"spec is torchvision:NAME, timm:NAME or package.module:factory") from e
    factory = getattr(module, ref, None)
    if not callable(factory):
        raise ModelError(f"model {name!r}: module {source!r} has no callable {ref!r}")
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = {}
    given = {"num_classes": num_classes, "in_channels": in_channels, "image_size": image_size}
    required = [p.name for p in params.values() if p.default is p.empty and p.name not in given
                and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    if required:
        raise ModelError(f"model {name!r}: {ref}() requires {', '.join(required)}, which smartaug "
                         f"cannot give (it passes num_classes, in_channels and image_size when "
                         f"the signature names them); give the others defaults")
    try:
        net = factory(**{k: v for k, v in given.items() if k in params})
    except Exception as e:  # noqa: BLE001 - the user's code failed: say where, not a traceback
        raise ModelError(f"model {name!r}: {ref}(num_classes={num_classes}, ...) raised "
                         f"{type(e).__name__}: {e}") from e
    if not isinstance(net, nn.Module):
        raise ModelError(f"model {name!r}: {ref}() returned {type(net).__name__}, not an "
                         f"nn.Module")
    return net


def _last_linear(net: nn.Module) -> tuple[str, nn.Linear]:
    linears = [(n, m) for n, m in net.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ModelError(f"{type(net).__name__} has no nn.Linear layer: smartaug needs a "
                         f"final nn.Linear that produces the logits (its input are the "
                         f"features AVH is measured on)")
    return linears[-1]


def _first_conv_channels(net: nn.Module) -> int | None:
    conv = next((m for m in net.modules() if isinstance(m, nn.Conv2d)), None)
    return None if conv is None else conv.in_channels


class ExternalModel(nn.Module):
    """A network split at its last ``nn.Linear``: ``body`` (the network with that layer
    replaced by ``nn.Identity``) gives the features, ``head`` the logits."""

    def __init__(self, name: str, num_classes: int, in_channels: int, image_size: int,
                 mean=None, std=None):
        super().__init__()
        net = _network(name, num_classes, in_channels, image_size)
        head_name, head = _last_linear(net)
        net_channels = _first_conv_channels(net) or in_channels
        if net_channels not in (in_channels, 3) or (net_channels == 3 and in_channels not in
                                                      (1, 3)):
            raise ModelError(f"model {name!r} takes {net_channels}-channel images, the data "
                             f"has {in_channels}")
        self.repeat = net_channels if net_channels != in_channels else 0
        imagenet = name.startswith(("torchvision:", "timm:"))
        default_mean = IMAGENET_MEAN if imagenet else (0.5,) * 3
        default_std = IMAGENET_STD if imagenet else (0.25,) * 3
        if mean is None:
            mean = default_mean[:in_channels] if in_channels == 3 else (sum(default_mean) / 3,)
        if std is None:
            std = default_std[:in_channels] if in_channels == 3 else (sum(default_std) / 3,)
        self.normalize = Normalize(in_channels, mean, std)
        self._check_head_is_last(net, head, head_name, in_channels, image_size, name)
        net.set_submodule(head_name, nn.Identity())
        self.body = net
        self.head_name = head_name
        self.head = head if head.out_features == num_classes else nn.Linear(head.in_features,
                                                                             num_classes)

    def _probe(self, in_channels: int, image_size: int) -> Tensor:
        g = torch.Generator().manual_seed(0)
        return torch.rand(2, in_channels, image_size, image_size, generator=g)

    def _check_head_is_last(self, net, head, head_name, in_channels, image_size, name):
        """Run the network once: it must return one tensor, the output of its last
        ``nn.Linear`` (what smartaug's head replaces), unchanged."""
        seen = []
        hook = head.register_forward_hook(lambda module, args, out: seen.append(out))
        was = net.training
        net.eval()
        try:
            with torch.no_grad():
                out = net(self._prepare(self._probe(in_channels, image_size)))
        except Exception as e:  # noqa: BLE001 - say which model and input shape failed
            raise ModelError(f"the network cannot run on {in_channels}x{image_size}x"
                             f"{image_size} images: {type(e).__name__}: {e}") from e
        finally:
            hook.remove()
            net.train(was)
        if not isinstance(out, Tensor):
            raise ModelError(f"model {name!r}: its forward returns {type(out).__name__}, not "
                             f"a tensor of logits; smartaug needs forward(x) -> logits [N, C]")
        last = seen[-1] if seen else None
        if last is None or last.shape != out.shape or not torch.allclose(last, out, atol=1e-4):
            raise ModelError(f"model {name!r}: its last nn.Linear ({head_name}) is not its "
                             f"final layer (the logits are not that layer's output); smartaug "
                             f"needs the logits to come from a final nn.Linear")

    def _prepare(self, x: Tensor) -> Tensor:
        x = self.normalize(x)
        return x.expand(-1, self.repeat, -1, -1) if self.repeat else x

    def features(self, x: Tensor) -> Tensor:
        return self.body(self._prepare(x)).flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def build_external(name: str, num_classes: int, in_channels: int, image_size: int,
                   **kwargs) -> nn.Module:
    return ExternalModel(name, num_classes, in_channels, image_size, **kwargs)


def load_weights(model: nn.Module, path) -> None:
    """Start from a local state dict of the network (e.g. a pretrained backbone), read with
    ``weights_only=True``. Keys are the network's own (``conv1.weight``, ``fc.weight``, ...);
    the head's are used only when their shapes match (a new head otherwise). A key the network
    lacks, or one whose shape differs, is an error naming it."""
    import pickle

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as e:
        raise ModelError(f"weights file not found: {path}") from e
    except pickle.UnpicklingError:
        raise ModelError(f"{path} was refused: not a plain state dict (smartaug loads weights "
                         f"with weights_only=True and never runs code from a file)") from None
    except Exception as e:  # noqa: BLE001
        raise ModelError(f"{path} is not a readable state dict ({type(e).__name__}: {e})"
                         ) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"],
                                                                         dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ModelError(f"{path} is not a state dict (a mapping of names to tensors)")
    if not isinstance(model, ExternalModel):  # a registered model: its own keys, all of them
        own = model.state_dict()
        for key, value in state.items():
            if key not in own:
                raise ModelError(f"{path}: key {key!r} is not a parameter of the model")
            if own[key].shape != value.shape:
                raise ModelError(f"{path}: {key!r} has shape {tuple(value.shape)}, the "
                                 f"model's is {tuple(own[key].shape)}")
        missing = [k for k in own if k not in state]
        if missing:
            raise ModelError(f"{path}: no weights for {missing[0]!r} ({len(missing)} missing)")
        model.load_state_dict(state)
        return
    own = {f"body.{k}": v for k, v in model.body.state_dict().items()}
    head_keys = {f"{model.head_name}.{p}" for p in ("weight", "bias")}
    body_state, head_state = {}, {}
    for key, value in state.items():
        if key in head_keys:
            head_state[key.rsplit(".", 1)[1]] = value
            continue
        target = own.get(f"body.{key}")
        if target is None:
            raise ModelError(f"{path}: key {key!r} is not a parameter of the network")
        if target.shape != value.shape:
            raise ModelError(f"{path}: {key!r} has shape {tuple(value.shape)}, the network's "
                             f"is {tuple(target.shape)}")
        body_state[key] = value
    missing = [k for k in model.body.state_dict() if k not in body_state]
    if missing:
        raise ModelError(f"{path}: no weights for {missing[0]!r} ({len(missing)} missing)")
    model.body.load_state_dict(body_state)
    if head_state and all(head_state[k].shape == getattr(model.head, k).shape
                          for k in head_state):
        model.head.load_state_dict(head_state, strict=False)
