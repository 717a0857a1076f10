"""Where downloaded datasets live: the cache folder and the CellaVision set's place in it.

Both the downloader (bloodseg.data.download) and the readers (bloodseg.data.sources) use it,
so neither imports the other.
"""

from __future__ import annotations

import os
from pathlib import Path

from bloodseg.errors import BloodsegError


def default_cache_dir(configured: str | None) -> Path:
    """The data cache: data.cache_dir, else $BLOODSEG_CACHE_DIR, else ~/.cache/bloodseg."""
    if configured:
        return Path(configured).expanduser()
    return Path(os.environ.get("BLOODSEG_CACHE_DIR", Path.home() / ".cache" / "bloodseg")).expanduser()


CELLAVISION_DIRNAME = "cellavision_wbc"


def cellavision_root(data_cfg) -> Path:
    """data.root if given, else the cached download (with a clear error if it is not there)."""
    if data_cfg.root:
        return Path(data_cfg.root).expanduser()
    cached = default_cache_dir(data_cfg.cache_dir) / CELLAVISION_DIRNAME
    if not cached.is_dir():
        raise BloodsegError(
            f"data=cellavision has no data.root and the cache {cached} is empty; fix: run "
            "`python -m bloodseg.data.download cellavision` (needs internet) or set data.root=/path/to/copy"
        )
    return cached
