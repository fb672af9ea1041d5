"""Speed paths keep quality: bf16 vs fp32 inference and training; the benchmark runs."""

import json
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from hdrunet_pl import HDRUNet
from hdrunet_pl.data import SyntheticHDRDataset
from hdrunet_pl.inference import Predictor, bf16_supported

from .support import FAST, compose_train, run_tool


def _conv_output_dtypes(net: torch.nn.Module) -> tuple[list[torch.dtype], list]:
    """Record the output dtype of every convolution of ``net`` (hooks to remove after)."""
    seen: list[torch.dtype] = []
    hooks = [
        m.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
        for m in net.modules()
        if isinstance(m, torch.nn.Conv2d)
    ]
    return seen, hooks


def test_bf16_inference_runs_bf16_kernels_within_2_percent_of_fp32():
    torch.manual_seed(0)
    net = HDRUNet(nf=16)
    with torch.no_grad():  # weights of a trained scale, not the near-zero init of the blocks
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    fp32 = Predictor(net, precision="32")
    bf16 = Predictor(net, precision="bf16")
    seen, hooks = _conv_output_dtypes(net)
    errors = []
    for item in SyntheticHDRDataset(3, 96, 128, seed=1):
        seen.clear()
        y16 = bf16(item["ldr"])
        assert seen and set(seen) == {torch.bfloat16}  # bf16 really ran, every convolution
        seen.clear()
        y32 = fp32(item["ldr"])
        assert set(seen) == {torch.float32}
        errors.append(float((y16 - y32).abs().mean() / y32.abs().mean()))
    for hook in hooks:
        hook.remove()
    # bf16 keeps 8 bits of mantissa: a small error, but never none (a silent fp32 fallback)
    assert all(1e-4 < e < 0.02 for e in errors), errors


def test_bf16_training_runs_bf16_kernels_and_follows_fp32(tmp_path):
    """bf16 autocast (the default trainer's precision where bf16 is fast) runs bf16
    convolutions in the forward pass, and the loss follows the fp32 one closely."""
    cfg = compose_train(
        [*FAST, "model.net.nf=16", "data.patch_size=48", f"paths.output_dir={tmp_path}"]
    )
    automatic = "bf16-mixed" if bf16_supported(torch.device("cpu")) else "32-true"
    plain = compose_train([f"paths.output_dir={tmp_path}"])
    assert plain.trainer.precision == automatic  # bf16 where it is fast
    losses = {}
    for precision in ("32-true", "bf16-mixed"):
        torch.manual_seed(0)
        module = instantiate(cfg.model)
        trainer = instantiate(cfg.trainer, precision=precision, logger=False, callbacks=[])
        datamodule = instantiate(cfg.data)
        batch = next(iter(torch.utils.data.DataLoader(datamodule.train_set, batch_size=4)))
        seen, hooks = _conv_output_dtypes(module.net)
        with trainer.precision_plugin.forward_context():
            pred = module(batch["ldr"])
            losses[precision] = float(module.loss(pred.float(), batch["hdr"]))
        for hook in hooks:
            hook.remove()
        want = torch.float32 if precision == "32-true" else torch.bfloat16
        assert set(seen) == {want}, (precision, set(seen))
    relative = abs(losses["bf16-mixed"] - losses["32-true"]) / losses["32-true"]
    assert 0 < relative < 0.01, losses


FAULTS_AFTER_REUSE = """
import ctypes, resource
from hdrunet_pl.runtime import keep_freed_memory, trim_heap

libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]

def faults_to_fill(n=2**31 + 2**27):  # 2.125 GiB, beyond any finite trim threshold (an int)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = libc.malloc(n)
    ctypes.memset(block, 1, n)  # touches every page
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    libc.free(block)
    return faults

assert keep_freed_memory() is True
faults_to_fill()
kept = faults_to_fill()  # the freed block is reused
trim_heap()  # returned to the system: the next one faults its pages in
fresh = faults_to_fill()
print(kept, fresh)
assert fresh > 1000 and kept < fresh / 20, (kept, fresh)
"""


def test_freed_memory_is_reused_even_beyond_2_gib():
    """keep_freed_memory(): a heap block larger than 2 GiB (a whole 1060x1900 frame's fp32
    activations are 4.6 GB), freed and allocated again, is not page-faulted in again (a
    finite trim threshold, at most 2 GiB, returned it to the system: every page faulted)."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", FAULTS_AFTER_REUSE], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]


def test_bench_runs_and_writes_its_table(tmp_path):
    args = [
        "--tasks",
        "train",
        "infer",
        "folder",
        "--frames",
        "2",
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
    progress = [line for line in result.stderr.splitlines() if line.startswith("hdrunet-bench: ")]
    assert progress[0].startswith("hdrunet-bench: conv peak") and len(progress) == 7, progress
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
    peak = report["info"]["conv_peak_gflops"]  # the best of the start and the end of the run
    assert peak > 0 and report["info"]["conv_train_peak_gflops"] > 0
    for row in report["rows"]:
        assert row["seconds"] > 0 and row["gflops"] > 0
        assert row["share_of_peak"] == pytest.approx(row["gflops"] / peak)
    assert 300e3 < report["info"]["macs_per_pixel"] < 400e3  # ~355 k MAC per pixel
    assert "speed-up vs eager" in result.stdout and "data wait" in result.stdout
    # each eager baseline ran alone, in a process of its own
    info = report["info"]
    assert len({info["pid"], info["eager_train_pid"], info["eager_infer_pid"]}) == 3
    phases = info["train_phases"]
    assert all(phases[k] > 0 for k in ("forward", "backward", "optimizer", "check", "render"))
    assert "phase by phase" in result.stdout
    # the step's convolutions alone, timed call by call: part of the step, and its bound
    assert phases["conv_forward"] > 0 and phases["conv_backward"] > 0
    assert phases["conv_share_of_step"] > 0 and "its convolutions alone" in result.stdout
    assert phases["conv_only_share_of_peak"] * peak == pytest.approx(phases["conv_only_gflops"])
    folder = report["folder"]
    assert folder["frames"] == 2 and folder["network"] > 0 and folder["encode"] > 0
    assert folder["pipeline_frames_per_s"] > 0 and "pipelined run" in result.stdout


def test_bench_times_every_metric():
    """``hdrunet-bench --tasks metrics``: seconds per image pair for each metric."""
    import torch

    from hdrunet_pl.bench import bench_metrics, build_parser, format_table
    from hdrunet_pl.metrics import METRICS

    assert "metrics" in build_parser().parse_args(["--tasks", "metrics"]).tasks
    scoring = bench_metrics(torch.device("cpu"), (48, 64), repeats=1)
    assert list(scoring["seconds"]) == list(METRICS)
    assert all(v > 0 for v in scoring["seconds"].values()) and scoring["size"] == [48, 64]
    info = {"device": "cpu", "threads": 1, "torch": "x", "macs_per_pixel": 1e5}
    info |= {"conv_peak_dtype": "float32", "conv_peak_gflops": 1.0, "conv_train_peak_gflops": 1.0}
    table = format_table({"info": info, "rows": [], "metrics": scoring})
    assert "scoring one 48x64 pair (s, cpu): psnr_mu " in table and "| task |" not in table


def test_memory_format_follows_the_trainer_precision(monkeypatch):
    """``channels_last="auto"`` (the default): channels_last weights and batches under 16-bit
    precision, and in fp32 where the device runs fp32 channels_last faster (AVX-512 CPUs),
    else NCHW; ``True``/``False`` are kept whatever the precision and device."""
    import lightning as L

    from hdrunet_pl import module as module_file
    from hdrunet_pl.module import HDRUNetModule

    channels_last, nchw = torch.channels_last, torch.contiguous_format
    for setting, precision, avx512, want in (
        ("auto", "bf16-mixed", False, channels_last),
        ("auto", "32-true", False, nchw),
        ("auto", "32-true", True, channels_last),
        (True, "32-true", False, channels_last),
        (False, "bf16-mixed", True, nchw),
        (False, "32-true", True, nchw),
    ):
        seen_devices: list[torch.device] = []

        def faster(device, avx512=avx512, seen=seen_devices):
            seen.append(device)
            return avx512

        monkeypatch.setattr(module_file, "fp32_channels_last_faster", faster)
        module = HDRUNetModule(HDRUNet(nf=8), channels_last=setting)
        module.trainer = L.Trainer(
            precision=precision, accelerator="cpu", logger=False, enable_progress_bar=False
        )
        module.setup("fit")
        conv = next(m for m in module.net.modules() if isinstance(m, torch.nn.Conv2d))
        inputs: list[torch.Tensor] = []
        hook = conv.register_forward_pre_hook(lambda _m, args, seen=inputs: seen.append(args[0]))
        module(torch.rand(1, 3, 16, 16))
        hook.remove()
        assert conv.weight.is_contiguous(memory_format=want), (setting, precision, avx512)
        assert len(inputs) == 1 and inputs[0].is_contiguous(memory_format=want)
        if setting == "auto" and precision == "32-true":
            assert seen_devices == [torch.device("cpu")]  # asked about the trainer's device


def test_fp32_channels_last_only_on_avx512_cpus(monkeypatch):
    """fp32 channels_last is chosen on CPUs whose kernels PyTorch runs with AVX-512, not on
    AVX2-only CPUs (NCHW was faster there), not on GPUs, not without oneDNN."""
    from hdrunet_pl.inference import fp32_channels_last_faster

    cpu = torch.device("cpu")
    for capability, want in (("AVX512", True), ("AVX2", False), ("DEFAULT", False)):
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda c=capability: c)
        assert fp32_channels_last_faster(cpu) is want, capability
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    assert fp32_channels_last_faster(torch.device("cuda", 0)) is False
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    assert fp32_channels_last_faster(cpu) is False


def test_bench_commands_cancels_start_up_and_runs_valid_commands(monkeypatch, tmp_path):
    """``hdrunet-bench --tasks commands``: the per-step and per-frame costs are the
    differences of two runs; the commands it runs compose as the tools would see them."""
    from hydra import compose, initialize_config_dir

    from hdrunet_pl import bench
    from hdrunet_pl.models.checkpoints import load_model

    from .support import CONF_DIR

    calls: list[list[str]] = []

    def fake_wall_seconds(command: list[str], cwd) -> float:
        """A start-up of 7 s, then 0.5 s a step or 3 s a frame; checks the inputs exist."""
        calls.append(command)
        args = dict(a.split("=", 1) for a in command if "=" in a)
        if "trainer.max_steps" in args:
            return 7.0 + 0.5 * int(args["trainer.max_steps"])
        assert isinstance(load_model(args["ckpt"]), HDRUNet)
        return 5.0 + 3.0 * len(list(Path(args["input"]).glob("*_medium.png")))

    monkeypatch.setattr(bench, "_wall_seconds", fake_wall_seconds)
    out = bench.bench_commands(torch.device("cpu"), 4, 160, (10, 60), (48, 64), frames=3)
    assert out["train_step"] == pytest.approx(0.5) and out["predict_frame"] == pytest.approx(3)
    assert out["train_run_seconds"] == [12.0, 37.0] and out["predict_run_seconds"] == [8, 14]
    bench.bench_commands(torch.device("cpu"), 4, 160, (10, 60), (48, 64), 3, compile=True)
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        for train, predict, compiled in ((calls[1], calls[3], False), (calls[5], calls[7], True)):
            overrides = [a for a in train if "=" in a and not a.startswith("hydra.")]
            cfg = compose(config_name="train", overrides=overrides)
            assert (cfg.data.batch_size, cfg.data.patch_size, cfg.trainer.max_steps) == (
                4,
                160,
                60,
            )
            assert cfg.trainer.limit_val_batches == 0 and cfg.validate_first is False
            assert cfg.model.compile is compiled
            cfg = compose(config_name="predict", overrides=[a for a in predict if "=" in a])
            assert cfg.device == "cpu" and cfg.input.endswith("many")
            assert cfg.compile is compiled
    for wrong in (["--frames", "1"], ["--steps", "60", "10"]):  # refused before any timing
        with pytest.raises(SystemExit) as refused:
            bench.main(["--tasks", "commands", *wrong])
        assert refused.value.code == 2
    with pytest.raises(ValueError, match="frames >= 2"):
        bench.bench_commands(torch.device("cpu"), 4, 160, (10, 60), (48, 64), frames=1)


def test_peak_memory_is_the_blocks_own_and_runs_no_sampler_beside_it():
    """The benchmark's CPU memory figure: the block's peak resident set above its start,
    read from the kernel's high-water mark (a 1 kHz sampling thread slowed a 2-core
    machine's training step by a quarter); 300 MB touched and freed inside the block."""
    import numpy as np

    from hdrunet_pl.bench import PeakMemory

    before = np.ones(100_000_000, np.uint8)  # a peak before the block does not count
    del before
    with PeakMemory(torch.device("cpu")) as memory:
        block = np.ones(300_000_000, np.uint8)
        del block
    assert memory._thread is None  # nothing ran beside the block
    assert 290e6 < memory.peak_bytes < 400e6


def test_conv_macs_counts_module_and_functional_convolutions():
    from torch import nn
    from torch.nn import functional as F

    from hdrunet_pl.bench import conv_macs

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)  # 8 * 3 * 9 MACs per pixel
            self.grouped = nn.Conv2d(8, 8, 1, groups=4)  # 8 * 2 per pixel
            self.weight = nn.Parameter(torch.rand(4, 8, 3, 3))  # 4 * 8 * 9 at 1/4 of them

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.grouped(self.conv(x))
            return F.conv2d(y, self.weight, stride=2, padding=1)

    h, w = 12, 20
    assert conv_macs(Net(), h, w) == h * w * (8 * 3 * 9 + 8 * 2) + (h // 2) * (w // 2) * 4 * 8 * 9


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--size", "0", "0"], "--size must be at least 4, got 0"),
        (["--size", "8", "8", "--repeats", "0"], "--repeats must be at least 1, got 0"),
        (["--warmup", "-1"], "--warmup must be at least 0, got -1"),
        (["--json", "{tmp}/no/such/folder/b.json"], "no folder {tmp}/no/such/folder"),
        (["--json", "{tmp}/mine.json"], "exists and is not an earlier hdrunet-bench report"),
        (["--json", "{tmp}/coco.json"], "exists and is not an earlier hdrunet-bench report"),
        (["--size", "100000", "100000"], "--size: at most 268,435,456 pixels"),
        (["--tasks", "train", "--patch", "6"], "--patch must be a multiple of 4"),
        (["--tasks", "commands", "--patch", "6"], "--patch must be a multiple of 4"),
        (["--patch", "20000"], "--batch-size x --patch: at most 268,435,456 pixels a batch"),
    ],
)
def test_bench_refuses_bad_arguments_before_measuring(tmp_path, capsys, monkeypatch, args, message):
    from hdrunet_pl import bench

    def measure(args):
        raise AssertionError("measured before the arguments were checked")

    monkeypatch.setattr(bench, "run", measure)
    (tmp_path / "mine.json").write_text('{"my": "numbers"}')
    (tmp_path / "coco.json").write_text('{"info": {"description": "COCO"}, "images": []}')
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--tasks", "infer", *(a.format(tmp=tmp_path) for a in args)])
    assert exit_info.value.code == 2
    assert message.format(tmp=tmp_path) in capsys.readouterr().err
    assert (tmp_path / "mine.json").read_text() == '{"my": "numbers"}'


@pytest.mark.parametrize("eager_only", [[], ["--eager-only", "infer"], ["--eager-only", "train"]])
def test_bench_refuses_a_device_it_cannot_use_in_one_line(
    tmp_path, capsys, monkeypatch, eager_only
):
    """A CUDA device on a machine without it (no GPU 99 anywhere): one line, status 2,
    before measuring (was: an HDRUNetError traceback with --eager-only)."""
    from hdrunet_pl import bench

    def measure(args):
        raise AssertionError("measured before the device was checked")

    monkeypatch.setattr(bench, "run", measure)
    argv = [*eager_only, "--tasks", "infer", "--device", "cuda:99", "--size", "8", "8"]
    assert bench.main([*argv, "--json", str(tmp_path / "b.json")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("hdrunet-bench: error: device=cuda:99") and error.count("\n") == 1


def test_a_failed_command_is_one_line_naming_it(tmp_path):
    """A tool run by the benchmark that fails: its last line (the error), not its traceback."""
    import sys

    from hdrunet_pl import bench
    from hdrunet_pl.errors import HDRUNetError

    failing = "import sys; print('Traceback:', file=sys.stderr); sys.exit('ValueError: boom')"
    with pytest.raises(HDRUNetError) as failed:
        bench._wall_seconds([sys.executable, "-c", failing], tmp_path)
    assert str(failed.value) == f"{Path(sys.executable).name} failed: ValueError: boom"


@pytest.mark.parametrize("slower", ["train", "predict"])
def test_bench_commands_says_when_a_cost_is_not_measurable(tmp_path, capsys, monkeypatch, slower):
    """When the longer run was not slower (noise larger than the work on a loaded machine),
    the table says so and the JSON records null, not a negative cost, GFLOP/s or share."""
    from hdrunet_pl import bench

    def fake_wall_seconds(command: list[str], cwd) -> float:
        """Only the ``slower`` command takes longer for more work."""
        args = dict(a.split("=", 1) for a in command if "=" in a)
        if "trainer.max_steps" in args:
            more = int(args["trainer.max_steps"])
            return 10.0 + more if slower == "train" else 30.0 - more
        more = len(list(Path(args["input"]).glob("*_medium.png")))
        return 5.0 + more if slower == "predict" else 20.0 - 3 * more

    monkeypatch.setattr(bench, "_wall_seconds", fake_wall_seconds)
    monkeypatch.setattr(bench, "conv_peak_gflops", lambda *args, **kwargs: 100.0)
    argv = ["--tasks", "commands", "--steps", "1", "2", "--frames", "2", "--size", "16", "16"]
    assert bench.main([*argv, "--patch", "16", "--json", str(tmp_path / "b.json")]) == 0
    out = capsys.readouterr().out
    commands = json.loads((tmp_path / "b.json").read_text())["commands"]
    unmeasured, measured = ("predict", "train") if slower == "train" else ("train", "predict")
    line = next(x for x in out.splitlines() if x.startswith(f"hdrunet-{unmeasured} as run"))
    assert "not measurable: the longer run was not slower" in line and "%" not in line
    assert "-" not in line.split(":", 1)[1].replace("--", "")  # no negative number
    assert f"give more --{'steps' if unmeasured == 'train' else 'frames'}" in line
    names = {"train": ("step", "gflops", "share_of_peak", "share_of_train_peak")}
    names["predict"] = ("frame", "gflops", "share_of_peak", "vs_network")
    for name in names[unmeasured]:
        key = f"{unmeasured}_{name}" if name != "vs_network" else "predict_vs_network"
        assert key not in commands or commands[key] is None, key
    key = "train_step" if measured == "train" else "predict_frame"
    assert commands[key] == pytest.approx(1.0)
    assert commands[f"{measured}_gflops"] > 0 and commands[f"{measured}_share_of_peak"] > 0
    line = next(x for x in out.splitlines() if x.startswith(f"hdrunet-{measured} as run"))
    assert "not measurable" not in line and "% of the conv peak" in line


def test_conv_timer_times_convolutions_and_nothing_else():
    """The bench's convolution clock: forward and backward calls apart, other operators
    (here a matrix product far slower than the convolution) left out."""
    import time

    import torch

    from hdrunet_pl.bench import _ConvTimer

    conv = torch.nn.Conv2d(3, 4, 3, padding=1)
    x = torch.rand(1, 3, 8, 8)
    big = torch.rand(1024, 1024)
    start = time.perf_counter()
    with _ConvTimer(torch.device("cpu")) as timer:
        for _ in range(8):
            big = big @ torch.rand(1024, 1024) / 1024
        conv(x).sum().backward()
    elapsed = time.perf_counter() - start
    assert timer.seconds["forward"] > 0 and timer.seconds["backward"] > 0
    assert timer.seconds["forward"] + timer.seconds["backward"] < elapsed / 4
    with _ConvTimer(torch.device("cpu")) as timer:
        torch.nn.functional.linear(torch.rand(4, 8), torch.rand(3, 8)).sum()
    assert timer.seconds == {"forward": 0.0, "backward": 0.0}
