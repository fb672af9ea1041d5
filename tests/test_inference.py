"""Inference: any size, tiles equal to whole images, formats round-trip, eval and export."""

import csv
import logging
import os
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from hdrunet_pl import HDRUNet, load_model
from hdrunet_pl.data import SyntheticHDRDataset
from hdrunet_pl.errors import HDRUNetError
from hdrunet_pl.inference import (
    DEFAULT_OVERLAP,
    RECEPTIVE_RADIUS,
    Predictor,
    plan_tiles,
    tile_starts,
    tiled_forward,
)
from hdrunet_pl.io import (
    read_exr,
    read_hdr_png,
    read_radiance,
    write_hdr_png,
    write_ldr,
)
from hdrunet_pl.predict import list_inputs, predict_files

from .organisers import ntire_psnr_l_numpy, ntire_psnr_mu_numpy, organisers_val_scores
from .support import CONF_DIR, noise, ok, run_tool


def random_net(nf=16, std=0.05, seed=0, **kwargs):
    torch.manual_seed(seed)
    net = HDRUNet(nf=nf, **kwargs)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, std)
    return net


def test_odd_sizes_come_back_at_their_size():
    predictor = Predictor(random_net(8), precision="32")
    out = predictor(torch.rand(3, 97, 131))
    assert out.shape == (3, 97, 131) and out.dtype == torch.float32
    assert predictor(torch.rand(2, 3, 5, 7)).shape == (2, 3, 5, 7)


def test_tile_plan_covers_every_pixel_with_unit_weight():
    assert tile_starts(768, 320, 224) == [0, 96, 192, 288, 384, 448]
    assert all(s % 4 == 0 for s in tile_starts(1001, 300, 100))
    total = torch.zeros(97, 131)
    for t in plan_tiles(97, 131, 40, 20, 8):
        total[t.top : t.bottom, t.left : t.right] += t.weight
    torch.testing.assert_close(total, torch.ones(97, 131))


def test_receptive_field_is_within_the_radius_the_tiling_assumes():
    """One changed input pixel changes the output no farther than ``RECEPTIVE_RADIUS``, and
    the radius is not padded far beyond what the network reaches (float64: exact zeros)."""
    net = random_net(8).double()
    size = 2 * RECEPTIVE_RADIUS + 32
    ldr = torch.rand(1, 3, size, size, dtype=torch.float64)
    pokes = [(size // 2 + dy, size // 2 + dx) for dy, dx in [(0, 0), (1, 1), (2, 3), (3, 2)]]
    batch = ldr.repeat(len(pokes) + 1, 1, 1, 1)  # every phase of the 4x down-sampling
    for i, (y, x) in enumerate(pokes, start=1):
        batch[i, :, y, x] = 1 - batch[i, :, y, x]
    with torch.no_grad():
        out = net(batch)
    reach = 0
    for i, (y, x) in enumerate(pokes, start=1):
        rows, cols = ((out[i] - out[0]).abs().amax(0) > 0).nonzero(as_tuple=True)
        reach = max(reach, int((rows - y).abs().max()), int((cols - x).abs().max()))
    assert RECEPTIVE_RADIUS - 8 <= reach <= RECEPTIVE_RADIUS, reach


def test_tiles_weigh_only_pixels_whose_receptive_field_lies_inside_them():
    height, width, tile = 700, 1000, 320
    for t in plan_tiles(height, width, tile, DEFAULT_OVERLAP):
        rows, cols = t.weight.nonzero(as_tuple=True)
        if t.top > 0:  # an inner edge: the pixels beyond it are another tile's
            assert rows.min() >= RECEPTIVE_RADIUS
        if t.bottom < height:
            assert t.bottom - t.top - 1 - rows.max() >= RECEPTIVE_RADIUS
        if t.left > 0:
            assert cols.min() >= RECEPTIVE_RADIUS
        if t.right < width:
            assert t.right - t.left - 1 - cols.max() >= RECEPTIVE_RADIUS


def _tiled_vs_whole(overlap: int) -> float:
    """Largest difference, relative to the output's range, in float64, between whole-image
    inference and two tiles sharing exactly ``overlap`` columns. The random network's
    weights (std 0.12 at nf 8) keep far inputs' influence well above float64 rounding."""
    tile = overlap + 8
    net = random_net(8, std=0.12).double()
    ldr = torch.rand(1, 3, tile, 2 * tile - overlap, dtype=torch.float64)
    assert len(plan_tiles(*ldr.shape[-2:], tile, overlap)) == 2
    with torch.no_grad():
        whole = net(ldr)
        tiled = tiled_forward(net, ldr, tile, overlap)
    assert tiled.dtype == torch.float64
    return ((tiled - whole).abs().max() / whole.abs().max()).item()


def test_tiled_inference_equals_the_whole_image_in_float64():
    assert _tiled_vs_whole(DEFAULT_OVERLAP) < 1e-13


@pytest.mark.parametrize("overlap", [48, 2 * RECEPTIVE_RADIUS - 2])
def test_an_overlap_below_the_receptive_field_shows_seams(overlap):
    """The exactness test above can fail: with less overlap than the default, stitched tiles
    differ from the whole image far above rounding."""
    assert _tiled_vs_whole(overlap) > 1e-11


def test_predictor_tiles_match_the_whole_image_in_float32():
    net = random_net(16)
    ldr = torch.rand(3, 180, 2 * (DEFAULT_OVERLAP + 8) - DEFAULT_OVERLAP)
    whole = Predictor(net, precision="32", tile=0)(ldr)
    tiled = Predictor(net, precision="32", tile=DEFAULT_OVERLAP + 8)(ldr)  # two tiles
    error = (tiled - whole).abs().max().item()
    assert 0 < error < 1e-5, error  # rounding only (and the tiled path was taken)


@pytest.mark.parametrize("condition", ["image", "gradient"])
def test_channel_modulation_tiles_share_the_whole_images_means(condition):
    """Channel modulation scales by the condition maps' means over the whole image: each
    tile gets those of the whole image (computed in bands of rows), not its own."""
    net = random_net(8, std=0.3, modulation="channel", condition=condition)
    ldr = torch.rand(2, 3, 150, 2 * (DEFAULT_OVERLAP + 8) - DEFAULT_OVERLAP)
    whole = Predictor(net, precision="32", tile=0)(ldr)
    for tile_batch in (1, 2):
        predictor = Predictor(net, precision="32", tile=DEFAULT_OVERLAP + 8, tile_batch=tile_batch)
        torch.testing.assert_close(predictor(ldr), whole, atol=1e-5, rtol=1e-5)
    with torch.no_grad():  # tiles that took their own means would not stitch
        naive = tiled_forward(net, ldr, DEFAULT_OVERLAP + 8)
    assert (naive - whole).abs().max() > 1e-3


def test_channel_modulation_means_in_bands_equal_the_whole_images(monkeypatch):
    net = random_net(8, std=0.3, modulation="channel").double().eval()
    ldr = torch.rand(2, 3, 97, 61, dtype=torch.float64)
    with torch.no_grad():
        whole = net.global_features(ldr)
        assert whole.shape == (2, 3 * 4, 1, 1)
        torch.testing.assert_close(net(ldr, global_features=whole), net(ldr))
        for max_pixels in (1, 61 * 8, 61 * 13):
            banded = net.global_features(ldr, max_pixels=max_pixels)
            torch.testing.assert_close(banded, whole, rtol=1e-12, atol=1e-12)
        monkeypatch.setattr("hdrunet_pl.models.hdrunet.CONDITION_MARGIN", 0)
        assert (net.global_features(ldr, max_pixels=61 * 8) - whole).abs().max() > 1e-6
    assert random_net(8).global_features(ldr.float()) is None  # SFT: local only


def test_automatic_tiling_follows_the_memory_budget(caplog):
    predictor = Predictor(random_net(8), precision="32", memory_gb=1)
    assert predictor.auto_tile(64, 64) == 0
    side = predictor.auto_tile(2000, 3000)
    assert 2 * DEFAULT_OVERLAP < side < 2000 and side % 4 == 0
    assert predictor.auto_tile(1500, 2200) > side  # a smaller image leaves more for tiles
    # a budget too small for useful tiles: tiles of two overlaps, and a line that says so
    with caplog.at_level(logging.WARNING, logger="hdrunet_pl.inference"):
        assert (
            Predictor(random_net(8), precision="32", memory_gb=0.01).auto_tile(2000, 3000)
            == 2 * DEFAULT_OVERLAP
        )
    assert "a 2000x3000 image needs more than memory_gb=0.01 in 448-pixel tiles" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="hdrunet_pl.inference"):  # batched tiles too
        Predictor(random_net(8), precision="32", memory_gb=0.01, tile_batch=2).auto_tile(900, 900)
    assert "a 900x900 image needs more than memory_gb=0.01" in caplog.text


MEASURE_PEAK = """
import json, sys, torch
from hdrunet_pl import HDRUNet
from hdrunet_pl.bench import PeakMemory
from hdrunet_pl.inference import Predictor
nf, side = int(sys.argv[1]), int(sys.argv[2])
predictor = Predictor(HDRUNet(nf=nf).eval(), device="cpu", precision="32", tile=0)
ldr = torch.rand(3, side, side)
with PeakMemory(torch.device("cpu")) as peak:
    predictor(ldr)
print(json.dumps({"peak": peak.peak_bytes, "model": predictor.bytes_per_pixel() * side**2}))
"""


def test_the_memory_model_covers_a_small_network_s_measured_peak():
    """The tiling budget's bytes per pixel are not below what a whole image takes (fp32,
    first call in a fresh process): at nf 8 most of the peak does not scale with nf, which
    a model of bytes per feature channel alone underestimated by a fifth."""
    import json
    import subprocess
    import sys

    side = 1024
    result = subprocess.run(
        [sys.executable, "-c", MEASURE_PEAK, "8", str(side)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    assert measured["peak"] > 0.5 * measured["model"]  # measured, and not far below
    assert measured["peak"] <= measured["model"], measured


@pytest.mark.parametrize("fmt", ["png", "exr", "hdr"])
def test_every_output_format_round_trips_to_the_prediction(tmp_path, fmt):
    predictor = Predictor(random_net(8), precision="32")
    item = SyntheticHDRDataset(1, 37, 53, seed=2)[0]
    write_ldr(tmp_path / "in" / "0007_medium.png", item["ldr"].permute(1, 2, 0).numpy())
    report = predict_files(predictor, list_inputs(tmp_path / "in"), tmp_path / "out", fmt, True)
    assert report.written == [tmp_path / "out" / f"0007.{fmt}"]
    assert (tmp_path / "out" / "0007_preview.png").is_file()
    ldr = torch.from_numpy(np.round(item["ldr"].numpy() * 255) / 255).float()
    expected = predictor(ldr).clamp_min(0).permute(1, 2, 0).numpy()
    if fmt == "png":
        got = read_hdr_png(tmp_path / "out" / "0007.png")
        step = expected.max() / 65535
        assert np.abs(got - expected).max() <= step / 2 + 1e-6
    elif fmt == "exr":
        got = read_exr(tmp_path / "out" / "0007.exr") ** (1 / 2.24)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    else:
        linear = expected**2.24
        got = read_radiance(tmp_path / "out" / "0007.hdr")
        assert (np.abs(got - linear) <= linear.max(axis=-1, keepdims=True) / 100 + 1e-6).all()


def test_predict_cli_skips_a_corrupt_input_and_writes_the_rest(tmp_path, tiny_checkpoint):
    for i, item in enumerate(SyntheticHDRDataset(2, 33, 45, seed=4)):
        write_ldr(tmp_path / "in" / f"{i:04d}_medium.png", item["ldr"].permute(1, 2, 0).numpy())
    (tmp_path / "in" / "0005_medium.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    args = [f"ckpt={tiny_checkpoint}", f"input={tmp_path / 'in'}", f"output={tmp_path / 'out'}"]
    result = run_tool("hdrunet-predict", args, tmp_path)
    assert result.returncode == 1
    assert "0005_medium.png: unreadable, truncated or not an image" in result.stderr
    assert "2 written, 0 skipped (exist), 1 failed" in result.stdout
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if p.name[0] != ".") == [
        "0000.png",
        "0000_alignratio.npy",
        "0001.png",
        "0001_alignratio.npy",
    ]
    again = run_tool("hdrunet-predict", args, tmp_path)
    assert "0 written, 2 skipped (exist), 1 failed" in again.stdout
    assert "image/s" in again.stderr  # a progress bar for the one image it tried
    (tmp_path / "in" / "0005_medium.png").unlink()
    nothing_to_do = ok(run_tool("hdrunet-predict", args, tmp_path))
    assert "0 written, 2 skipped (exist), 0 failed" in nothing_to_do.stdout
    assert "image/s" not in nothing_to_do.stderr  # no empty bar


def test_eval_cli_reproduces_hand_computed_scores(tmp_path):
    rng = np.random.default_rng(0)
    expected = {}
    for i in range(3):
        name = f"{i:04d}"
        gt = (rng.random((20, 24, 3)) ** 2 * 4).astype(np.float32)
        pred = np.clip(gt + rng.normal(0, 0.05 * (i + 1), gt.shape), 0, None).astype(np.float32)
        write_hdr_png(tmp_path / "gt" / f"{name}_gt.png", gt)
        write_hdr_png(tmp_path / "pred" / f"{name}.png", pred)
        gt_q, pred_q = (
            read_hdr_png(tmp_path / "gt" / f"{name}_gt.png"),
            read_hdr_png(tmp_path / "pred" / f"{name}.png"),
        )
        expected[name] = (ntire_psnr_mu_numpy(pred_q, gt_q), ntire_psnr_l_numpy(pred_q, gt_q))
    write_hdr_png(tmp_path / "pred" / "0009.png", gt)  # a result without ground truth
    args = [
        f"pred_dir={tmp_path / 'pred'}",
        f"gt_dir={tmp_path / 'gt'}",
        f"output={tmp_path / 'eval'}",
    ]
    result = run_tool("hdrunet-eval", args, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "1 result(s) without ground truth in" in result.stderr
    assert "not scored: ['0009']" in result.stderr
    rows = list(csv.DictReader((tmp_path / "eval" / "scores.csv").open()))
    assert [r["name"] for r in rows] == ["0000", "0001", "0002", "mean"]
    for row in rows[:3]:
        mu, lin = expected[row["name"]]
        assert float(row["psnr_mu"]) == pytest.approx(mu, abs=1e-4)
        assert float(row["psnr_l"]) == pytest.approx(lin, abs=1e-4)
    mean_mu = np.mean([v[0] for v in expected.values()])
    assert float(rows[3]["psnr_mu"]) == pytest.approx(mean_mu, abs=1e-4)
    assert f"PSNR-mu {mean_mu:.4f} dB" in result.stdout
    assert (tmp_path / "eval" / "worst_0002.png").is_file()
    assert (tmp_path / "eval" / "best_0000.png").is_file()


def test_eval_fills_negative_gt_values_as_the_held_out_set_does(tmp_path):
    """The same lossy-EXR ground truth scores alike with gt_dir= and with data=held_out:
    its negative pixels are filled from their neighbours by default, clipped on request."""
    import OpenEXR

    from hdrunet_pl.evaluate import folder_samples

    gt = np.full((6, 7, 3), 0.5, np.float32)
    gt[3, 3] = -0.2  # DWAB ringing
    for folder, image in (("gt", gt), ("pred", np.abs(gt))):
        (tmp_path / folder).mkdir()
        header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
        with OpenEXR.File(header, {"RGB": image}) as f:
            f.write(str(tmp_path / folder / "0001.exr"))
    pred_dir, gt_dir = str(tmp_path / "pred"), str(tmp_path / "gt")
    filled = next(folder_samples(pred_dir, gt_dir, None).items).gt
    assert torch.allclose(filled[:, 3, 3], torch.tensor(0.5) ** (1 / 2.24))
    clipped = next(folder_samples(pred_dir, gt_dir, None, negative="clip").items).gt
    assert torch.equal(clipped[:, 3, 3], torch.zeros(3))
    with pytest.raises(HDRUNetError, match="negative=zero: choose one of clip, fill"):
        folder_samples(pred_dir, gt_dir, None, negative="zero")
    # a result's negative values are clipped to 0 whatever negative= says of the GT's, as
    # its 16-bit PNG submission would hold them (filling would score a better result)
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    with OpenEXR.File(header, {"RGB": gt}) as f:
        f.write(str(tmp_path / "pred" / "0001.exr"))
    for negative in ("fill", "clip"):
        result = next(folder_samples(pred_dir, gt_dir, None, negative=negative).items).pred
        assert torch.equal(result[:, 3, 3], torch.zeros(3)), negative
        assert torch.allclose(result[:, 0, 0], torch.tensor(0.5) ** (1 / 2.24))


def test_eval_refuses_to_write_into_a_folder_its_data_set_reads(tmp_path, tiny_checkpoint):
    """ckpt= with data=: scores and side-by-sides written among the ground truth became
    frames without results for the next evaluation."""
    from omegaconf import OmegaConf

    from hdrunet_pl.evaluate import _check_output_is_no_data_folder

    ntire = OmegaConf.create({"root": str(tmp_path / "nt" / "train"), "val_root": "${val}"})
    ntire.val = str(tmp_path / "nt" / "val")
    mixed = OmegaConf.create({"folders": {"photos": {"root": str(tmp_path / "photos")}}})
    for data, output in (
        (ntire, tmp_path / "nt" / "train"),
        (ntire, tmp_path / "nt" / "val" / "eval"),
        (mixed, tmp_path / "photos" / "eval"),
    ):
        with pytest.raises(HDRUNetError, match=r"is in the data set's folder \((root|val_root)="):
            _check_output_is_no_data_folder(str(output), data)
    _check_output_is_no_data_folder(str(tmp_path / "nt" / "eval"), ntire)  # beside: fine
    # beside, but a link in the data tree leads there (the set reads symlinked subfolders)
    (tmp_path / "nt" / "train").mkdir(parents=True)
    (tmp_path / "nt" / "train" / "more").symlink_to(tmp_path / "nt" / "eval")
    with pytest.raises(HDRUNetError, match=r"\(root=.*, through .*more, a symbolic link\)"):
        _check_output_is_no_data_folder(str(tmp_path / "nt" / "eval" / "run1"), ntire)
    # links in a loop in the data tree: no error of their own (the data set reports them)
    for name, to in (("loop", "loop"), ("x", "y"), ("y", "x")):
        (tmp_path / "nt" / "train" / name).symlink_to(to)
    _check_output_is_no_data_folder(str(tmp_path / "nt" / "beside"), ntire)
    (tmp_path / "nt" / "eval").mkdir()  # the link's folder exists (a first run made it)
    with pytest.raises(HDRUNetError, match=r"\(root=.*, through .*more, a symbolic link\)"):
        _check_output_is_no_data_folder(str(tmp_path / "nt" / "eval" / "run1"), ntire)
    result = run_tool(
        "hdrunet-eval",
        [f"ckpt={tiny_checkpoint}", "data=held_out", f"data.root={tmp_path}", f"output={tmp_path}"],
        tmp_path,
    )
    assert result.returncode != 0
    assert "is in the data set's folder (root=" in result.stderr
    assert not (tmp_path / "scores.csv").exists()


def test_eval_cli_scores_a_checkpoint_with_the_identity_baseline(tmp_path, tiny_checkpoint):
    args = [
        f"ckpt={tiny_checkpoint}",
        "data.val_set.num_images=2",
        "data.val_set.height=36",
        "data.val_set.width=52",
        f"output={tmp_path / 'eval'}",
        "precision=32",
    ]
    result = run_tool("hdrunet-eval", args, tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"hdrunet-eval: {tiny_checkpoint} on cpu (torch.float32)" in result.stdout
    rows = list(csv.DictReader((tmp_path / "eval" / "scores.csv").open()))
    assert len(rows) == 3
    mean = rows[-1]
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        cfg = compose(config_name="eval", overrides=args)
    identity = organisers_val_scores(cfg)
    assert (float(mean["identity_psnr_mu"]), float(mean["identity_psnr_l"])) == pytest.approx(
        identity, abs=1e-3
    )
    predicted = organisers_val_scores(cfg, load_model(tiny_checkpoint).eval())
    assert (float(mean["psnr_mu"]), float(mean["psnr_l"])) == pytest.approx(predicted, abs=1e-2)
    printed = re.search(r"LDR identity: PSNR-mu ([\d.]+) dB", result.stdout)
    assert float(printed.group(1)) == pytest.approx(identity[0], abs=1e-3)


def test_eval_cli_says_what_is_missing(tmp_path):
    result = run_tool("hdrunet-eval", [f"pred_dir={tmp_path}"], tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "hdrunet-eval: error: give both pred_dir= and gt_dir= (or ckpt= and data=)"
    )


def test_eval_names_the_image_it_cannot_score():
    from hdrunet_pl.evaluate import Sample, score

    gt = torch.rand(3, 16, 9) + 0.1
    black = torch.zeros(3, 16, 9)
    black[:, 0, 0] = 1.0  # one bright pixel: the 99th percentile is still 0
    with pytest.raises(HDRUNetError, match=r"^0001: the ground truth is black in 99% of"):
        score(Sample("0001", gt, black, None))
    with pytest.raises(HDRUNetError, match=r"^0002: the result is 17x9, its ground truth 16x9$"):
        score(Sample("0002", torch.rand(3, 17, 9), gt, None))
    with pytest.raises(HDRUNetError, match=r"^0004: the LDR is 10x10, its ground truth 16x9$"):
        score(Sample("0004", gt, gt, torch.rand(3, 10, 10)))  # the result itself is right
    assert np.isfinite(score(Sample("0003", gt * 0.9, gt, gt.clamp(0, 1))).psnr_mu)
    flat = torch.full((3, 40, 40), 0.1)
    flat[:, :2, 0] = 4.0  # far above the 99th percentile: tanh saturates there
    changed = flat.clone()
    changed[:, 0, 0] = 3.0  # a change PSNR-mu cannot see (PSNR-L can)
    with pytest.raises(HDRUNetError, match=r"^0005: psnr_mu is infinite: the result equals"):
        score(Sample("0005", changed, flat, None))


def test_eval_never_writes_through_a_linked_side_by_side_folder(tmp_path):
    """side_by_side/ as a symbolic link to a user's folder elsewhere: nothing is written
    there, and the refusal names the path (not pathlib's ValueError)."""
    from hdrunet_pl.evaluate import Sample, Samples, evaluate

    gt = torch.rand(3, 16, 16) + 0.1
    user = tmp_path / "user_pictures"
    user.mkdir()
    (user / "a1.png").write_bytes(b"the user's")
    out = tmp_path / "eval"
    out.mkdir()
    (out / "side_by_side").symlink_to(user)
    samples = Samples(1, iter([Sample("a1", gt * 0.5, gt, None)]))
    with pytest.raises(HDRUNetError, match=r"a1\.png: leads outside the output folder"):
        evaluate(samples, out, "all")
    assert [p.name for p in user.iterdir()] == ["a1.png"]
    assert (user / "a1.png").read_bytes() == b"the user's"


def test_eval_refuses_to_write_into_the_folders_it_reads_or_over_a_file(tmp_path):
    rng = np.random.default_rng(1)
    for folder, suffix in (("gt", "_gt"), ("pred", "")):
        write_hdr_png(tmp_path / folder / f"0000{suffix}.png", rng.random((12, 16, 3)) + 0.1)
    before = {p: p.read_bytes() for p in (tmp_path / "gt").iterdir()}
    args = [f"pred_dir={tmp_path / 'pred'}", f"gt_dir={tmp_path / 'gt'}"]
    result = run_tool("hdrunet-eval", [*args, f"output={tmp_path / 'gt'}"], tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().endswith("is the gt_dir folder; give another output folder")
    assert {p: p.read_bytes() for p in (tmp_path / "gt").iterdir()} == before

    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "side_by_side").write_text("a file where a folder goes")
    result = run_tool(
        "hdrunet-eval", [*args, f"output={tmp_path / 'eval'}", "side_by_side=all"], tmp_path
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == (  # before any image is scored
        f"hdrunet-eval: error: {tmp_path / 'eval' / 'side_by_side'}: File exists"
    )


@pytest.mark.parametrize("network", ["hdrunet", "expandnet"])
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_matches_pytorch_on_odd_sizes(tmp_path, request, network, fmt):
    fixture = "tiny_checkpoint" if network == "hdrunet" else "tiny_expandnet_checkpoint"
    tiny_checkpoint = request.getfixturevalue(fixture)
    result = run_tool("hdrunet-export", [f"ckpt={tiny_checkpoint}", f"format={fmt}"], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    path = tiny_checkpoint.with_suffix(".onnx" if fmt == "onnx" else ".torchscript.pt")
    assert path.is_file() and "max |export - PyTorch|" in result.stdout
    offending = noise(result, tmp_path)  # no third-party warnings (torchvision, tracer)
    assert not offending, "\n".join(offending)
    net = load_model(tiny_checkpoint)
    assert type(net).__name__ == {"hdrunet": "HDRUNet", "expandnet": "ExpandNet"}[network]
    ldr = torch.rand(2, 3, 45, 67)
    with torch.no_grad():
        expected = net(ldr).numpy()
    if fmt == "onnx":
        import onnxruntime

        # one self-contained file: it still runs once moved on its own to another folder
        assert sorted(p.name for p in path.parent.iterdir() if ".onnx" in p.name) == [path.name]
        moved = tmp_path / "elsewhere" / "model.onnx"
        moved.parent.mkdir()
        path.rename(moved)
        session = onnxruntime.InferenceSession(str(moved), providers=["CPUExecutionProvider"])
        got = session.run(None, {"ldr": ldr.numpy()})[0]
    else:
        got = torch.jit.load(str(path))(ldr).detach().numpy()
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() < 1e-4


@pytest.mark.slow
def test_a_24_megapixel_photo_stays_within_the_memory_budget(tmp_path):
    """Automatic tiling counts the whole image's own buffers: the process's peak stays within
    memory_gb (default 5 GiB) above its start (torch and the model, about 0.4 GB)."""
    import cv2

    from hdrunet_pl import save_model

    save_model(HDRUNet(), tmp_path / "full.ckpt")  # the paper's width
    small = (np.random.default_rng(0).random((500, 750, 3)) * 255).astype(np.uint8)
    photo = cv2.resize(small, (6000, 4000), interpolation=cv2.INTER_CUBIC)
    (tmp_path / "in").mkdir()
    cv2.imwrite(str(tmp_path / "in" / "photo.jpg"), photo)
    args = [
        f"ckpt={tmp_path / 'full.ckpt'}",
        f"input={tmp_path / 'in'}",
        f"output={tmp_path / 'out'}",
    ]
    result = run_tool("hdrunet-predict", [*args, "format=exr"], tmp_path, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    peak = float(result.stdout.split("peak memory ")[1].split(" GB")[0])
    assert peak < 5.0 + 0.5, result.stdout
    assert read_exr(tmp_path / "out" / "photo.exr").shape == (4000, 6000, 3)


def test_folder_inference_pipeline_writes_what_one_image_at_a_time_writes(tmp_path, monkeypatch):
    """Decoding and writing run in their own threads, ahead of and behind the network; the
    files are byte for byte those of a plain loop, and a bad input in the middle only
    fails itself."""
    import threading

    from hdrunet_pl import predict
    from hdrunet_pl.io import read_ldr, write_hdr

    predictor = Predictor(random_net(8), precision="32")
    for i, item in enumerate(SyntheticHDRDataset(5, 29, 41, seed=6)):
        write_ldr(tmp_path / "in" / f"{i:04d}_medium.png", item["ldr"].permute(1, 2, 0).numpy())
    (tmp_path / "in" / "0002_medium.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    threads = set()
    real_read = predict.read_input

    def read(path):
        threads.add(threading.current_thread().name)
        return real_read(path)

    monkeypatch.setattr(predict, "read_input", read)
    report = predict_files(predictor, list_inputs(tmp_path / "in"), tmp_path / "out", "png")
    assert [p.name for p in report.written] == ["0000.png", "0001.png", "0003.png", "0004.png"]
    assert list(report.failed) == [tmp_path / "in" / "0002_medium.png"]
    assert threads and all(name.startswith("hdrunet-read") for name in threads)
    for path in report.written:
        ldr = torch.from_numpy(read_ldr(tmp_path / "in" / f"{path.stem}_medium.png"))
        expected = predictor(ldr.permute(2, 0, 1)).clamp_min(0).permute(1, 2, 0).numpy()
        write_hdr(tmp_path / "plain" / path.name, expected)
        for name in (path.name, f"{path.stem}_alignratio.npy"):
            written = (tmp_path / "out" / name).read_bytes()
            assert written == (tmp_path / "plain" / name).read_bytes(), name


def test_eval_reads_ahead_in_order_on_another_thread():
    import threading

    from hdrunet_pl.evaluate import read_ahead

    made_on, consumed = [], []

    def items():
        for i in range(5):
            made_on.append((i, threading.current_thread().name))
            if i == 3:
                raise OSError("corrupt file 3")
            yield i

    with pytest.raises(OSError, match="corrupt file 3"):
        for item in read_ahead(items(), depth=2):
            consumed.append(item)
    assert consumed == [0, 1, 2]  # in order, up to the failing item, which is raised in place
    assert {name for _, name in made_on} == {"hdrunet-eval-read_0"}
    early = read_ahead(iter(range(100)), depth=2)
    assert [next(early), next(early)] == [0, 1]
    early.close()  # a consumer that stops early leaves no thread behind
    assert not [t for t in threading.enumerate() if t.name.startswith("hdrunet-eval-read")]


def test_output_folder_owns_only_the_unchanged_files_it_wrote(tmp_path):
    """A claimed name is not enough: a file is the package's to write over only while it
    is the file the package wrote (size and time as recorded)."""
    from hdrunet_pl.outputs import OutputFolder

    folder = OutputFolder(tmp_path, "tool")
    kept, failed, edited = (tmp_path / n for n in ("kept.png", "failed.png", "edited.png"))
    folder.claim([kept, failed, edited])
    kept.write_bytes(b"result")
    edited.write_bytes(b"result")
    folder.written([kept, edited])  # `failed` never got written (its input was bad)
    failed.write_bytes(b"the user's file, put there later")
    edited.write_bytes(b"the user's edit")
    shards = tmp_path / "train"
    folder.claim([shards])
    shards.mkdir()
    for view in (folder, OutputFolder(tmp_path, "tool")):  # as recorded in the manifest
        assert view.owns(kept) and view.complete([kept]) and view.owns(shards)
        assert not view.owns(failed) and not view.owns(edited)
        assert view.foreign([kept, failed, edited]) == [failed, edited]
        view.claim([kept])
        with pytest.raises(HDRUNetError, match=r"failed\.png: its name was reserved by a run"):
            view.claim([failed])  # killed before recording it, or a file put there since
        with pytest.raises(HDRUNetError, match=r"edited\.png: exists and was not written by tool"):
            view.claim([edited])
    assert failed.read_bytes() == b"the user's file, put there later"


def test_output_folder_refuses_links_and_names_its_manifest_cannot_hold(tmp_path):
    """A symbolic link in the output folder (live or dangling) is never the package's: the
    name is refused with one line and what it points to is left alone. A name with a
    newline would break the manifest's lines, so it is refused too."""
    from hdrunet_pl.outputs import OutputFolder

    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (out / "a.png").symlink_to(victim)
    (out / "b.png").symlink_to(tmp_path / "nothing")
    folder = OutputFolder(out, "tool")
    for link in (out / "a.png", out / "b.png"):
        assert folder.foreign([link]) == [link]
        with pytest.raises(HDRUNetError, match=f"{link.name}: exists and was not written by"):
            folder.claim([link])
    with pytest.raises(HDRUNetError, match="control character"):
        folder.claim([out / "a\nb.png"])
    assert victim.read_text() == "keep me"
    assert not (out / ".hdrunet-outputs").exists()  # nothing was claimed


def test_an_input_link_that_leads_nowhere_is_named_as_such(tmp_path):
    (tmp_path / "a.png").symlink_to(tmp_path / "b.png")
    (tmp_path / "b.png").symlink_to(tmp_path / "a.png")
    with pytest.raises(HDRUNetError, match=r"a\.png: a symbolic link that leads to no file"):
        list_inputs(tmp_path / "a.png")
    with pytest.raises(HDRUNetError, match=r"c\.png: no such file or folder"):
        list_inputs(tmp_path / "c.png")
    os.mkfifo(tmp_path / "pipe.png")  # said "no such file or folder" of what is there
    with pytest.raises(HDRUNetError, match=r"pipe\.png: not a regular file \(a pipe, socket"):
        list_inputs(tmp_path / "pipe.png")
    # an output folder that is such a link: refused before the network is loaded
    from hdrunet_pl.predict import check_output_folder

    (tmp_path / "out").symlink_to(tmp_path / "out")
    with pytest.raises(HDRUNetError, match=r"output .*out: a symbolic link that leads nowhere"):
        check_output_folder(tmp_path / "out", [])


def test_links_that_lead_nowhere_in_an_input_folder_are_named(tmp_path, caplog):
    """A folder's dangling or looping links were left out without a word (given alone,
    such a link is named)."""
    folder = tmp_path / "photos"
    folder.mkdir()
    cv2.imwrite(str(folder / "ok.png"), np.full((4, 6, 3), 100, np.uint8))
    (folder / "dangling.png").symlink_to(folder / "gone.png")
    (folder / "loop.jpg").symlink_to(folder / "loop.jpg")
    with caplog.at_level(logging.WARNING, logger="hdrunet_pl.predict"):
        assert list_inputs(folder) == [folder / "ok.png"]
    (note,) = [r.getMessage() for r in caplog.records]
    assert note == (
        f"input {folder}: 2 symbolic link(s) that lead to no file (a loop?) left out: "
        "dangling.png, loop.jpg"
    )


def test_an_output_folder_that_cannot_be_written_stops_predict_before_it_starts(
    tiny_checkpoint, tmp_path
):
    """Each image failed alone, after its decoding, with two lines per image (25 images:
    50 lines); eval already stopped at once."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("a", "b", "c"):
        cv2.imwrite(str(photos / f"{name}.png"), np.full((6, 8, 3), 100, np.uint8))
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    # root writes into a read-only folder: sysfs takes no new files from anybody
    output = Path("/sys/kernel") if os.geteuid() == 0 else locked
    args = [f"ckpt={tiny_checkpoint}", f"input={photos}", f"output={output / 'results'}"]
    result = run_tool("hdrunet-predict", args, tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr == (
        f"hdrunet-predict: error: output {output / 'results'}: cannot be written "
        "(Permission denied)\n"
    )
    assert "hdrunet-predict:" not in result.stdout  # before the checkpoint was loaded
    assert not (output / "results").exists() and not list(output.glob(".hdrunet-probe-*"))


def test_tiles_much_smaller_than_twice_the_overlap_are_warned_about(caplog):
    with caplog.at_level(logging.WARNING, logger="hdrunet_pl.inference"):
        Predictor(random_net(8), tile=512)
        assert not caplog.records
        Predictor(random_net(8), tile=256)
    assert "tile=256 with overlap=224 computes each pixel of an image larger" in caplog.text
    assert "about 64 times over" in caplog.text


def test_predict_keeps_a_file_put_where_a_failed_input_left_its_name(tmp_path):
    predictor = Predictor(random_net(8), precision="32")
    (tmp_path / "in").mkdir()
    bad = tmp_path / "in" / "photo.png"
    bad.write_bytes(b"")  # unreadable: fails, after its output names were claimed
    report = predict_files(predictor, [bad], tmp_path / "out", "png", preview=True)
    assert list(report.failed) == [bad] and not report.written
    user_file = tmp_path / "out" / "photo.png"
    user_file.write_bytes(b"USER DATA")
    write_ldr(bad, np.full((20, 24, 3), 0.4, np.float32))  # now a good photo
    for overwrite in (False, True):
        report = predict_files(predictor, [bad], tmp_path / "out", "png", overwrite=overwrite)
        assert "photo.png: its name was reserved by a run" in report.failed[bad]
    assert user_file.read_bytes() == b"USER DATA"


@pytest.mark.parametrize("fmt", ["png", "exr"])
def test_a_result_rewritten_by_a_killed_run_is_made_again_by_the_next(tmp_path, monkeypatch, fmt):
    """``overwrite=true`` rewriting a recorded result, stopped (SIGTERM, SIGKILL) after its
    new files were written and before they were recorded: the next run makes that result
    again. Before, the changed files no longer matched their records and every re-run
    refused them as a user's ("exists and was not written by hdrunet-predict")."""
    from hdrunet_pl.outputs import OutputFolder

    predictor = Predictor(random_net(8), precision="32")
    inputs = []
    for i in range(2):
        inputs.append(tmp_path / "in" / f"photo{i}.png")
        write_ldr(inputs[-1], np.full((20, 24, 3), 0.2 + 0.3 * i, np.float32))
    out = tmp_path / "out"
    first = predict_files(predictor, inputs, out, fmt, preview=True)
    assert len(first.written) == 2
    before = {p.name: p.read_bytes() for p in out.iterdir() if not p.name.startswith(".")}

    class Killed(BaseException):
        """Stands for the signal: nothing after it runs in the writer."""

    real = OutputFolder.written

    def killed_once(self, *args, **kwargs):
        monkeypatch.setattr(OutputFolder, "written", real)
        raise Killed

    monkeypatch.setattr(OutputFolder, "written", killed_once)
    with pytest.raises(Killed):
        predict_files(predictor, inputs, out, fmt, preview=True, overwrite=True)
    again = predict_files(predictor, inputs, out, fmt, preview=True)
    assert not again.failed, again.failed
    assert len(again.written) + len(again.skipped) == 2 and again.written
    after = {p.name: p.read_bytes() for p in out.iterdir() if not p.name.startswith(".")}
    assert after == before  # the same results, every file there, nothing else
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == [".hdrunet-outputs"]


def test_ctrl_c_in_predict_is_one_line_and_the_same_command_goes_on(tmp_path, capsys):
    """Ctrl-C at the third image: the results already computed are written whole, the tool
    says so in one line (no traceback) with status 130, and a re-run makes the rest."""
    from hdrunet_pl.predict import exit_on_error

    predictor = Predictor(random_net(8), precision="32")
    inputs = []
    for i in range(4):
        inputs.append(tmp_path / "in" / f"photo{i}.png")
        write_ldr(inputs[-1], np.full((20, 24, 3), 0.1 + 0.2 * i, np.float32))
    calls = []

    class CtrlC:
        device, dtype = predictor.device, predictor.dtype

        def __call__(self, ldr):
            calls.append(ldr)
            if len(calls) == 3:
                raise KeyboardInterrupt
            return predictor(ldr)

    out = tmp_path / "out"
    tool = exit_on_error(lambda cfg: predict_files(CtrlC(), inputs, out, "png", preview=True))
    with pytest.raises(SystemExit) as stopped:
        tool(None)
    error = capsys.readouterr().err
    said = error.split("image/s]\n")[-1]  # after the progress bar
    assert stopped.value.code == 130 and said.count("\n") == 1 and "interrupted" in said
    assert sorted(p.name for p in out.glob("photo*.png")) == [
        "photo0.png",
        "photo0_preview.png",
        "photo1.png",
        "photo1_preview.png",
    ]
    again = predict_files(predictor, inputs, out, "png", preview=True)
    assert len(again.skipped) == 2 and len(again.written) == 2 and not again.failed


def test_predict_refuses_an_input_whose_name_is_another_inputs_preview(tmp_path):
    predictor = Predictor(random_net(8), precision="32")
    inputs = [tmp_path / "photo.png", tmp_path / "photo_preview.png"]
    for path in inputs:
        write_ldr(path, np.full((16, 16, 3), 0.5, np.float32))
    with pytest.raises(HDRUNetError, match=r"photo\.png and .*photo_preview\.png would both write"):
        predict_files(predictor, inputs, tmp_path / "out", "png", preview=True)
    assert not (tmp_path / "out").exists()
    report = predict_files(predictor, inputs, tmp_path / "out", "png", preview=False)
    assert len(report.written) == 2  # without previews the names do not meet
    # several clashes are named at once, not one per attempt
    more = [tmp_path / "a.png", tmp_path / "a.jpg", tmp_path / "b.bmp", tmp_path / "b.tif"]
    with pytest.raises(HDRUNetError, match=r"a\.png and .*a\.jpg .*; .*b\.bmp and .*b\.tif"):
        predict_files(predictor, more, tmp_path / "out2", "png")


def test_predict_leaves_an_earlier_runs_result_whole(tmp_path):
    """Results of two runs into one folder whose files meet (``scene.png`` and
    ``scene_gt.png`` share ``scene_alignratio.npy``; ``photo_preview.png`` is one input's
    preview and another's HDR): the later input fails in one line and the earlier result
    stays byte for byte; the same name's own results (other settings, another folder's
    photo of that name) are replaced as before."""
    predictor = Predictor(random_net(8), precision="32")
    out = tmp_path / "out"
    pairs = [  # (first run's input, second run's input, preview)
        ("scene.png", "scene_gt.png", False),
        ("0001_medium.png", "0001_gt.jpg", False),
        ("photo_preview.png", "photo.png", True),
        ("snap.png", "snap_preview.png", True),
    ]
    for i, (first, second, preview) in enumerate(pairs):
        a, b = tmp_path / f"a{i}" / first, tmp_path / f"b{i}" / second
        write_ldr(a, np.full((16, 16, 3), 0.5, np.float32))
        write_ldr(b, np.full((16, 16, 3), 0.05, np.float32))
        assert len(predict_files(predictor, [a], out, "png", preview).written) == 1
        before = {p.name: p.read_bytes() for p in out.iterdir() if p.name != ".hdrunet-outputs"}
        report = predict_files(predictor, [b], out, "png", preview)
        assert not report.written and list(report.failed) == [b], second
        assert "of another input" in report.failed[b] and "\n" not in report.failed[b]
        after = {p.name: p.read_bytes() for p in out.iterdir() if p.name != ".hdrunet-outputs"}
        assert after == before, second
    first = out / "scene.png"
    # the same name again: another folder's photo.png, other settings: replaced, as before
    other = tmp_path / "c" / "scene.png"
    write_ldr(other, np.full((16, 16, 3), 0.2, np.float32))
    assert predict_files(predictor, [other], out, "png").written == [first]
    again = predict_files(predictor, [other], out, "png", overwrite=True, settings="other")
    assert again.written == [first] and not again.failed
    # two inputs that are links to one file share an origin, not their results' files
    (tmp_path / "l").mkdir()
    write_ldr(tmp_path / "l" / "a.png", np.full((16, 16, 3), 0.3, np.float32))
    (tmp_path / "l" / "b.png").symlink_to("a.png")
    linked = [tmp_path / "l" / "a.png", tmp_path / "l" / "b.png"]
    for settings in ("one", "two"):
        report = predict_files(predictor, linked, out, "png", True, settings=settings)
        assert len(report.written) == 2 and not report.failed, report.failed


def test_export_check_refuses_an_onnx_file_of_another_opset(tmp_path):
    """torch.onnx writes its own opset (18) when it cannot convert to the one asked for
    and returns normally: the file's opset is checked, not assumed."""
    import onnx
    from onnx import TensorProto, helper

    from hdrunet_pl.export import check_onnx_file

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    check_onnx_file(path, 18)
    with pytest.raises(HDRUNetError, match=r"opset=17: .* wrote opset 18\); choose opset=18 or h"):
        check_onnx_file(path, 17)
    with pytest.raises(HDRUNetError, match=r"opset=99: .* wrote opset 18\); choose opset=18$"):
        check_onnx_file(path, 99)  # not "18 or higher"
    from hdrunet_pl.export import export

    for ckpt, what in ((tmp_path, "a folder"), (tmp_path / "none.ckpt", "no such file")):
        with pytest.raises(HDRUNetError, match=f"ckpt={re.escape(str(ckpt))}: {what}$"):
            export(ckpt, "onnx")  # not pathlib's "has an empty name" for ckpt=.


def test_a_tile_too_small_for_its_overlap_is_refused_before_any_image():
    # the tile suggested is the efficient one (twice the overlap), not the least accepted
    with pytest.raises(ValueError, match=r"tile \(100\) must exceed overlap \(224\).*tile=448 or"):
        Predictor(random_net(8), tile=100)
    with pytest.raises(ValueError, match=r"give tile=64 or more"):
        Predictor(random_net(8), tile=34, overlap=32)
    with pytest.raises(ValueError, match=r"give tile=6 or more"):
        Predictor(random_net(8), tile=2, overlap=2)  # overlap + 4 where that is more
    assert Predictor(random_net(8), tile=36, overlap=32).tile == 36
    assert Predictor(random_net(8), tile=0).tile == 0  # 0: never tile


def test_list_inputs_says_what_a_file_is_when_it_is_not_an_ldr_input(tmp_path):
    for name, message in (
        ("0001_gt.png", "an NTIRE ground-truth file, not an LDR input"),
        ("scene.exr", "an HDR file already; the inputs are 8- or 16-bit LDR images"),
        ("scene.HDR", "an HDR file already"),
    ):
        (tmp_path / name).write_bytes(b"x")
        with pytest.raises(HDRUNetError, match=message):
            list_inputs(tmp_path / name)
    (tmp_path / "photo.jpg").write_bytes(b"x")
    (tmp_path / "portrait_gt.jpg").write_bytes(b"x")  # a photo's name, not NTIRE GT
    assert list_inputs(tmp_path) == [tmp_path / "photo.jpg", tmp_path / "portrait_gt.jpg"]
    assert list_inputs(tmp_path / "portrait_gt.jpg") == [tmp_path / "portrait_gt.jpg"]


def test_list_inputs_names_the_images_it_does_not_read(tmp_path, caplog):
    """A phone's HEIC photos and a GIF are named, alone or beside JPEGs: never converted in
    one case and passed over in silence in the other (a GIF given as a file was converted,
    its frames after the first dropped; in a folder it was left out without a word)."""
    folder = tmp_path / "phone"
    folder.mkdir()
    for name in ("IMG_0001.HEIC", "loop.gif"):
        (folder / name).write_bytes(b"x")
        with pytest.raises(HDRUNetError, match=rf"{re.escape(name)}: not read here"):
            list_inputs(folder / name)
    with pytest.raises(HDRUNetError, match=r"no images it reads; IMG_0001.HEIC, loop.gif: not"):
        list_inputs(folder)
    (folder / "IMG_0002.jpg").write_bytes(b"x")
    assert list_inputs(folder) == [folder / "IMG_0002.jpg"]
    assert "2 file(s) left out: IMG_0001.HEIC, loop.gif: not read here" in caplog.text


def test_a_float_tiff_is_named_as_such(tmp_path):
    """Pillow cannot open an RGB float TIFF: named by its pixels, not as damaged."""
    import tifffile

    from hdrunet_pl.errors import ImageFileError
    from hdrunet_pl.io import read_ldr

    tifffile.imwrite(tmp_path / "hdr.tif", np.full((4, 5, 3), 0.5, np.float32))
    with pytest.raises(ImageFileError, match=r"hdr\.tif: float32 pixels \(an HDR TIFF\?\)"):
        read_ldr(tmp_path / "hdr.tif")


def test_list_inputs_takes_ntire_inputs_by_their_png_name_and_says_what_it_leaves(tmp_path, caplog):
    """A photo named ``a_medium.jpg`` does not make a folder NTIRE (its other photos were
    dropped without a word); in an NTIRE folder the other images left out are named."""
    for name in ("a.jpg", "a_medium.jpg", "b.jpg", "holiday_medium.png", "sunset_gt.png"):
        (tmp_path / "photos" / name).parent.mkdir(exist_ok=True)
        (tmp_path / "photos" / name).write_bytes(b"x")
    assert [p.name for p in list_inputs(tmp_path / "photos")] == [
        "a.jpg",
        "a_medium.jpg",
        "b.jpg",
        "holiday_medium.png",
        "sunset_gt.png",
    ]
    for name in (
        "0001_medium.png",
        "0001_gt.png",
        "0001_short.png",
        "0001_long.png",
        "0001_s002_medium.png",
    ):
        (tmp_path / "ntire" / name).parent.mkdir(exist_ok=True)
        (tmp_path / "ntire" / name).write_bytes(b"x")
    with caplog.at_level(logging.WARNING):
        names = [p.name for p in list_inputs(tmp_path / "ntire")]
    assert names == ["0001_medium.png", "0001_s002_medium.png"]
    assert "not its 2 other image(s): 0001_long.png, 0001_short.png" in caplog.text
    # results keep a photo's name; only an NTIRE input loses its _medium
    from hdrunet_pl.predict import check_output_folder, output_stem

    stems = [output_stem(p) for p in list_inputs(tmp_path / "photos")]
    assert stems == ["a", "a_medium", "b", "holiday_medium", "sunset_gt"]
    assert [output_stem(p) for p in list_inputs(tmp_path / "ntire")] == ["0001", "0001_s002"]
    check_output_folder(tmp_path / "photos", [tmp_path / "in.png"])  # sunset_gt.png: a photo
    with pytest.raises(HDRUNetError, match=r"0001_gt\.png"):
        check_output_folder(tmp_path / "ntire", [tmp_path / "in.png"])


def test_list_inputs_leaves_out_hdr_results(tmp_path, caplog):
    """A 16-bit PNG beside its align ratio (this tool's result, fed back as input) is HDR,
    not an LDR to convert again."""
    (tmp_path / "photo.jpg").write_bytes(b"x")
    for name in ("0001.png", "0001_alignratio.npy", "beach.png", "beach_alignratio.npy"):
        (tmp_path / name).write_bytes(b"x")
    with caplog.at_level(logging.WARNING):
        assert list_inputs(tmp_path) == [tmp_path / "photo.jpg"]
    assert "2 HDR image(s)" in caplog.text and "0001.png, beach.png" in caplog.text
    with pytest.raises(HDRUNetError, match=r"an HDR image .*beach_alignratio\.npy"):
        list_inputs(tmp_path / "beach.png")
    (tmp_path / "photo.jpg").unlink()
    with pytest.raises(HDRUNetError, match="no images"):
        list_inputs(tmp_path)


def test_eval_matches_results_to_gt_by_the_names_predict_writes(tmp_path):
    """The LDR frames of an NTIRE multi-frame folder (``_short``, ``_medium``, ``_long``) are
    no GT; a photo's result keeps its name (``holiday_medium``), as predict writes it."""
    from hdrunet_pl.evaluate import folder_samples
    from hdrunet_pl.io import write_exr, write_hdr_png, write_ldr

    hdr = np.full((8, 12, 3), 0.5, np.float32)
    for folder in ("gt", "pred"):
        (tmp_path / folder).mkdir()
    write_hdr_png(tmp_path / "gt" / "0001_gt.png", hdr)
    for exposure in ("short", "medium", "long"):
        write_ldr(tmp_path / "gt" / f"0001_{exposure}.png", hdr)
    write_exr(tmp_path / "gt" / "holiday_medium.exr", hdr)
    write_hdr_png(tmp_path / "pred" / "0001.png", hdr)
    write_hdr_png(tmp_path / "pred" / "holiday_medium.png", hdr)
    # a photo named like an NTIRE input (0007_medium.jpg): its result has its align ratio
    write_exr(tmp_path / "gt" / "0007_medium.exr", hdr)
    write_hdr_png(tmp_path / "pred" / "0007_medium.png", hdr)
    samples = folder_samples(str(tmp_path / "pred"), str(tmp_path / "gt"), None)
    assert [s.name for s in samples.items] == ["0001", "0007_medium", "holiday_medium"]


def test_eval_scores_hdr_files_smaller_than_the_training_patch(tmp_path, tiny_checkpoint):
    """hdrunet-eval ckpt=... data=hdr_folder scores the validation files whatever the
    training patch size (160 px by default): training crops play no part in it."""
    from hdrunet_pl.evaluate import model_samples
    from hdrunet_pl.io import write_radiance

    from .support import compose_config

    for i in range(3):
        image = np.random.default_rng(i).random((24, 40, 3)).astype(np.float32) + 0.05
        write_radiance(tmp_path / "photos" / f"p{i}.hdr", image)
    cfg = compose_config(
        "eval",
        [f"ckpt={tiny_checkpoint}", "data=hdr_folder", f"data.root={tmp_path / 'photos'}"],
    )
    assert cfg.data.patch_size == 160
    samples = model_samples(cfg)
    assert samples.count == 2  # the last val_count=2 files
    assert [s.name for s in samples.items] == ["p1", "p2"]


def test_predict_reruns_into_its_own_results_of_an_input_named_like_ground_truth(tmp_path):
    """photo_gt.jpg gives photo_gt.png: a rerun into that folder must not take its own
    result for NTIRE ground truth; a ground-truth file it did not write is still refused."""
    from hdrunet_pl.outputs import OutputFolder
    from hdrunet_pl.predict import check_output_folder

    out = tmp_path / "out"
    folder = OutputFolder(out, "hdrunet-predict")
    result = out / "photo_gt.png"
    folder.claim([result])
    result.write_bytes(b"a result")
    folder.written([result])
    check_output_folder(out, [tmp_path / "photos" / "photo_gt.jpg"])  # no error
    (out / "0001_gt.png").write_bytes(b"the user's ground truth")
    with pytest.raises(HDRUNetError, match=r"holds NTIRE ground truth \(0001_gt\.png"):
        check_output_folder(out, [tmp_path / "photos" / "photo_gt.jpg"])


def test_a_folder_another_run_writes_into_is_refused_until_it_ends(tmp_path):
    """Two runs into one output folder: the second stops with one line (predict, eval and
    prepare crop), and a run that waited reads the manifest as the first one left it."""
    from hdrunet_pl.evaluate import Sample, Samples, evaluate
    from hdrunet_pl.outputs import OutputFolder
    from hdrunet_pl.prepare import run_crop

    from .ntire_files import random_hdr, write_ntire_frame

    predictor = Predictor(random_net(8), precision="32")
    photo = tmp_path / "in" / "photo.png"
    write_ldr(photo, np.full((16, 16, 3), 0.5, np.float32))
    out = tmp_path / "out"
    waiting = OutputFolder(out, "hdrunet-predict")  # constructed before the first run
    frames = tmp_path / "frames"
    write_ntire_frame(frames, "0000", random_hdr(32, 32, seed=0))
    gt = torch.rand(3, 16, 16) + 0.1
    in_use = r"output .*out: in use by another run of this package"
    with OutputFolder(out, "another run").sole_writer():
        with pytest.raises(HDRUNetError, match=in_use):
            predict_files(predictor, [photo], out, "png")
        with pytest.raises(HDRUNetError, match=in_use):
            evaluate(Samples(1, iter([Sample("a1", gt * 0.5, gt, None)])), out)
        with pytest.raises(HDRUNetError, match=in_use):
            run_crop(str(frames), str(out), 16, 16, 0, 1)
    assert sorted(p.name for p in out.iterdir()) == []  # nothing written meanwhile
    report = predict_files(predictor, [photo], out, "png")
    assert report.written == [out / "photo.png"]
    assert not waiting.owns(out / "photo.png")  # its manifest as read before that run
    with waiting.sole_writer():
        assert waiting.owns(out / "photo.png")  # read again once the folder is its own


def test_eval_warns_when_a_gt_file_is_not_at_the_ldrs_exposure(tmp_path, caplog):
    """A photograph's own EXR as GT (other units than the LDR): the scores compare absolute
    values, so the image is named with the factor; an aligned GT is not."""
    from hdrunet_pl.constants import GAMMA
    from hdrunet_pl.evaluate import exposure_ratio, folder_samples, mean_radiance_ratio
    from hdrunet_pl.io import write_exr, write_ldr

    rng = np.random.default_rng(3)
    ldr = rng.uniform(0.05, 0.95, (16, 20, 3)).astype(np.float32)
    for folder in ("gt", "pred", "ldr"):
        (tmp_path / folder).mkdir()
    scales = {"aligned": 1.0, "in_other_units": 1000.0, "two_stops": 4.0, "a_third_stop": 1.25}
    for name, scale in scales.items():
        write_ldr(tmp_path / "ldr" / f"{name}.png", ldr)
        write_exr(tmp_path / "gt" / f"{name}.exr", scale * ldr.astype(np.float64) ** GAMMA)
        write_exr(tmp_path / "pred" / f"{name}.exr", ldr.astype(np.float64) ** GAMMA)
    samples = {
        s.name: s for s in folder_samples(*(str(tmp_path / f) for f in ("pred", "gt", "ldr"))).items
    }
    ratio = exposure_ratio(samples["in_other_units"].ldr, samples["in_other_units"].gt)
    assert ratio == pytest.approx(1000 ** (1 / GAMMA), rel=0.02)
    assert (
        "in_other_units: the ground truth is 1,000 times as bright as its LDR in radiance (21.8 "
        "in the non-linear values" in caplog.text
    )
    assert "aligned:" not in caplog.text
    # two stops too bright was within the factor 2 of the non-linear values (4.7 in
    # radiance), so it passed in silence while every score was wrong; a third of a stop passes
    assert re.search(r"two_stops: the ground truth is (3\.9\d|4|4\.0\d) times as", caplog.text)
    assert "a_third_stop:" not in caplog.text
    caplog.clear()
    list(folder_samples(str(tmp_path / "pred"), str(tmp_path / "gt"), None).items)
    assert "in_other_units: the ground truth is 1,000 times as bright as its result" in caplog.text
    # without the LDR, either file may be in other units (a result's wrong align ratio):
    # the GT alone is not blamed
    assert "one of the two is in other units" in caplog.text
    assert "scale it to the LDR's exposure" not in caplog.text
    assert exposure_ratio(torch.full((3, 8, 8), 0.02), torch.ones(3, 8, 8)) is None  # all dark
    # a result far too bright has no well-exposed pixel of its own: the images' mean
    # radiance is compared (such results were scored in silence), with a tenfold tolerance
    gt_values = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.6 + 0.2
    for factor in (30.0, 1e4):
        ratio = mean_radiance_ratio(gt_values * factor ** (1 / GAMMA), gt_values)
        assert ratio**GAMMA == pytest.approx(1 / factor, rel=1e-6)
    assert mean_radiance_ratio(torch.zeros(3, 8, 8), gt_values) is None  # black: said apart
    for factor in (100, 10000):
        write_exr(tmp_path / "pred" / "aligned.exr", factor * ldr.astype(np.float64) ** GAMMA)
        caplog.clear()
        list(folder_samples(str(tmp_path / "pred"), str(tmp_path / "gt"), None).items)
        assert re.search(r"aligned: the ground truth is 0\.0+\d+ times as bright", caplog.text)
        assert "ratio of the mean radiance" in caplog.text
    # ... but good results with few well-exposed pixels are not: a dark noisy GT against its
    # denoised mean, a night scene whose faint halo the result lost (the GT's bright pixels,
    # compared pixel by pixel, said 2 and 7 times, and billions where the result was 0)
    rng = np.random.default_rng(4)
    dark_gt = 0.003 + rng.normal(0, 0.002, (64, 64, 3)).clip(-0.003, None)
    night_gt = np.full((64, 64, 3), 1e-4)
    night_gt[:2, :20] = 50.0  # lamps, 1 % of the pixels
    night_gt[2:4, :40] = 0.02  # a halo, 2 %
    night_result = night_gt.copy()
    night_result[2:4, :40] = 0.0
    for name, gt, result in (
        ("dark", dark_gt, np.full_like(dark_gt, 0.003)),
        ("night", night_gt, night_result),
    ):
        write_exr(tmp_path / "gt" / f"{name}.exr", gt)
        write_exr(tmp_path / "pred" / f"{name}.exr", result)
    caplog.clear()
    list(folder_samples(str(tmp_path / "pred"), str(tmp_path / "gt"), None).items)
    assert "dark:" not in caplog.text and "night:" not in caplog.text
    for name in ("dark", "night"):
        (tmp_path / "gt" / f"{name}.exr").unlink()
        (tmp_path / "pred" / f"{name}.exr").unlink()
    # a black result has no pixel to compare exposures on; it was scored in silence
    write_exr(tmp_path / "pred" / "aligned.exr", np.zeros_like(ldr))
    caplog.clear()
    for ldr_dir in (None, str(tmp_path / "ldr")):
        list(folder_samples(str(tmp_path / "pred"), str(tmp_path / "gt"), ldr_dir).items)
        assert "aligned: the result is black (every value 0)" in caplog.text
    assert "a_third_stop: the result is black" not in caplog.text
    # the LDR's check of the GT does not need the result: a black one does not hide it
    write_exr(tmp_path / "pred" / "in_other_units.exr", np.zeros_like(ldr))
    caplog.clear()
    list(folder_samples(*(str(tmp_path / f) for f in ("pred", "gt", "ldr"))).items)
    assert "in_other_units: the result is black" in caplog.text
    assert "in_other_units: the ground truth is 1,000 times as bright as its LDR" in caplog.text


def test_a_slow_frames_rate_is_not_printed_as_zero():
    from hdrunet_pl.predict import PredictReport

    report = PredictReport(written=[Path("a.png")], seconds=843.44)
    assert "843.44 s per image (0.00119 frames/s)" in report.summary()
    fast = PredictReport(written=[Path(f"{i}.png") for i in range(2500)], seconds=2.0)
    assert "(1250 frames/s)" in fast.summary()  # not 1.25e+03


def test_the_manifest_keeps_one_line_per_file_when_rewritten(tmp_path):
    """A folder written again and again (a crop re-cut after every change of its frames)
    grew its manifest by a line per file each time; once superseded lines outnumber the
    current ones by far, a run that holds the folder rewrites it with their latest records."""
    from hdrunet_pl.outputs import MANIFEST, OutputFolder

    folder = OutputFolder(tmp_path, "tool")
    result, reserved = tmp_path / "a.png", tmp_path / "b.png"
    for i in range(150):
        folder.claim([result, reserved])
        result.write_bytes(b"%d" % i)
        folder.written([result], made_from=f"origin {i}")
    assert len((tmp_path / MANIFEST).read_text().splitlines()) == 152
    with OutputFolder(tmp_path, "tool").sole_writer():
        pass
    assert len((tmp_path / MANIFEST).read_text().splitlines()) == 2
    view = OutputFolder(tmp_path, "tool")
    assert view.complete([result], "origin 149") and not view.complete([result], "origin 148")
    assert not OutputFolder(tmp_path, "another tool").owns(result)  # its writer kept
    reserved.write_bytes(b"put there since")
    with pytest.raises(HDRUNetError, match=r"b\.png: its name was reserved by a run"):
        view.claim([reserved])  # still reserved, never recorded written


def test_an_input_that_is_a_link_to_a_result_is_named_as_an_input(tiny_checkpoint, tmp_path):
    """An input linked to a result of the output folder is refused as the run's input; it
    was said not to be hdrunet-predict's file (or changed since), which it was, unchanged."""
    for folder in ("A", "B"):
        (tmp_path / folder).mkdir()
    cv2.imwrite(str(tmp_path / "A" / "r.png"), np.full((6, 8, 3), 100, np.uint8))
    out = tmp_path / "out"
    ok(run_tool("hdrunet-predict", [f"ckpt={tiny_checkpoint}", "input=A", "output=out"], tmp_path))
    made = (out / "r.png").read_bytes()
    (tmp_path / "B" / "r.png").symlink_to(out / "r.png")
    args = [f"ckpt={tiny_checkpoint}", "input=B", "output=out", "overwrite=true"]
    result = run_tool("hdrunet-predict", args, tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"out/r.png: is one of this run's inputs ({out / 'r.png'})" in result.stdout
    assert "was not written by" not in result.stdout + result.stderr
    assert (out / "r.png").read_bytes() == made


def test_an_overlap_below_the_receptive_field_is_said_at_start(caplog):
    """Tiles that overlap less than the receptive field stitch with seams: said once, at
    start, where tiling can happen (not with tile=0, nor at the default overlap)."""
    net = random_net(8)
    x = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    with caplog.at_level(logging.WARNING, logger="hdrunet_pl.inference"):
        seamed = Predictor(net, precision="32", tile=32, overlap=8)
        assert "overlap=8 is below the 224 pixels" in caplog.text
        # what it warns of: the tiles' result is not the whole image's
        assert (seamed(x) - Predictor(net, precision="32", tile=0)(x)).abs().max() > 1e-4
        caplog.clear()
        Predictor(net, precision="32", tile=0, overlap=8)
        Predictor(net, precision="32", tile=512)
        assert "is below the" not in caplog.text


def test_eval_scores_hdr_files_named_like_previews(tmp_path):
    """Only predict's previews (8-bit PNGs without an align ratio) are no results: an EXR
    named ``cam_preview.exr`` is an image like any other, as GT and as result (it was left
    out of both in silence, the mean then scored one image of two)."""
    from hdrunet_pl.evaluate import folder_samples
    from hdrunet_pl.io import write_exr

    rng = np.random.default_rng(0)
    for name in ("a", "cam_preview"):
        gt = rng.uniform(0.05, 1.0, (12, 16, 3)).astype(np.float32)
        write_exr(tmp_path / "gt" / f"{name}.exr", gt)
        write_exr(tmp_path / "pred" / f"{name}.exr", gt * 1.01)
    predictor = Predictor(random_net(8), precision="32")
    write_ldr(tmp_path / "photos" / "b.png", rng.uniform(0, 1, (12, 16, 3)).astype(np.float32))
    predict_files(predictor, list_inputs(tmp_path / "photos"), tmp_path / "pred", "png", True)
    write_hdr_png(tmp_path / "gt" / "b.png", rng.uniform(0.05, 1.0, (12, 16, 3)).astype(np.float32))
    assert (tmp_path / "pred" / "b_preview.png").is_file()  # an 8-bit preview: no result
    samples = folder_samples(str(tmp_path / "pred"), str(tmp_path / "gt"), None)
    assert sorted(s.name for s in samples.items) == ["a", "b", "cam_preview"]


@pytest.mark.parametrize("separator", ["\u0085", "\u2028", "\u2029"])
def test_names_with_unicode_line_separators_keep_their_records(tmp_path, separator):
    """A photo named with a character that ``str.splitlines`` breaks at (NEL, LINE and
    PARAGRAPH SEPARATOR) split its manifest line in two: the record of another photo's
    result was then read wrong, and every rerun failed on a file "not written by"
    hdrunet-predict."""
    predictor = Predictor(random_net(8), precision="32")
    for name in ("plain.png", f"q{separator}plain.png"):
        write_ldr(tmp_path / "in" / name, np.full((12, 16, 3), 0.4, np.float32))
    inputs = list_inputs(tmp_path / "in")
    first = predict_files(predictor, inputs, tmp_path / "out", "png")
    assert len(first.written) == 2 and not first.failed
    again = predict_files(predictor, inputs, tmp_path / "out", "png")
    assert len(again.skipped) == 2 and not again.failed


def test_eval_refuses_swapped_result_and_gt_folders(tmp_path):
    """NTIRE ground truth given as the results and results as the GT was scored (PSNR-mu
    normalises by the GT, so the swapped order scores otherwise, with nothing said)."""
    from hdrunet_pl.evaluate import folder_samples

    rng = np.random.default_rng(1)
    for i in range(2):
        gt = rng.uniform(0.05, 1.0, (12, 16, 3)).astype(np.float32)
        write_hdr_png(tmp_path / "gt" / f"{i:04d}_gt.png", gt)
        write_hdr_png(tmp_path / "pred" / f"{i:04d}.png", gt * 0.9)
    assert len(list(folder_samples(str(tmp_path / "pred"), str(tmp_path / "gt"), None).items)) == 2
    with pytest.raises(
        HDRUNetError, match=r"holds NTIRE ground truth .* the two folders are swapped"
    ):
        folder_samples(str(tmp_path / "gt"), str(tmp_path / "pred"), None)


def test_eval_refuses_an_image_named_like_the_row_of_means(tmp_path):
    """``mean.exr`` made a second ``mean`` row in scores.csv: a script reading the means
    by name could get that image's scores. Refused, nothing written."""
    from hdrunet_pl.evaluate import Sample, Samples, evaluate, folder_samples
    from hdrunet_pl.io import write_exr

    gt = np.random.default_rng(2).uniform(0.05, 1.0, (12, 16, 3)).astype(np.float32)
    for name in ("a", "mean"):
        write_exr(tmp_path / "gt" / f"{name}.exr", gt)
        write_exr(tmp_path / "pred" / f"{name}.exr", gt * 1.01)
    with pytest.raises(HDRUNetError, match=r"an image named 'mean' would look like scores\.csv"):
        folder_samples(str(tmp_path / "pred"), str(tmp_path / "gt"), None)  # before scoring
    pair = (torch.full((3, 4, 4), 0.5), torch.full((3, 4, 4), 0.6), None)
    samples = Samples(2, iter([Sample("a", *pair), Sample("mean", *pair)]))
    with pytest.raises(HDRUNetError, match=r"an image named 'mean' would look like scores\.csv"):
        evaluate(samples, tmp_path / "out", metrics=["psnr_mu"])  # a data set's, as scored
    assert not (tmp_path / "out" / "scores.csv").exists()
    (tmp_path / "gt" / "mean.exr").rename(tmp_path / "gt" / "mean_of_day.exr")
    (tmp_path / "pred" / "mean.exr").rename(tmp_path / "pred" / "mean_of_day.exr")
    samples = folder_samples(str(tmp_path / "pred"), str(tmp_path / "gt"), None)
    evaluate(samples, tmp_path / "out", metrics=["psnr_mu"])
    rows = list(csv.reader((tmp_path / "out" / "scores.csv").open()))
    assert [row[0] for row in rows] == ["name", "a", "mean_of_day", "mean"]
