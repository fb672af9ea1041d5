"""hdrunet-prepare: the public sub-image rule, resumable crops, litdata shards; other sources."""

import os
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from hdrunet_pl import load_model
from hdrunet_pl.data import NTIREDataset, find_ntire_pairs
from hdrunet_pl.prepare import crop_boxes, crop_positions
from hdrunet_pl.train import train

from .ntire_files import random_hdr, write_ntire_frame
from .organisers import organisers_val_scores
from .support import FAST, TOOL_PYTHONPATH, compose_config, compose_train, noise, run_tool


def public_rule(size, crop=480, step=240, thres=48):
    """The public code's rule, restated: np.arange starts plus a shifted last crop."""
    space = np.arange(0, size - crop + 1, step)
    if size - (space[-1] + crop) > thres:
        space = np.append(space, size - crop)
    return space.tolist()


@pytest.mark.parametrize("size", [480, 500, 528, 529, 719, 720, 1060, 1900, 2000])
def test_crop_positions_follow_the_public_rule(size):
    assert crop_positions(size) == public_rule(size)


def test_crop_positions_by_hand():
    assert crop_positions(1060) == [0, 240, 480, 580]  # 100 px left > 48: shifted last crop
    assert crop_positions(1900) == [0, 240, 480, 720, 960, 1200, 1420]
    assert crop_positions(528) == [0]  # exactly 48 left: no extra crop
    assert crop_positions(479) == []
    assert len(crop_boxes(1060, 1900)) == 28  # a challenge frame gives 4 x 7 sub-images


def test_crop_cli_cuts_consistent_sub_images_and_resumes(tmp_path):
    frames = {"0000": (70, 90), "0001": (64, 113)}
    src = tmp_path / "frames"
    values = {
        n: write_ntire_frame(src, n, random_hdr(h, w, seed=i))
        for i, (n, (h, w)) in enumerate(frames.items())
    }
    out = tmp_path / "sub"
    args = [
        "crop",
        "--input",
        str(src),
        "--output",
        str(out),
        "--crop",
        "32",
        "--step",
        "16",
        "--threshold",
        "6",
    ]
    result = run_tool("hdrunet-prepare", args, tmp_path)
    assert result.returncode == 0, result.stderr
    expected = {n: crop_boxes(h, w, 32, 16, 6) for n, (h, w) in frames.items()}
    total = sum(len(b) for b in expected.values())
    assert expected["0000"] == [(t, x) for t in (0, 16, 32) for x in (0, 16, 32, 48, 58)]
    assert f"{total} sub-images written, 0 already there" in result.stdout
    pairs = find_ntire_pairs(out)
    assert len(pairs) == total
    dataset = NTIREDataset(pairs)
    for index, pair in enumerate(pairs):
        frame, sub = pair.name.split("_s")
        top, left = expected[frame][int(sub) - 1]
        hdr = dataset[index]["hdr"].permute(1, 2, 0).numpy()
        np.testing.assert_array_equal(hdr, values[frame][0][top : top + 32, left : left + 32])
    assert not list(out.glob(".*tmp*"))  # no temporary files left behind
    (out / "0001_s002_medium.png").unlink()
    again = run_tool("hdrunet-prepare", args, tmp_path)
    assert f"1 sub-images written, {total - 1} already there" in again.stdout
    # a frame changed in place (smaller): its sub-images are cut again, the extra ones go
    new_frame = write_ntire_frame(src, "0001", random_hdr(40, 50, seed=9))[0]
    fewer = crop_boxes(40, 50, 32, 16, 6)
    changed = run_tool("hdrunet-prepare", args, tmp_path)
    assert f"{len(fewer)} sub-images written, {len(expected['0000'])} already" in changed.stdout
    cut = sorted(p.name for p in out.glob("0001_s*"))
    assert cut == sorted(
        f"0001_s{i:03d}{end}"
        for i in range(1, len(fewer) + 1)
        for end in ("_medium.png", "_gt.png", "_alignratio.npy")
    )
    (top, left), sub = fewer[-1], find_ntire_pairs(out)[-1]
    assert sub.name == f"0001_s{len(fewer):03d}"
    hdr = NTIREDataset([sub])[0]["hdr"].permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(hdr, new_frame[top : top + 32, left : left + 32])
    # other settings into the same folder: its sub-images would be kept as done, cut wrong
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    other = run_tool("hdrunet-prepare", [*args[:-4], "--step", "8", *args[-2:]], tmp_path)
    assert other.returncode != 0
    assert "holds sub-images cut with --crop 32 --step 16 --threshold 6 --input " in other.stderr
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    # the same settings from another data set: its frames would be kept as this one's
    moved = src.rename(tmp_path / "other")
    elsewhere = run_tool(
        "hdrunet-prepare", [a if a != str(src) else str(moved) for a in args], tmp_path
    )
    assert elsewhere.returncode != 0 and f"--input {src}" in elsewhere.stderr
    # sub-images cut before the settings were recorded: which settings is unknown
    (out / ".hdrunet-crop.json").unlink()
    unknown = run_tool(
        "hdrunet-prepare", [a if a != str(src) else str(moved) for a in args], tmp_path
    )
    assert "cut before their settings were recorded" in unknown.stderr


def test_crop_cli_reports_bad_input_in_one_line(tmp_path):
    result = run_tool(
        "hdrunet-prepare",
        ["crop", "--input", str(tmp_path / "none"), "--output", str(tmp_path / "o")],
        tmp_path,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"hdrunet-prepare: error: {tmp_path / 'none'}: no such folder (set --input to the "
        "NTIRE data)"
    )  # the option of this tool, not hdrunet-train's data.root


def test_crop_refuses_pngs_that_declare_too_many_pixels_before_decoding(tmp_path):
    """A few MB of compressed rows can declare gigabytes of pixels: the PNG header is
    checked against MAX_PIXELS before any pixel is decoded (here the data do not even
    match the header: a decoder would fail, later and after allocating)."""
    import struct

    from hdrunet_pl.io import MAX_PIXELS

    src = tmp_path / "frames"
    write_ntire_frame(src, "0000", random_hdr(40, 48, seed=0))
    side = int(MAX_PIXELS**0.5) + 1
    for name in ("0000_gt.png", "0000_medium.png"):
        path = src / name
        data = bytearray(path.read_bytes())
        data[16:24] = struct.pack(">II", side, side)  # IHDR width, height
        path.write_bytes(bytes(data))
    result = run_tool(
        "hdrunet-prepare", ["crop", "--input", str(src), "--output", str(tmp_path / "o")], tmp_path
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.startswith(f"hdrunet-prepare: error: {src}: 1 problem(s):")
    assert f"{side}x{side} pixels is more than an image file may have here" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").glob("*.png"))


def test_stream_shards_train_a_few_steps(tmp_path, monkeypatch):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))  # what the tool leaves in its temp folder
    # the scratch folders of a killed run (its process gone) and of a live one (this test)
    (scratch / "hdrunet-prepare-999999999-dead" / "chunks").mkdir(parents=True)
    live = scratch / f"hdrunet-prepare-{os.getpid()}-live"
    live.mkdir()
    src = tmp_path / "frames"
    for i in range(6):
        write_ntire_frame(src, f"{i:04d}", random_hdr(36, 40, seed=i))
    shards = tmp_path / "shards"
    result = run_tool(
        "hdrunet-prepare",
        [
            "stream",
            "--input",
            str(src),
            "--output",
            str(shards),
            "--val-count",
            "2",
            "--workers",
            "1",
            "--chunk-bytes",
            "20000",  # a plain byte count (litdata's own parser took units only)
        ],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "4 train pairs, 2 val pairs" in result.stdout
    assert len(list((shards / "train").glob("chunk-*.bin"))) >= 2  # 4 pairs of ~13 kB each
    # a progress bar that knows its total, no third-party noise, nothing left in TMPDIR
    assert re.search(r"stream: 100%.*6/6", result.stderr), result.stderr[-2000:]
    offending = noise(result, tmp_path)
    assert not offending, "\n".join(offending)
    # torch keeps its compile cache (torchinductor_<user>) in the temp folder by design;
    # the killed run's scratch folder is gone, the live run's kept
    left = [p for p in scratch.iterdir() if not p.name.startswith("torchinductor_")]
    assert left == [live]
    assert (shards / "train" / "index.json").is_file() and (shards / "val" / "index.json").is_file()
    cfg = compose_train(
        [
            *FAST,
            "data=stream",
            f"data.input_dir={shards}",
            f"data.cache_dir={tmp_path / 'cache'}",
            f"paths.output_dir={tmp_path / 'run'}",
        ]
    )
    summary = train(cfg)
    assert summary.steps == 4
    net = load_model(summary.last_checkpoint).eval()
    scores = (summary.psnr_mu_after, summary.psnr_l_after)
    assert scores == pytest.approx(organisers_val_scores(cfg, net), abs=1e-3)
    # hdrunet-eval ckpt=... data=stream data.input_dir=...: the val shards' pairs, scored
    from hdrunet_pl import evaluate

    eval_cfg = compose_config(
        "eval",
        [
            f"ckpt={summary.last_checkpoint}",
            "precision=32",
            "data=stream",
            f"data.input_dir={shards}",
            f"data.cache_dir={tmp_path / 'cache'}",
            "data.num_workers=0",
            f"output={tmp_path / 'eval'}",
            "metrics=[psnr_mu,psnr_l]",
        ],
    )
    evaluated = evaluate.run(eval_cfg)
    assert sorted(s.name for s in evaluated) == ["0004", "0005"]  # the last two: val
    means = [sum(getattr(s, k) for s in evaluated) / 2 for k in ("psnr_mu", "psnr_l")]
    assert means == pytest.approx(scores, abs=1e-3)  # the scores of training's validation


def test_a_new_split_without_val_pairs_removes_the_earlier_val_shards(tmp_path):
    """`--val-count 0` after `--val-count 1` into the same folder: the earlier val/ (whose
    pair is now in train/) must go, or data=stream validates on a training pair."""
    from hdrunet_pl.prepare import run_stream

    src = tmp_path / "frames"
    for i in range(3):
        write_ntire_frame(src, f"{i:04d}", random_hdr(20, 24, seed=i))
    shards = tmp_path / "shards"
    assert run_stream(str(src), str(shards), 1, "64KB", 1) == {"train": 2, "val": 1}
    assert (shards / "val" / "index.json").is_file()
    assert run_stream(str(src), str(shards), 0, "64KB", 1) == {"train": 3}
    assert sorted(p.name for p in shards.iterdir() if not p.name.startswith(".")) == ["train"]
    # data=stream validates on val/: such shards are named for what they are (the message
    # was "no index.json, not a shard folder (make one with hdrunet-prepare stream)")
    from hdrunet_pl.data.stream import StreamingDataModule
    from hdrunet_pl.errors import HDRUNetError

    with pytest.raises(HDRUNetError, match=r"training shards only \(written with --val-count 0"):
        StreamingDataModule(str(shards))


def test_stream_records_hold_the_exact_pair(tmp_path):
    from hdrunet_pl.data.stream import record_to_pair
    from hdrunet_pl.prepare import load_pair_record

    hdr, _, _ = write_ntire_frame(tmp_path, "0007", random_hdr(8, 12, seed=3))
    pair = find_ntire_pairs(tmp_path)[0]
    record = load_pair_record((pair.name, str(pair.ldr), str(pair.gt), str(pair.alignratio)))
    item = record_to_pair(record)
    np.testing.assert_allclose(item["hdr"].permute(1, 2, 0).numpy(), hdr, rtol=0, atol=1e-6)
    assert item["name"] == "0007"


def test_stream_records_read_every_ldr_kind_as_the_ntire_data_set_does(tmp_path):
    # 16-bit, RGBA, grey LDRs and a grey GT, as the pair check accepts them: each record
    # gives the same arrays as `ntire2021` (read_ldr / read_hdr_png), never codes / 255 of a
    # 16-bit file or a flipped grey image
    from hdrunet_pl.data.stream import record_to_pair
    from hdrunet_pl.prepare import load_pair_record

    rng = np.random.default_rng(0)
    ldrs = {
        "0000": rng.integers(0, 65536, (6, 9, 3), dtype=np.uint16),
        "0001": rng.integers(0, 256, (6, 9, 4), dtype=np.uint8),
        "0002": rng.integers(0, 256, (6, 9), dtype=np.uint8),
    }
    for name, ldr in ldrs.items():
        write_ntire_frame(tmp_path, name, random_hdr(6, 9, seed=int(name)), ldr=ldr)
    gt16 = cv2.imread(str(tmp_path / "0002_gt.png"), cv2.IMREAD_UNCHANGED)
    cv2.imwrite(str(tmp_path / "0002_gt.png"), gt16[..., 1])  # a grey GT
    dataset = NTIREDataset(find_ntire_pairs(tmp_path))
    for pair, expected in zip(find_ntire_pairs(tmp_path), dataset, strict=True):
        record = load_pair_record((pair.name, str(pair.ldr), str(pair.gt), str(pair.alignratio)))
        item = record_to_pair(record)
        assert item["ldr"].shape == (3, 6, 9), pair.name
        torch.testing.assert_close(item["ldr"], expected["ldr"], rtol=0, atol=0)
        torch.testing.assert_close(item["hdr"], expected["hdr"], rtol=0, atol=0)
    assert float(record_to_pair(load_pair_record(_args(tmp_path, "0000")))["ldr"].max()) <= 1


def test_crops_hold_the_ldr_as_training_reads_the_whole_frame(tmp_path):
    """Every LDR kind (16-bit, RGBA, grey, 8-bit in a Display P3 profile): a sub-image's LDR
    reads as the same window of the whole frame (the profile converted, not dropped)."""
    from PIL import Image

    from hdrunet_pl.prepare import run_crop

    from .icc import DISPLAY_P3, matrix_trc_profile

    rng = np.random.default_rng(1)
    ldrs = {
        "0000": rng.integers(0, 65536, (48, 48, 3), dtype=np.uint16),
        "0001": rng.integers(0, 256, (48, 48, 4), dtype=np.uint8),
        "0002": rng.integers(0, 256, (48, 48), dtype=np.uint8),
        "0003": rng.integers(0, 256, (48, 48, 3), dtype=np.uint8),
    }
    src = tmp_path / "frames"
    for name, ldr in ldrs.items():
        write_ntire_frame(src, name, random_hdr(48, 48, seed=int(name)), ldr=ldr)
    profile = matrix_trc_profile(DISPLAY_P3, 2.2, "Display P3 (test)")
    Image.fromarray(ldrs["0003"]).save(src / "0003_medium.png", icc_profile=profile)
    assert run_crop(str(src), str(tmp_path / "crops"), 32, 16, 0, 1)[0] == 16
    whole = {
        p.name: item
        for p, item in zip(find_ntire_pairs(src), NTIREDataset(find_ntire_pairs(src)), strict=True)
    }
    crops = find_ntire_pairs(tmp_path / "crops")
    boxes = crop_boxes(48, 48, 32, 16, 0)
    for pair, item in zip(crops, NTIREDataset(crops), strict=True):
        name, index = pair.name.split("_s")
        top, left = boxes[int(index) - 1]
        expected = whole[name]["ldr"][:, top : top + 32, left : left + 32]
        torch.testing.assert_close(item["ldr"], expected, rtol=0, atol=0, msg=pair.name)


def _args(folder, name):
    pair = next(p for p in find_ntire_pairs(folder) if p.name == name)
    return (pair.name, str(pair.ldr), str(pair.gt), str(pair.alignratio))


def test_hdr_folder_trains_on_real_photographs(poly_haven, tmp_path):
    root = tmp_path / "hdri"
    root.mkdir()
    for path in poly_haven[:3]:
        (root / path.name).symlink_to(path)
    cfg = compose_train(
        [
            *FAST,
            "data=hdr_folder",
            f"data.root={root}",
            "data.val_count=1",
            "data.rows=[0.25,0.75]",
            f"paths.output_dir={tmp_path / 'run'}",
        ]
    )
    summary = train(cfg)
    assert summary.steps == 4
    scores = (summary.psnr_mu_identity, summary.psnr_l_identity)
    assert scores == pytest.approx(organisers_val_scores(cfg), abs=1e-3)


def test_hdr_folder_checks_files_at_start_up(tmp_path):
    from hdrunet_pl.data import HDRFolderDataModule
    from hdrunet_pl.errors import DatasetError
    from hdrunet_pl.io import write_exr

    with pytest.raises(DatasetError, match="no HDR images"):
        HDRFolderDataModule(str(tmp_path))
    write_exr(tmp_path / "a.exr", np.ones((20, 30, 3), np.float32))
    write_exr(tmp_path / "b.exr", np.ones((40, 40, 3), np.float32))
    (tmp_path / "0.hdr").write_bytes(b"garbage")
    with pytest.raises(DatasetError) as err:
        HDRFolderDataModule(str(tmp_path), val_count=1, patch_size=32)
    assert "a.exr: 20x30 is smaller than the 32x32 patch" in str(err.value)
    assert "0.hdr: not a Radiance HDR file" in str(err.value)


def test_a_black_validation_image_is_refused_instead_of_scoring_nan(tmp_path):
    """PSNR-mu normalises by the ground truth's 99th percentile: a validation image that is
    black there would make every val/psnr_mu NaN; training crops may be black."""
    from hdrunet_pl.data.hdr_folder import HDRFolderDataset
    from hdrunet_pl.errors import DatasetError
    from hdrunet_pl.io import write_exr

    lit = np.random.default_rng(0).random((32, 32, 3)).astype(np.float32) + 0.1
    night = np.zeros((32, 32, 3), np.float32)
    night[:2, :2] = 50.0  # a few lights: black in 99.6% of the values
    write_exr(tmp_path / "lit.exr", lit)
    write_exr(tmp_path / "night.exr", night)
    files = [tmp_path / "lit.exr", tmp_path / "night.exr"]
    val = HDRFolderDataset(files, random_camera=False)
    assert val[0]["hdr"].amax() > 0
    with pytest.raises(DatasetError, match=r"night\.exr: the ground truth is black in 99%"):
        val[1]
    train_set = HDRFolderDataset(files, random_camera=True)
    assert torch.isfinite(train_set[(1, 7)]["hdr"]).all()


def test_crop_refuses_an_input_that_links_to_its_output(tmp_path):
    """A link in the input tree to the output folder: a second run would cut the first
    run's sub-images again (0001_s001_s001_...)."""
    from hdrunet_pl.errors import HDRUNetError
    from hdrunet_pl.prepare import run_crop

    src, out = tmp_path / "frames", tmp_path / "out"
    write_ntire_frame(src, "0001", random_hdr(48, 48, seed=0))
    assert run_crop(str(src), str(out), 32, 16, 0, 1)[0] == 4
    (src / "linkout").symlink_to(out, target_is_directory=True)
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(HDRUNetError, match=r"is inside --input .*linkout, a symbolic link\)"):
        run_crop(str(src), str(out), 32, 16, 0, 1)
    assert sorted(p.name for p in out.iterdir()) == before


@pytest.mark.parametrize("data", ["hdr_folder", "mixed"])
def test_training_reads_every_hdr_file_before_its_first_step(tmp_path, data):
    """A file with NaN values and a truncated one, whose headers are fine: refused at the
    start, both named at once, before any step (they were found when a sample drew them,
    possibly hours in); a black validation image too."""
    from hdrunet_pl.errors import DatasetError
    from hdrunet_pl.io import write_exr

    root = tmp_path / "photos"
    rng = np.random.default_rng(0)
    for name in ("a", "b", "c", "nan", "truncated"):  # headers all fine
        write_exr(root / f"{name}.exr", rng.random((40, 48, 3)).astype(np.float32) + 0.1)
    (root / "nan.exr").unlink()
    image = rng.random((40, 48, 3)).astype("<f4") + 0.1
    image[5, 7, 1] = np.nan  # a PFM: write_exr refuses to write NaN
    (root / "nan.pfm").write_bytes(b"PF\n48 40\n-1.0\n" + image[::-1].tobytes())
    whole = (root / "truncated.exr").read_bytes()
    (root / "truncated.exr").write_bytes(whole[: len(whole) // 2])
    night = np.zeros((40, 48, 3), np.float32)
    night[:2, :2] = 50.0
    write_exr(root / "zz_night.exr", night)  # the last file: held out for validation
    folder = (
        [f"data.root={root}", "data.val_count=1"]
        if data == "hdr_folder"
        else [f"data.folders.photos.root={root}", "data.folders.photos.val_count=1"]
    )
    cfg = compose_train([*FAST, f"data={data}", *folder, f"paths.output_dir={tmp_path / 'run'}"])
    with pytest.raises(DatasetError) as err:
        train(cfg)
    message = str(err.value)
    assert "nan.pfm: 1 NaN/Inf values" in message, message
    assert "truncated.exr: " in message, message
    assert "zz_night.exr: the ground truth is black" in message, message
    assert "a.exr" not in message and not (tmp_path / "run" / "checkpoints").exists()


def test_crop_stopped_by_ctrl_c_goes_on_when_run_again(tmp_path, monkeypatch, capsys):
    """Ctrl-C: the frames being cut finish (workers ignore it: one stopped between writing a
    file and recording it left a sub-image no run could replace), the tool says how far it
    got and exits 130; the same command then completes the set."""
    from hdrunet_pl import prepare

    src, out = tmp_path / "frames", tmp_path / "crops"
    for i in range(4):
        write_ntire_frame(src, f"{i:04d}", random_hdr(48, 48, seed=i))
    args = ["crop", "--input", str(src), "--output", str(out), "--crop", "16", "--step", "16"]
    real_tqdm = prepare.tqdm

    def ctrl_c_after_one_frame(iterable, **kwargs):
        for i, item in enumerate(real_tqdm(iterable, **kwargs)):
            if i == 1:
                raise KeyboardInterrupt
            yield item

    monkeypatch.setattr(prepare, "tqdm", ctrl_c_after_one_frame)
    assert prepare.main([*args, "--workers", "1"]) == 130
    # every frame finished by then is counted (they were cut while the pool stopped)
    done = len(find_ntire_pairs(out))
    assert f"interrupted: {done} sub-images written, 0 already there" in capsys.readouterr().err
    assert done >= 9 and done % 9 == 0  # whole frames: none cut short
    monkeypatch.setattr(prepare, "tqdm", real_tqdm)
    assert prepare.main([*args, "--workers", "2"]) == 0
    written, there = map(
        int,
        re.findall(r"(\d+) sub-images written, (\d+) already there", capsys.readouterr().out)[0],
    )
    assert (written, there) == (36 - done, done)
    assert len(find_ntire_pairs(out)) == 36
    assert not [p for p in out.iterdir() if ".tmp-" in p.name]
    # a temporary file of a killed run (its process gone) is removed by the next run
    (out / ".0000_s001_gt.tmp-999999999-x.png").write_bytes(b"half a file")
    assert prepare.main([*args, "--workers", "1"]) == 0
    assert not [p for p in out.iterdir() if ".tmp-" in p.name]


def test_crop_removes_the_sub_images_of_frames_gone_from_its_input(tmp_path, capsys):
    """A frame moved out of the input (to a validation folder, say): its sub-images were
    kept as done and trained on; now removed (this tool's, unchanged), the others kept."""
    from hdrunet_pl.prepare import run_crop

    src, out = tmp_path / "frames", tmp_path / "crops"
    for i in range(3):
        write_ntire_frame(src, f"{i:04d}", random_hdr(32, 32, seed=i))
    ratio = np.float64(65535 / 7.123456789012345)  # a float64 align ratio: copied as it is
    np.save(src / "0001_alignratio.npy", ratio)
    assert run_crop(str(src), str(out), 16, 16, 0, 1) == (12, 0)
    assert (out / "0001_s002_alignratio.npy").read_bytes() == (
        src / "0001_alignratio.npy"
    ).read_bytes()
    assert np.load(out / "0001_s002_alignratio.npy").dtype == np.float64
    (tmp_path / "val").mkdir()
    for path in src.glob("0002_*"):
        path.rename(tmp_path / "val" / path.name)
    assert run_crop(str(src), str(out), 16, 16, 0, 1) == (0, 8)
    assert sorted({p.name[:4] for p in out.glob("*_s*")}) == ["0000", "0001"]


def test_a_smaller_frame_removes_sub_images_numbered_10000_and_up(tmp_path, monkeypatch):
    """Sub-images of an earlier, larger version of a frame beyond the new cut's count are
    removed; those numbered from 10,000 on (a small --crop and --step) stayed and were
    trained on. The numbering starts at 9,990 here, so that a few crops reach five digits."""
    import functools
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    import hdrunet_pl.prepare as prepare
    from hdrunet_pl.prepare import run_crop

    numbered = prepare._sub_names
    monkeypatch.setattr(prepare, "_sub_names", lambda out, name, i: numbered(out, name, i + 9990))
    # the workers are forked, so that they number as patched (another test's litdata may
    # have made spawning the default)
    fork = functools.partial(ProcessPoolExecutor, mp_context=multiprocessing.get_context("fork"))
    monkeypatch.setattr(prepare, "ProcessPoolExecutor", fork)
    src, out = tmp_path / "frames", tmp_path / "crops"
    write_ntire_frame(src, "0001", random_hdr(12, 12, seed=1))
    assert run_crop(str(src), str(out), 4, 2, 0, 1) == (25, 0)  # s9991 ... s10015
    write_ntire_frame(src, "0001", random_hdr(8, 8, seed=2))  # the frame, replaced smaller
    assert run_crop(str(src), str(out), 4, 2, 0, 1) == (9, 0)  # s9991 ... s9999
    left = sorted(int(re.search(r"_s(\d+)_", p.name)[1]) for p in out.glob("*_medium.png"))
    assert left == list(range(9991, 10000))


def test_an_input_inside_the_crop_output_is_named_as_such(tmp_path):
    """It was refused as reaching the output "through a link", with no link there."""
    from hdrunet_pl.errors import HDRUNetError
    from hdrunet_pl.prepare import run_crop

    write_ntire_frame(tmp_path / "NTIRE" / "train", "0001", random_hdr(20, 20, seed=1))
    message = r"--input .*train lies inside the --output folder .*NTIRE: the sub-images would"
    with pytest.raises(HDRUNetError, match=message):
        run_crop(str(tmp_path / "NTIRE" / "train"), str(tmp_path / "NTIRE"), 8, 8, 0, 1)


def test_held_out_sub_images_take_their_whole_frame(tmp_path, caplog):
    """Sub-images of one frame overlap: --val-count / data.val_count never split a frame
    between training and validation (the last frame's other crops were trained on)."""
    from hdrunet_pl.data.ntire import NTIREPair, frame_of, split_pairs
    from hdrunet_pl.errors import DatasetError

    def pairs(*names):
        return [NTIREPair(n, tmp_path / n, tmp_path / n, tmp_path / n) for n in names]

    subs = pairs(*(f"{f:04d}_s{i:03d}" for f in range(3) for i in range(1, 10)))
    assert frame_of("0004_s007") == "0004" and frame_of("0004") == "0004"
    train, val = split_pairs(subs, 4)
    assert [p.name for p in val] == [f"0002_s{i:03d}" for i in range(1, 10)]
    assert len(train) == 18 and "data.val_count=4 holds out 9 pairs" in caplog.text
    caplog.clear()
    assert len(split_pairs(subs, 9)[1]) == 9 and not caplog.text  # a frame boundary: as asked
    assert [p.name for p in split_pairs(pairs("0000", "0001", "0002"), 1)[1]] == ["0002"]
    with pytest.raises(DatasetError, match="every pair is a sub-image of frame 0000"):
        split_pairs(subs[:9], 2)


def test_stream_stopped_by_ctrl_c_exits_130_and_goes_on_when_run_again(tmp_path):
    """litdata's own Ctrl-C handler ended the process with status 0, val/ missing, and its
    partial folder blocked every re-run; now: status 130, one line, and a re-run completes."""
    src, out = tmp_path / "frames", tmp_path / "shards"
    for i in range(12):
        write_ntire_frame(src, f"{i:04d}", random_hdr(64, 64, seed=i))
    interrupt = f"""
import os, signal, sys, threading, time
from pathlib import Path
from hdrunet_pl.prepare import main
def interrupt():
    while not Path({str(out)!r}, ".train.partial").exists():
        time.sleep(0.005)
    time.sleep(0.2)
    os.kill(os.getpid(), signal.SIGINT)
threading.Thread(target=interrupt, daemon=True).start()
sys.exit(main(sys.argv[1:]))
"""
    args = ["stream", "--input", str(src), "--output", str(out), "--val-count", "2"]
    result = run_tool("python", ["-c", interrupt, *args, "--workers", "1"], tmp_path)
    assert result.returncode == 130, result.stderr[-3000:]
    assert "hdrunet-prepare: interrupted; run the same command again" in result.stderr
    assert "Traceback" not in result.stderr and not (out / "val").exists()
    again = run_tool("hdrunet-prepare", [*args, "--workers", "1"], tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "10 train pairs, 2 val pairs" in again.stdout
    assert sorted(p.name for p in out.iterdir() if p.name != ".hdrunet-outputs") == ["train", "val"]


@pytest.mark.parametrize("stop_at", ["record", "rename"])
def test_crop_killed_while_writing_a_file_goes_on_when_run_again(tmp_path, monkeypatch, stop_at):
    """A file is recorded before it takes its name: a run killed on either side of that
    step leaves nothing a re-run must refuse (before, a file renamed into place but not yet
    recorded stopped every re-run until the user deleted it)."""
    from hdrunet_pl import outputs
    from hdrunet_pl.data import find_ntire_pairs as pairs_under
    from hdrunet_pl.prepare import crop_pair, run_crop

    src, out = tmp_path / "frames", tmp_path / "crops"
    write_ntire_frame(src, "0000", random_hdr(32, 32, seed=0))
    assert run_crop(str(src), str(out), 16, 16, 0, 1) == (4, 0)
    os.utime(src / "0000_gt.png", ns=(1, 1))  # the frame changed: every sub-image is cut again
    calls = []

    def killed(*args, **kwargs):
        calls.append(args)
        if len(calls) == 4:  # the second sub-image's GT
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    real = outputs.os.replace if stop_at == "rename" else outputs.OutputFolder.written
    if stop_at == "rename":
        monkeypatch.setattr(outputs.os, "replace", killed)
    else:
        monkeypatch.setattr(outputs.OutputFolder, "written", killed)
    with pytest.raises(KeyboardInterrupt):  # in this process: as a worker runs it
        crop_pair(pairs_under(src)[0], out, 16, 16, 0)
    monkeypatch.undo()
    assert run_crop(str(src), str(out), 16, 16, 0, 1) == (3, 1)  # no refusal
    assert len(find_ntire_pairs(out)) == 4


def test_crop_keeps_a_changed_sub_image_of_a_frame_gone_whole_and_names_it(tmp_path, caplog):
    from hdrunet_pl.prepare import run_crop

    src, out = tmp_path / "frames", tmp_path / "crops"
    for i in range(2):
        write_ntire_frame(src, f"{i:04d}", random_hdr(32, 32, seed=i))
    assert run_crop(str(src), str(out), 16, 16, 0, 1) == (8, 0)
    (out / "0001_s002_medium.png").write_bytes((out / "0001_s001_medium.png").read_bytes())
    for path in src.glob("0001_*"):
        path.unlink()
    assert run_crop(str(src), str(out), 16, 16, 0, 1) == (0, 4)
    left = sorted(p.name for p in out.glob("0001_*"))
    assert left == ["0001_s002_alignratio.npy", "0001_s002_gt.png", "0001_s002_medium.png"]
    assert "0001_s002: a sub-image of a frame no longer in --input, kept" in caplog.text
    assert len(find_ntire_pairs(out)) == 5  # whole triples only


def test_a_held_out_count_reaching_into_the_first_frame_names_the_largest(tmp_path):
    from hdrunet_pl.data.ntire import NTIREPair, split_pairs
    from hdrunet_pl.errors import DatasetError

    names = [f"{f:04d}_s{i:03d}" for f in range(3) for i in range(1, 10)]
    subs = [NTIREPair(n, tmp_path / n, tmp_path / n, tmp_path / n) for n in names]
    with pytest.raises(DatasetError, match=r"data.val_count=20 reaches into the first frame.*18"):
        split_pairs(subs, 20)
    assert len(split_pairs(subs, 18)[1]) == 18


def test_output_folder_lock_ends_with_its_run_not_with_forked_workers(tmp_path):
    """A worker forked while a run holds its output folder (crop's pool, the stream's
    manager) held a copy of the lock, and kept the folder locked after its parent was
    killed; workers now close it, and end with their parent."""
    import multiprocessing
    import subprocess
    import sys
    import time

    from hdrunet_pl.errors import HDRUNetError
    from hdrunet_pl.outputs import OutputFolder

    context = multiprocessing.get_context("fork")
    with OutputFolder(tmp_path, "run").sole_writer():
        worker = context.Process(target=time.sleep, args=(60,), daemon=True)
        worker.start()
    try:  # free once the worker has started (it closes its copy of the lock at once)
        for _ in range(100):
            try:
                with OutputFolder(tmp_path, "next run").sole_writer():
                    break
            except HDRUNetError:
                time.sleep(0.05)
        else:
            raise AssertionError("the forked worker kept the output folder locked")
    finally:
        worker.kill()
    script = (
        "import os, sys, time\n"
        "from hdrunet_pl.runtime import end_with_parent\n"
        "parent = os.getpid()\n"
        "child = os.fork()\n"
        "if child == 0:\n"
        "    null = os.open(os.devnull, os.O_WRONLY)\n"  # the parent's pipes: not kept open
        "    os.dup2(null, 1)\n"
        "    os.dup2(null, 2)\n"
        "    end_with_parent(parent)\n"
        "    time.sleep(60)\n"
        "    os._exit(0)\n"
        "print(child, flush=True)\n"
        "time.sleep(0.5)\n"
        "os._exit(0)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    child = int(done.stdout.split()[0])
    for _ in range(100):
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        os.kill(child, 9)
        raise AssertionError("the worker outlived its parent")


def test_a_crop_worker_killed_mid_run_is_one_line_and_a_rerun_goes_on(tmp_path):
    """A worker killed (the out-of-memory killer): one line and exit 2, not a
    BrokenProcessPool traceback; the same command then completes the set."""
    import subprocess
    import sys
    import time

    import psutil

    src, out = tmp_path / "frames", tmp_path / "crops"
    for i in range(12):
        write_ntire_frame(src, f"{i:04d}", random_hdr(96, 96, seed=i))
    args = ["crop", "--input", str(src), "--output", str(out), "--crop", "16", "--step", "8"]
    command = [str(Path(sys.executable).parent / "hdrunet-prepare"), *args, "--workers", "1"]
    env = {**os.environ, "PYTHONPATH": TOOL_PYTHONPATH}  # as run_tool runs the tools
    tool = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        for _ in range(400):  # the pool's worker, once it has cut something
            workers = [
                c
                for c in psutil.Process(tool.pid).children()
                if "resource_tracker" not in " ".join(c.cmdline())
            ]
            if workers and len(list(out.glob("*_medium.png"))) > 20:
                break
            time.sleep(0.025)
        workers[0].kill()
        _, stderr = tool.communicate(timeout=120)
    finally:
        tool.kill()
    assert tool.returncode == 2, stderr[-2000:]
    assert "hdrunet-prepare: error: a worker process ended abruptly" in stderr
    assert "Traceback" not in stderr
    again = run_tool("hdrunet-prepare", [*args, "--workers", "2"], tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert len(find_ntire_pairs(out)) == 12 * 121


def test_crop_starts_no_more_workers_than_cpus_and_frames(monkeypatch, tmp_path):
    """``--workers 100000`` (a typo) started over a thousand processes and cut nothing:
    the pool is capped at the CPUs and at the frames to cut."""
    from concurrent.futures import ProcessPoolExecutor

    from hdrunet_pl import prepare
    from hdrunet_pl.resolvers import available_cpus

    pools: list[int] = []

    def counting_pool(max_workers, **kwargs):
        pools.append(max_workers)
        return ProcessPoolExecutor(max_workers, **kwargs)

    monkeypatch.setattr(prepare, "ProcessPoolExecutor", counting_pool)
    src = tmp_path / "frames"
    for i in range(3):
        write_ntire_frame(src, f"{i:04d}", random_hdr(32, 32, seed=i))
    assert prepare.run_crop(str(src), str(tmp_path / "crops"), 32, 32, 0, 100_000)[0] == 3
    assert pools == [min(available_cpus(), 3)]


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["stream", "--chunk-bytes", "1e3"], "'1e3': give a number of bytes, plain (64000000)"),
        (["stream", "--chunk-bytes", "0"], "'0': a chunk holds at least 1 byte"),
        (["stream", "--workers", "-1"], "'-1': give a whole number, 1 or more"),
        (["crop", "--workers", "0"], "'0': give a whole number, 1 or more"),
    ],
)
def test_prepare_refuses_bad_counts_before_any_work(tmp_path, capsys, args, said):
    """A chunk size litdata cannot read stopped the stream in a traceback after its workers
    had started (a partial folder left); workers below 1 were taken in silence."""
    from hdrunet_pl.prepare import main

    command, *options = args
    paths = ["--input", str(tmp_path / "in"), "--output", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as stopped:
        main([command, *paths, *options])
    error = capsys.readouterr().err
    assert stopped.value.code == 2 and said in error and "Traceback" not in error
    assert not (tmp_path / "out").exists()
