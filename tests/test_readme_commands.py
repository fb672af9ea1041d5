"""Every tool command in the README's ``bash`` blocks is one its tool accepts: it composes
(each job of a sweep), and passes the checks the tool makes before any work. A pasted
command may then fail only on the reader's own paths, never on a setting the README got
wrong. (Prose may show refused commands on purpose; only the code blocks are checked.)"""

from __future__ import annotations

import functools
import re
import shlex

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from hdrunet_pl import bench, prepare, samples
from hdrunet_pl.data.datasets import check_patch_size
from hdrunet_pl.evaluate import SIDE_BY_SIDE, metric_names
from hdrunet_pl.validation import (
    INFERENCE_RULES,
    TRAIN_RULES,
    check_groups_apply,
    check_settings,
)

from .support import REPO, compose_config, sweep_jobs

HYDRA_TOOLS = {
    "hdrunet-train": "train",
    "hdrunet-predict": "predict",
    "hdrunet-eval": "eval",
    "hdrunet-export": "export",
}
ARGPARSE_TOOLS = {
    "hdrunet-bench": bench.build_parser,
    "hdrunet-prepare": prepare.build_parser,
}
HYDRA_FLAGS = {"-m", "--multirun", "--cfg", "job", "hydra", "all", "--help", "-h"}


def readme_commands() -> list[tuple[int, list[str]]]:
    """(line number, argv) of each tool command in the README's ``bash`` blocks, with
    backslash continuations joined and shell substitutions ``$(...)`` made one word."""
    text = (REPO / "README.md").read_text()
    commands = []
    for block in re.finditer(r"^```bash\n(.*?)^```", text, flags=re.M | re.S):
        first_line = text.count("\n", 0, block.start(1)) + 1
        joined = re.sub(r"\\\n", " ", block.group(1))
        while re.search(r"\$\([^()]*\)", joined):
            joined = re.sub(r"\$\([^()]*\)", "SUBST", joined)
        starts = [first_line + i for i, line in enumerate(block.group(1).split("\n"))]
        for number, line in zip(starts, joined.split("\n"), strict=False):
            argv = shlex.split(line, comments=True)
            if argv and (argv[0] in HYDRA_TOOLS or argv[0] in ARGPARSE_TOOLS):
                commands.append((number, argv))
            elif argv[:3] == ["python", "-m", "hdrunet_pl.samples"]:
                commands.append((number, ["hdrunet_pl.samples", *argv[3:]]))
    return commands


COMMANDS = readme_commands()


def _jobs(config: str, overrides: list[str], multirun: bool) -> list[list[str]]:
    """The jobs Hydra runs for the command: one, or a sweep's, expanded as its basic
    sweeper does (the config's ``hydra.sweeper.params`` first, then the command line)."""
    if not multirun:
        return [overrides]
    parsed = OverridesParser.create().parse_overrides(overrides)
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    params = compose_config(config, fixed, with_hydra=True).hydra.sweeper.params or {}
    return sweep_jobs([f"{k}={v}" for k, v in params.items()] + overrides)


def _check_train_job(cfg: DictConfig, job: list[str]) -> None:
    check_settings(cfg, TRAIN_RULES)
    check_groups_apply(cfg, job, cfg.hydra.runtime.choices.get("model"))
    if "patch_size" in cfg.data:
        check_patch_size(cfg.data.patch_size)
    _build_model(OmegaConf.to_yaml(cfg.model, resolve=True))


@functools.cache
def _build_model(model_yaml: str) -> None:
    """The network, loss and metrics a job would build (once per distinct model config)."""
    instantiate(OmegaConf.create(model_yaml))


def _check_tool_job(config: str, cfg: DictConfig) -> None:
    if config in ("predict", "eval"):
        check_settings(cfg, INFERENCE_RULES)
    if config == "eval":
        metrics = cfg.get("metrics")
        metric_names([metrics] if isinstance(metrics, str) else metrics)
        assert cfg.side_by_side in SIDE_BY_SIDE
    if config == "export":
        assert cfg.format in ("onnx", "torchscript") and cfg.opset >= 18


def test_the_readme_shows_commands_of_every_tool():
    tools = {argv[0] for _, argv in COMMANDS}
    assert tools == {*HYDRA_TOOLS, *ARGPARSE_TOOLS, "hdrunet_pl.samples"}, tools
    assert len(COMMANDS) >= 40  # a parsing slip would silently check nothing


@pytest.mark.parametrize(("line", "argv"), COMMANDS, ids=[f"L{n}" for n, _ in COMMANDS])
def test_readme_command_is_accepted(line, argv):
    tool, args = argv[0], argv[1:]
    if tool in ARGPARSE_TOOLS:
        ARGPARSE_TOOLS[tool]().parse_args(args)  # exits (SystemExit) on a bad option
        return
    if tool == "hdrunet_pl.samples":
        source = args[args.index("--source") + 1] if "--source" in args else "poly_haven"
        assert source in samples.SOURCES, f"README line {line}: no source {source!r}"
        return
    config = HYDRA_TOOLS[tool]
    overrides = [a for a in args if a not in HYDRA_FLAGS]
    jobs = _jobs(config, overrides, multirun="-m" in args or "--multirun" in args)
    assert jobs, f"README line {line}: a sweep without jobs"
    for job in jobs:
        cfg = compose_config(config, job, with_hydra=True)
        if config == "train":
            _check_train_job(cfg, job)
        else:
            _check_tool_job(config, cfg)
