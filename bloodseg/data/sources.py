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
    extra_masks: tuple[Path, ...] = ()  # binary sources: the masks of classes 2, 3, ... (label is class 1's)
    binary: bool = False  # label and extra_masks are binary masks (0 = not the class, 255 = the class)
    group: str | None = None  # the published split (train / val) the pair belongs to, where the set has one


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


SMEAR_FIELD_GROUPS = ("train", "val")
SMEAR_FIELDS_FIX = (
    "point data.root at the smear-fields folder holding train/ and val/, each with images/ and masks/ "
    "(`python -m bloodseg.data.download smear_fields` says where the public copy is)"
)


def smear_field_pairs(root: Path, allow_unpaired: bool = False) -> list[SamplePaths]:
    """Fields and binary cell masks of root/{train,val}/{images,masks}, paired by stem, tagged with their folder."""
    _existing_dir(root, "data.root", SMEAR_FIELDS_FIX)
    pairs: list[SamplePaths] = []
    for group in SMEAR_FIELD_GROUPS:
        image_dir = _existing_dir(root / group / "images", f"data.root/{group}/images", SMEAR_FIELDS_FIX)
        mask_dir = _existing_dir(root / group / "masks", f"data.root/{group}/masks", SMEAR_FIELDS_FIX)
        for pair in pair_by_stem(
            _image_files(image_dir), _image_files(mask_dir), image_dir, mask_dir, allow_unpaired
        ):
            pairs.append(SamplePaths(pair.id, pair.image, pair.label, binary=True, group=group))
    seen: dict[str, str] = {}
    for pair in pairs:
        if pair.id in seen:
            raise BloodsegError(
                f"the field '{pair.id}' is in both {root}/train and {root}/val; fix: keep it in one of them"
            )
        seen[pair.id] = pair.group
    return pairs


ALLIDB1_MASK_KINDS = ("RBC", "WBCs")  # ImNNN_1_RBC.tif -> class 1 (rbc), ImNNN_1_WBCs.tif -> class 2 (wbc)
ALLIDB1_MASKS_URL = "https://github.com/andrealoddo/ALL-IDB1-masks"


def allidb1_mask_pairs(image_root: Path, mask_root: Path, allow_unpaired: bool = False) -> list[SamplePaths]:
    """The user's ALL-IDB1 ImNNN_1 images paired with the expert ImNNN_1_RBC.tif / ImNNN_1_WBCs.tif masks.

    Every field with both masks needs its image (any common format, same stem); missing images fail
    naming them, unless allow_unpaired skips those fields with a warning.
    """
    _existing_dir(
        mask_root,
        "data.mask_root",
        f"point data.mask_root at the ALL-IDB1 masks folder (ImNNN_1_RBC.tif, ImNNN_1_WBCs.tif; {ALLIDB1_MASKS_URL})",
    )
    _existing_dir(
        image_root,
        "data.root",
        "point data.root at your ALL-IDB1 images (ImNNN_1.jpg; the University of Milan gives them on request)",
    )
    masks: dict[str, dict[str, Path]] = {}
    for path in sorted(mask_root.glob("Im*_1_*.tif")):
        stem, _, kind = path.stem.rpartition("_")
        if kind in ALLIDB1_MASK_KINDS:
            masks.setdefault(stem, {})[kind] = path
    fields = sorted(stem for stem, kinds in masks.items() if len(kinds) == len(ALLIDB1_MASK_KINDS))
    if not fields:
        raise BloodsegError(
            f"data.mask_root={mask_root} holds no ImNNN_1_RBC.tif + ImNNN_1_WBCs.tif pairs; "
            f"fix: point it at the ALL-IDB1 masks folder ({ALLIDB1_MASKS_URL})"
        )
    images = _by_stem(_image_files(image_root), image_root)
    missing = [f"{stem}.jpg" for stem in fields if stem not in images]
    if missing and (not allow_unpaired or len(missing) == len(fields)):
        raise BloodsegError(
            f"data.root={image_root} lacks {len(missing)} of the {len(fields)} ALL-IDB1 images the masks are for "
            f"({', '.join(missing)}); fix: copy your ALL-IDB1 ImNNN_1.jpg files there (the University of Milan "
            "gives them on request)"
            + ("" if allow_unpaired else ", or set data.allow_unpaired=true to skip them")
        )
    if missing:
        log.warning(
            "%d ALL-IDB1 images missing in %s (%s): skipped (data.allow_unpaired=true)",
            len(missing),
            image_root,
            ", ".join(missing),
        )
    return [
        SamplePaths(
            stem,
            images[stem],
            masks[stem][ALLIDB1_MASK_KINDS[0]],
            extra_masks=tuple(masks[stem][k] for k in ALLIDB1_MASK_KINDS[1:]),
            binary=True,
        )
        for stem in fields
        if stem in images
    ]


def _required_root(data_cfg, what: str) -> Path:
    if data_cfg.root is None:
        raise BloodsegError(
            f"data.root is not set, but data={what} reads its images from a folder; "
            "fix: add data.root=/path/to/that/folder"
        )
    return Path(data_cfg.root).expanduser()


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
    elif source == "smear_fields":
        pairs = smear_field_pairs(_required_root(data_cfg, "smear_fields"), allow_unpaired)
    elif source == "allidb1_masks":
        if not data_cfg.get("mask_root"):
            raise BloodsegError(
                f"data.mask_root is not set; fix: add data.mask_root=/path/to/ALL-IDB1-masks ({ALLIDB1_MASKS_URL})"
            )
        pairs = allidb1_mask_pairs(
            _required_root(data_cfg, "allidb1_masks"), Path(data_cfg.mask_root).expanduser(), allow_unpaired
        )
    else:
        raise BloodsegError(
            f"data.source={source} is unknown; use synthetic, folder, cellavision, smear_fields or allidb1_masks"
        )
    if data_cfg.max_images:
        pairs = pairs[: int(data_cfg.max_images)]
    return pairs
