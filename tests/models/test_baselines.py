"""smp baselines behind the same interface as SegNet: every option builds and trains; weights offline."""

from __future__ import annotations

import logging
import socket

import pytest
import torch
from conftest import CONF_DIR, compose_train
from torchvision.models import vgg16_bn

from bloodseg.errors import BloodsegError
from bloodseg.models.baselines import ARCHITECTURES, PadToMultiple, build_smp, hub_reachable
from bloodseg.models.registry import build_model
from bloodseg.models.segnet import SegNet
from bloodseg.models.weights import cached_weights_path

SMP_OPTIONS = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml") if p.stem != "segnet_vgg16")


def test_the_issue_asks_for_these_architectures():
    assert set(SMP_OPTIONS) >= {"unet", "unetplusplus", "fpn", "deeplabv3plus", "pspnet", "linknet", "manet"}


@pytest.mark.parametrize("option", SMP_OPTIONS)
def test_every_smp_option_builds_and_trains_at_an_odd_size(option):
    cfg = compose_train([f"model={option}", "model.encoder_weights=null"])
    torch.manual_seed(0)
    net = build_model(cfg.model, 3)
    assert net.init_source == "random"
    x = torch.randn(2, 3, 45, 67)  # not a multiple of 32: padded and cropped back
    out = net(x)
    assert out.shape == (2, 3, 45, 67)
    out.logsumexp(1).mean().backward()
    grads = {n: p.grad for n, p in net.named_parameters()}
    assert all(torch.isfinite(g).all() for g in grads.values() if g is not None)
    # every decoder/head weight learns (PSPNet's depth-3 encoder leaves ResNet's last stage unused)
    assert all(g is not None for n, g in grads.items() if not n.startswith("net.encoder."))
    assert grads["net.encoder.conv1.weight"] is not None


@pytest.mark.parametrize("encoder", ["vgg16_bn", "efficientnet-b0"])
def test_other_encoders(encoder):
    net = build_smp(3, "unet", encoder, None)
    assert net(torch.randn(1, 3, 64, 96)).shape == (1, 3, 64, 96)


def test_padding_is_invisible_for_sizes_the_model_takes():
    net = build_smp(2, "fpn", "resnet34", None).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        assert torch.equal(net(x), net.net(x))


def test_pad_to_multiple_crops_back_exactly():
    identity = PadToMultiple(torch.nn.Identity(), 32)
    x = torch.randn(1, 3, 33, 70)
    assert torch.equal(identity(x), x)


def test_auto_offline_falls_back_to_random_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        net = build_smp(3, "unet", "resnet34", "auto")
    assert net.init_source.startswith("random") and "resnet34" in caplog.text


def _closed_local_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_hub_reachable_sees_whether_the_endpoint_listens(monkeypatch):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
        assert hub_reachable(timeout_s=2.0)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_local_port()}")
    assert not hub_reachable(timeout_s=2.0)


def test_auto_with_the_hub_unreachable_falls_back_without_the_hub_clients_retries(monkeypatch, caplog):
    """Not offline by setting, but no network: one failed connection decides, not five HTTP retries."""
    monkeypatch.delenv("BLOODSEG_OFFLINE")
    port = _closed_local_port()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    with caplog.at_level(logging.WARNING):
        net = build_smp(3, "unet", "resnet34", "auto")
    assert net.init_source.startswith("random")
    assert f"127.0.0.1:{port} is unreachable" in caplog.text and "local Hugging Face cache" in caplog.text
    assert not [r for r in caplog.records if r.name.startswith("huggingface_hub")]
    with pytest.raises(BloodsegError, match="unreachable.*fix: run once with internet"):
        build_smp(3, "unet", "resnet34", "imagenet")


def test_imagenet_required_offline_is_a_clear_error():
    with pytest.raises(BloodsegError, match="encoder_weights=imagenet"):
        build_smp(3, "unet", "resnet34", "imagenet")


def test_vgg16_bn_encoder_gets_the_same_imagenet_weights_as_segnet(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cache = cached_weights_path()
    cache.parent.mkdir(parents=True)
    torch.save(vgg16_bn().state_dict(), cache)
    unet = build_smp(3, "unet", "vgg16_bn", "auto")
    segnet = SegNet(3, pretrained="auto")
    assert unet.init_source == segnet.init_source and unet.init_source.startswith("imagenet")
    assert torch.equal(unet.net.encoder.features[0].weight, segnet.encoder[0][0].weight)
    assert torch.equal(unet.net.encoder.features[41].running_mean, segnet.encoder[4][7].running_mean)


def test_encoder_weights_from_a_local_file(tmp_path):
    source = build_smp(3, "unet", "resnet34", None)
    path = tmp_path / "encoder.pth"
    torch.save(source.net.encoder.state_dict(), path)
    net = build_smp(3, "fpn", "resnet34", str(path))
    assert net.init_source.startswith("file:")
    assert torch.equal(net.net.encoder.conv1.weight, source.net.encoder.conv1.weight)
    with pytest.raises(BloodsegError, match="does not fit"):
        build_smp(3, "unet", "resnet18", str(path))


def test_unknown_architecture_and_encoder():
    with pytest.raises(BloodsegError, match="model.arch=segformer2"):
        build_smp(3, "segformer2", "resnet34", None)
    with pytest.raises(BloodsegError, match="model.encoder=resnet9000"):
        build_smp(3, "unet", "resnet9000", None)


def test_architecture_table_matches_the_configs():
    assert set(SMP_OPTIONS) <= set(ARCHITECTURES)
