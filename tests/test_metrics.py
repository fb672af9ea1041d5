import math

import numpy as np
import pytest
import torch

from hdrunet_pl.io import read_hdr_png, write_hdr_png
from hdrunet_pl.metrics import PSNRL, PSNRMu, percentile, psnr_l, psnr_mu

from .organisers import (
    GAMMA,
    MU,
    ntire_psnr_l_numpy,
    ntire_psnr_mu_numpy,
    organisers_read_png,
    organisers_scores,
)


def _case(kind: str, g: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(reference, result) non-linear HDR images of one hand-made kind."""
    y, x = np.mgrid[0:48, 0:64] / 64.0
    base = np.stack([x, y, 0.5 * (x + y)], axis=-1).astype(np.float32)
    if kind == "bright highlight":
        ref = 0.3 + 0.4 * base
        ref[10:20, 30:45] = 4.0
        res = ref * (1 + 0.05 * g.standard_normal(ref.shape)).astype(np.float32)
        res[10:20, 30:45] = 2.5
    elif kind == "dark scene":
        ref = 0.02 + 0.08 * base
        res = ref + 0.01 * g.standard_normal(ref.shape).astype(np.float32)
    else:  # "noisy mid-tones"
        ref = (0.1 + 1.5 * g.random(base.shape)).astype(np.float32)
        res = ref + 0.08 * g.standard_normal(ref.shape).astype(np.float32)
    return ref.astype(np.float32), np.clip(res, 0, None).astype(np.float32)


@pytest.mark.parametrize("kind", ["bright highlight", "dark scene", "noisy mid-tones"])
def test_scores_equal_the_organisers_on_16_bit_png_pairs(tmp_path, kind):
    ref, res = _case(kind, np.random.default_rng(7))
    write_hdr_png(tmp_path / "0001_gt.png", ref)
    write_hdr_png(tmp_path / "0001.png", res)
    ref_read = organisers_read_png(tmp_path / "0001_gt.png")
    res_read = organisers_read_png(tmp_path / "0001.png")
    want_mu, want_l = organisers_scores(res_read, ref_read)

    ours_ref = torch.from_numpy(read_hdr_png(tmp_path / "0001_gt.png"))
    ours_res = torch.from_numpy(read_hdr_png(tmp_path / "0001.png"))
    assert psnr_mu(ours_res, ours_ref).item() == pytest.approx(want_mu, abs=1e-4)
    assert psnr_l(ours_res, ours_ref).item() == pytest.approx(want_l, abs=1e-4)
    # PSNR-L takes no gamma: a linear-domain PSNR differs by far more than the tolerance
    linear = -10 * np.log10(
        np.mean((ref_read**GAMMA - res_read**GAMMA) ** 2) / np.max(ref_read**GAMMA) ** 2
    )
    assert abs(linear - want_l) > 0.05


def test_golden_values_on_a_fixed_array():
    """Values of the organisers' formulas on a fixed 2x2 image, computed by hand."""
    ref = torch.tensor([[[0.5, 1.0], [2.0, 0.25]]], dtype=torch.float64).expand(3, 2, 2)
    res = torch.tensor([[[0.5, 0.9], [2.2, 0.25]]], dtype=torch.float64).expand(3, 2, 2)
    # PSNR-L: errors (0.1, 0.2) over max 2 -> mse = (0.05^2 + 0.1^2) / 4
    assert psnr_l(res, ref).item() == pytest.approx(
        -10 * math.log10((0.05**2 + 0.1**2) / 4), abs=1e-6
    )
    # 99th percentile of the 12 linear values (4 per channel), numpy's linear interpolation:
    # position 0.99 * 11 = 10.89 lies between the two copies of the largest value 2 ** GAMMA
    norm = 2.0**GAMMA

    def t(v):
        return math.log1p(MU * math.tanh(v**GAMMA / norm)) / math.log1p(MU)

    mse = ((t(1.0) - t(0.9)) ** 2 + (t(2.0) - t(2.2)) ** 2) / 4
    assert psnr_mu(res, ref).item() == pytest.approx(-10 * math.log10(mse), abs=1e-6)


def test_percentile_matches_numpy_linear_interpolation():
    x = torch.rand(3, 17, 23) ** 3
    for q in (0, 1, 50, 99, 99.9, 100):
        assert percentile(x, q).item() == pytest.approx(np.percentile(x.numpy(), q), rel=1e-6)


def test_psnr_l_on_a_hand_computed_case():
    # reference 2 and 0 (non-linear); result off by 0.2 at one pixel: 0.1 after normalising
    ref = torch.tensor([[[2.0, 0.0]]])
    res = torch.tensor([[[2.0, 0.2]]])
    expected = -10 * math.log10(0.1**2 / 2)  # mse = 0.01 / 2 = 0.005 -> 23.0103 dB
    assert psnr_l(res, ref).item() == pytest.approx(expected, abs=1e-4)


def test_psnr_mu_on_a_hand_computed_case():
    # constant linear reference 2.0 (99th percentile 2.0) and constant result 1.0
    ref = torch.full((3, 4, 4), 2.0 ** (1 / GAMMA))
    res = torch.full((3, 4, 4), 1.0)
    t_ref = math.log1p(MU * math.tanh(1.0)) / math.log1p(MU)
    t_res = math.log1p(MU * math.tanh(0.5)) / math.log1p(MU)
    expected = -10 * math.log10((t_ref - t_res) ** 2)
    assert psnr_mu(res, ref).item() == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("layout", ["chw", "hwc"])
def test_metrics_equal_the_ntire_definitions(layout):
    g = torch.Generator().manual_seed(3)
    ref = torch.rand(3, 40, 56, generator=g) * 3
    res = (ref + 0.05 * torch.randn(ref.shape, generator=g)).clamp_min(0)
    if layout == "hwc":
        ref, res = ref.permute(1, 2, 0), res.permute(1, 2, 0)
    assert psnr_mu(res, ref).item() == pytest.approx(
        ntire_psnr_mu_numpy(res.numpy(), ref.numpy()), abs=1e-4
    )
    assert psnr_l(res, ref).item() == pytest.approx(
        ntire_psnr_l_numpy(res.numpy(), ref.numpy()), abs=1e-4
    )


def test_negative_predictions_are_clamped_like_a_png_submission():
    ref = torch.rand(3, 8, 8) + 0.1
    res = ref.clone()
    res[0, 0, 0] = -0.5
    clamped = res.clamp_min(0)
    assert psnr_mu(res, ref).item() == pytest.approx(psnr_mu(clamped, ref).item())
    assert psnr_l(res, ref).item() == pytest.approx(psnr_l(clamped, ref).item())


def test_metric_classes_average_per_image_not_per_pixel():
    g = torch.Generator().manual_seed(0)
    ref = torch.rand(3, 3, 16, 16, generator=g) * 2
    res = ref + torch.tensor([0.01, 0.1, 0.3]).view(3, 1, 1, 1) * torch.rand(ref.shape, generator=g)
    metric_mu, metric_l = PSNRMu(), PSNRL()
    metric_mu.update(res[:2], ref[:2])  # two batches of unequal size
    metric_mu.update(res[2:], ref[2:])
    metric_l.update(res, ref)
    per_image_mu = [psnr_mu(res[i], ref[i]).item() for i in range(3)]
    per_image_l = [psnr_l(res[i], ref[i]).item() for i in range(3)]
    assert metric_mu.compute().item() == pytest.approx(np.mean(per_image_mu), abs=1e-4)
    assert metric_l.compute().item() == pytest.approx(np.mean(per_image_l), abs=1e-4)
    pooled = psnr_mu(
        res.permute(1, 0, 2, 3).reshape(3, 48, 16), ref.permute(1, 0, 2, 3).reshape(3, 48, 16)
    )
    assert abs(pooled.item() - metric_mu.compute().item()) > 0.1


def test_metric_inputs_are_checked():
    with pytest.raises(ValueError, match="one image"):
        psnr_mu(torch.rand(1, 3, 4, 4), torch.rand(1, 3, 4, 4))
    with pytest.raises(ValueError, match="pred shape"):
        psnr_l(torch.rand(3, 4, 4), torch.rand(3, 4, 5))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        PSNRMu().update(torch.rand(3, 4, 4), torch.rand(3, 4, 4))


def test_every_score_has_its_class_and_scoring_needs_no_torchmetrics():
    """hdrunet-eval scores with the functions: torchmetrics (about 2 s of imports, scipy and
    matplotlib included) is loaded only where the classes are used (training)."""
    import subprocess
    import sys

    from hdrunet_pl.metrics import METRIC_NAMES, METRICS

    assert tuple(METRICS) == METRIC_NAMES
    loaded = (
        "import sys, hdrunet_pl.evaluate; "
        "print(sorted({'torchmetrics', 'scipy'} & set(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", loaded], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_display_tonemap_scales_by_the_reference_not_by_the_image():
    """Side-by-sides show every image on the GT's scale: an image twice as bright as its
    reference shows brighter (by the PSNR-mu tonemapper with the reference's percentile)."""
    from hdrunet_pl.constants import GAMMA, MU
    from hdrunet_pl.tonemap import display_mu_law

    generator = torch.Generator().manual_seed(0)
    reference = torch.rand(3, 16, 16, generator=generator, dtype=torch.float64)
    brighter = reference * 2 ** (1 / GAMMA)  # twice the linear radiance
    linear, norm = brighter**GAMMA, torch.quantile(reference.flatten() ** GAMMA, 0.99)
    expected = torch.log1p(MU * torch.tanh(linear / norm)) / math.log1p(MU)
    torch.testing.assert_close(display_mu_law(brighter, reference), expected)
    assert (display_mu_law(brighter, reference) > display_mu_law(brighter) + 1e-3).any()


def test_a_float_tie_with_the_identity_is_not_counted_below_it():
    """The LDR scored as its own result (written as EXR: float rounding) ties with the
    identity; only a score lower by more than the printed resolution counts as below."""
    from hdrunet_pl.evaluate import ImageScore, below_identity

    def score(mu, linear, mu_identity, linear_identity):
        identity = {"psnr_mu": mu_identity, "psnr_l": linear_identity}
        return ImageScore("x", {"psnr_mu": mu, "psnr_l": linear}, identity)

    tie = score(32.356799999, 26.56359999, 32.3568, 26.5636)
    below = score(32.3, 26.5636, 32.3568, 26.5636)
    assert below_identity([tie]) == (0, 0)
    assert below_identity([tie, below, ImageScore("y", {"psnr_mu": 1.0, "psnr_l": 1.0})]) == (1, 0)
