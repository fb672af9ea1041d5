"""Experiment loggers from config; W&B goes offline by itself when no API key is configured."""

from __future__ import annotations

import netrc
import os
import sys
from pathlib import Path

from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, open_dict

from hdrunet_pl.run_files import CONFIG_FILE, kept_name, read_config

WANDB_HOST = "api.wandb.ai"


def wandb_api_key_configured() -> bool:
    """True when W&B could authenticate: ``WANDB_API_KEY`` or a ``~/.netrc`` entry."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc(Path.home() / ".netrc").authenticators(WANDB_HOST) is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def previous_wandb_run_id(save_dir: str | Path) -> str | None:
    """The id of the latest W&B run under ``save_dir`` (``wandb/latest-run``), if any."""
    latest = Path(save_dir) / "wandb" / "latest-run"
    if not latest.exists():
        return None
    return latest.resolve().name.rsplit("-", 1)[-1] or None  # [offline-]run-<time>-<id>


def recorded_labels(run_dir: str | Path, key: str) -> dict[str, str]:
    """The ``name`` and ``group`` that the run's recorded ``config.yaml`` gave logger
    ``key`` (those it has), so that a resumed run keeps its W&B labels however it is
    resumed (a sweep's job by the single-run command it printed, say)."""
    recorded = read_config(Path(run_dir) / CONFIG_FILE)
    node = recorded.get("logger") if recorded is not None else None
    node = node.get(key) if isinstance(node, dict) else None
    if not isinstance(node, dict):
        return {}
    return {k: node[k] for k in ("name", "group") if isinstance(node.get(k), str) and node[k]}


def keep_previous_csv(log_dir: str | Path) -> Path | None:
    """Move ``log_dir/metrics.csv`` to ``metrics-<k>.csv`` (k = 1, 2, ...) so that a resumed
    run's CSVLogger, which starts a fresh ``metrics.csv``, does not delete it."""
    current = Path(log_dir) / "metrics.csv"
    if not current.is_file():
        return None
    return current.rename(kept_name(current))


def instantiate_loggers(
    cfg: DictConfig | None,
    name: str | None = None,
    group: str | None = None,
    resuming: bool = False,
) -> list[Logger]:
    """Build every logger in the ``logger`` group config (a dict of ``_target_`` nodes).

    W&B runs without a configured ``name``/``group`` get ``name`` (the job's overrides) and
    ``group`` (the multirun), so that a sweep shows up as one group of runs. When
    ``resuming``, W&B continues the run folder's previous run (same id, and the name and
    group its recorded ``config.yaml`` gave it, unless configured); the CSV logger's
    earlier ``metrics.csv`` is always kept, as ``metrics-<k>.csv``.
    """
    loggers: list[Logger] = []
    for key, node in (cfg or {}).items():
        if not node or "_target_" not in node:
            continue
        csv_version = node.get("version") if node["_target_"].endswith("CSVLogger") else None
        if csv_version is not None and rank_zero_only.rank == 0:
            # a fixed version folder: its metrics.csv would be deleted (None: a new folder),
            # when resuming and when a run that failed before its first checkpoint restarts
            keep_previous_csv(Path(node["save_dir"], node.get("name") or "", str(csv_version)))
        if node["_target_"].endswith("WandbLogger"):
            with open_dict(node):
                labels = {"name": name, "group": group}
                if resuming and not node.get("id"):
                    run_id = previous_wandb_run_id(node["save_dir"])
                    if run_id:  # the run it continues, under the labels it had
                        node["id"], node["resume"] = run_id, "allow"
                        labels |= recorded_labels(node["save_dir"], key)
                for label, value in labels.items():
                    if not node.get(label):
                        node[label] = value
                if not wandb_api_key_configured():
                    node["offline"] = True
                    if os.environ.get("WANDB_MODE") not in ("offline", "disabled"):
                        print(
                            f"[{key}] no W&B API key found: logging offline; "
                            "upload later with `wandb sync`",
                            file=sys.stderr,
                        )
        logger = instantiate(node)
        if isinstance(logger, WandbLogger):
            drop_unset_anonymous(logger)
        loggers.append(logger)
    return loggers


def drop_unset_anonymous(logger: WandbLogger) -> None:
    """Leave W&B's deprecated ``anonymous`` setting unset when it was not asked for.

    Lightning passes ``anonymous=None`` to ``wandb.init``, and W&B warns that "the anonymous
    setting has no effect" for any value that is passed, ``None`` included."""
    init_args = getattr(logger, "_wandb_init", None)
    if isinstance(init_args, dict) and init_args.get("anonymous", False) is None:
        del init_args["anonymous"]


def finish_loggers(loggers: list[Logger]) -> None:
    """Close W&B runs so that the next job of a multirun starts a new run."""
    if any(isinstance(logger, WandbLogger) for logger in loggers):
        import wandb

        wandb.finish()
