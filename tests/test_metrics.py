import math

import numpy as np
import pytest
import torch

from hdrunet_pl.constants import GAMMA, MU
from hdrunet_pl.metrics import PSNRL, PSNRMu, percentile, psnr_l, psnr_mu


def ntire_psnr_mu_numpy(res: np.ndarray, ref: np.ndarray) -> float:
    """The challenge's definition, step by step in numpy (float64)."""
    ref_lin, res_lin = ref.astype(np.float64) ** GAMMA, res.astype(np.float64) ** GAMMA
    norm = np.percentile(ref_lin, 99)

    def tonemap(x):
        return np.log(1 + MU * np.tanh(x / norm)) / np.log(1 + MU)

    return float(-10 * np.log10(np.mean((tonemap(ref_lin) - tonemap(res_lin)) ** 2)))


def ntire_psnr_l_numpy(res: np.ndarray, ref: np.ndarray) -> float:
    ref_lin, res_lin = ref.astype(np.float64) ** GAMMA, res.astype(np.float64) ** GAMMA
    peak = ref_lin.max()
    return float(-10 * np.log10(np.mean((ref_lin / peak - res_lin / peak) ** 2)))


def test_percentile_matches_numpy_linear_interpolation():
    x = torch.rand(3, 17, 23) ** 3
    for q in (0, 1, 50, 99, 99.9, 100):
        assert percentile(x, q).item() == pytest.approx(np.percentile(x.numpy(), q), rel=1e-6)


def test_psnr_l_on_a_hand_computed_case():
    # reference: linear 1 and 0 (non-linear 1 and 0); result off by 0.1 (linear) at one pixel
    ref = torch.tensor([[[1.0, 0.0]]])
    res = torch.tensor([[[1.0, 0.1 ** (1 / GAMMA)]]])
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
