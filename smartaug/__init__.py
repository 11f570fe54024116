"""smartaug: which augmentations a model should learn from, measured.

The public API, one import name (each imported on first use, so ``import smartaug`` stays
light and never loads torch until you ask for something that needs it):

- ``smartaug.load_policy(path, seed=None)``: a policy file (``smartaug policy``, ``smartaug
  recommend``) as a callable for your training loop: ``policy(image, label=None)`` on numpy,
  PIL or tensor images; ``smartaug.policy_from_dict`` the same from memory.
- ``smartaug.SelectionDataset(storage, selection_id)``: a PyTorch ``Dataset`` of the
  originals plus a selection's augmentations, read from a lake.
- ``smartaug.avh(features, weights, labels)`` and ``smartaug.hardness_scores(logits, features,
  weights, labels)``: Angular Visual Hardness and the other per-sample scores.
- ``smartaug.make_model(name, num_classes, in_channels, image_size)``: a registered model
  (``lenet5``, ``resnet``, ``torchvision:NAME``, ``timm:NAME``, ``package.module:factory``).
- ``smartaug.Lake(storage)``: the tables, for ``lake.sql("select ...")``.

The command line is ``smartaug --help``.
"""

from importlib import import_module

__all__ = ["Lake", "SelectionDataset", "avh", "hardness_scores", "load_policy", "make_model",
           "policy_from_dict"]

_WHERE = {"SelectionDataset": ("smartaug.steps.export", "SelectionDataset"),
          "load_policy": ("smartaug.policy", "load"),
          "policy_from_dict": ("smartaug.policy", "from_dict"),
          "avh": ("smartaug.core.hardness", "avh"),
          "hardness_scores": ("smartaug.core.hardness", "hardness_scores"),
          "make_model": ("smartaug.models", "make_model"),
          "Lake": ("smartaug.lake", "Lake")}


def __getattr__(name: str):
    if name in _WHERE:
        module, attr = _WHERE[name]
        return getattr(import_module(module), attr)
    raise AttributeError(f"module 'smartaug' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
