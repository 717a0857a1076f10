"""Where a dataset's files are: pairs of (image, label) paths for each data source."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from bloodseg.data.cache import cellavision_root, default_cache_dir
from bloodseg.data.imageio import IMAGE_SUFFIXES
from bloodseg.data.synthetic import synthetic_dataset_dir
from bloodseg.errors import BloodsegError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SamplePaths:
    """One labelled image: its id (the file stem) and the two files."""

    id: str
    image: Path
    label: Path


def _by_stem(files: list[Path], where: Path) -> dict[str, Path]:
    stems: dict[str, Path] = {}
    for path in sorted(files):
        if path.stem in stems:
            raise BloodsegError(
                f"{where} holds two files with the stem '{path.stem}' ({stems[path.stem].name}, {path.name}); "
                "fix: keep one of them, images and labels are paired by file stem"
            )
        stems[path.stem] = path
    return stems


def _image_files(directory: Path, suffixes=IMAGE_SUFFIXES) -> list[Path]:
    return [
        p
        for p in directory.iterdir()
        if p.is_file() and p.suffix.lower() in suffixes and not p.name.startswith(".")
    ]


def pair_by_stem(
    images: list[Path], labels: list[Path], image_dir: Path, label_dir: Path, allow_unpaired: bool
) -> list[SamplePaths]:
    """Pair image and label files by stem; unpaired files fail (or are skipped with a warning)."""
    image_by_stem, label_by_stem = _by_stem(images, image_dir), _by_stem(labels, label_dir)
    lonely_images = sorted(set(image_by_stem) - set(label_by_stem))
    lonely_labels = sorted(set(label_by_stem) - set(image_by_stem))
    for lonely, kind, here, other in (
        (lonely_images, "images", image_dir, label_dir),
        (lonely_labels, "labels", label_dir, image_dir),
    ):
        if not lonely:
            continue
        message = (
            f"{len(lonely)} {kind} in {here} have no partner in {other} "
            f"({', '.join(lonely[:5])}{', ...' if len(lonely) > 5 else ''})"
        )
        if not allow_unpaired:
            raise BloodsegError(
                f"{message}; fix: add the missing files, or set data.allow_unpaired=true to skip them"
            )
        log.warning("%s: skipped (data.allow_unpaired=true)", message)
    stems = sorted(set(image_by_stem) & set(label_by_stem))
    if not stems:
        raise BloodsegError(f"no image in {image_dir} has a label with the same stem in {label_dir}")
    return [SamplePaths(s, image_by_stem[s], label_by_stem[s]) for s in stems]


def _existing_dir(path: Path, key: str, fix: str) -> Path:
    if not path.is_dir():
        raise BloodsegError(f"{key}={path} is not a folder; fix: {fix}")
    return path


def folder_pairs(root: Path, allow_unpaired: bool = False) -> list[SamplePaths]:
    """Pairs of root/images/* and root/labels/* with the same stem."""
    fix = "point data.root at the folder that holds images/ and labels/"
    _existing_dir(root, "data.root", fix)
    image_dir = _existing_dir(root / "images", "data.root/images", fix)
    label_dir = _existing_dir(root / "labels", "data.root/labels", fix)
    return pair_by_stem(
        _image_files(image_dir), _image_files(label_dir), image_dir, label_dir, allow_unpaired
    )


def cellavision_pairs(root: Path, allow_unpaired: bool = False) -> list[SamplePaths]:
    """Pairs of NNN.bmp images and NNN.png masks in one folder (the dataset's own layout)."""
    _existing_dir(
        root,
        "data.root",
        "point data.root at the CellaVision folder (NNN.bmp + NNN.png), "
        "or run `python -m bloodseg.data.download cellavision`",
    )
    images = _image_files(root, (".bmp",))
    labels = _image_files(root, (".png",))
    return pair_by_stem(images, labels, root, root, allow_unpaired)


def resolve_pairs(data_cfg) -> list[SamplePaths]:
    """The labelled files of the configured source (generating the synthetic set on first use)."""
    source = getattr(data_cfg.source, "value", data_cfg.source)
    allow_unpaired = bool(data_cfg.get("allow_unpaired", False))
    if source == "synthetic":
        s = data_cfg.synthetic
        root = synthetic_dataset_dir(
            default_cache_dir(data_cfg.cache_dir), s.num_images, s.seed, list(s.min_size), list(s.max_size)
        )
        pairs = folder_pairs(root)
    elif source == "folder":
        if data_cfg.root is None:
            raise BloodsegError(
                "data.root is not set, but this data config reads its images from a folder (root/images and "
                "root/labels); fix: add data.root=/path/to/that/folder"
            )
        pairs = folder_pairs(Path(data_cfg.root).expanduser(), allow_unpaired)
    elif source == "cellavision":
        pairs = cellavision_pairs(cellavision_root(data_cfg), allow_unpaired)
    else:
        raise BloodsegError(f"data.source={source} is unknown; use synthetic, folder or cellavision")
    if data_cfg.max_images:
        pairs = pairs[: int(data_cfg.max_images)]
    return pairs
