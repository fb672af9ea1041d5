import pytest
import torch

from hdrunet_pl.models import HDRUNet
from hdrunet_pl.models.blocks import SFT, ChannelModulation

VARIANTS = {
    "full": {},
    "base": {"use_condition": False, "use_weighting": False},
    "base_weighting": {"use_condition": False},
    "base_condition": {"use_weighting": False},
    "channel": {"modulation": "channel"},
    "no_modulation": {"modulation": "none"},
    "gradient": {"condition": "gradient"},
}


def test_default_network_has_the_papers_parameter_count():
    assert HDRUNet().num_parameters == 1_651_494


def test_ablation_parameter_counts_follow_the_parts_removed():
    full = HDRUNet(nf=16)
    base = HDRUNet(nf=16, use_condition=False, use_weighting=False)
    weighting = sum(p.numel() for p in full.weighting.parameters())
    condition = sum(p.numel() for p in full.condition.parameters())
    sft_layers = sum(
        p.numel() for m in full.modules() if isinstance(m, SFT) for p in m.parameters()
    )
    assert base.num_parameters == full.num_parameters - weighting - condition - sft_layers
    # channel modulation has SFT's parameters, so the modulation ablation is like for like
    assert HDRUNet(nf=16, modulation="channel").num_parameters == full.num_parameters


@pytest.mark.parametrize("name", list(VARIANTS))
def test_each_variant_trains_a_step(name):
    net = HDRUNet(nf=8, **VARIANTS[name])
    ldr, hdr = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32) * 2
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    before = [p.detach().clone() for p in net.parameters()]
    loss = torch.nn.functional.l1_loss(net(ldr), hdr)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in net.parameters()), "every parameter takes part"
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))


@pytest.mark.parametrize("size", [(97, 131), (1, 1), (33, 4), (64, 63)])
def test_any_size_returns_the_input_size(size):
    net = HDRUNet(nf=8).eval()
    with torch.no_grad():
        out = net(torch.rand(1, 3, *size))
    assert out.shape == (1, 3, *size)
    assert torch.isfinite(out).all()


def test_padding_only_affects_the_border():
    """Cropping back after padding gives the same interior as a multiple-of-4 input."""
    net = HDRUNet(nf=8).eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        whole = net(x)
        cut = net(x[..., :62, :62])
    assert torch.allclose(whole[..., :40, :40], cut[..., :40, :40], atol=1e-5)


def test_weighting_formula_output_is_w_times_input_plus_base():
    net = HDRUNet(nf=8).eval()
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        y = net(x)
        net.weighting.body[-1].weight.zero_()
        net.weighting.body[-1].bias.fill_(2.0)  # W = 2 everywhere
        y2 = net(x)
        net.weighting.body[-1].bias.fill_(0.0)  # W = 0: only G remains
        g = net(x)
    assert torch.allclose(y2, 2 * x + g, atol=1e-5)
    assert not torch.allclose(y, y2)


def test_gradient_condition_feeds_the_sobel_magnitude():
    net = HDRUNet(nf=8, condition="gradient").eval()
    x = torch.rand(1, 3, 16, 16)
    seen = {}

    def record(module, args, output):
        seen["in"] = args[0]

    net.condition.register_forward_hook(record)
    with torch.no_grad():
        net(x)
    import kornia

    assert torch.allclose(seen["in"], kornia.filters.sobel(x))


def test_explicit_condition_changes_the_output_only_when_modulated():
    x, c = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        full = HDRUNet(nf=8).eval()
        assert not torch.allclose(full(x), full(x, cond=c))
        plain = HDRUNet(nf=8, modulation="none").eval()
        assert torch.allclose(plain(x), plain(x, cond=c))
        assert plain.condition is None


def test_sft_is_the_papers_formula_with_its_gradients():
    # the layer fuses x * (scale + 1) + shift into one multiply-add (the + 1 in the bias)
    torch.manual_seed(0)
    sft = SFT(6, 4).double()
    for param in sft.parameters():  # away from zero biases, so a dropped + 1 would show
        torch.nn.init.normal_(param)
    x = torch.randn(2, 6, 5, 7, dtype=torch.float64, requires_grad=True)
    cond = torch.randn(2, 4, 5, 7, dtype=torch.float64, requires_grad=True)
    written = x * (sft.scale(cond) + 1) + sft.shift(cond)
    fused = sft(x, cond)
    torch.testing.assert_close(fused, written, rtol=1e-12, atol=1e-12)
    weights = torch.randn_like(written)
    inputs = (x, cond, *sft.parameters())
    expected = torch.autograd.grad((written * weights).sum(), inputs)
    got = torch.autograd.grad((fused * weights).sum(), inputs)
    for e, g in zip(expected, got, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-12)


def test_channel_modulation_is_spatially_uniform():
    mod = ChannelModulation(8, 4)
    x = torch.ones(1, 8, 5, 5)
    out = mod(x, torch.rand(1, 4, 5, 5))
    assert torch.allclose(out, out[..., :1, :1].expand_as(out))
    sft_out = SFT(8, 4)(x, torch.rand(1, 4, 5, 5))
    assert not torch.allclose(sft_out, sft_out[..., :1, :1].expand_as(sft_out))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"modulation": "film"}, "unknown modulation"),
        ({"condition": "depth"}, "unknown condition"),
        ({"nf": 7}, "nf must be"),
    ],
)
def test_bad_arguments_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        HDRUNet(**kwargs)


def test_wrong_input_shape_is_refused():
    with pytest.raises(ValueError, match=r"expected ldr of shape \(B, 3, H, W\)"):
        HDRUNet(nf=8)(torch.rand(3, 16, 16))


def test_the_training_summary_counts_the_networks_flops():
    """Lightning's model summary printed ``Total FLOPs: 0`` at every start; it counts them on
    the module's example input (256 x 256), as torch's FlopCounterMode does."""
    from lightning.pytorch.utilities.model_summary import ModelSummary
    from torch.utils.flop_counter import FlopCounterMode

    from hdrunet_pl.module import HDRUNetModule

    module = HDRUNetModule(HDRUNet(nf=8))
    assert tuple(module.example_input_array.shape) == (1, 3, 256, 256)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        module.net(module.example_input_array)
    assert ModelSummary(module).total_flops == counter.get_total_flops() > 0
    assert HDRUNetModule(HDRUNet(nf=8), compile=True).example_input_array is None


def test_a_side_not_a_multiple_of_four_is_replicate_padded():
    """Odd sizes: the output is the network's on the input replicate-padded to a multiple
    of 4 at the bottom and right, cropped back (zero padding would darken the border)."""
    import torch.nn.functional as F

    torch.manual_seed(0)
    net = HDRUNet(nf=8).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.05)
        ldr = torch.rand(1, 3, 30, 45)
        padded = F.pad(ldr, (0, 3, 0, 2), mode="replicate")
        assert torch.equal(net(ldr), net(padded)[..., :30, :45])
        zeros = F.pad(ldr, (0, 3, 0, 2))
        assert not torch.allclose(net(ldr), net(zeros)[..., :30, :45])


def test_residual_blocks_start_near_the_identity_as_the_public_code_initialises_them():
    """Each modulated residual block's convolutions: Kaiming normal (fan in) times 0.1, bias 0."""
    from hdrunet_pl.models.blocks import ModulatedResBlock

    torch.manual_seed(0)
    blocks = [m for m in HDRUNet(nf=64).modules() if isinstance(m, ModulatedResBlock)]
    assert blocks
    for block in blocks:
        for conv in (block.conv1, block.conv2):
            fan_in = conv.weight[0].numel()
            assert conv.weight.std().item() == pytest.approx(0.1 * (2 / fan_in) ** 0.5, rel=0.05)
            assert conv.weight.mean().abs().item() < 0.1 * (2 / fan_in) ** 0.5 * 0.05
            assert torch.equal(conv.bias, torch.zeros_like(conv.bias))
