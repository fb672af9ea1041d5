"""Objects that tests put into configs (importable by DDP worker processes via PYTHONPATH)."""

import json
from pathlib import Path

import lightning as L


class RankMetricsDump(L.Callback):
    """Writes each rank's final ``callback_metrics`` to ``<folder>/rank<r>.json``."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        metrics["world_size"] = trainer.world_size
        (self.folder / f"rank{trainer.global_rank}.json").write_text(json.dumps(metrics))
