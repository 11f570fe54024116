import os
from pathlib import Path

import numpy as np
import pytest

FASHION_DIRS = [Path(p) for p in (os.environ.get("SMARTAUG_DATA"),) if p] + [
    Path("/usr/share/datasets/fashion-mnist")
]


@pytest.fixture(scope="session")
def fashion_root() -> str:
    """Directory with the real Fashion-MNIST IDX files (Debian's dataset-fashion-mnist)."""
    for d in FASHION_DIRS:
        if (d / "train-images-idx3-ubyte.gz").is_file() or (d / "train-images-idx3-ubyte").is_file():
            return str(d)
    pytest.skip("Fashion-MNIST not installed: apt-get install -y dataset-fashion-mnist "
                "(make test does this as root) or set SMARTAUG_DATA")


def write_image_folder(root: Path, *, classes=("cat", "dog", "eel"), per_class=(6, 3),
                       size=(32, 32), ext=".jpg", mode="RGB", seed=0) -> Path:
    """A tiny real ImageFolder tree of JPEG/PNG files with class-dependent colours."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, n in zip(("train", "test"), per_class, strict=True):
        for ci, c in enumerate(classes):
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                base = np.full((*size, 3), 60 * ci + 30, dtype=np.uint8)
                noise = rng.integers(0, 20, size=(*size, 3), dtype=np.uint8)
                Image.fromarray(base + noise).convert(mode).save(d / f"{i:03d}{ext}")
    return root
