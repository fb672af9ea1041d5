"""PU21-PSNR, PU21-SSIM and ColorVideoVDP: the package's values are cvvdp's own."""

from __future__ import annotations

import csv
import logging
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from hdrunet_pl.constants import GAMMA, NORM_PERCENTILE
from hdrunet_pl.errors import HDRUNetError
from hdrunet_pl.io import write_hdr_png
from hdrunet_pl.metrics import CVVDP, PU21PSNR, PU21SSIM, cvvdp_jod, pu21_psnr, pu21_ssim
from hdrunet_pl.perceptual import (
    DISPLAY,
    REFERENCE_CD_M2,
    PerceptualScorer,
    _KorniaGaussianBlur,
    import_pycvvdp,
    to_display,
)

from .support import CONF_DIR, run_tool

CLI_COLUMNS = {"pu21_psnr": "PU21-PSNR-Y", "pu21_ssim": "SSIM", "cvvdp": "cvvdp"}


def _reference(height: int = 48, width: int = 64, seed: int = 0) -> torch.Tensor:
    """A non-linear HDR scene (3, H, W): smooth gradient, texture and a bright highlight."""
    g = torch.Generator().manual_seed(seed)
    y = torch.linspace(0, 1, height)[:, None]
    x = torch.linspace(0, 1, width)[None, :]
    base = 0.15 + 0.6 * x * y + 0.1 * torch.rand(3, height, width, generator=g)
    base[:, height // 3 : height // 2, width // 2 : width // 2 + 8] = 2.5  # highlight
    return base * torch.tensor([1.0, 0.9, 0.8])[:, None, None]


def _cases(ref: torch.Tensor) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    noise = ref + 0.04 * torch.randn(ref.shape, generator=g)
    blur = torch.nn.functional.avg_pool2d(ref[None], 5, 1, 2, count_include_pad=False)[0]
    dark = ref * 0.6
    return {"noise": noise.clamp_min(0), "blur": blur, "dark": dark}


def _write_exr(path: Path, image: torch.Tensor) -> None:
    import pyexr

    pyexr.write(str(path), image.permute(1, 2, 0).contiguous().numpy())


def test_blur_given_to_cvvdp_is_the_gaussian_of_scipy():
    """cvvdp's torchvision GaussianBlur(kernel, sigma): a sampled, normalised Gaussian with
    reflect padding (scipy's 'mirror'), for the two blurs cvvdp builds and a 5-D input."""
    rng = np.random.default_rng(0)
    image = rng.random((2, 3, 1, 40, 37)).astype(np.float32)
    for kernel, sigma in ((13, 3.0), (33, 8.0), (5, 1.5)):
        ours = _KorniaGaussianBlur(kernel, sigma)(torch.from_numpy(image)).numpy()
        radius = kernel // 2
        expected = ndimage.gaussian_filter(
            image, sigma=(0, 0, 0, sigma, sigma), mode="mirror", truncate=radius / sigma
        )
        np.testing.assert_allclose(ours, expected, atol=2e-6)
        assert np.abs(ours - image).max() > 0.05  # it blurs


def test_importing_cvvdp_leaves_no_torchvision_behind():
    import importlib.util
    import sys

    assert import_pycvvdp().__name__ == "pycvvdp"
    assert "torchvision" not in sys.modules and "torchvision.transforms" not in sys.modules
    assert importlib.util.find_spec("torchvision") is None  # nothing importable left behind
    # cvvdp's blur is the one supplied here, not a leftover of a broken install
    assert sys.modules["pycvvdp.cvvdp_metric"].GaussianBlur is _KorniaGaussianBlur


def test_luminance_convention_scales_both_images_by_the_reference():
    ref = _reference()
    pred = ref * 2.0
    shown_pred, shown_ref = to_display(pred, ref)
    linear = ref.double() ** GAMMA
    p = np.percentile(linear.numpy(), NORM_PERCENTILE)
    np.testing.assert_allclose(
        shown_ref.double().numpy(), (linear / p * REFERENCE_CD_M2).numpy(), rtol=1e-5
    )
    assert np.percentile(shown_ref.numpy(), NORM_PERCENTILE) == pytest.approx(
        REFERENCE_CD_M2, rel=1e-5
    )
    # the prediction gets the reference's factor: twice the code value, 2**GAMMA the light
    np.testing.assert_allclose(shown_pred.numpy(), shown_ref.numpy() * 2.0**GAMMA, rtol=1e-5)
    # negative predictions show as black, not as negative light
    assert to_display(-ref, ref)[0].abs().max() == 0
    with pytest.raises(ValueError, match="all-black"):
        to_display(ref, torch.zeros_like(ref))
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        to_display(ref[:2], ref[:2])


def test_highlights_beyond_the_display_peak_do_not_count_in_pu21(tmp_path):
    """The display clips at its peak (1.5 times the reference's 99th percentile, as the
    README says): a prediction wrong only in such a highlight is perfect for PU21, not for
    PSNR-mu."""
    from hdrunet_pl.metrics import psnr_mu

    ref = _reference()
    linear = ref.double() ** GAMMA
    p = float(np.percentile(linear.numpy(), NORM_PERCENTILE))
    ref = ref.clone()
    ref[:, :4, :4] = (2.0 * p) ** (1 / GAMMA)  # a highlight at twice the percentile
    pred = ref.clone()
    pred[:, :4, :4] = (5.0 * p) ** (1 / GAMMA)  # 2.5 times too bright, above the peak too
    assert pu21_psnr(pred, ref) == float("inf") and pu21_ssim(pred, ref) == pytest.approx(1.0)
    assert float(psnr_mu(pred, ref)) < 100
    below = ref.clone()
    below[:, :4, :4] = (1.2 * p) ** (1 / GAMMA)  # within the display: the error counts
    assert pu21_psnr(below, ref) < 100


def test_scores_equal_cvvdp_command_line_on_hand_made_cases(tmp_path):
    """Each case is written as the cd/m2 EXR pair of the convention and scored by cvvdp's own
    command line (its file reader, display models and metric classes)."""
    ref = _reference()
    cases = _cases(ref)
    shown_ref = None
    for name, pred in cases.items():
        shown_pred, shown_ref = to_display(pred, ref)
        _write_exr(tmp_path / f"{name}.exr", shown_pred)
    _write_exr(tmp_path / "ref.exr", shown_ref)
    tests = [str(tmp_path / f"{name}.exr") for name in cases]
    result = run_tool(
        "python",
        ["-m", "hdrunet_pl.perceptual", "-t", *tests, "-r", str(tmp_path / "ref.exr"),
         "--display", DISPLAY, "--device", "cpu", "-q", "--result", str(tmp_path / "r.csv"),
         "-m", "pu-psnr-y", "ssim-metric", "cvvdp"],
        tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    with (tmp_path / "r.csv").open() as f:
        rows = [{k.strip(): v.strip() for k, v in row.items()} for row in csv.DictReader(f)]
    assert [Path(r["test"]).stem for r in rows] == list(cases)
    functional = {"pu21_psnr": pu21_psnr, "pu21_ssim": pu21_ssim, "cvvdp": cvvdp_jod}
    seen = {}
    for row, (name, pred) in zip(rows, cases.items(), strict=True):
        for metric, column in CLI_COLUMNS.items():
            ours = float(functional[metric](pred, ref))
            assert ours == pytest.approx(float(row[column]), rel=1e-5, abs=1e-5), (name, metric)
            seen[name, metric] = ours
    # the cases differ, and the scores say so in the expected direction
    assert seen["noise", "pu21_psnr"] < 60 and seen["blur", "pu21_ssim"] < 0.99
    assert all(seen[name, "cvvdp"] < 10 for name in ("noise", "blur"))
    identical = PerceptualScorer("cvvdp")
    assert float(identical(ref, ref)) == pytest.approx(10.0)


def test_metric_classes_average_the_functional_per_image():
    ref = torch.stack([_reference(seed=s) for s in range(2)])
    pred = torch.stack([_cases(r)["noise"] for r in ref])
    pred[1] = ref[1] * 0.5  # a second, different kind of error
    for cls, fn in ((PU21PSNR, pu21_psnr), (PU21SSIM, pu21_ssim), (CVVDP, cvvdp_jod)):
        metric = cls()
        metric.update(pred, ref)
        expected = np.mean([float(fn(p, r)) for p, r in zip(pred, ref, strict=True)])
        assert float(metric.compute()) == pytest.approx(expected, rel=1e-5)
        one = cls()
        one.update(pred[:1], ref[:1])
        assert float(one.compute()) != pytest.approx(expected, rel=1e-4)


def test_eval_scores_every_metric_and_its_identity(tmp_path):
    """``hdrunet-eval metrics=[...]`` on tiny NTIRE pairs: one column per metric and per
    identity baseline, equal to the functional scores of the files as read back."""
    from hdrunet_pl.evaluate import evaluate, read_nonlinear

    ref = _reference(40, 44)
    for i, pred in enumerate(_cases(ref).values()):
        write_hdr_png(tmp_path / "gt" / f"{i:04d}_gt.png", ref.permute(1, 2, 0).numpy())
        write_hdr_png(tmp_path / "pred" / f"{i:04d}.png", pred.permute(1, 2, 0).numpy())
    every = "metrics=[psnr_mu,psnr_l,pu21_psnr,pu21_ssim,cvvdp]"
    args = [f"pred_dir={tmp_path / 'pred'}", f"gt_dir={tmp_path / 'gt'}", every]
    result = run_tool("hdrunet-eval", [*args, f"output={tmp_path / 'eval'}"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = list(csv.DictReader((tmp_path / "eval" / "scores.csv").open()))
    assert list(rows[0]) == [
        "name", "psnr_mu", "psnr_l", "pu21_psnr", "pu21_ssim", "cvvdp",
        "identity_psnr_mu", "identity_psnr_l", "identity_pu21_psnr", "identity_pu21_ssim",
        "identity_cvvdp",
    ]  # fmt: skip
    functional = {"pu21_psnr": pu21_psnr, "pu21_ssim": pu21_ssim, "cvvdp": cvvdp_jod}
    for row in rows[:-1]:
        pred = read_nonlinear(tmp_path / "pred" / f"{row['name']}.png")
        gt = read_nonlinear(tmp_path / "gt" / f"{row['name']}_gt.png")
        for metric, fn in functional.items():
            assert float(row[metric]) == pytest.approx(float(fn(pred, gt)), abs=1e-4)
    mean = rows[-1]
    assert float(mean["cvvdp"]) == pytest.approx(
        np.mean([float(r["cvvdp"]) for r in rows[:-1]]), abs=1e-4
    )
    printed = re.search(r"CVVDP\s+([\d.]+) JOD", result.stdout)
    assert printed and float(printed.group(1)) == pytest.approx(float(mean["cvvdp"]), abs=1e-4)
    assert "standard_hdr_linear" in result.stdout
    # the default scores the cheap ones; an unknown name is refused in one line
    from hdrunet_pl.evaluate import folder_samples, metric_names

    assert metric_names() == ["psnr_mu", "psnr_l", "pu21_psnr", "pu21_ssim"]
    samples = folder_samples(str(tmp_path / "pred"), str(tmp_path / "gt"), None)
    with pytest.raises(HDRUNetError, match=r"^metrics: unknown metric 'vmaf'"):
        evaluate(samples, tmp_path / "bad", metrics=["psnr_mu", "vmaf"])
    assert not (tmp_path / "bad").exists()  # refused before anything is written


def test_validation_metrics_are_chosen_by_name():
    from hdrunet_pl.models import HDRUNet
    from hdrunet_pl.module import HDRUNetModule

    module = HDRUNetModule(HDRUNet(nf=8), val_metrics=["pu21_ssim", "psnr_mu", "cvvdp"])
    assert list(module.val_extra) == ["pu21_ssim", "cvvdp"]  # the NTIRE two are always there
    assert isinstance(module.val_extra["cvvdp"], CVVDP)
    with pytest.raises(ValueError, match=r"model\.val_metrics: unknown metric 'vmaf'"):
        HDRUNetModule(HDRUNet(nf=8), val_metrics=["vmaf"])


def test_bad_inputs_get_one_line(tmp_path):
    from hydra import compose, initialize_config_dir

    from hdrunet_pl.evaluate import run

    result = run_tool(
        "python",
        ["-m", "hdrunet_pl.perceptual", "-t", str(tmp_path / "none.exr"), "-r", "x.exr", "-q"],
        tmp_path,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "cvvdp: error: File" in result.stderr
    ref = _reference(24, 28)
    write_hdr_png(tmp_path / "gt" / "0000_gt.png", ref.permute(1, 2, 0).numpy())
    write_hdr_png(tmp_path / "pred" / "0000.png", (ref * 0.9).permute(1, 2, 0).numpy())
    overrides = [f"pred_dir={tmp_path / 'pred'}", f"gt_dir={tmp_path / 'gt'}"]
    overrides += ["metrics=pu21_psnr", f"output={tmp_path / 'eval'}"]  # one name, not a list
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        scores = run(compose(config_name="eval", overrides=overrides))
    assert list(scores[0].values) == ["psnr_mu", "psnr_l", "pu21_psnr"]


def test_images_too_small_for_a_metric_are_left_out_of_its_mean(tmp_path):
    """SSIM's 11-pixel window: cvvdp skips its smoothing below it and reports a near-1 SSIM
    whatever the images; ColorVideoVDP fails on one pixel. Such an image is not scored by
    that metric (NaN, an empty cell, left out of the mean); the others and PSNR still are."""
    import csv

    from hdrunet_pl.evaluate import Sample, Samples, evaluate, make_scorers, means, score

    gt = torch.rand(3, 7, 7) + 0.1
    for name, size in (("pu21_ssim", 7), ("cvvdp", 1)):
        image = gt[:, :size, :size]
        with pytest.raises(ValueError, match=rf"^{size}x{size} pixels is too small for {name}"):
            PerceptualScorer(name)(image * 0.5, image)
        scored = score(Sample("0001", image * 0.5, image, image), make_scorers([name]))
        assert np.isnan(scored.values[name]) and np.isnan(scored.identity[name])
        assert np.isfinite(scored.psnr_mu)
    pixel = gt[:, :1, :1]
    scored = score(Sample("0001", pixel * 0.5, pixel, None), make_scorers(["pu21_psnr"]))
    assert np.isfinite(scored.values["pu21_psnr"])
    large = torch.rand(3, 16, 16) + 0.1
    samples = [Sample("small", gt * 0.5, gt, None), Sample("large", large * 0.8, large, None)]
    scores = evaluate(Samples(2, iter(samples)), tmp_path / "eval", metrics=["pu21_ssim"])
    ssim_large = scores[1].values["pu21_ssim"]
    assert np.isfinite(ssim_large) and means(scores)["pu21_ssim"] == ssim_large
    assert means(scores)["psnr_mu"] == pytest.approx((scores[0].psnr_mu + scores[1].psnr_mu) / 2)
    rows = {r["name"]: r for r in csv.DictReader((tmp_path / "eval" / "scores.csv").open())}
    assert rows["small"]["pu21_ssim"] == "" and float(rows["mean"]["pu21_ssim"]) == pytest.approx(
        ssim_large, abs=1e-4
    )


def test_cvvdp_units_guess_is_not_printed_for_dark_images(caplog):
    """Images reach cvvdp in cd/m2 (to_display); a dark one's mean is rightly below 1, so
    cvvdp's 'may not be scaled in absolute photometric units' guess is left out."""
    ref = _reference()
    with caplog.at_level(logging.DEBUG):
        jod = float(PerceptualScorer("cvvdp")(ref * 0.01, ref))
    assert 0 < jod < 10
    assert "photometric units" not in caplog.text
    assert not logging.getLogger().filters  # the filter lives only for the call
