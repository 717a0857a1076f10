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
from contextlib import contextmanager
from pathlib import Path

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
    """Make Hugging Face Hub use only its local cache inside the block."""
    previous = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = previous


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
        try:
            if offline():
                with _hub_offline():
                    net = _build(arch, encoder, "imagenet", num_classes)
            else:
                net = _build(arch, encoder, "imagenet", num_classes)
            source = f"imagenet:smp {encoder}"
        except BloodsegError:
            raise
        except Exception as error:  # noqa: BLE001 - offline is normal: any fetch failure is reported alike
            reason = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
            if word != "auto":
                raise BloodsegError(
                    f"model.encoder_weights=imagenet but the {encoder} weights are not available ({reason}); fix: run "
                    "once with internet to fill the Hugging Face cache, or pass a local encoder state dict path"
                ) from None
            log.warning(
                "model.encoder_weights=auto: ImageNet weights for %s unavailable (%s); random initialisation",
                encoder,
                reason,
            )
            net, source = _build(arch, encoder, None, num_classes), "random (ImageNet weights unavailable)"
    model = PadToMultiple(net, net.encoder.output_stride)
    model.init_source = source
    return model
