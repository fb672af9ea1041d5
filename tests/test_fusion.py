"""Convolution + activation fusion for CPU inference (hdrunet_pl.models.fusion)."""

import logging

import pytest
import torch
from torch import nn

from hdrunet_pl import inference
from hdrunet_pl.inference import Predictor, fused_network
from hdrunet_pl.models import HDRUNet, fusion
from hdrunet_pl.models.fusion import ConvActivation, fuse_conv_activations

from .test_model import VARIANTS

NONE_GIVEN = {"cond": None, "global_features": None}


def _network(seed: int = 0, **variant) -> HDRUNet:
    torch.manual_seed(seed)
    net = HDRUNet(nf=8, **variant).eval()
    with torch.no_grad():  # weights large enough that every activation clips something
        for p in net.parameters():
            p.normal_(0, 0.2)
    return net


def _activations(module: nn.Module) -> list[str]:
    graph = fuse_conv_activations(module, NONE_GIVEN).graph
    owners = dict(module.named_modules())
    return [
        n.target
        for n in graph.nodes
        if n.op == "call_module"
        and isinstance(owners.get(n.target), (nn.ReLU, nn.LeakyReLU, nn.PixelShuffle))
    ]


@pytest.mark.parametrize(("batch", "size"), [(1, (97, 130)), (1, (9, 14)), (2, (37, 50))])
@pytest.mark.parametrize("name", list(VARIANTS))
def test_fused_network_computes_the_same_float32_numbers(name, batch, size):
    # channels_last, as the Predictor runs a network on CPUs; a large image of batch 1 has
    # both kinds of layers: fused ones, and small ones that PyTorch computes natively
    net = _network(**VARIANTS[name]).to(memory_format=torch.channels_last)
    fused = fuse_conv_activations(net, NONE_GIVEN)
    ldr = torch.rand(batch, 3, *size).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        # PyTorch's own first call can round a few values differently from its later
        # ones (seen here once in a few runs of this file, plain against plain): compare
        # warm calls
        net(ldr), fused(ldr)
        expected, got = net(ldr), fused(ldr)
    assert fused.fused_pairs > 0
    assert torch.equal(got, expected)
    # no activation or shuffle is left as a pass of its own: each went into a convolution
    assert _activations(net) == []


def test_fused_network_in_bf16_differs_by_rounding_only():
    torch.manual_seed(0)
    net = HDRUNet(nf=8).eval()  # as initialised: outputs of a trained network's size
    fused = fuse_conv_activations(net, NONE_GIVEN)
    ldr = torch.rand(1, 3, 48, 64)
    with torch.inference_mode():
        exact = net(ldr)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            plain, got = net(ldr).float(), fused(ldr).float()
    assert got.dtype == torch.float32
    # the fused bf16 result is as close to float32 as the unfused bf16 one
    scale = exact.abs().max()
    assert (got - exact).abs().max() <= 2 * (plain - exact).abs().max() + 1e-3 * scale
    assert (got - plain).abs().max() <= 0.02 * scale


def test_the_activation_commutes_with_the_pixel_shuffle_it_is_moved_past():
    torch.manual_seed(0)
    conv, shuffle = nn.Conv2d(4, 16, 3, padding=1).to(memory_format=torch.channels_last), 2
    layer = ConvActivation(conv, nn.LeakyReLU(0.1), shuffle)
    x = torch.randn(1, 4, 5, 7).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        expected = nn.LeakyReLU(0.1)(nn.PixelShuffle(shuffle)(conv(x)))
        got = layer(x)
    assert got.shape == (1, 4, 10, 14)
    assert torch.equal(got, expected)


@pytest.fixture
def two_threads():
    """Two intra-op threads (the test processes run one; PyTorch takes oneDNN for 1x1
    convolutions of small batches only with more than one)."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize(
    ("shape", "kernel", "fused"),
    [
        ((1, 8, 40, 60), 3, False),  # 19,200 values: PyTorch's native kernel
        ((1, 8, 50, 60), 3, True),  # 24,000: oneDNN
        ((2, 8, 4, 4), 3, True),  # a batch: oneDNN
        ((1, 8, 50, 60), 1, True),  # 1x1 with threads: oneDNN
    ],
)
def test_float32_layers_are_fused_where_pytorch_uses_onednn(
    monkeypatch, two_threads, shape, kernel, fused
):
    calls = []
    real = fusion._FUSED

    def counted(*args):
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(fusion, "_FUSED", counted)
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 8, kernel, padding=kernel // 2)
    x = torch.randn(shape)
    with torch.inference_mode():
        got = ConvActivation(conv, nn.ReLU())(x)
        expected = torch.relu(conv(x))
    assert bool(calls) == fused
    assert torch.equal(got, expected)


def test_layers_pytorch_computes_without_onednn_stay_unfused():
    conv = nn.Conv2d(64, 64, 3, padding=1)
    large = torch.empty(1, 64, 200, 300)
    assert fusion.torch_runs_onednn(large, conv)
    with torch.backends.mkldnn.flags(enabled=False):  # the user turned oneDNN off
        assert not fusion.torch_runs_onednn(large, conv)
    huge = torch.empty(1, 64, 6000, 6000, device="meta")  # 64-bit indexing in PyTorch
    assert not fusion.torch_runs_onednn(huge, conv)


def test_single_threaded_pointwise_layers_stay_unfused(monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    conv = nn.Conv2d(8, 8, 1)
    assert not fusion.torch_runs_onednn(torch.zeros(1, 8, 50, 60), conv)
    assert fusion.torch_runs_onednn(torch.zeros(16, 8, 5, 6), conv)
    assert fusion.torch_runs_onednn(torch.zeros(1, 8, 50, 60), nn.Conv2d(8, 8, 3))


def test_training_takes_the_unfused_path_and_gets_the_same_gradients():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 8, 3, padding=1)
    layer = ConvActivation(conv, nn.ReLU())
    x = torch.randn(2, 3, 9, 9, requires_grad=True)
    layer(x).square().sum().backward()
    grads = (x.grad.clone(), conv.weight.grad.clone())
    x.grad, conv.weight.grad = None, None
    torch.relu(conv(x)).square().sum().backward()
    assert torch.equal(grads[0], x.grad)
    assert torch.equal(grads[1], conv.weight.grad)


def test_predictor_runs_the_fused_network_with_the_models_numbers():
    net = _network(seed=1)
    predictor = Predictor(net, device="cpu", precision="32", tile=0)
    assert predictor.fused is not None
    ldr = torch.rand(3, 45, 61)
    with torch.inference_mode():
        batch = ldr[None].contiguous(memory_format=torch.channels_last)  # as the Predictor's
        predictor(ldr), net(batch)  # warm calls compared, as above
        expected = net(batch)[0]
    assert torch.equal(predictor(ldr), expected)
    calls = []
    predictor.fused.register_forward_hook(lambda *args: calls.append(1))
    predictor(ldr)
    assert calls == [1]


def test_channel_modulation_tiles_keep_the_unfused_path_for_whole_image_means():
    net = _network(seed=2, modulation="channel")
    predictor = Predictor(net, device="cpu", precision="32", tile=24, overlap=8)
    calls = []
    predictor.fused.register_forward_hook(lambda *args: calls.append(1))
    predictor(torch.rand(3, 40, 52))
    assert calls == []  # its tiles need the whole image's means, which the fused graph lacks


def test_a_fused_operator_that_disagrees_is_not_used(monkeypatch, caplog):
    real = fusion._FUSED

    def off_by_a_little(*args):
        return real(*args) * (1 + 1e-6)

    monkeypatch.setattr(fusion, "_FUSED", off_by_a_little)
    with caplog.at_level(logging.INFO, logger=inference.__name__):
        assert fused_network(_network().to(memory_format=torch.channels_last)) is None
    assert "running it unfused" in caplog.text


def test_other_networks_and_compiled_predictors_are_not_fused():
    from hdrunet_pl.models.expandnet import ExpandNet

    assert fused_network(ExpandNet(nf=8).eval()) is None
    assert Predictor(_network(), device="cpu", compile=True).fused is None
