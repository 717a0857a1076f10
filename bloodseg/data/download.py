"""Fetching public datasets into the cache, checksum-verified.

``python -m bloodseg.data.download cellavision [--url URL] [--cache-dir DIR]`` downloads the
CellaVision WBC set ("Dataset 2" of github.com/zxaoyou/segmentation_WBC, GPL-3.0) and keeps
its 100 NNN.bmp + NNN.png files in ``<cache>/cellavision_wbc`` once their checksum matches.
Nothing downloads unless this command is run; ``data=cellavision`` only reads the cache or
``data.root``.

``python -m bloodseg.data.download smear_fields`` and ``... allidb1_masks`` download nothing: they
print where the public copies of those sets live and the folder layout ``data=smear_fields`` /
``data=allidb1_masks`` read (their images and masks come from different sources and must be
paired by hand, or, for ALL-IDB1, requested from the University of Milan).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import re
import shutil
import sys
import tempfile
import urllib.request
import zipfile
from pathlib import Path

from bloodseg.data.cache import CELLAVISION_DIRNAME, default_cache_dir
from bloodseg.errors import BloodsegError

CELLAVISION_URL = "https://github.com/zxaoyou/segmentation_WBC/archive/refs/heads/master.zip"


# sha256 of the text `sha256sum *.bmp *.png` prints in the dataset folder (files sorted as the shell does).
CELLAVISION_SHA256 = "3dd4a36284c424793cdd87aa64dc790b6e75330cabf232b20770ecfb2c4d5ebe"


CELLAVISION_MEMBER = re.compile(r"(^|/)Dataset 2/(\d{3}\.(bmp|png))$")


def folder_digest(directory: Path, patterns=("*.bmp", "*.png")) -> str:
    """sha256 of `sha256sum <patterns>` output for the files of a folder (the dataset README's checksum)."""
    lines = []
    for pattern in patterns:
        for path in sorted(directory.glob(pattern), key=lambda p: p.name):
            lines.append(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {path.name}\n")
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def _fetch(url: str, timeout_s: float) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 - user-chosen URL
            return response.read()
    except (OSError, ValueError) as error:
        raise BloodsegError(f"could not download {url}: {error}; check the network or pass --url") from None


def download_cellavision(
    cache_dir: Path, url: str = CELLAVISION_URL, sha256: str = CELLAVISION_SHA256, timeout_s: float = 120.0
) -> Path:
    """Download the zip at url, keep its Dataset 2 files, verify their checksum, install them in the cache."""
    target = Path(cache_dir) / CELLAVISION_DIRNAME
    if target.is_dir() and folder_digest(target) == sha256:
        return target
    payload = _fetch(url, timeout_s)
    try:
        archive = zipfile.ZipFile(io.BytesIO(payload))
    except zipfile.BadZipFile:
        raise BloodsegError(f"{url} is not a zip archive") from None
    members = [(m, CELLAVISION_MEMBER.search(m.filename)) for m in archive.infolist()]
    members = [(m, match.group(2)) for m, match in members if match]
    if not members:
        raise BloodsegError(
            f"{url} holds no 'Dataset 2/NNN.bmp|png' files; is it the segmentation_WBC archive?"
        )
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".cellavision-", dir=cache_dir))
    try:
        for member, name in members:
            (staging / name).write_bytes(archive.read(member))
        digest = folder_digest(staging)
        if digest != sha256:
            raise BloodsegError(
                f"checksum mismatch for {url}: got {digest}, expected {sha256}; the download is "
                "corrupt or the dataset changed upstream"
            )
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


WHERE = {
    "smear_fields": """smear_fields is not fetched by this command: its images and masks are two public sources.
  masks:  "BCCD dataset with mask" (Depto et al., Tissue and Cell 73:101653, 2021), as redistributed in
          https://github.com/HanYingLee/Low-Resolution-Blood-Cell-Segmentation (data/train_tmp, data/val_tmp)
  images: BBBC041, P. vivax infected blood smears (https://bbbc.broadinstitute.org/BBBC041), CC BY-NC-SA 3.0
Lay them out as ROOT/train/images/<stem>.png|jpg + ROOT/train/masks/<stem>.png (binary: 0 background,
255 cell), the same under ROOT/val/, and train with: python -m bloodseg.train data=smear_fields data.root=ROOT""",
    "allidb1_masks": """allidb1_masks is not fetched by this command: the masks are public, the images are not.
  masks:  https://github.com/andrealoddo/ALL-IDB1-masks (ImNNN_1_RBC.tif, ImNNN_1_WBCs.tif; MIT licence)
  images: ALL-IDB1 (Labati, Piuri, Scotti, ICIP 2011): the University of Milan gives them on request
          (https://scotti.di.unimi.it/all/)
Put your ImNNN_1.jpg files in one folder and train with:
  python -m bloodseg.train data=allidb1_masks data.root=IMAGES data.mask_root=MASKS""",
}


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m bloodseg.data.download",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("dataset", choices=["cellavision", *WHERE])
    parser.add_argument(
        "--url", default=CELLAVISION_URL, help="zip archive of the segmentation_WBC repository"
    )
    parser.add_argument("--cache-dir", default=None, help="default: $BLOODSEG_CACHE_DIR or ~/.cache/bloodseg")
    args = parser.parse_args(argv)
    if args.dataset in WHERE:
        print(WHERE[args.dataset])
        return 0
    try:
        path = download_cellavision(default_cache_dir(args.cache_dir), args.url)
    except BloodsegError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"CellaVision WBC set ready in {path} (use data=cellavision)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
