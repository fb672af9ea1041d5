"""hdrunet_pl.viz: gradient maps, tonemaps, masks, internal maps through hooks, plots."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest
import torch

from hdrunet_pl import HDRUNet
from hdrunet_pl.data import SyntheticHDRDataset
from hdrunet_pl.viz import (
    capture_internals,
    comparison_strip,
    gradient_energy,
    gradient_magnitude,
    luminance,
    over_exposed,
    plot_histograms,
    plot_maps,
    reinhard,
    sft_layers,
    under_exposed,
)


def test_gradient_magnitude_shapes_and_a_step_edge():
    image = torch.zeros(3, 16, 20)
    image[:, :, 10:] = 1.0  # vertical edge between columns 9 and 10
    per_channel = gradient_magnitude(image)
    luma = gradient_magnitude(image, per_channel=False)
    assert per_channel.shape == (3, 16, 20) and luma.shape == (1, 16, 20)
    assert gradient_magnitude(image[None]).shape == (1, 3, 16, 20)
    assert per_channel[:, 8, 9:11].min() > 0 and per_channel[:, :, :8].abs().max() == 0
    torch.testing.assert_close(luma[0], per_channel[0])  # grey edge: luminance = any channel
    with pytest.raises(ValueError):
        gradient_magnitude(torch.zeros(16, 20))


def test_tonemaps_stay_in_display_range():
    hdr = torch.rand(3, 8, 9) * 10
    shown = reinhard(hdr)
    assert shown.shape == hdr.shape and shown.min() >= 0 and shown.max() <= 1
    assert reinhard(hdr * 0).max() == 0
    torch.testing.assert_close(luminance(torch.ones(3, 2, 2)), torch.ones(1, 2, 2))


def test_exposure_masks():
    ldr = torch.tensor([[[1.0, 0.5, 0.0]], [[0.2, 0.5, 0.01]], [[0.2, 0.5, 0.02]]])  # (3, 1, 3)
    assert over_exposed(ldr).tolist() == [[True, False, False]]
    assert under_exposed(ldr).tolist() == [[False, False, True]]


def test_clipping_removes_gradient_energy_on_a_synthetic_pair():
    item = SyntheticHDRDataset(4, 128, 192, seed=1)[0]
    clipped = over_exposed(item["ldr"])
    assert 0.01 < clipped.float().mean() < 0.5
    ldr_energy = gradient_energy(gradient_magnitude(item["ldr"], per_channel=False), clipped)
    hdr_energy = gradient_energy(gradient_magnitude(item["hdr"], per_channel=False), clipped)
    assert ldr_energy < 0.5 * hdr_energy, (ldr_energy, hdr_energy)
    with pytest.raises(ValueError, match="empty mask"):
        gradient_energy(torch.ones(1, 4, 4), torch.zeros(4, 4, dtype=torch.bool))


def test_capture_internals_returns_every_map_and_removes_its_hooks():
    model = HDRUNet(nf=8).eval()
    ldr = torch.rand(3, 20, 28)
    maps = capture_internals(model, ldr, sft_layer="trunk_quarter.0.mod1")
    assert maps["weight"].shape == (3, 20, 28)
    assert maps["cond_full"].shape == (4, 20, 28)
    assert maps["cond_half"].shape == (4, 10, 14) and maps["cond_quarter"].shape == (4, 5, 7)
    assert maps["sft_scale"].shape == maps["sft_shift"].shape == (8, 5, 7)
    # the maps the layer applied: from the condition it was given (cond_quarter here)
    layer = model.trunk_quarter[0].mod1
    with torch.no_grad():
        scale = layer.scale(model.condition(ldr[None])[2])[0]
    torch.testing.assert_close(maps["sft_scale"], scale)
    channel = HDRUNet(nf=8, modulation="channel").eval()
    uniform = capture_internals(channel, ldr, sft_layer="mod_first")
    assert uniform["sft_scale"].shape == uniform["sft_shift"].shape == (8, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(maps["output"], model(ldr[None])[0])
    assert all(not m._forward_hooks for m in model.modules())
    assert sft_layers(model)[0] == "mod_first" and len(sft_layers(model)) == 2 + 2 * 12
    with pytest.raises(ValueError, match="not a modulation layer"):
        capture_internals(model, ldr, sft_layer="conv_first")
    assert all(not m._forward_hooks for m in model.modules())


def test_capture_internals_on_the_base_network_has_no_condition_maps():
    maps = capture_internals(
        HDRUNet(nf=8, use_condition=False, use_weighting=False), torch.rand(3, 8, 8)
    )
    assert set(maps) == {"output"}


def test_plots_have_labelled_panels_and_colour_bars():
    fig = plot_maps(
        {"rgb": torch.rand(3, 8, 8), "map": torch.randn(8, 8), "features": torch.randn(4, 8, 8)},
        ncols=2,
        outline=torch.rand(8, 8) > 0.5,
    )
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["rgb", "map", "features"]
    assert len(fig.axes) == 4 + 2  # 2x2 panels + a colour bar for each non-RGB map
    hist = plot_histograms({"a": torch.rand(100), "b": torch.rand(50)})
    assert [t.get_text() for t in hist.axes[0].get_legend().get_texts()] == ["a", "b"]
    plt.close(fig)
    plt.close(hist)


def test_comparison_strip_layout():
    pred, gt, ldr = torch.rand(3, 10, 12), torch.rand(3, 10, 12) + 0.1, torch.rand(3, 10, 12)
    strip = comparison_strip(pred, gt, ldr, title="x")
    assert strip.shape == (22 + 10, 4 * 12, 3) and strip.dtype.name == "uint8"
    assert comparison_strip(pred, gt).shape == (10, 3 * 12, 3)


def test_comparison_strip_of_a_gt_near_float32s_limit_has_no_invalid_pixels():
    """A GT near float32's limit (an align ratio of 1e-30) tonemaps to NaN: its panel was
    cast to uint8 from NaN (a RuntimeWarning and arbitrary pixels); now black, no warning."""
    import warnings

    gt = torch.full((3, 4, 6), 3e38)
    gt[:, :, :3] = 1.0
    pred = torch.ones(3, 4, 6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's "invalid value encountered in cast"
        strip = comparison_strip(pred, gt)
    assert strip.shape == (4, 18, 3) and strip.dtype.name == "uint8"
