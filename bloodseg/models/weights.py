"""ImageNet weights for the VGG-16-BN encoder: from a local file, torch's hub cache, or a download.

``model.pretrained``:
- ``auto``: ImageNet weights when obtainable (hub cache, else a download), otherwise a warning
  and random initialisation; the run records which one it got.
- ``true``: ImageNet weights or a clear error saying how to get them.
- ``false``: random initialisation.
- a path: a ``vgg16_bn`` state dict saved with ``torch.save(model.state_dict(), path)``.

Set ``BLOODSEG_OFFLINE=1`` to never try the network (``auto`` then only uses the cache).
Run ``python -m bloodseg.models.weights`` on a machine with internet to fill the cache.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
from pathlib import Path

import torch
from torchvision.models import VGG16_BN_Weights

from bloodseg.errors import BloodsegError

log = logging.getLogger(__name__)

IMAGENET_WEIGHTS = VGG16_BN_Weights.IMAGENET1K_V1
TRUE_WORDS, FALSE_WORDS = {"true", "yes", "1", "imagenet"}, {"false", "no", "0", "none", "null", "random"}


def cached_weights_path() -> Path:
    """Where torch's hub cache keeps torchvision's VGG-16-BN ImageNet weights."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(IMAGENET_WEIGHTS.url)


def offline() -> bool:
    """True when the user asked bloodseg never to use the network."""
    return os.environ.get("BLOODSEG_OFFLINE", "").lower() in TRUE_WORDS


def download_imagenet_weights(timeout_s: float = 30.0) -> dict:
    """Download torchvision's VGG-16-BN ImageNet weights into the hub cache (hash-checked) and load them."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout_s)
    try:  # torch.hub announces the download on stdout, which belongs to results (bench JSON, summaries)
        with contextlib.redirect_stdout(sys.stderr):
            return torch.hub.load_state_dict_from_url(
                IMAGENET_WEIGHTS.url, progress=False, check_hash=True, map_location="cpu"
            )
    finally:
        socket.setdefaulttimeout(previous)


def _read_state_file(path: Path, key: str) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unreadable file gets the same clear message
        raise BloodsegError(f"{key}={path} cannot be read as a PyTorch state dict ({error})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise BloodsegError(f"{key}={path} holds a {type(state).__name__}, not a state dict")
    return state


def resolve_pretrained(pretrained) -> tuple[dict | None, str]:
    """The encoder state dict to load (or None) and a description of the initialisation."""
    word = str(pretrained).strip().lower() if not isinstance(pretrained, Path) else None
    if pretrained is None or pretrained is False or word in FALSE_WORDS:
        return None, "random"
    if word not in TRUE_WORDS and word != "auto":
        path = Path(str(pretrained)).expanduser()
        if not path.is_file():
            raise BloodsegError(
                f"model.pretrained={pretrained} is neither auto/true/false nor an existing file; "
                "fix: pass the path of a vgg16_bn state dict (torch.save(vgg16_bn(...).state_dict(), path))"
            )
        return _read_state_file(path, "model.pretrained"), f"file:{path.resolve()}"
    required = word != "auto"
    imagenet = f"imagenet:torchvision {IMAGENET_WEIGHTS}"
    cached = cached_weights_path()
    if cached.is_file():
        return _read_state_file(cached, "torch hub cache file"), imagenet
    how = (
        "run `python -m bloodseg.models.weights` on a machine with internet (fills the torch hub cache "
        f"{cached}), or download {IMAGENET_WEIGHTS.url} and set model.pretrained=/path/to/it"
    )
    if offline():
        reason = "BLOODSEG_OFFLINE is set and the weights are not in the torch hub cache"
    else:
        try:
            return download_imagenet_weights(), imagenet
        except Exception as error:  # noqa: BLE001 - offline is normal: any network failure is reported the same way
            reason = f"download failed ({type(error).__name__}: {error})"
    if required:
        raise BloodsegError(
            f"model.pretrained=true but ImageNet weights are not available: {reason}; fix: {how}"
        )
    log.warning(
        "model.pretrained=auto: ImageNet weights not available (%s); training from random initialisation. "
        "To use them: %s",
        reason,
        how,
    )
    return None, "random (ImageNet weights unavailable)"


def load_imagenet_state_dict(features: torch.nn.Module, state: dict, source: str) -> None:
    """Load a vgg16_bn state dict (full model, or its ``features`` only) into the VGG feature extractor."""
    wanted = {k[len("features.") :]: v for k, v in state.items() if k.startswith("features.")} or state
    try:
        features.load_state_dict(wanted, strict=True)
    except RuntimeError as error:
        first = str(error).splitlines()[0:2]
        raise BloodsegError(
            f"{source} is not a VGG-16-BN state dict ({' '.join(first)[:300]}); "
            "fix: save torchvision.models.vgg16_bn(...).state_dict()"
        ) from None


def main() -> int:
    """Fill the torch hub cache with the VGG-16-BN ImageNet weights (needs internet)."""
    try:
        download_imagenet_weights(timeout_s=120)
    except Exception as error:  # noqa: BLE001
        print(f"error: could not download {IMAGENET_WEIGHTS.url}: {error}", file=sys.stderr)
        return 1
    print(f"ImageNet weights for vgg16_bn are in {cached_weights_path()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
