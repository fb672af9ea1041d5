"""Speed paths keep quality: bf16 vs fp32 inference and training; the benchmark runs."""

import json

import torch

from hdrunet_pl import HDRUNet
from hdrunet_pl.data import SyntheticHDRDataset
from hdrunet_pl.inference import Predictor
from hdrunet_pl.metrics import psnr_mu
from hdrunet_pl.runtime import keep_freed_memory
from hdrunet_pl.train import train

from .conftest import FAST, compose_train, run_tool


def test_bf16_inference_scores_within_0_05_db_of_fp32():
    torch.manual_seed(0)
    net = HDRUNet(nf=16)
    fp32 = Predictor(net, precision="32")
    bf16 = Predictor(net, precision="bf16")
    for item in SyntheticHDRDataset(4, 96, 128, seed=1):
        score32 = psnr_mu(fp32(item["ldr"]).clamp_min(0), item["hdr"])
        score16 = psnr_mu(bf16(item["ldr"]).clamp_min(0), item["hdr"])
        assert abs(float(score32 - score16)) < 0.05, (float(score32), float(score16))


def test_bf16_training_reaches_fp32_quality_within_0_1_db(tmp_path):
    scores = {}
    for precision in ("32-true", "bf16-mixed"):
        cfg = compose_train(
            [
                *FAST,
                "model.net.nf=16",
                "data.patch_size=48",
                "data.batch_size=4",
                "trainer.max_steps=150",
                "trainer.val_check_interval=150",
                f"trainer.precision={precision}",
                "data.val_set.num_images=4",
                "data.val_set.height=64",
                "data.val_set.width=96",
                f"paths.output_dir={tmp_path / precision}",
            ]
        )
        scores[precision] = train(cfg).psnr_mu_after
    print(scores)
    assert scores["32-true"] > 20  # it learned something
    assert abs(scores["32-true"] - scores["bf16-mixed"]) < 0.1, scores


def test_allocator_tuning_takes_effect_on_linux():
    assert keep_freed_memory() is True


def test_bench_runs_and_writes_its_table(tmp_path):
    args = [
        "--tasks",
        "train",
        "infer",
        "--batch-size",
        "1",
        "--patch",
        "32",
        "--size",
        "48",
        "64",
        "--warmup",
        "1",
        "--repeats",
        "1",
        "--json",
        str(tmp_path / "bench.json"),
    ]
    result = run_tool("hdrunet-bench", args, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "bench.json").read_text())
    paths = [
        (r["task"].split(",")[0].split(" ")[0], r["path"].split(" ")[0]) for r in report["rows"]
    ]
    assert paths == [
        ("train", "package"),
        ("train", "eager"),
        ("inference", "package"),
        ("inference", "eager"),
    ]
    for row in report["rows"]:
        assert row["seconds"] > 0 and row["gflops"] > 0 and row["share_of_peak"] > 0
    assert 300e3 < report["info"]["macs_per_pixel"] < 400e3  # ~355 k MAC per pixel
    assert "speed-up vs eager" in result.stdout and "data wait" in result.stdout
