"""SegNet-VGG16-BN: shapes, gradients, use of the pooling indices, and the pretrained options."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.models import vgg16_bn

from bloodseg.errors import BloodsegError
from bloodseg.models.segnet import SegNet
from bloodseg.models.weights import cached_weights_path


@pytest.fixture(scope="module")
def net() -> SegNet:
    torch.manual_seed(0)
    return SegNet(3, pretrained=False)


def test_architecture_is_vgg16_bn_encoder_and_mirrored_decoder(net):
    convs = [m for m in net.encoder.modules() if isinstance(m, nn.Conv2d)]
    bns = [m for m in net.encoder.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(convs) == 13 and len(bns) == 13
    assert [s[0].in_channels for s in net.encoder] == [3, 64, 128, 256, 512]
    decoder_convs = [m for m in net.decoder.modules() if isinstance(m, nn.Conv2d)]
    assert len(decoder_convs) == 13
    assert net.classifier.out_channels == 3
    # encoder parameters have exactly torchvision's vgg16_bn feature-extractor shapes
    ours = [p.shape for p in net.encoder.parameters()]
    theirs = [p.shape for p in vgg16_bn().features.parameters()]
    assert ours == theirs


def test_paper_input_size_360x480(net):
    net.eval()
    with torch.no_grad():
        out = net(torch.randn(1, 3, 360, 480))
    assert out.shape == (1, 3, 360, 480)


@pytest.mark.parametrize("size", [(32, 32), (45, 67), (33, 97), (64, 96)])
def test_odd_sizes_and_gradients_reach_every_parameter(net, size):
    net.train()
    net.zero_grad()
    x = torch.randn(2, 3, *size)
    out = net(x)
    assert out.shape == (2, 3, *size)
    out.square().mean().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    assert all(p.grad.abs().sum() > 0 for n, p in net.named_parameters() if n.endswith("weight"))


def test_decoder_unpools_with_the_encoders_argmax_positions(net):
    """Each unpooling output is non-zero only where its encoder stage's max-pool found the maximum."""
    net.eval()
    records = {"pool": [], "unpool": []}
    h1 = net.pool.register_forward_hook(lambda m, i, o: records["pool"].append(o[1].clone()))
    h2 = net.unpool.register_forward_hook(lambda m, i, o: records["unpool"].append(o.clone()))
    try:
        with torch.no_grad():
            net(torch.randn(1, 3, 70, 90))
    finally:
        h1.remove()
        h2.remove()
    assert len(records["pool"]) == 5 and len(records["unpool"]) == 5
    for indices, unpooled in zip(reversed(records["pool"]), records["unpool"], strict=True):
        n, c, h, w = unpooled.shape
        allowed = torch.zeros(n, c, h * w, dtype=torch.bool)
        allowed.scatter_(2, indices.flatten(2), True)
        nonzero = unpooled.flatten(2) != 0
        assert not (nonzero & ~allowed).any()
        assert nonzero.any()


def test_pretrained_from_a_local_state_dict(tmp_path):
    reference = vgg16_bn()
    path = tmp_path / "vgg16_bn.pth"
    torch.save(reference.state_dict(), path)
    net = SegNet(3, pretrained=str(path))
    assert net.init_source == f"file:{path.resolve()}"
    assert torch.equal(net.encoder[0][0].weight, reference.features[0].weight)
    assert torch.equal(net.encoder[4][7].running_var, reference.features[41].running_var)
    features_only = tmp_path / "features.pth"
    torch.save(reference.features.state_dict(), features_only)
    assert torch.equal(
        SegNet(3, pretrained=features_only).encoder[2][3].weight, reference.features[17].weight
    )


def test_pretrained_bad_files_are_clear_errors(tmp_path):
    with pytest.raises(BloodsegError, match="model.pretrained"):
        SegNet(3, pretrained=str(tmp_path / "missing.pth"))
    wrong = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, wrong)
    with pytest.raises(BloodsegError, match="not a VGG-16-BN state dict"):
        SegNet(3, pretrained=wrong)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(BloodsegError, match="cannot be read"):
        SegNet(3, pretrained=garbage)


def test_auto_offline_falls_back_to_random_with_a_warning(caplog):
    assert os.environ["BLOODSEG_OFFLINE"] == "1"
    assert not cached_weights_path().exists()
    with caplog.at_level(logging.WARNING):
        net = SegNet(3, pretrained="auto")
    assert net.init_source.startswith("random")
    assert "python -m bloodseg.models.weights" in caplog.text


def test_true_offline_is_a_clear_error():
    with pytest.raises(BloodsegError, match="ImageNet weights are not available"):
        SegNet(3, pretrained=True)


def test_auto_and_true_use_the_torch_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    reference = vgg16_bn()
    cache = cached_weights_path()
    assert Path(tmp_path) in cache.parents
    cache.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), cache)
    for setting in ("auto", True, "true"):
        net = SegNet(3, pretrained=setting)
        assert net.init_source.startswith("imagenet")
        assert torch.equal(net.encoder[1][0].weight, reference.features[7].weight)
