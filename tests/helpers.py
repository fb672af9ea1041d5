"""Objects that tests put into configs (importable by DDP worker processes via PYTHONPATH)."""

import io
import json
import multiprocessing
import os
import signal
import subprocess
import time
from pathlib import Path

import lightning as L
import torch


class RankMetricsDump(L.Callback):
    """Writes each rank's final ``callback_metrics`` to ``<folder>/rank<r>.json``."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        metrics["world_size"] = trainer.world_size
        (self.folder / f"rank{trainer.global_rank}.json").write_text(json.dumps(metrics))


class PoisonedSynthetic:
    """A :class:`~hdrunet_pl.data.SyntheticHDRDataset` whose item ``poisoned`` has a NaN
    target (a corrupt file, as the training loop sees it)."""

    def __init__(self, poisoned: int, **kwargs) -> None:
        from hdrunet_pl.data import SyntheticHDRDataset

        self.inner = SyntheticHDRDataset(**kwargs)
        self.poisoned = poisoned

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, key):
        item = self.inner[key]
        index = key[0] if isinstance(key, tuple) else key
        if index == self.poisoned:
            item["hdr"] = item["hdr"].clone()
            item["hdr"][:, 0, 0] = float("nan")
            item["name"] = f"poisoned_{index:06d}"
        return item


class KillAtStep(L.Callback):
    """SIGKILLs its own process once ``step`` training steps are done (a crashed node)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: L.Trainer, *args) -> None:
        if trainer.global_step >= self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def _running(pid: int) -> bool:
    """Whether process ``pid`` exists and has not ended (not a zombie), from /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


class SignalAtStep(L.Callback):
    """Sends ``signum`` (a name such as ``SIGTERM``) to its own process as training step
    ``step`` starts (``during="train"``), as a scheduler would in the middle of a step, or
    as the validation after ``step`` steps starts (``during="validation"``; the one before
    training: ``during="validate_first"``, step 0).

    With ``whole_job=True`` the signal goes, as SLURM sends it at a time limit or with
    ``--signal``, to every process of the job: this one and its DataLoader workers, from
    another process (``kill``), as a scheduler's signal comes from outside. With ``rank``
    (DDP) only that process signals itself, as ``kill <pid>`` of one process would."""

    def __init__(
        self,
        step: int,
        signum: str,
        during: str = "train",
        whole_job: bool = False,
        rank: int | None = None,
    ) -> None:
        self.step = step
        self.signum = getattr(signal, signum)
        self.during = during
        self.whole_job = whole_job
        self.rank = rank

    def _send(self, trainer: L.Trainer, during: str) -> None:
        if during != self.during or trainer.global_step != self.step:
            return
        if self.rank is not None and trainer.global_rank != self.rank:
            return
        if not self.whole_job:
            os.kill(os.getpid(), self.signum)
            return
        workers = [p.pid for p in multiprocessing.active_children()]
        assert workers, "no DataLoader workers to signal"
        pids = [str(pid) for pid in (*workers, os.getpid())]
        subprocess.run(["kill", "-s", self.signum.name.removeprefix("SIG"), *pids], check=True)
        time.sleep(1.0)  # a worker that the signal kills is gone (a zombie) by then
        alive = sum(_running(pid) for pid in workers)
        print(f"workers alive after the signal: {alive} of {len(workers)}", flush=True)

    def on_train_batch_start(self, trainer: L.Trainer, *args) -> None:
        self._send(trainer, "train")

    def on_validation_batch_start(self, trainer: L.Trainer, *args) -> None:
        # "validation": one in training; "validate_first": the one before training
        self._send(trainer, "validation" if trainer.state.fn == "fit" else "validate_first")


class KillDuringSave(L.Callback):
    """From step ``step`` on, the next checkpoint save writes half its bytes and then the
    process is SIGKILLed (power cut in the middle of ``torch.save``)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer: L.Trainer, *args) -> None:
        if trainer.global_step < self.step or getattr(torch.save, "_kills", False):
            return
        real_save = torch.save

        def torn_save(obj, f, *args, **kwargs):
            buffer = io.BytesIO()
            real_save(obj, buffer, *args, **kwargs)
            data = buffer.getvalue()
            if hasattr(f, "write"):
                f.write(data[: len(data) // 2])
                f.flush()
            else:
                Path(f).write_bytes(data[: len(data) // 2])
            os.kill(os.getpid(), signal.SIGKILL)

        torn_save._kills = True
        torch.save = torn_save


class NaNGradientAt(L.Callback):
    """Makes one gradient NaN after the backward pass of step ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_after_backward(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_step == self.step:
            next(p for p in pl_module.parameters() if p.grad is not None).grad[0] = float("nan")


class NoteFileAtStart(L.Callback):
    """Writes into ``record`` whether ``path`` exists when training starts (what a report
    reading the run folder mid-run finds)."""

    def __init__(self, path: str, record: str) -> None:
        self.path, self.record = Path(path), Path(record)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.record.write_text(str(self.path.exists()))
