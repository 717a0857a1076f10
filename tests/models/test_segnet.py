"""SegNet-VGG16-BN: shapes, gradients, classic and tie-robust unpooling, scripting, pretrained options."""

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


def classic_segnet_forward(net: SegNet, x: torch.Tensor) -> torch.Tensor:
    """SegNet as published, written with torch's own max-pool indices and max-unpool: the reference."""
    indices, sizes = [], []
    for stage in net.encoder:
        x = stage(x)
        sizes.append(x.shape[-2:])
        x, idx = nn.functional.max_pool2d(x, 2, 2, return_indices=True)
        indices.append(idx)
    for stage, idx, size in zip(net.decoder, reversed(indices), reversed(sizes), strict=True):
        x = stage(nn.functional.max_unpool2d(x, idx, 2, 2, output_size=size))
    return net.classifier(x)


def test_tolerance_zero_is_classic_segnet_with_argmax_indices(net):
    classic = SegNet(3, pretrained=False, pool_tie_tolerance=0.0)
    classic.load_state_dict(net.state_dict())
    classic.eval()
    x = torch.randn(2, 3, 70, 90)
    with torch.no_grad():
        torch.testing.assert_close(classic(x), classic_segnet_forward(classic, x), rtol=0, atol=0)


@pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:FutureWarning")
@pytest.mark.parametrize("tolerance", [0.0, 0.01])
def test_segnet_scripts_and_the_script_computes_the_same(tolerance):
    torch.manual_seed(0)
    model = SegNet(3, pretrained=False, pool_tie_tolerance=tolerance).eval()
    x = torch.randn(2, 3, 45, 67)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.script(model)(x), model(x), rtol=0, atol=0)


def test_a_negative_tie_tolerance_is_rejected():
    with pytest.raises(ValueError, match="pool_tie_tolerance"):
        SegNet(3, pretrained=False, pool_tie_tolerance=-1.0)


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
