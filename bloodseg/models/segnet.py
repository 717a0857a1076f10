"""SegNet (Badrinarayanan et al. 2017) with torchvision's VGG-16-BN feature extractor as encoder.

Encoder: the 13 conv+BN+ReLU layers of VGG-16-BN in 5 stages, each ending in a 2x2 max-pool
that returns its indices. Decoder: the mirror image; each stage starts by max-unpooling with
the indices of its encoder stage (so boundaries come back where the encoder saw them), then
conv+BN+ReLU layers. A final 3x3 convolution gives K class scores; softmax is in the loss.
Any input of at least 32x32 works: unpooling restores each stage's exact size.

``pool_tie_tolerance`` (default 0.01) makes the pooling positions robust to rounding: window
values within the tolerance of the maximum share the unpooled value continuously instead of one of
them winning by the last bit (see ``bloodseg.models.pooling``), so the same image gets the same
classes whatever the batch size, CPU kernel or runtime. 0 is classic SegNet (argmax indices).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn
from torchvision.models.vgg import cfgs, make_layers

from bloodseg.models import pooling
from bloodseg.models.weights import load_imagenet_state_dict, resolve_pretrained

log = logging.getLogger(__name__)

ENCODER_CHANNELS = [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]]
# Decoder stage i mirrors encoder stage i; its last conv maps to the channels of stage i-1.
DECODER_CHANNELS = [[512, 512, 512], [512, 512, 256], [256, 256, 128], [128, 64], [64, 64]]


def conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    """A 3x3 convolution, batch norm and ReLU, as in VGG-16-BN."""
    return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def vgg16_bn_stages(features: nn.Sequential) -> nn.ModuleList:
    """Split torchvision's vgg16_bn().features into its 5 conv stages (the max-pools are dropped)."""
    stages, current = [], []
    for layer in features:
        if isinstance(layer, nn.MaxPool2d):
            stages.append(nn.Sequential(*current))
            current = []
        else:
            current.append(layer)
    if len(stages) != 5 or current:
        raise ValueError("expected the VGG-16-BN feature extractor (5 stages ending in max-pools)")
    return nn.ModuleList(stages)


class SegNet(nn.Module):
    """SegNet-VGG16-BN for num_classes classes; ``pretrained`` is auto | true | false | a state-dict path."""

    def __init__(
        self, num_classes: int, pretrained: bool | str | Path = "auto", pool_tie_tolerance: float = 0.01
    ):
        super().__init__()
        features = make_layers(cfgs["D"], batch_norm=True)  # exactly torchvision's vgg16_bn().features
        for module in features.modules():
            if isinstance(module, nn.Conv2d):  # torchvision's VGG initialisation
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)
        state, self.init_source = resolve_pretrained(pretrained)
        if state is not None:
            load_imagenet_state_dict(features, state, self.init_source)
        self.encoder = vgg16_bn_stages(features)
        if pool_tie_tolerance < 0:
            raise ValueError(
                f"model.pool_tie_tolerance must be >= 0 (0 = classic SegNet), got {pool_tie_tolerance}"
            )
        self.pool_tie_tolerance = float(pool_tie_tolerance)
        decoder = []
        for i, channels in enumerate(DECODER_CHANNELS):
            cin = ENCODER_CHANNELS[len(ENCODER_CHANNELS) - 1 - i][-1]
            layers = []
            for cout in channels:
                layers += conv_bn_relu(cin, cout)
                cin = cout
            decoder.append(nn.Sequential(*layers))
        self.decoder = nn.ModuleList(decoder)
        self.classifier = nn.Conv2d(DECODER_CHANNELS[-1][-1], num_classes, 3, padding=1)
        for module in [*self.decoder.modules(), self.classifier]:
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores (N, K, H, W) for images (N, 3, H, W); TorchScript-compatible."""
        routes: list[torch.Tensor] = []
        sizes: list[list[int]] = []
        for stage in self.encoder:
            x = stage(x)
            sizes.append([x.shape[-2], x.shape[-1]])
            x, route = pooling.pool(x, self.pool_tie_tolerance)
            routes.append(route)
        level = len(routes)
        for stage in self.decoder:
            level -= 1
            x = stage(pooling.unpool(x, routes[level], sizes[level]))
        return self.classifier(x)
