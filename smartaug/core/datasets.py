"""Datasets as uint8 arrays: ``[N, H, W, C]`` images, int64 labels, class names, splits.

One call, ``load_dataset``, returns a ``Dataset`` with ``train``, ``val`` and ``test`` splits.
Sources:

* ``fashion-mnist`` / ``mnist`` — the IDX files from, in order: the ``root`` you give; the
  ``SMARTAUG_DATA`` directory (files directly in it or in ``SMARTAUG_DATA/<name>/``); Debian's
  ``dataset-fashion-mnist`` package (``/usr/share/datasets/fashion-mnist/``); torchvision's
  download when online (``download=True``). Read with numpy (torchvision only downloads).
* ``cifar10`` — torchvision's ``CIFAR10`` (``cifar-10-batches-py`` under the root, or its
  download).
* ``imagefolder:PATH`` — ``PATH/train/<class>/*.png|jpg`` and ``PATH/test/<class>/...``;
  class order = sorted folder names; decoded with PIL.

Subsets are class-balanced and a pure function of ``seed``; the validation split is
stratified and carved from the (subset) train split. Every sample keeps its position in the
source split (``index``), so ``sample_ids`` are stable across runs.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from smartaug.config import DataConfig
from smartaug.errors import UserError
from smartaug.files import atomic_path

__all__ = ["Dataset", "DatasetError", "Split", "fingerprint", "load_dataset", "SOURCES"]

# torchvision's ImageFolder extensions
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp"}
SYSTEM_DIRS = {
    "fashion-mnist": [Path("/usr/share/datasets/fashion-mnist")],
    "mnist": [Path("/usr/share/datasets/mnist")],
    "cifar10": [Path("/usr/share/datasets/cifar10")],
}
_IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


class DatasetError(UserError, ValueError):
    """The dataset cannot be loaded as asked; the message says why and how to fix it."""


@dataclass(frozen=True)
class Split:
    images: np.ndarray  # (N, H, W, C) uint8
    labels: np.ndarray  # (N,) int64
    index: np.ndarray  # (N,) int64, position in the source split
    source: str  # "train" or "test": the source split the index refers to

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def sample_ids(self) -> list[str]:
        """Stable ids, e.g. ``train/000042`` (source split / position in it)."""
        return [f"{self.source}/{i:06d}" for i in self.index.tolist()]

    def class_counts(self, num_classes: int) -> np.ndarray:
        return np.bincount(self.labels, minlength=num_classes)


@dataclass(frozen=True)
class Dataset:
    name: str
    classes: tuple[str, ...]
    train: Split
    val: Split
    test: Split
    config: DataConfig = field(default_factory=DataConfig)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C)"""
        return tuple(self.train.images.shape[1:])

    @property
    def in_channels(self) -> int:
        return int(self.train.images.shape[3])

    @property
    def image_size(self) -> int:
        return int(self.train.images.shape[1])

    def splits(self) -> dict[str, Split]:
        return {"train": self.train, "val": self.val, "test": self.test}


# ---------------------------------------------------------------- sources


def _cache_dir() -> Path:
    base = os.environ.get("SMARTAUG_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "smartaug"
    )
    return Path(base)


def _find_idx_dir(d: Path, cls_name: str) -> Path | None:
    """A directory holding the four IDX files (plain or .gz), torchvision layout included."""
    for cand in (d, d / "raw", d / cls_name / "raw"):
        if all((cand / n).is_file() or (cand / f"{n}.gz").is_file() for n in _IDX_FILES):
            return cand
    return None


def _stage_idx(src: Path, cls_name: str) -> Path:
    """Lay the IDX files out as torchvision expects (``ROOT/<Cls>/raw/<plain files>``),
    decompressing .gz into a cache directory; returns ROOT."""
    if all((src / n).is_file() for n in _IDX_FILES) and src.name == "raw" \
            and src.parent.name == cls_name:
        return src.parent.parent
    key = hashlib.sha1(str(src.resolve()).encode()).hexdigest()[:12]
    root = _cache_dir() / "idx" / f"{cls_name}-{key}"
    raw = root / cls_name / "raw"
    if not all((raw / n).is_file() for n in _IDX_FILES):
        with atomic_path(raw, directory=True) as tmp:
            for n in _IDX_FILES:
                if (src / n).is_file():
                    shutil.copyfile(src / n, tmp / n)
                else:
                    with gzip.open(src / f"{n}.gz", "rb") as fin, open(tmp / n, "wb") as fout:
                        shutil.copyfileobj(fin, fout)
    return root


def _candidate_dirs(name: str, root: str | None) -> list[Path]:
    dirs = []
    env = os.environ.get("SMARTAUG_DATA")
    if env:
        dirs += [Path(env), Path(env) / name]
    dirs += SYSTEM_DIRS.get(name, [])
    return dirs


def _how_to_get(name: str) -> str:
    if name == "fashion-mnist":
        return (
            "Get Fashion-MNIST one of these ways: (1) on Debian/Ubuntu, as root: "
            "`apt-get update && apt-get install -y dataset-fashion-mnist` (files land in "
            "/usr/share/datasets/fashion-mnist/); (2) download train-images-idx3-ubyte.gz, "
            "train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz "
            "from https://github.com/zalandoresearch/fashion-mnist into a directory and pass "
            "it as the root (--data DIR) or set SMARTAUG_DATA=DIR; (3) run once online and "
            "torchvision downloads them."
        )
    if name == "mnist":
        return (
            "Put the four MNIST IDX files (train-images-idx3-ubyte[.gz], ...) in a directory "
            "and pass it as the root (--data DIR) or set SMARTAUG_DATA=DIR, or run once online "
            "and torchvision downloads them."
        )
    return (
        "Put cifar-10-batches-py (from cifar-10-python.tar.gz, "
        "https://www.cs.toronto.edu/~kriz/cifar.html) in a directory and pass it as the root "
        "(--data DIR) or set SMARTAUG_DATA=DIR, or run once online and torchvision downloads it."
    )


IDX_CLASSES = {
    "FashionMNIST": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                     "Sneaker", "Bag", "Ankle boot"),  # torchvision's names, as it gives them
    "MNIST": tuple(f"{i} - {w}" for i, w in enumerate(
        ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"))),
}


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """One IDX file of unsigned bytes (magic 0x0000 08 ``ndim``, big-endian int32 sizes, the
    data) as an array; DatasetError if it is not one (torchvision's format, read with numpy:
    no torchvision import for a local copy)."""
    data = bytearray(path.read_bytes())  # writable arrays, as torchvision's
    head = 4 * (ndim + 1)
    if len(data) < head or data[:4] != bytes((0, 0, 8, ndim)):
        raise DatasetError(f"{path} is not an IDX file of {ndim}-d unsigned bytes: corrupt "
                           f"or another file; get the four files again")
    shape = tuple(int(v) for v in np.frombuffer(data, dtype=">i4", count=ndim, offset=4))
    if len(data) - head != int(np.prod(shape)):
        raise DatasetError(f"{path} holds {len(data) - head} bytes of data, its header says "
                           f"{int(np.prod(shape))} {shape}: truncated or corrupt; get it again")
    return np.frombuffer(data, dtype=np.uint8, offset=head).reshape(shape)


def _load_idx(name: str, root: str | None, download: bool):
    cls_name = "FashionMNIST" if name == "fashion-mnist" else "MNIST"
    if root is not None:
        d = Path(root)
        if not d.is_dir():
            raise DatasetError(f"{name}: directory not found: {d}. {_how_to_get(name)}")
        found = _find_idx_dir(d, cls_name)
        if found is None:
            raise DatasetError(
                f"{name}: no IDX files in {d} (expected {', '.join(_IDX_FILES)}, "
                f"optionally .gz). {_how_to_get(name)}"
            )
    else:
        found = next((f for d in _candidate_dirs(name, root)
                      if d.is_dir() and (f := _find_idx_dir(d, cls_name))), None)
        if found is None and download:
            return _download_idx(name)
        if found is None:
            raise DatasetError(f"{name}: no local copy found and download=False. "
                               f"{_how_to_get(name)}")
    try:
        raw = _stage_idx(found, cls_name) / cls_name / "raw"
    except (OSError, EOFError) as e:  # a .gz that does not decompress
        raise DatasetError(f"{name}: the IDX files under {found} are corrupt ({e}); get them "
                           f"again") from e
    x_tr, y_tr, x_te, y_te = (_read_idx(raw / n, 3 if "images" in n else 1) for n in _IDX_FILES)
    if len(x_tr) != len(y_tr) or len(x_te) != len(y_te):
        raise DatasetError(f"{name}: the IDX files under {found} disagree: {len(x_tr)} train "
                           f"images, {len(y_tr)} labels; {len(x_te)} test, {len(y_te)}")
    return (x_tr[..., None], y_tr.astype(np.int64), x_te[..., None], y_te.astype(np.int64),
            IDX_CLASSES[cls_name])


def _download_idx(name: str):
    """No local copy: torchvision downloads the files (imported only here: importing it costs
    ~2 s, as it imports torch._dynamo)."""
    from torchvision.datasets import MNIST, FashionMNIST

    cls = FashionMNIST if name == "fashion-mnist" else MNIST
    tv_root = _cache_dir() / "download"
    try:
        tr = cls(str(tv_root), train=True, download=True)
        te = cls(str(tv_root), train=False, download=True)
    except (RuntimeError, OSError) as e:
        raise DatasetError(f"{name}: could not load or download ({e}). {_how_to_get(name)}") \
            from e
    except AssertionError as e:
        raise DatasetError(f"{name}: the downloaded IDX files under {tv_root} are corrupt") \
            from e
    return (tr.data.numpy()[..., None], tr.targets.numpy(),
            te.data.numpy()[..., None], te.targets.numpy(), tuple(tr.classes))


def _load_cifar10(root: str | None, download: bool):
    from torchvision.datasets import CIFAR10

    dirs = [Path(root)] if root is not None else _candidate_dirs("cifar10", None)
    if root is not None and not Path(root).is_dir():
        raise DatasetError(f"cifar10: directory not found: {root}. {_how_to_get('cifar10')}")
    tv_root = None
    for d in dirs:
        if (d / "cifar-10-batches-py").is_dir():
            tv_root = d
        elif d.name == "cifar-10-batches-py" and d.is_dir():
            tv_root = d.parent
        if tv_root is not None:
            break
    dl = False
    if tv_root is None:
        if root is not None or not download:
            where = root or "any known location"
            raise DatasetError(f"cifar10: no cifar-10-batches-py in {where}. "
                               f"{_how_to_get('cifar10')}")
        tv_root, dl = _cache_dir() / "download", True
    try:
        tr = CIFAR10(str(tv_root), train=True, download=dl)
        te = CIFAR10(str(tv_root), train=False, download=dl)
    except (RuntimeError, OSError) as e:
        raise DatasetError(f"cifar10: could not load or download ({e}). "
                           f"{_how_to_get('cifar10')}") from e
    return (np.asarray(tr.data), np.asarray(tr.targets, dtype=np.int64),
            np.asarray(te.data), np.asarray(te.targets, dtype=np.int64), tuple(tr.classes))


def _image_files(d: Path) -> list[Path]:
    """The image files of a class folder, sorted. An image name that is no readable file (a
    link to nothing, or a loop of links) is an error naming it, never skipped in silence."""
    named = sorted(p for p in d.iterdir()
                   if not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS)
    for p in named:
        if not p.is_file() and p.is_symlink():
            raise DatasetError(f"imagefolder: {p} is a symbolic link to nothing readable "
                               f"({os.readlink(p)}): remove it or point it at the image")
    return [p for p in named if p.is_file()]


def png_short(path: Path) -> bool:
    """Whether the PNG file ``path`` holds fewer pixel bytes than its header promises (PIL
    fills the missing rows with zeros without a word; libpng says "Not enough image data").
    An interlaced PNG is left to the decoder."""
    import struct
    import zlib

    data = path.read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        return False
    pos, idat, header = 8, [], None
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body[:13])
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        pos += 12 + length
    if header is None:
        return False
    w, h, depth, colour, _, _, interlace = header
    if interlace:
        return False
    bpp = depth * {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}.get(colour, 4)
    expected = h * (1 + -(-(w * bpp) // 8))  # a filter byte and the pixels, each row
    try:
        held = len(zlib.decompressobj().decompress(b"".join(idat), expected + 1))
    except zlib.error:
        return True
    return held < expected


def _load_imagefolder(path: str, grayscale: bool, image_size: int | None):
    root = Path(path)
    if not root.is_dir():
        raise DatasetError(f"imagefolder: directory not found: {root}")
    layout = f"expected {root}/train/<class>/*.png|jpg and {root}/test/<class>/*.png|jpg"
    for sub in ("train", "test"):
        if not (root / sub).is_dir():
            raise DatasetError(f"imagefolder: {root / sub} not found ({layout})")
    classes = tuple(sorted(p.name for p in (root / "train").iterdir()
                           if p.is_dir() and not p.name.startswith(".")))
    if len(classes) < 2:
        raise DatasetError(f"imagefolder: {root / 'train'} has {len(classes)} class folder(s); "
                           f"a classifier needs at least 2 ({layout})")
    test_classes = {p.name for p in (root / "test").iterdir()
                    if p.is_dir() and not p.name.startswith(".")}
    extra = sorted(test_classes - set(classes))
    if extra:
        raise DatasetError(f"imagefolder: test classes {extra} have no train folder")

    gray_modes = {"1", "L", "LA"}
    decoded: dict[str, list[tuple[Path, object]]] = {"train": [], "test": []}
    labels: dict[str, list[int]] = {"train": [], "test": []}
    all_gray = True
    for sub in ("train", "test"):
        for y, c in enumerate(classes):
            d = root / sub / c
            files = _image_files(d) if d.is_dir() else []
            if not files:
                raise DatasetError(f"imagefolder: class folder {d} has no images "
                                   f"({', '.join(sorted(IMAGE_EXTENSIONS))})")
            for f in files:
                try:
                    with Image.open(f) as im:
                        im.load()
                        img, kind = im.copy(), im.format
                except Image.DecompressionBombError as e:
                    raise DatasetError(
                        f"imagefolder: image {f} is too large to decode ({e}); smartaug reads "
                        f"images up to {Image.MAX_IMAGE_PIXELS} pixels: resize it first"
                    ) from None
                except (UnidentifiedImageError, OSError, ValueError) as e:
                    raise DatasetError(f"imagefolder: cannot read image {f}: {e}") from e
                if kind == "PNG" and png_short(f):
                    raise DatasetError(f"imagefolder: image {f} ends before its last row (the "
                                       f"PNG holds less pixel data than its header says): "
                                       f"a truncated copy; copy it again or remove it")
                img = _eight_bit(img, f)
                all_gray &= img.mode in gray_modes
                decoded[sub].append((f, img))
                labels[sub].append(y)
    mode = "L" if (grayscale or all_gray) else "RGB"

    out = []
    for sub in ("train", "test"):
        arrays = [np.asarray(img.convert(mode)) for _, img in decoded[sub]]
        arrays = [a[..., None] if a.ndim == 2 else a for a in arrays]
        if image_size is not None:
            arrays = [a if a.shape[:2] == (image_size, image_size)
                      else _resize(a[None], image_size)[0] for a in arrays]
        else:
            shapes = {a.shape for a in arrays}
            if len(shapes) > 1:
                first = decoded[sub][0]
                odd = next(p for (p, _), a in zip(decoded[sub], arrays, strict=True)
                           if a.shape != arrays[0].shape)
                raise DatasetError(
                    f"imagefolder: images differ in size ({first[0]}: {arrays[0].shape[:2]}, "
                    f"{odd}: {np.asarray(Image.open(odd)).shape[:2]}); pass image_size to resize")
        out += [np.stack(arrays), np.asarray(labels[sub], dtype=np.int64)]
    return (*out, classes)


def _eight_bit(img, path: Path):
    """8-bit pixels: a 16-bit grayscale image (PIL mode ``I;16``, e.g. a 16-bit PNG) is scaled
    to 0..255 (``round(v * 255 / 65535)``; PIL's own conversion clips it to 255); 32-bit integer
    and float images, whose range is unknown, are refused by name. (16-bit RGB PNGs already
    arrive as 8-bit RGB.)"""
    if img.mode.startswith("I;16"):
        a = np.asarray(img).astype(np.uint32)
        return Image.fromarray(((a * 255 + 32767) // 65535).astype(np.uint8), "L")
    if img.mode in ("I", "F"):
        kind = "32-bit integer" if img.mode == "I" else "32-bit float"
        raise DatasetError(f"imagefolder: {path} is a {kind} image (PIL mode {img.mode}) whose "
                           f"range is unknown; smartaug reads 8-bit and 16-bit images: save it "
                           f"as an 8-bit or 16-bit PNG")
    return img


SOURCES = ("fashion-mnist", "mnist", "cifar10", "imagefolder:PATH")


# ---------------------------------------------------------------- transforms


def _resize(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 [N, H, W, C] -> uint8 [N, size, size, C], bilinear with antialias: torchvision's
    ``transforms.v2.functional.resize`` on a uint8 tensor, bit for bit (tested), without
    importing torchvision (~2 s)."""
    import platform

    import torch  # here: reading a dataset without resizing never imports torch
    from torch.nn.functional import interpolate

    n, h, w, c = images.shape
    if (h, w) == (size, size):
        return np.array(images, copy=True)
    t = torch.from_numpy(np.array(images, copy=True)).permute(0, 3, 1, 2)  # channels_last
    if n == 1:  # as torchvision restrides a single image, so the output stays channels_last
        t = t.as_strided((1, c, h, w), (t.numel(), *t.stride()[1:]))
    # uint8 straight through where torch has the native kernel (AVX2/AVX512, ARM), else float
    native = torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512") or \
        platform.machine() in ("aarch64", "arm64")
    x = interpolate(t if native else t.float(), size=[size, size], mode="bilinear",
                    align_corners=False, antialias=True)
    if not native:
        x = x.round_().to(torch.uint8)
    return x.permute(0, 2, 3, 1).contiguous().numpy()


def _to_grayscale(images: np.ndarray) -> np.ndarray:
    """uint8 [N, H, W, 3] -> uint8 [N, H, W, 1] (ITU-R 601-2 luma, as PIL's "L"):
    torchvision's ``rgb_to_grayscale`` on a uint8 tensor, bit for bit (tested)."""
    import torch

    t = torch.from_numpy(np.array(images, copy=True)).permute(0, 3, 1, 2)
    r, g, b = t.unbind(dim=-3)
    luma = r.mul(0.2989).add_(g, alpha=0.587).add_(b, alpha=0.114).to(torch.uint8)
    return luma.unsqueeze(-1).contiguous().numpy()


def _balanced_subset(labels: np.ndarray, per_class: int | None, classes, split: str,
                     rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of ``per_class`` random samples of every class (all if None)."""
    if per_class is None:
        return np.arange(len(labels))
    picked = []
    for y, name in enumerate(classes):
        idx = np.flatnonzero(labels == y)
        if per_class > len(idx):
            raise DatasetError(
                f"class {name!r} has only {len(idx)} images in the {split} split; "
                f"per_class_{split}={per_class} is larger. Use at most {len(idx)}, or None "
                f"for all images.")
        picked.append(idx[rng.permutation(len(idx))[:per_class]])
    return np.sort(np.concatenate(picked))


def _stratified_val(labels: np.ndarray, fraction: float, num_classes: int,
                    rng: np.random.Generator) -> np.ndarray:
    """Boolean mask of the validation rows: round(fraction * n_c) of every class."""
    mask = np.zeros(len(labels), dtype=bool)
    if fraction == 0:
        return mask
    for y in range(num_classes):
        idx = np.flatnonzero(labels == y)
        k = int(round(fraction * len(idx)))
        if k >= len(idx):
            raise DatasetError(f"val_fraction={fraction} leaves no train images of class {y}")
        mask[idx[rng.permutation(len(idx))[:k]]] = True
    return mask


def _check_options(cfg: DataConfig) -> None:
    for opt in ("per_class_train", "per_class_test", "image_size"):
        v = getattr(cfg, opt)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
            raise DatasetError(f"{opt} must be a positive integer or None, got {v!r}")
    if not (0.0 <= cfg.val_fraction < 1.0):
        raise DatasetError(f"val_fraction must be in [0, 1), got {cfg.val_fraction}")


def load_dataset(
    dataset: str | DataConfig = "fashion-mnist",
    *,
    root: str | os.PathLike | None = None,
    per_class_train: int | None = None,
    per_class_test: int | None = None,
    grayscale: bool = False,
    image_size: int | None = None,
    val_fraction: float = 0.0,
    seed: int = 0,
    download: bool = True,
) -> Dataset:
    """Load a dataset as uint8 ``[N, H, W, C]`` arrays with train / val / test splits.

    ``dataset`` is a source name (``fashion-mnist``, ``mnist``, ``cifar10``,
    ``imagefolder:PATH``) or a ``DataConfig`` (then the keyword options are ignored).
    Raises ``DatasetError`` with a fix for every bad input.
    """
    if isinstance(dataset, DataConfig):
        cfg = dataset
    else:
        cfg = DataConfig(dataset=dataset, root=None if root is None else str(root),
                         per_class_train=per_class_train, per_class_test=per_class_test,
                         grayscale=grayscale, image_size=image_size,
                         val_fraction=float(val_fraction), seed=int(seed))
    _check_options(cfg)
    name = cfg.dataset
    if name in ("fashion-mnist", "mnist"):
        raw = _load_idx(name, cfg.root, download)
    elif name == "cifar10":
        raw = _load_cifar10(cfg.root, download)
    elif name.startswith("imagefolder:"):
        raw = _load_imagefolder(name.split(":", 1)[1], cfg.grayscale, cfg.image_size)
    else:
        raise DatasetError(f"unknown dataset {name!r}; valid: {', '.join(SOURCES)}")
    x_tr, y_tr, x_te, y_te, classes = raw
    if len(classes) < 2:
        raise DatasetError(f"{name} has {len(classes)} class(es); a classifier needs at least 2")

    i_tr = _balanced_subset(y_tr, cfg.per_class_train, classes, "train",
                            np.random.default_rng([cfg.seed, 0]))
    i_te = _balanced_subset(y_te, cfg.per_class_test, classes, "test",
                            np.random.default_rng([cfg.seed, 1]))
    x_tr, y_tr, x_te, y_te = x_tr[i_tr], y_tr[i_tr], x_te[i_te], y_te[i_te]
    if cfg.grayscale and x_tr.shape[3] == 3:
        x_tr, x_te = _to_grayscale(x_tr), _to_grayscale(x_te)
    if cfg.image_size is not None and x_tr.shape[1:3] != (cfg.image_size, cfg.image_size):
        x_tr, x_te = _resize(x_tr, cfg.image_size), _resize(x_te, cfg.image_size)
    if x_tr.shape[1] != x_tr.shape[2]:
        raise DatasetError(f"{name}: images are {x_tr.shape[1]}x{x_tr.shape[2]}; "
                           f"pass image_size to make them square")

    is_val = _stratified_val(y_tr, cfg.val_fraction, len(classes), np.random.default_rng(
        [cfg.seed, 2] if not cfg.val_split else [cfg.seed, 2, cfg.val_split]))

    def split(x, y, idx, mask, source):
        return Split(np.ascontiguousarray(x[mask], dtype=np.uint8),
                     y[mask].astype(np.int64), idx[mask].astype(np.int64), source)

    everything = np.ones(len(y_te), dtype=bool)
    return Dataset(
        name=name,
        classes=tuple(str(c) for c in classes),
        train=split(x_tr, y_tr, i_tr, ~is_val, "train"),
        val=split(x_tr, y_tr, i_tr, is_val, "train"),
        test=split(x_te, y_te, i_te, everything, "test"),
        config=cfg,
    )


def fingerprint(ds: Dataset) -> str:
    """sha256 over every split's ids, labels and image bytes: the dataset's content."""
    h = hashlib.sha256()
    for name, s in ds.splits().items():
        h.update(name.encode())
        h.update("\n".join(s.sample_ids).encode())
        h.update(s.labels.tobytes())
        h.update(np.ascontiguousarray(s.images).tobytes())
    return h.hexdigest()
