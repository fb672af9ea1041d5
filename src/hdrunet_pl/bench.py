"""``hdrunet-bench``: the package's training step and inference against plain eager PyTorch.

hdrunet-bench                       # CPU here, the GPU where there is one
hdrunet-bench --compile             # also torch.compile the package's paths
hdrunet-bench --json bench.json --repeats 5
hdrunet-bench --tasks train commands    # also time hdrunet-train/-predict as commands

With the same network (same initial weights):

- train: the LightningModule step as ``hdrunet-train`` runs it (Lightning ``Trainer``, the
  default precision and memory format, the synthetic data loader with its workers) against
  a plain eager fp32 NCHW loop (forward, Tanh_L1, backward, Adam) on a fixed batch;
- infer: ``hdrunet-predict``'s :class:`~hdrunet_pl.inference.Predictor` on a 1060x1900
  frame against eager fp32 NCHW ``net(x)`` under ``torch.no_grad``.

Each eager baseline runs first, alone, in a fresh Python process (``--eager-only``) with
the default allocator and threads, so that nothing of the package's run changes its time.

Times are medians of the repeats after warm-up; ratios are to the eager baseline of the
same run. GFLOP/s count 2 FLOPs per multiply-accumulate of the convolutions (training: 3x
the forward pass). The peaks are a 64->64 3x3 convolution in the precision the package
picks (bf16 where it is fast, else fp32), the best of both memory formats and a few sizes:
its forward pass (the "conv peak") and its forward+backward (the roofline of a training
step). They are measured at the start and at the end of the run and the best is kept (a
slow moment of a shared machine must not lower them).

``--tasks commands`` runs ``hdrunet-train`` and ``hdrunet-predict`` themselves, each twice
(10 and 60 steps; 1 and ``--frames`` frames), and divides the difference of the wall times:
the cost of a step and of a frame as a user pays it, start-up cancelled.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from hdrunet_pl.errors import INTERRUPTED_STATUS, HDRUNetError
from hdrunet_pl.inference import Predictor, bf16_supported, resolve_device
from hdrunet_pl.io import MAX_PIXELS, atomic_path
from hdrunet_pl.losses import tanh_l1
from hdrunet_pl.models.hdrunet import HDRUNet
from hdrunet_pl.quiet import install_filters
from hdrunet_pl.runtime import keep_freed_memory, trim_heap

FRAME = (1060, 1900)
"""An NTIRE 2021 frame."""


class _ConvCounter(TorchFunctionMode):
    """Counts the multiply-accumulates of every 2-D convolution called while active (by
    ``nn.Conv2d`` or by ``F.conv2d`` directly), from the weight's and the output's shapes."""

    def __init__(self) -> None:
        super().__init__()
        self.macs = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func is F.conv2d:
            weight = args[1] if len(args) > 1 else kwargs["weight"]
            self.macs += out.numel() * weight[0].numel()  # (in_ch / groups) * kh * kw
        return out


class _ConvTimer(TorchDispatchMode):
    """Wall time of every convolution while active, forward (``aten.convolution``) and
    backward (``aten.convolution_backward``: input and weight gradients) apart, each call
    timed alone with a device sync after it. Every other operator runs as it would (a
    little slower: it passes through this mode), and is not timed."""

    _KINDS: ClassVar[dict[object, str]] = {
        torch.ops.aten.convolution.default: "forward",
        torch.ops.aten.convolution_backward.default: "backward",
    }

    def __init__(self, device: torch.device) -> None:
        super().__init__()
        self.device = device
        self.seconds = {"forward": 0.0, "backward": 0.0}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kind = self._KINDS.get(func)
        if kind is None:
            return func(*args, **(kwargs or {}))
        _sync(self.device)
        start = time.perf_counter()
        out = func(*args, **(kwargs or {}))
        _sync(self.device)
        self.seconds[kind] += time.perf_counter() - start
        return out


def conv_macs(model: nn.Module, height: int, width: int) -> int:
    """Multiply-accumulates of every convolution for one (3, height, width) input."""
    with torch.no_grad(), _ConvCounter() as counter:
        model(torch.rand(1, 3, height, width))
    return counter.macs


class PeakMemory:
    """Memory a block needs: its CUDA allocator peak, or on the CPU the peak resident set
    size above the size at the start of the block. On Linux the kernel keeps that peak
    (``VmHWM``, reset by writing 5 to ``/proc/self/clear_refs``), so nothing runs beside the
    block; where it cannot be reset, a thread samples the resident set size at 1 kHz (which
    takes CPU time from the block on a small machine)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak_bytes = 0
        self._thread: threading.Thread | None = None

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    @staticmethod
    def _high_water_mark() -> int:
        with open("/proc/self/status") as f:
            line = next(x for x in f if x.startswith("VmHWM:"))
        return int(line.split()[1]) * 1024

    @staticmethod
    def _reset_high_water_mark() -> bool:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            return False
        return True

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        trim_heap()  # what earlier blocks freed does not count for (or against) this one
        self._start = self._rss()
        self.peak_bytes = 0
        if self._reset_high_water_mark():
            return self
        self._stop = threading.Event()

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
        elif self._thread is None:
            self.peak_bytes = self._high_water_mark() - self._start
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


def conv_peak_gflops(
    device: torch.device,
    dtype: torch.dtype,
    repeats: int = 5,
    backward: bool = False,
    warmup: int = 2,
) -> float:
    """Best throughput of a 64->64 3x3 convolution in ``dtype``, over both memory formats
    (NCHW, channels_last) and a few input sizes: the machine's practical peak for this
    network's main operation.

    ``backward=False``: the forward pass (2 FLOPs per multiply-accumulate). ``True``: a
    training step of that convolution, forward and backward (input and weight gradients,
    3x the forward FLOPs), which is the roofline of a training step."""
    best = 0.0
    for memory_format in (torch.contiguous_format, torch.channels_last):
        conv = nn.Conv2d(64, 64, 3, padding=1).to(device, dtype=dtype, memory_format=memory_format)
        for shape in ((1, 64, 128, 128), (4, 64, 160, 160), (1, 64, 256, 256)):
            x = torch.rand(shape, device=device, dtype=dtype).contiguous(
                memory_format=memory_format
            )
            flops = 2 * x.numel() * 64 * 9

            if backward:
                x.requires_grad_(True)

                def run(x: torch.Tensor = x, conv: nn.Module = conv) -> None:
                    conv.zero_grad(set_to_none=True)
                    x.grad = None
                    conv(x).sum().backward()

                flops *= 3
            else:

                def run(x: torch.Tensor = x, conv: nn.Module = conv) -> None:
                    with torch.no_grad():
                        conv(x)

            best = max(best, flops / median_time(run, device, warmup, repeats) / 1e9)
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


def eager_train_seconds(
    device: torch.device, batch_size: int, patch: int, warmup: int, repeats: int
) -> dict:
    """The plain eager fp32 NCHW training step (forward, Tanh_L1, backward, Adam) on a fixed
    synthetic batch: median seconds and peak memory. Meant for a fresh process."""
    from hdrunet_pl.data import SyntheticHDRDataset

    torch.manual_seed(0)
    net = HDRUNet().to(device)
    items = [SyntheticHDRDataset(batch_size, patch, seed=0)[i] for i in range(batch_size)]
    batch = {key: torch.stack([item[key] for item in items]) for key in ("ldr", "hdr")}
    step = _eager_train_step(net, batch, device)
    with PeakMemory(device) as memory:
        seconds = median_time(step, device, warmup, repeats)
    return {"seconds": seconds, "memory": memory.peak_bytes}


def eager_infer_seconds(
    device: torch.device, size: tuple[int, int], warmup: int, repeats: int
) -> dict:
    """Plain eager fp32 NCHW ``net(x)`` under ``torch.no_grad`` on one (1, 3, H, W) frame:
    median seconds and peak memory. Meant for a fresh process."""
    torch.manual_seed(0)
    net = HDRUNet().to(device).eval()
    x = torch.rand(1, 3, *size, device=device)

    def forward() -> None:
        with torch.no_grad():
            net(x)

    with PeakMemory(device) as memory:
        seconds = median_time(forward, device, warmup, repeats)
    return {"seconds": seconds, "memory": memory.peak_bytes}


def _clean_env() -> dict[str, str]:
    """This process's environment without the package's own settings (``HDRUNET_*``), for
    the processes the benchmark starts: they run with the defaults a user gets."""
    return {k: v for k, v in os.environ.items() if not k.startswith("HDRUNET_")}


def eager_in_fresh_process(task: str, args: argparse.Namespace) -> dict:
    """The eager baseline of ``task`` run by ``python -m hdrunet_pl.bench --eager-only`` in a
    new process: nothing of the package's run (allocator settings, threads, a memory
    sampler, compiled code, cached memory) can slow or speed it."""
    command = [
        sys.executable,
        "-m",
        "hdrunet_pl.bench",
        "--eager-only",
        task,
        "--device",
        args.device,
        "--batch-size",
        str(args.batch_size),
        "--patch",
        str(args.patch),
        "--size",
        *map(str, args.size),
        "--warmup",
        str(args.warmup),
        "--repeats",
        str(args.repeats),
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=_clean_env(), check=False)
    if done.returncode != 0:
        raise HDRUNetError(f"the eager {task} baseline failed: {_last_line(done.stderr)}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench_train(
    device: torch.device,
    batch_size: int,
    patch: int,
    warmup: int,
    repeats: int,
    compile: bool,
    workers: int = 2,
) -> dict:
    """Timing of the package's training step; see the module docstring."""
    import lightning as L

    from hdrunet_pl.data import HDRDataModule, SyntheticHDRDataset
    from hdrunet_pl.module import HDRUNetModule
    from hdrunet_pl.resolvers import auto_precision

    torch.manual_seed(0)
    net = HDRUNet()
    steps = warmup + repeats
    datamodule = HDRDataModule(
        SyntheticHDRDataset(num_images=batch_size * (steps + 2), height=patch, seed=0),
        SyntheticHDRDataset(num_images=1, height=32, seed=1),
        patch_size=patch,
        batch_size=batch_size,
        num_workers=workers,
    )

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
    batch = next(iter(datamodule.train_dataloader()))
    phases = train_phases(module, batch, device, precision, repeats)
    phases["render"] = median_time(  # one batch in one process (workers share it out)
        lambda: [datamodule.train_set[i] for i in range(batch_size)],
        torch.device("cpu"),
        0,
        max(1, repeats // 2),
    )
    package = {
        "phases": phases,
        "seconds": statistics.median(timer.compute[warmup:]),
        "data_wait": statistics.median(timer.wait[warmup:]) if len(timer.wait) > warmup else 0.0,
        "memory": package_memory.peak_bytes,
        "precision": precision,
        "layout": "channels_last" if module.memory_format == torch.channels_last else "NCHW",
        "compile_seconds": compile_seconds,
    }
    return package


def train_phases(
    module: nn.Module, batch: dict, device: torch.device, precision: str, repeats: int
) -> dict:
    """Median seconds of each phase of the package's training step, timed one by one with
    a device sync after each (so their sum is a little above the fused step): forward and
    loss under the run's autocast, backward, the non-finite check (loss and gradient norm,
    one host sync) and the optimizer step."""
    module = module.to(device).train()
    optimizer = module.configure_optimizers()["optimizer"]
    ldr, hdr = batch["ldr"].to(device), batch["hdr"].to(device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled="bf16" in precision)
    times: dict[str, list[float]] = {k: [] for k in ("forward", "backward", "check", "optimizer")}

    def timed(name: str, fn: Callable[[], object]) -> object:
        _sync(device)
        start = time.perf_counter()
        out = fn()
        _sync(device)
        times[name].append(time.perf_counter() - start)
        return out

    def forward() -> torch.Tensor:
        with autocast:
            return module.loss(module(ldr), hdr)

    def check() -> bool:
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        norm = torch.nn.utils.get_total_norm(grads).reshape(1)
        return bool(torch.isfinite(torch.cat([loss.detach().reshape(1), norm])).all())

    for _ in range(repeats + 1):  # the first round warms up
        optimizer.zero_grad(set_to_none=True)
        loss = timed("forward", forward)
        timed("backward", loss.backward)
        timed("check", check)
        timed("optimizer", optimizer.step)
    phases = {k: statistics.median(v[1:]) for k, v in times.items()}
    if not compile_free(module):  # a compiled graph hides its convolutions
        return phases
    conv: dict[str, list[float]] = {"forward": [], "backward": []}
    for _ in range(repeats):  # the convolutions alone: what no other change can remove
        optimizer.zero_grad(set_to_none=True)
        with _ConvTimer(device) as timer:
            forward().backward()
        for kind, seconds in timer.seconds.items():
            conv[kind].append(seconds)
    optimizer.zero_grad(set_to_none=True)
    return phases | {f"conv_{k}": statistics.median(v) for k, v in conv.items()}


def compile_free(module: nn.Module) -> bool:
    """Whether ``module`` runs eagerly (no ``torch.compile`` anywhere in it)."""
    return not any(getattr(m, "_compiled_call_impl", None) for m in module.modules())


def bench_infer(
    device: torch.device, size: tuple[int, int], warmup: int, repeats: int, compile: bool
) -> dict:
    """Timing of the package's whole-frame inference (``Predictor``)."""
    torch.manual_seed(0)
    ldr = torch.rand(1, 3, *size)
    predictor = Predictor(HDRUNet(), device=str(device), compile=compile)
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
    return package


def bench_folder(device: torch.device, size: tuple[int, int], frames: int, compile: bool) -> dict:
    """Where the time of ``hdrunet-predict`` on a folder of ``frames`` 8-bit PNGs goes:
    median seconds per frame of decoding, the network (``Predictor``, including any host <->
    device copies) and encoding the NTIRE 16-bit PNG pair, each alone, and the frames/s of
    the whole pipelined run (:func:`~hdrunet_pl.predict.predict_files`), whose first frame
    is a warm-up."""
    import tempfile

    from hdrunet_pl.io import read_ldr, write_hdr, write_ldr
    from hdrunet_pl.predict import list_inputs, predict_files

    torch.manual_seed(0)
    predictor = Predictor(HDRUNet(), device=str(device), compile=compile)
    with tempfile.TemporaryDirectory(prefix="hdrunet-bench-") as tmp:
        folder = Path(tmp) / "in"
        gen = torch.Generator().manual_seed(0)
        for i in range(frames):
            image = torch.rand(*size, 3, generator=gen).numpy()
            write_ldr(folder / f"{i:04d}_medium.png", image)
        inputs = list_inputs(folder)
        decode = median_time(lambda: read_ldr(inputs[0]), torch.device("cpu"), 1, frames)
        ldr = torch.from_numpy(read_ldr(inputs[0]).transpose(2, 0, 1).copy())
        network = median_time(lambda: predictor(ldr), device, 1, frames)
        hdr = predictor(ldr).clamp_min(0).permute(1, 2, 0).numpy()
        encode = median_time(
            lambda: write_hdr(Path(tmp) / "pair" / "0000.png", hdr), torch.device("cpu"), 1, 3
        )
        predict_files(predictor, inputs[:1], Path(tmp) / "warm", progress=False)
        report = predict_files(predictor, inputs, Path(tmp) / "out", progress=False)
    return {
        "decode": decode,
        "network": network,
        "encode": encode,
        "pipeline_frames_per_s": len(report.written) / report.seconds,
        "network_frames_per_s": 1 / network,
        "frames": frames,
    }


def _tool(name: str) -> list[str]:
    """The command line of a console script of this package, as installed beside Python."""
    script = Path(sys.executable).parent / name
    if script.exists():
        return [str(script)]
    module = {"hdrunet-train": "hdrunet_pl.train", "hdrunet-predict": "hdrunet_pl.predict"}
    return [sys.executable, "-m", module[name]]


def _last_line(stderr: str) -> str:
    """The last line a failed process wrote (its error), for a one-line message."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


def _wall_seconds(command: list[str], cwd: Path) -> float:
    """Wall time of ``command`` run to completion in a new process (it must succeed)."""
    env = _clean_env()
    env.setdefault("WANDB_MODE", "offline")
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, env=env, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise HDRUNetError(f"{Path(command[0]).name} failed: {_last_line(done.stderr)}")
    return seconds


def _per_unit(runs: list[float], units: int) -> float | None:
    """The cost of one unit (step, frame): the difference of the two runs' wall times over
    the units between them; None when the longer run was not slower (noise larger than the
    work: no cost can be read from it)."""
    difference = runs[1] - runs[0]
    return difference / units if difference > 0 else None


def bench_commands(
    device: torch.device,
    batch_size: int,
    patch: int,
    steps: tuple[int, int],
    size: tuple[int, int],
    frames: int,
    compile: bool = False,
) -> dict:
    """``hdrunet-train`` and ``hdrunet-predict`` as a user runs them, start-up cancelled.

    Training: two runs of ``hdrunet-train`` (default configuration: synthetic data, the
    automatic precision and memory format, CSV logger, checkpoints) with ``steps[0]`` and
    ``steps[1]`` steps at ``batch_size`` x ``patch``, no validation; a step costs the
    difference of their wall times over the difference of their steps. Inference: two runs
    of ``hdrunet-predict`` on folders of 1 and of ``frames`` 8-bit PNGs of ``size`` (an
    untrained HDRUNet saved as a checkpoint); a frame costs the difference over
    ``frames - 1`` (None where the longer run was not slower). Every run is a new
    process, timed from outside. ``compile``: both commands with ``torch.compile``
    (``model.compile=true``, ``compile=true``); each run compiles once, so the compile time
    cancels too."""
    import tempfile

    from hdrunet_pl.io import write_ldr
    from hdrunet_pl.models.checkpoints import save_model

    if not steps[0] < steps[1] or frames < 2:
        raise ValueError("need two step counts, the first smaller, and frames >= 2")
    accelerator = "gpu" if device.type == "cuda" else "cpu"
    out: dict = {"steps": list(steps), "frames": frames}
    with tempfile.TemporaryDirectory(prefix="hdrunet-bench-") as tmp:
        tmp_path = Path(tmp)
        train = []
        for n in steps:
            train.append(
                _wall_seconds(
                    [
                        *_tool("hdrunet-train"),
                        f"data.batch_size={batch_size}",
                        f"data.patch_size={patch}",
                        f"trainer.max_steps={n}",
                        f"trainer.accelerator={accelerator}",
                        "+trainer.limit_val_batches=0",
                        "validate_first=false",
                        f"model.compile={str(compile).lower()}",
                        f"hydra.run.dir={tmp_path / f'train-{n}'}",
                    ],
                    tmp_path,
                )
            )
        out["train_run_seconds"] = train
        out["train_step"] = _per_unit(train, steps[1] - steps[0])
        torch.manual_seed(0)
        ckpt = save_model(HDRUNet(), tmp_path / "hdrunet.ckpt")
        gen = torch.Generator().manual_seed(0)
        for i in range(frames):
            image = torch.rand(*size, 3, generator=gen).numpy()
            folders = ("many", "one") if i == 0 else ("many",)
            for folder in folders:
                write_ldr(tmp_path / folder / f"{i:04d}_medium.png", image)
        predict = []
        for folder in ("one", "many"):
            predict.append(
                _wall_seconds(
                    [
                        *_tool("hdrunet-predict"),
                        f"ckpt={ckpt}",
                        f"input={tmp_path / folder}",
                        f"output={tmp_path / (folder + '-out')}",
                        f"device={device}",
                        f"compile={str(compile).lower()}",
                    ],
                    tmp_path,
                )
            )
        out["predict_run_seconds"] = predict
        out["predict_frame"] = _per_unit(predict, frames - 1)
    return out


def bench_metrics(device: torch.device, size: tuple[int, int], repeats: int) -> dict:
    """Median seconds to score one (3, H, W) image pair by each metric of
    :data:`~hdrunet_pl.metrics.METRIC_NAMES` on ``device`` (tables loaded once, untimed)."""
    from hdrunet_pl.metrics import METRIC_NAMES, scorer

    gen = torch.Generator().manual_seed(0)
    target = (0.1 + torch.rand(3, *size, generator=gen)).to(device)
    pred = (target + 0.05 * torch.randn(3, *size, generator=gen).to(device)).clamp_min(0)
    out = {}
    for name in METRIC_NAMES:
        fn = scorer(name)
        out[name] = median_time(lambda fn=fn: fn(pred, target), device, 1, repeats)
    return {"seconds": out, "size": list(size), "device": str(device)}


def _progress(step: str) -> None:
    """One line on stderr as each measurement starts: a benchmark takes minutes."""
    print(f"hdrunet-bench: {step} ...", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> dict:
    device = resolve_device(args.device)
    torch.set_float32_matmul_precision("high")
    peak_dtype = torch.bfloat16 if bf16_supported(device) else torch.float32
    _progress(f"conv peak ({str(peak_dtype).removeprefix('torch.')}, forward and training)")
    peak = conv_peak_gflops(device, peak_dtype, args.repeats, warmup=args.warmup)
    train_peak = conv_peak_gflops(device, peak_dtype, args.repeats, True, args.warmup)
    net = HDRUNet()
    macs_pixel = conv_macs(net, 64, 64) / (64 * 64)
    rows: list[Row] = []
    info: dict = {
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "threads": torch.get_num_threads(),
        "conv_peak_gflops": peak,
        "conv_train_peak_gflops": train_peak,
        "conv_peak_dtype": str(peak_dtype).removeprefix("torch."),
        "macs_per_pixel": macs_pixel,
        "torch": torch.__version__,
    }
    info["pid"] = os.getpid()
    if "train" in args.tasks:
        _progress("training step: eager fp32 baseline in a fresh process")
        eager = eager_in_fresh_process("train", args)
        info["eager_train_pid"] = eager["pid"]
        _progress("training step: the package's, phase by phase")
        package = bench_train(
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
            (f"package ({package['precision']}, {package['layout']})", package, note),
            ("eager fp32 NCHW", eager, ""),
        ):
            rows.append(_row(label, path, result, eager["seconds"], flops, peak, extra))
        phases = package["phases"]
        network = sum(phases[k] for k in ("forward", "backward", "optimizer"))
        phases["overhead"] = package["seconds"] - network - phases["check"]
        phases["network_gflops"] = flops / network / 1e9
        phases["step_gflops"] = flops / package["seconds"] / 1e9
        if "conv_forward" in phases:
            conv = phases["conv_forward"] + phases["conv_backward"]
            phases["conv_share_of_step"] = conv / package["seconds"]
            phases["conv_only_gflops"] = flops / conv / 1e9
        info["train_phases"] = phases
        info["train_step_seconds"] = package["seconds"]
    if "infer" in args.tasks:
        _progress("inference: eager fp32 baseline in a fresh process")
        eager = eager_in_fresh_process("infer", args)
        info["eager_infer_pid"] = eager["pid"]
        _progress("inference: the package's")
        package = bench_infer(device, tuple(args.size), args.warmup, args.repeats, args.compile)
        flops = 2 * macs_pixel * args.size[0] * args.size[1]
        label = f"inference {args.size[0]}x{args.size[1]}"
        tile = f"tile {package['tile']}" if package["tile"] else "whole frame"
        note = tile + (f"; compile {package['compile_seconds']:.0f} s" if args.compile else "")
        for path, result, extra in (
            (f"package ({package['precision']}, {package['layout']})", package, note),
            ("eager fp32 NCHW", eager, ""),
        ):
            rows.append(_row(label, path, result, eager["seconds"], flops, peak, extra))
    report = {"info": info, "rows": [asdict(r) for r in rows]}
    if "folder" in args.tasks:
        _progress(f"folder inference: {args.frames} frames")
        report["folder"] = bench_folder(device, tuple(args.size), args.frames, args.compile)
    if "metrics" in args.tasks:
        _progress("metrics")
        report["metrics"] = bench_metrics(device, tuple(args.size), args.repeats)
    if "commands" in args.tasks:
        _progress("hdrunet-train and hdrunet-predict as commands (minutes)")
        commands = bench_commands(
            device,
            args.batch_size,
            args.patch,
            tuple(args.steps),
            tuple(args.size),
            args.frames,
            args.compile,
        )
        train_flops = 3 * 2 * macs_pixel * args.batch_size * args.patch**2
        frame_flops = 2 * macs_pixel * args.size[0] * args.size[1]
        # as hdrunet-predict builds it (a compiled network compiles in the warm-up call)
        predictor = Predictor(HDRUNet(), device=str(device), compile=args.compile)
        frame = torch.rand(3, *args.size)
        network = median_time(lambda: predictor(frame), device, 1, 2)
        step, per_frame = commands["train_step"], commands["predict_frame"]  # None: unmeasured
        commands |= {
            "train_gflops": train_flops / step / 1e9 if step else None,
            "predict_gflops": frame_flops / per_frame / 1e9 if per_frame else None,
            "network_frame": network,
            "predict_vs_network": network / per_frame if per_frame else None,
        }
        if "train_step_seconds" in info and step:
            commands["train_vs_bench_step"] = step / info["train_step_seconds"]
        report["commands"] = commands
    if rows or "commands" in report:
        _progress("conv peak again")
        _final_peaks(report, rows, device, peak_dtype, args.repeats, args.warmup)
    return report


def _final_peaks(
    report: dict,
    rows: list[Row],
    device: torch.device,
    dtype: torch.dtype,
    repeats: int,
    warmup: int,
) -> None:
    """Measure the conv peaks again after the tasks and keep the best of both measurements
    (a slow moment of a shared machine must not lower the peak), then fill in every share of
    the peak from it."""
    info = report["info"]
    peak = max(info["conv_peak_gflops"], conv_peak_gflops(device, dtype, repeats, False, warmup))
    train_peak = max(
        info["conv_train_peak_gflops"], conv_peak_gflops(device, dtype, repeats, True, warmup)
    )
    info |= {"conv_peak_gflops": peak, "conv_train_peak_gflops": train_peak}
    for row in rows:
        row.share_of_peak = row.gflops / peak
    report["rows"] = [asdict(r) for r in rows]
    phases = info.get("train_phases")
    if phases:
        phases["network_share_of_peak"] = phases["network_gflops"] / peak
        phases["step_share_of_train_peak"] = phases["step_gflops"] / train_peak
        if "conv_only_gflops" in phases:
            phases["conv_only_share_of_peak"] = phases["conv_only_gflops"] / peak
    commands = report.get("commands")
    if commands:
        train, predict = commands["train_gflops"], commands["predict_gflops"]
        commands["train_share_of_peak"] = train / peak if train else None
        commands["train_share_of_train_peak"] = train / train_peak if train else None
        commands["predict_share_of_peak"] = predict / peak if predict else None


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
        f"3x3 conv peak {info['conv_peak_gflops']:.0f} GFLOP/s (forward; forward+backward "
        f"{info['conv_train_peak_gflops']:.0f} GFLOP/s)",
    ]
    if report["rows"]:
        lines += [
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
    phases = info.get("train_phases")
    if phases:
        lines += [
            "",
            "package training step, phase by phase (s; each timed alone): "
            f"forward+loss {phases['forward']:.3f}, backward {phases['backward']:.3f}, "
            f"optimizer {phases['optimizer']:.3f} (network: "
            f"{phases['network_share_of_peak']:.0%} of the conv peak), non-finite check "
            f"{phases['check']:.3f}, the rest of the Lightning step (hooks, logging) "
            f"{phases['overhead']:.3f}; rendering a batch {phases['render']:.3f} in one "
            "process (done by the loader workers, ahead of the step); the whole step is "
            f"{phases['step_share_of_train_peak']:.0%} of the forward+backward conv peak",
        ]
        if "conv_only_share_of_peak" in phases:
            lines[-1] += (
                f"; its convolutions alone (each call timed) take forward "
                f"{phases['conv_forward']:.3f} + backward {phases['conv_backward']:.3f} s, "
                f"{phases['conv_share_of_step']:.0%} of the step: with everything else free "
                f"the step would run at {phases['conv_only_share_of_peak']:.0%} of the "
                "forward conv peak"
            )
    folder = report.get("folder")
    if folder:
        rate, alone = folder["pipeline_frames_per_s"], folder["network_frames_per_s"]
        lines += [
            "",
            f"hdrunet-predict on a folder of {folder['frames']} PNG frames (s per frame, each "
            "phase alone): "
            f"decode {folder['decode']:.3f}, network {folder['network']:.3f}, "
            f"encode 16-bit PNG pair {folder['encode']:.3f}; pipelined run {rate:.3f} "
            f"frames/s = {rate / alone:.0%} of the network alone ({alone:.3f} frames/s)",
        ]
    commands = report.get("commands")
    if commands:
        (short, long), frames = commands["steps"], commands["frames"]
        versus = commands.get("train_vs_bench_step")
        versus = f", {versus:.2f}x the benchmark's step" if versus else ""
        unmeasured = (
            "not measurable: the longer run was not slower ({:.3f} s, the shorter {:.3f} s); "
            "give more {}"
        )
        train = f"hdrunet-train as run ({long} minus {short} steps): "
        if commands["train_step"] is None:
            train += unmeasured.format(*commands["train_run_seconds"][::-1], "--steps")
        else:
            train += (
                f"{commands['train_step']:.3f} s per step = "
                f"{commands['train_share_of_peak']:.0%} of the conv peak, "
                f"{commands['train_share_of_train_peak']:.0%} of the forward+backward "
                f"peak{versus}"
            )
        predict = f"hdrunet-predict as run ({frames} minus 1 frames): "
        if commands["predict_frame"] is None:
            predict += unmeasured.format(*commands["predict_run_seconds"][::-1], "--frames")
        else:
            predict += (
                f"{commands['predict_frame']:.3f} s per frame = "
                f"{commands['predict_share_of_peak']:.0%} of the conv peak; frames/s "
                f"{commands['predict_vs_network']:.0%} of the network alone "
                f"({commands['network_frame']:.3f} s per frame)"
            )
        lines += ["", train, predict]
    metrics = report.get("metrics")
    if metrics:
        height, width = metrics["size"]
        timings = ", ".join(f"{k} {v:.3f}" for k, v in metrics["seconds"].items())
        lines += ["", f"scoring one {height}x{width} pair (s, {metrics['device']}): {timings}"]
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
        default=["train", "infer", "folder"],
        choices=["train", "infer", "folder", "metrics", "commands"],
        help="what to measure: the training step, inference on one frame, hdrunet-predict "
        "on a folder of frames (decode, network, encode and the pipelined whole), the "
        "seconds to score one frame by each metric (not by default: ColorVideoVDP is slow "
        "on a CPU), hdrunet-train and hdrunet-predict run as commands with start-up "
        "cancelled (not by default: minutes on a CPU; see --steps and --frames)",
    )
    parser.add_argument(
        "--steps",
        type=int,
        nargs=2,
        default=[10, 60],
        metavar=("SHORT", "LONG"),
        help="steps of the two hdrunet-train runs of the `commands` task",
    )
    parser.add_argument(
        "--frames",
        type=int,
        default=4,
        help="frames in the folder of the `folder` task and of the longer hdrunet-predict run "
        "of the `commands` task",
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
    parser.add_argument(
        "--eager-only",
        choices=["train", "infer"],
        help="only time the eager baseline of one task and print it as JSON (the benchmark "
        "runs each baseline so, in a fresh process)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    install_filters()
    parser = build_parser()
    args = parser.parse_args(argv)
    if "commands" in args.tasks and not (0 < args.steps[0] < args.steps[1] and args.frames >= 2):
        parser.error("--tasks commands needs 0 < SHORT < LONG steps and --frames >= 2")
    for name, value, least in (
        ("--size", min(args.size), 4),
        ("--patch", args.patch, 4),
        ("--batch-size", args.batch_size, 1),
        ("--frames", args.frames, 1),
        ("--repeats", args.repeats, 1),
        ("--warmup", args.warmup, 0),
        ("--workers", args.workers, 0),
    ):
        if value < least:
            parser.error(f"{name} must be at least {least}, got {value}")
    if args.patch % 4:  # as hdrunet-train checks data.patch_size, but before measuring
        parser.error(
            f"--patch must be a multiple of 4 (HDRUNet's two 2x downsamplings), got {args.patch}"
        )
    if args.size[0] * args.size[1] > MAX_PIXELS:
        parser.error(f"--size: at most {MAX_PIXELS:,} pixels, got {args.size[0]}x{args.size[1]}")
    if args.batch_size * args.patch**2 > MAX_PIXELS:
        parser.error(
            f"--batch-size x --patch: at most {MAX_PIXELS:,} pixels a batch, got "
            f"{args.batch_size} x {args.patch}x{args.patch}"
        )
    try:
        resolve_device(args.device)  # run() resolves it again: the same answer
    except HDRUNetError as err:
        print(f"hdrunet-bench: error: {err}", file=sys.stderr)
        return 2
    if not args.eager_only:
        problem = _json_target_problem(Path(args.json))
        if problem:  # said before the minutes of measuring, not after
            parser.error(f"--json {args.json}: {problem}")
    if args.eager_only:
        device = resolve_device(args.device)
        if args.eager_only == "train":
            result = eager_train_seconds(
                device, args.batch_size, args.patch, args.warmup, args.repeats
            )
        else:
            result = eager_infer_seconds(device, tuple(args.size), args.warmup, args.repeats)
        print(json.dumps(result | {"pid": os.getpid()}))
        return 0
    try:
        report = run(args)
    except HDRUNetError as err:
        print(f"hdrunet-bench: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hdrunet-bench: interrupted; nothing written", file=sys.stderr)
        return INTERRUPTED_STATUS
    table = format_table(report)
    print(table)
    try:
        write_report(Path(args.json), report)
    except (OSError, HDRUNetError) as err:
        print(f"hdrunet-bench: error: --json {args.json}: {err}; the table above is the result")
        return 1
    print(f"\nwritten: {args.json}")
    return 0


def _json_target_problem(path: Path) -> str | None:
    """Why the report may not be written to ``path`` (None when it may): a missing folder,
    or a file there that is not an earlier report of this benchmark."""
    if not path.parent.is_dir():
        return f"no folder {path.parent}"
    if path.is_symlink() or (path.exists() and not path.is_file()):
        return "not a plain file"
    if path.is_file():
        try:
            earlier = json.loads(path.read_text())
        except (OSError, ValueError, UnicodeDecodeError, RecursionError):
            earlier = None
        info = earlier.get("info") if isinstance(earlier, dict) else None
        ours = isinstance(info, dict) and {"device", "macs_per_pixel"} <= info.keys()
        if not (ours and isinstance(earlier.get("rows"), list)):
            return "exists and is not an earlier hdrunet-bench report; not written over"
    return None


def write_report(path: Path, report: dict) -> None:
    """Write the report as JSON to ``path`` through a temporary file renamed over it."""
    problem = _json_target_problem(path)
    if problem:
        raise HDRUNetError(problem)
    with atomic_path(path) as part:
        part.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    sys.exit(main())
