"""Modules imported on first use: ``A = lazy("albumentations")`` costs nothing until
``A.Rotate`` is first read (importing albumentations takes ~0.8 s beside torch, and most
commands never augment)."""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["lazy"]


class _Lazy(ModuleType):
    def __getattr__(self, attr: str):
        module = importlib.import_module(self.__name__)
        self.__dict__.update(module.__dict__)  # later reads: plain attribute lookups
        return getattr(module, attr)


def lazy(name: str) -> ModuleType:
    """A stand-in for module ``name`` that imports it when an attribute is first read."""
    return _Lazy(name)
