"""segmentation-models-pytorch baselines behind the same interface as SegNet.

``model.encoder_weights``: ``auto`` (ImageNet when obtainable, else a warning and random init),
``imagenet`` (must load), ``null`` (random), or a path to an encoder state dict. For the
``vgg16_bn`` encoder the ImageNet weights are torchvision's, exactly those SegNet uses, so the
comparison with SegNet is apples to apples. Inputs whose size the architecture cannot take are
padded (reflection) to the next multiple of its output stride and the scores cropped back.
"""

from __future__ import annotations

import logging
import os
import socket
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import huggingface_hub.constants
import segmentation_models_pytorch as smp
import torch
from torch import nn
from torch.nn import functional as F

from bloodseg.errors import BloodsegError
from bloodseg.models.weights import TRUE_WORDS, offline, resolve_pretrained

log = logging.getLogger(__name__)

ARCHITECTURES = {
    "unet": smp.Unet,
    "unetplusplus": smp.UnetPlusPlus,
    "fpn": smp.FPN,
    "deeplabv3": smp.DeepLabV3,
    "deeplabv3plus": smp.DeepLabV3Plus,
    "pspnet": smp.PSPNet,
    "linknet": smp.Linknet,
    "manet": smp.MAnet,
    "pan": smp.PAN,
}


class PadToMultiple(nn.Module):
    """Runs a network on inputs padded to a multiple of ``multiple`` and crops its output back."""

    def __init__(self, net: nn.Module, multiple: int):
        super().__init__()
        self.net, self.multiple = net, int(multiple)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores (N, K, H, W) for any H, W."""
        h, w = x.shape[-2:]
        pad_h, pad_w = -h % self.multiple, -w % self.multiple
        if pad_h or pad_w:
            mode = "reflect" if pad_h < h and pad_w < w else "replicate"
            x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
        return self.net(x)[..., :h, :w]


@contextmanager
def _hub_offline():
    """Make Hugging Face Hub use only its local cache inside the block.

    The Hub reads HF_HUB_OFFLINE once, at import, so its module flag is switched as well as the variable.
    """
    previous_env, previous_flag = os.environ.get("HF_HUB_OFFLINE"), huggingface_hub.constants.HF_HUB_OFFLINE
    os.environ["HF_HUB_OFFLINE"] = "1"
    huggingface_hub.constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        huggingface_hub.constants.HF_HUB_OFFLINE = previous_flag
        if previous_env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = previous_env


def hub_endpoint() -> tuple[str, int]:
    """(host, port) of the Hugging Face Hub this process would download from (HF_ENDPOINT or huggingface.co)."""
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    return url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)


def hub_reachable(timeout_s: float = 3.0) -> bool:
    """True when the Hugging Face Hub's host accepts a TCP connection within timeout_s seconds.

    Checked once before a download, so an offline host falls back at once instead of after the
    Hub client's five retries (about 25 s and a dozen warnings per model).
    """
    try:
        with socket.create_connection(hub_endpoint(), timeout=timeout_s):
            return True
    except OSError:
        return False


def _build(arch: str, encoder: str, weights: str | None, num_classes: int) -> nn.Module:
    try:
        return ARCHITECTURES[arch](encoder_name=encoder, encoder_weights=weights, classes=num_classes)
    except KeyError as error:
        raise BloodsegError(f"model.encoder={encoder} is not available for {arch}: {error}") from None


def _load_encoder_file(net: nn.Module, path: Path) -> str:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state)
        net.encoder.load_state_dict({k.removeprefix("encoder."): v for k, v in state.items()}, strict=True)
    except (RuntimeError, OSError, ValueError, AttributeError) as error:
        raise BloodsegError(
            f"model.encoder_weights={path} does not fit the encoder: {str(error)[:300]}"
        ) from None
    return f"file:{path.resolve()}"


def _smp_imagenet(arch: str, encoder: str, num_classes: int, required: bool) -> tuple[nn.Module, str]:
    """The network with smp's ImageNet encoder weights, from the local Hugging Face cache first and then
    from the Hub when it is reachable and bloodseg is not offline; without them, random weights and a
    warning, or an error when ``required``."""
    try:
        with _hub_offline():
            return _build(arch, encoder, "imagenet", num_classes), f"imagenet:smp {encoder}"
    except BloodsegError:
        raise
    except Exception as error:  # noqa: BLE001 - a cache miss: try the Hub below
        reason = f"not in the local Hugging Face cache ({type(error).__name__})"
    if offline():
        reason += "; BLOODSEG_OFFLINE is set"
    elif not hub_reachable():
        host, port = hub_endpoint()
        reason += f"; {host}:{port} is unreachable"
    else:
        try:
            return _build(arch, encoder, "imagenet", num_classes), f"imagenet:smp {encoder}"
        except BloodsegError:
            raise
        except Exception as error:  # noqa: BLE001 - offline is normal: any fetch failure is reported alike
            reason = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
    if required:
        raise BloodsegError(
            f"model.encoder_weights=imagenet but the {encoder} weights are not available ({reason}); fix: run "
            "once with internet to fill the Hugging Face cache, or pass a local encoder state dict path"
        )
    log.warning(
        "model.encoder_weights=auto: ImageNet weights for %s unavailable (%s); random initialisation",
        encoder,
        reason,
    )
    return _build(arch, encoder, None, num_classes), "random (ImageNet weights unavailable)"


def build_smp(
    num_classes: int, arch: str, encoder: str = "resnet34", encoder_weights: str | None = "auto"
) -> nn.Module:
    """An smp ``arch`` with ``encoder`` for num_classes classes; ``init_source`` says how it was initialised."""
    if arch not in ARCHITECTURES:
        raise BloodsegError(f"model.arch={arch} is unknown; use one of {', '.join(ARCHITECTURES)}")
    setting = None if encoder_weights is None else str(encoder_weights)
    word = None if setting is None else setting.lower()
    if word in (None, "none", "null", "false", "random"):
        net, source = _build(arch, encoder, None, num_classes), "random"
    elif word not in ("auto", "imagenet", *TRUE_WORDS):
        path = Path(setting).expanduser()
        if not path.is_file():
            raise BloodsegError(
                f"model.encoder_weights={setting} is neither auto/imagenet/null nor an existing file"
            )
        net = _build(arch, encoder, None, num_classes)
        source = _load_encoder_file(net, path)
    elif encoder == "vgg16_bn":  # torchvision's ImageNet weights, the same as SegNet's encoder
        net = _build(arch, encoder, None, num_classes)
        state, source = resolve_pretrained("auto" if word == "auto" else True)
        if state is not None:
            net.encoder.load_state_dict(
                {k: v for k, v in state.items() if k.startswith("features.")}, strict=True
            )
    else:
        net, source = _smp_imagenet(arch, encoder, num_classes, required=word != "auto")
    model = PadToMultiple(net, net.encoder.output_stride)
    model.init_source = source
    return model
