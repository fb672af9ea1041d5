"""``hdrunet-bench``: the package's training step and inference against plain eager PyTorch.

hdrunet-bench                       # CPU here, the GPU where there is one
hdrunet-bench --compile             # also torch.compile the package's paths
hdrunet-bench --json bench.json --repeats 5

In one process, with the same network and weights:

- train: the LightningModule step as ``hdrunet-train`` runs it (Lightning ``Trainer``, the
  default precision and memory format, the synthetic data loader with its workers) against
  a plain eager fp32 NCHW loop (forward, Tanh_L1, backward, Adam) on a fixed batch;
- infer: ``hdrunet-predict``'s :class:`~hdrunet_pl.inference.Predictor` on a 1060x1900
  frame against eager fp32 NCHW ``net(x)`` under ``torch.no_grad``.

Times are medians of the repeats after warm-up; ratios are to the eager baseline of the
same run. GFLOP/s count 2 FLOPs per multiply-accumulate of the convolutions (training: 3x
the forward pass); the peak is a bf16 3x3 convolution measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from hdrunet_pl.inference import Predictor, bf16_supported, resolve_device
from hdrunet_pl.losses import tanh_l1
from hdrunet_pl.models.hdrunet import HDRUNet
from hdrunet_pl.quiet import install_filters
from hdrunet_pl.runtime import keep_freed_memory, restore_malloc_defaults, trim_heap

FRAME = (1060, 1900)
"""An NTIRE 2021 frame."""


def conv_macs(model: nn.Module, height: int, width: int) -> int:
    """Multiply-accumulates of every convolution for one (3, height, width) input."""
    total = 0

    def hook(module: nn.Conv2d, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        k = module.kernel_size[0] * module.kernel_size[1]
        total += output.numel() * (module.in_channels // module.groups) * k

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            model(torch.rand(1, 3, height, width))
    finally:
        for h in handles:
            h.remove()
    return total


class PeakMemory:
    """Memory a block needs: its CUDA allocator peak, or on the CPU the peak resident set
    size (sampled at 1 kHz) above the size at the start of the block."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak_bytes = 0

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        trim_heap()  # what earlier blocks freed does not count for (or against) this one
        self._stop = threading.Event()
        self._start = self._rss()
        self.peak_bytes = 0

        def sample() -> None:
            while not self._stop.wait(0.001):
                self.peak_bytes = max(self.peak_bytes, self._rss() - self._start)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            self._thread.join()
            self.peak_bytes = max(self.peak_bytes, self._rss() - self._start)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_time(fn: Callable[[], object], device: torch.device, warmup: int, repeats: int) -> float:
    """Median wall time of ``fn`` over ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def conv_peak_gflops(device: torch.device, dtype: torch.dtype, repeats: int = 5) -> float:
    """Best throughput of a 64->64 3x3 convolution in ``dtype``, channels_last, over a few
    input sizes (the machine's practical peak for this network's main operation)."""
    conv = nn.Conv2d(64, 64, 3, padding=1).to(
        device, dtype=dtype, memory_format=torch.channels_last
    )
    best = 0.0
    for shape in ((1, 64, 64, 64), (1, 64, 128, 128), (4, 64, 160, 160), (1, 64, 512, 512)):
        x = torch.rand(shape, device=device, dtype=dtype).contiguous(
            memory_format=torch.channels_last
        )

        def run(x: torch.Tensor = x) -> None:
            with torch.no_grad():
                conv(x)

        best = max(best, 2 * x.numel() * 64 * 9 / median_time(run, device, 3, repeats) / 1e9)
    return best


@dataclass
class Row:
    """One line of the table."""

    task: str
    path: str
    seconds: float
    ratio: float
    gflops: float
    share_of_peak: float
    peak_memory_gb: float
    note: str = ""


def _eager_train_step(net: nn.Module, batch: dict, device: torch.device) -> Callable[[], None]:
    optimizer = torch.optim.Adam(net.parameters(), lr=2e-4, betas=(0.9, 0.99))
    ldr, hdr = batch["ldr"].to(device), batch["hdr"].to(device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss = tanh_l1(net(ldr), hdr)
        loss.backward()
        optimizer.step()

    return step


def bench_train(
    device: torch.device,
    batch_size: int,
    patch: int,
    warmup: int,
    repeats: int,
    compile: bool,
    workers: int = 2,
) -> tuple[dict, dict]:
    """(package, eager) timings of one training step; see the module docstring."""
    import lightning as L

    from hdrunet_pl.data import HDRDataModule, SyntheticHDRDataset
    from hdrunet_pl.module import HDRUNetModule
    from hdrunet_pl.resolvers import auto_precision

    torch.manual_seed(0)
    net = HDRUNet()
    eager_net = HDRUNet().to(device)
    eager_net.load_state_dict(net.state_dict())
    steps = warmup + repeats
    datamodule = HDRDataModule(
        SyntheticHDRDataset(num_images=batch_size * (steps + 2), height=patch, seed=0),
        SyntheticHDRDataset(num_images=1, height=32, seed=1),
        patch_size=patch,
        batch_size=batch_size,
        num_workers=workers,
    )
    batch = next(iter(datamodule.train_dataloader()))

    class StepTimer(L.Callback):
        def __init__(self) -> None:
            self.compute: list[float] = []
            self.wait: list[float] = []
            self._end: float | None = None

        def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
            _sync(device)
            now = time.perf_counter()
            if self._end is not None:
                self.wait.append(now - self._end)
            self._start = now

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
            _sync(device)
            self._end = time.perf_counter()
            self.compute.append(self._end - self._start)

    restore_malloc_defaults()
    step = _eager_train_step(eager_net, batch, device)
    with PeakMemory(device) as eager_memory:
        eager_seconds = median_time(step, device, warmup, repeats)

    del step
    keep_freed_memory()  # as hdrunet-train does
    module = HDRUNetModule(net, compile=compile)
    timer = StepTimer()
    precision = auto_precision()
    trainer = L.Trainer(
        accelerator=device.type if device.type == "cuda" else "cpu",
        devices=1,
        precision=precision,
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[timer],
    )
    with PeakMemory(device) as package_memory:
        trainer.fit(module, datamodule=datamodule)
    compile_seconds = (
        timer.compute[0] - statistics.median(timer.compute[warmup:]) if compile else 0.0
    )
    package = {
        "seconds": statistics.median(timer.compute[warmup:]),
        "data_wait": statistics.median(timer.wait[warmup:]) if len(timer.wait) > warmup else 0.0,
        "memory": package_memory.peak_bytes,
        "precision": precision,
        "compile_seconds": compile_seconds,
    }
    return package, {"seconds": eager_seconds, "memory": eager_memory.peak_bytes}


def bench_infer(
    device: torch.device, size: tuple[int, int], warmup: int, repeats: int, compile: bool
) -> tuple[dict, dict]:
    """(package, eager) timings of one whole-frame inference."""
    torch.manual_seed(0)
    net = HDRUNet().to(device).eval()
    ldr = torch.rand(1, 3, *size)
    eager_x = ldr.to(device)

    def eager() -> None:
        with torch.no_grad():
            net(eager_x)

    restore_malloc_defaults()
    with PeakMemory(device) as eager_memory:
        eager_seconds = median_time(eager, device, warmup, repeats)
    package_net = HDRUNet()
    package_net.load_state_dict(net.state_dict())
    predictor = Predictor(package_net, device=str(device), compile=compile)
    with PeakMemory(device) as package_memory:
        start = time.perf_counter()
        predictor(ldr)  # first call: compilation when asked, and warm-up
        first = time.perf_counter() - start
        seconds = median_time(lambda: predictor(ldr), device, max(0, warmup - 1), repeats)
    package = {
        "seconds": seconds,
        "memory": package_memory.peak_bytes,
        "precision": str(predictor.dtype).removeprefix("torch."),
        "tile": predictor.auto_tile(*size),
        "layout": "channels_last" if predictor.memory_format == torch.channels_last else "NCHW",
        "compile_seconds": first - seconds if compile else 0.0,
    }
    return package, {"seconds": eager_seconds, "memory": eager_memory.peak_bytes}


def run(args: argparse.Namespace) -> dict:
    device = resolve_device(args.device)
    torch.set_float32_matmul_precision("high")
    peak_dtype = torch.bfloat16 if bf16_supported(device) else torch.float32
    peak = conv_peak_gflops(device, peak_dtype)
    net = HDRUNet()
    macs_pixel = conv_macs(net, 64, 64) / (64 * 64)
    rows: list[Row] = []
    info: dict = {
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "threads": torch.get_num_threads(),
        "conv_peak_gflops": peak,
        "conv_peak_dtype": str(peak_dtype).removeprefix("torch."),
        "macs_per_pixel": macs_pixel,
        "torch": torch.__version__,
    }
    if "train" in args.tasks:
        package, eager = bench_train(
            device,
            args.batch_size,
            args.patch,
            args.warmup,
            args.repeats,
            args.compile,
            args.workers,
        )
        flops = 3 * 2 * macs_pixel * args.batch_size * args.patch**2
        label = f"train step, batch {args.batch_size}, patch {args.patch}"
        note = f"data wait {package['data_wait'] * 1000:.0f} ms/step ({args.workers} workers)"
        if args.compile:
            note += f"; compile {package['compile_seconds']:.0f} s"
        for path, result, extra in (
            (f"package ({package['precision']}, channels_last)", package, note),
            ("eager fp32 NCHW", eager, ""),
        ):
            rows.append(_row(label, path, result, eager["seconds"], flops, peak, extra))
    if "infer" in args.tasks:
        package, eager = bench_infer(
            device, tuple(args.size), args.warmup, args.repeats, args.compile
        )
        flops = 2 * macs_pixel * args.size[0] * args.size[1]
        label = f"inference {args.size[0]}x{args.size[1]}"
        tile = f"tile {package['tile']}" if package["tile"] else "whole frame"
        note = tile + (f"; compile {package['compile_seconds']:.0f} s" if args.compile else "")
        for path, result, extra in (
            (f"package ({package['precision']}, {package['layout']})", package, note),
            ("eager fp32 NCHW", eager, ""),
        ):
            rows.append(_row(label, path, result, eager["seconds"], flops, peak, extra))
    return {"info": info, "rows": [asdict(r) for r in rows]}


def _row(task, path, result, baseline, flops, peak, note) -> Row:
    gflops = flops / result["seconds"] / 1e9
    return Row(
        task=task,
        path=path,
        seconds=result["seconds"],
        ratio=baseline / result["seconds"],
        gflops=gflops,
        share_of_peak=gflops / peak,
        peak_memory_gb=result["memory"] / 2**30,
        note=note,
    )


def format_table(report: dict) -> str:
    info = report["info"]
    lines = [
        f"device {info['device']} ({info['threads']} threads), torch {info['torch']}; "
        f"{info['macs_per_pixel'] / 1e3:.0f} k MAC/pixel; measured {info['conv_peak_dtype']} "
        f"3x3 conv peak {info['conv_peak_gflops']:.0f} GFLOP/s",
        "",
        "| task | path | time (s) | speed-up vs eager | GFLOP/s | share of conv peak "
        "| memory (GB) | note |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in report["rows"]:
        lines.append(
            f"| {r['task']} | {r['path']} | {r['seconds']:.3f} | {r['ratio']:.2f}x | "
            f"{r['gflops']:.0f} | {r['share_of_peak']:.0%} | {r['peak_memory_gb']:.2f} | "
            f"{r['note']} |"
        )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``hdrunet-bench`` (every option has a help text)."""
    parser = argparse.ArgumentParser(
        prog="hdrunet-bench",
        description=__doc__.split("\n")[0].replace("``", ""),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--tasks",
        nargs="+",
        default=["train", "infer"],
        choices=["train", "infer"],
        help="what to measure: the training step, inference on one frame, or both",
    )
    parser.add_argument(
        "--device", default="auto", help="auto (CUDA when present, else CPU), cpu, cuda, cuda:1"
    )
    parser.add_argument(
        "--batch-size", type=int, default=4, help="training batch size (patches per step)"
    )
    parser.add_argument("--patch", type=int, default=160, help="side of a training patch (px)")
    parser.add_argument(
        "--size",
        type=int,
        nargs=2,
        default=list(FRAME),
        metavar=("H", "W"),
        help="height and width of the inference frame (an NTIRE 2021 frame)",
    )
    parser.add_argument(
        "--warmup", type=int, default=2, help="untimed runs of each path before timing"
    )
    parser.add_argument(
        "--repeats", type=int, default=5, help="timed runs of each path (the median is reported)"
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile the package paths")
    parser.add_argument(
        "--workers",
        type=int,
        default=min(8, os.cpu_count() or 1),
        help="data loader workers of the training benchmark (synthetic scenes are rendered there)",
    )
    parser.add_argument("--json", default="bench.json", help="where to write the results")
    return parser


def main(argv: list[str] | None = None) -> int:
    install_filters()
    parser = build_parser()
    args = parser.parse_args(argv)
    report = run(args)
    table = format_table(report)
    print(table)
    Path(args.json).write_text(json.dumps(report, indent=2))
    print(f"\nwritten: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
