"""Experiment loggers from config; W&B goes offline by itself when no API key is configured."""

from __future__ import annotations

import netrc
import os
import sys
from pathlib import Path

from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger, WandbLogger
from omegaconf import DictConfig, open_dict

WANDB_HOST = "api.wandb.ai"


def wandb_api_key_configured() -> bool:
    """True when W&B could authenticate: ``WANDB_API_KEY`` or a ``~/.netrc`` entry."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc(Path.home() / ".netrc").authenticators(WANDB_HOST) is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def instantiate_loggers(
    cfg: DictConfig | None, name: str | None = None, group: str | None = None
) -> list[Logger]:
    """Build every logger in the ``logger`` group config (a dict of ``_target_`` nodes).

    W&B runs without a configured ``name``/``group`` get ``name`` (the job's overrides) and
    ``group`` (the multirun), so that a sweep shows up as one group of runs.
    """
    loggers: list[Logger] = []
    for key, node in (cfg or {}).items():
        if not node or "_target_" not in node:
            continue
        if node["_target_"].endswith("WandbLogger"):
            with open_dict(node):
                if not node.get("name"):
                    node["name"] = name
                if not node.get("group"):
                    node["group"] = group
                if not wandb_api_key_configured():
                    node["offline"] = True
                    if os.environ.get("WANDB_MODE") not in ("offline", "disabled"):
                        print(
                            f"[{key}] no W&B API key found: logging offline; "
                            "upload later with `wandb sync`",
                            file=sys.stderr,
                        )
        loggers.append(instantiate(node))
    return loggers


def finish_loggers(loggers: list[Logger]) -> None:
    """Close W&B runs so that the next job of a multirun starts a new run."""
    if any(isinstance(logger, WandbLogger) for logger in loggers):
        import wandb

        wandb.finish()
