"""NTIRE pairs: exact values, aligned augmented crops, and a clear error for every bad input."""

import logging

import cv2
import numpy as np
import pytest
import torch

from hdrunet_pl import load_model
from hdrunet_pl.data import NTIREDataModule, NTIREDataset, find_ntire_pairs
from hdrunet_pl.errors import DatasetError, ImageFileError
from hdrunet_pl.train import train

from .ntire_files import random_hdr, write_ntire_frame
from .organisers import organisers_val_scores
from .support import FAST, compose_train


@pytest.fixture
def ntire_root(tmp_path):
    root = tmp_path / "ntire"
    expected = {}
    for i in range(4):
        name = f"{i:04d}"
        expected[name] = write_ntire_frame(root, name, random_hdr(40 + 4 * i, 52, seed=i))
    return root, expected


def test_dataset_returns_exactly_the_organisers_values(ntire_root):
    root, expected = ntire_root
    dataset = NTIREDataset(find_ntire_pairs(root))
    assert [p.name for p in dataset.pairs] == sorted(expected)
    for item in dataset:
        hdr, gt16, _ = expected[item["name"]]
        assert item["hdr"].dtype == torch.float32 and item["hdr"].shape == (3, *hdr.shape[:2])
        np.testing.assert_allclose(item["hdr"].permute(1, 2, 0).numpy(), hdr, rtol=0, atol=1e-6)
        ldr = np.round(item["ldr"].permute(1, 2, 0).numpy() * 255)
        np.testing.assert_array_equal(ldr, gt16 >> 8)  # RGB order kept for both files


def test_datamodule_crops_stay_aligned_after_augmentation(ntire_root):
    root, expected = ntire_root
    dm = NTIREDataModule(str(root), val_count=1, patch_size=32, batch_size=4, num_workers=0)
    pixels = 0
    for _ in range(5):
        batch = next(iter(dm.train_dataloader()))
        assert batch["ldr"].shape == batch["hdr"].shape == (4, 3, 32, 32)
        for ldr, hdr, name in zip(batch["ldr"], batch["hdr"], batch["name"], strict=True):
            ratio = float(expected[name][2])
            gt16 = torch.round(hdr * ratio)
            assert torch.equal(torch.round(ldr * 255), torch.div(gt16, 256, rounding_mode="floor"))
            pixels += ldr.numel()
    assert pixels == 5 * 4 * 3 * 32 * 32
    val = list(dm.val_dataloader())
    assert len(val) == 1 and val[0]["name"] == ["0003"] and val[0]["hdr"].shape[-2:] == (52, 52)


def test_training_on_ntire_pairs(ntire_root, tmp_path):
    root, _ = ntire_root
    cfg = compose_train(
        [
            *FAST,
            "data=ntire2021",
            f"data.root={root}",
            "data.val_count=1",
            f"paths.output_dir={tmp_path / 'run'}",
        ]
    )
    summary = train(cfg)
    assert summary.steps == 4
    net = load_model(summary.last_checkpoint).eval()
    scores = (summary.psnr_mu_identity, summary.psnr_l_identity)
    assert scores == pytest.approx(organisers_val_scores(cfg), abs=1e-3)
    scores = (summary.psnr_mu_after, summary.psnr_l_after)
    assert scores == pytest.approx(organisers_val_scores(cfg, net), abs=1e-3)


def test_empty_or_missing_folder(tmp_path):
    with pytest.raises(DatasetError, match="no NTIRE pairs"):
        find_ntire_pairs(tmp_path)
    with pytest.raises(DatasetError, match="no such folder"):
        find_ntire_pairs(tmp_path / "nope")


def test_missing_partners_are_all_listed(ntire_root):
    root, _ = ntire_root
    (root / "0000_gt.png").unlink()
    (root / "0001_medium.png").unlink()
    (root / "0002_alignratio.npy").unlink()
    with pytest.raises(DatasetError) as err:
        find_ntire_pairs(root)
    text = str(err.value)
    assert "3 problem(s)" in text
    assert "0000_medium.png: LDR without its GT partner 0000_gt.png" in text
    assert "0001_gt.png: GT without its LDR partner 0001_medium.png" in text
    assert "0002_gt.png: no align ratio file 0002_alignratio.npy" in text


@pytest.mark.parametrize(
    ("break_it", "message"),
    [
        (lambda r: np.save(r / "0001_alignratio.npy", np.float32(0)), "finite and > 0"),
        (lambda r: np.save(r / "0001_alignratio.npy", np.float32(np.inf)), "finite and > 0"),
        (
            lambda r: cv2.imwrite(str(r / "0001_gt.png"), np.zeros((44, 52, 3), np.uint8)),
            "0001_gt.png: 8-bit GT; the HDR needs a 16-bit PNG",
        ),
        (
            lambda r: cv2.imwrite(str(r / "0001_medium.png"), np.zeros((40, 52, 3), np.uint8)),
            "0001_medium.png: LDR is 40x52 but its GT is 44x52",
        ),
        (lambda r: (r / "0001_gt.png").write_bytes(b"garbage"), "0001_gt.png: not a PNG file"),
    ],
)
def test_bad_pairs_stop_the_run_at_start_up(ntire_root, break_it, message):
    root, _ = ntire_root
    break_it(root)
    with pytest.raises(DatasetError, match=message):
        NTIREDataModule(str(root), val_count=1, patch_size=32, num_workers=0)


def test_images_smaller_than_the_patch(ntire_root):
    root, _ = ntire_root
    with pytest.raises(DatasetError, match=r"40x52 is smaller than the 48x48 patch"):
        NTIREDataModule(str(root), val_count=1, patch_size=48, num_workers=0)


def test_truncated_png_is_named_when_read(ntire_root):
    root, _ = ntire_root
    data = (root / "0002_gt.png").read_bytes()
    (root / "0002_gt.png").write_bytes(data[: len(data) // 2])  # header intact
    dataset = NTIREDataset(find_ntire_pairs(root))
    with pytest.raises(ImageFileError, match=r"0002_gt\.png: unreadable, truncated"):
        dataset[2]


def test_grayscale_ldr_is_converted_and_said(ntire_root, caplog):
    root, _ = ntire_root
    cv2.imwrite(str(root / "0000_medium.png"), np.full((40, 52), 7, np.uint8))
    with caplog.at_level(logging.WARNING):
        item = NTIREDataset(find_ntire_pairs(root))[0]
    assert item["ldr"].shape == (3, 40, 52)
    assert "0000_medium.png: grayscale image, converted to RGB" in caplog.text


def test_public_code_folder_split_is_found(ntire_root):
    root, _ = ntire_root
    for kind in ("medium", "gt", "alignratio"):
        (root / kind).mkdir()
        for path in root.glob(f"*_{kind}.*"):
            path.rename(root / kind / path.name)
    assert len(find_ntire_pairs(root)) == 4


def test_an_exif_orientation_never_turns_one_half_of_a_pair(tmp_path):
    """NTIRE pairs are aligned pixel for pixel as stored: an orientation tag in the LDR (the
    16-bit GT is read as stored) must not turn the LDR alone."""
    from PIL import Image

    hdr = np.full((32, 32, 3), 0.1, np.float32)
    hdr[:8, :8] = 4.0  # a bright top-left corner in both files
    write_ntire_frame(tmp_path, "0001", hdr)
    ldr_path = tmp_path / "0001_medium.png"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees to view"
    Image.open(ldr_path).save(ldr_path, exif=exif.tobytes())
    item = NTIREDataset(find_ntire_pairs(tmp_path))[0]
    bright = (item["ldr"].mean(0) > 0.5).nonzero().float().mean(0)
    assert bright.tolist() == pytest.approx((item["hdr"].mean(0) > 1).nonzero().float().mean(0))
    assert bright.tolist() == [3.5, 3.5]


def test_predict_reads_an_ntire_input_as_stored_and_turns_a_photo_upright(tmp_path):
    """``hdrunet-predict``'s result of ``NNNN_medium.png`` must line up with ``NNNN_gt.png``
    (an orientation tag turned it against its GT, and eval scored it without a word); a
    photo, the same file under another name, is turned as photo viewers turn it."""
    from PIL import Image

    from hdrunet_pl.inference import Predictor
    from hdrunet_pl.io import read_hdr_png
    from hdrunet_pl.predict import predict_files

    ldr = np.full((16, 24, 3), 60, np.uint8)
    ldr[:4, :4] = 250  # a bright top-left corner, as stored
    exif = Image.Exif()
    exif[0x0112] = 3  # "rotate 180 degrees to view"
    inputs = [tmp_path / "in" / "0001_medium.png", tmp_path / "in" / "photo.png"]
    inputs[0].parent.mkdir()
    for path in inputs:
        Image.fromarray(ldr).save(path, exif=exif.tobytes())
    identity = torch.nn.Identity()  # the result is the LDR as the tool read it
    report = predict_files(Predictor(identity, "cpu", 32), inputs, tmp_path / "out")
    assert len(report.written) == 2
    for name, corner in (("0001", (slice(0, 4), slice(0, 4))), ("photo", (slice(-4, None),) * 2)):
        result = read_hdr_png(tmp_path / "out" / f"{name}.png")
        assert result.shape == ldr.shape, name
        bright = result.mean(-1) > 0.8
        assert bright[corner].all() and bright.sum() == 16, name
