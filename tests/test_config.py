"""Every config group option composes, and the composed objects are what the option says."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from .conftest import CONF_DIR

GROUPS = [
    "data",
    "patch",
    "model",
    "loss",
    "modulation",
    "condition",
    "trainer",
    "logger",
    "callbacks",
    "paths",
    "hydra",
    "experiment",
    "debug",
]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def compose_train(overrides: list[str]):
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        return compose(config_name="train", overrides=overrides, return_hydra_config=True)


def test_every_group_has_options():
    for group in GROUPS:
        assert options(group), f"conf/{group} is empty"
    assert options("patch") == sorted(["32px", "64px", "128px", "160px", "256px", "480px"])


@pytest.mark.parametrize(("group", "option"), [(g, o) for g in GROUPS for o in options(g)])
def test_every_option_composes(group, option):
    cfg = compose_train([f"{group}={option}"])
    assert cfg.model.net._target_ == "hdrunet_pl.models.HDRUNet"
    assert cfg.hydra.runtime.choices[group] == option


def test_options_reach_the_objects():
    cfg = compose_train(
        [
            "patch=256px",
            "loss=l1",
            "modulation=channel",
            "condition=gradient",
            "model=base_weighting",
            "model.net.nf=8",
            "data.num_workers=0",
        ]
    )
    module = instantiate(cfg.model)
    assert module.loss.name == "l1"
    assert module.net.config.modulation == "channel"
    assert module.net.config.condition == "gradient"
    assert module.net.weighting is not None and module.net.condition is None
    datamodule = instantiate(cfg.data)
    assert datamodule.train_set.patch_size == 256
    assert datamodule.train_set.dataset.height == 256


def test_paper_defaults():
    cfg = compose_train([])
    assert cfg.data.patch_size == 160 and cfg.model.loss.name == "tanh_l1"
    assert cfg.model.net.nf == 64 and cfg.model.net.modulation == "sft"
    assert cfg.model.optimizer.lr == 2e-4 and list(cfg.model.optimizer.betas) == [0.9, 0.99]
    assert cfg.model.scheduler.gamma == 0.5
    paper = compose_train(["experiment=paper"])
    assert paper.data.patch_size == 256 and paper.data.batch_size == 16
    assert paper.trainer.max_steps == 1_000_000
    assert list(paper.model.scheduler.milestones) == [200_000, 400_000, 600_000, 800_000]


def test_model_ablations_set_the_modules():
    expected = {
        "full": (True, True),
        "base": (False, False),
        "base_weighting": (False, True),
        "base_condition": (True, False),
    }
    for option, (cond, weight) in expected.items():
        net = compose_train([f"model={option}"]).model.net
        assert (net.use_condition, net.use_weighting) == (cond, weight), option


def test_configs_ship_inside_the_package():
    import hdrunet_pl

    assert (Path(hdrunet_pl.__file__).parent / "conf" / "train.yaml").is_file()


def test_camera_model_is_one_config_shared_by_data_sources():
    synthetic = compose_train([])
    folder = compose_train(["data=hdr_folder", "data.root=/x"])
    camera = (CONF_DIR / "camera" / "default.yaml").read_text()
    assert "clip_fraction" in camera
    assert synthetic.data.train_set.camera == folder.data.camera
    assert instantiate(folder.data.camera).clip_fraction == (0.02, 0.12)


@pytest.mark.parametrize("name", ["predict", "eval", "export"])
def test_tool_configs_compose_without_a_run_folder(name):
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        cfg = compose(config_name=name, return_hydra_config=True)
    assert cfg.hydra.output_subdir is None and cfg.hydra.run.dir == "."
    if name != "export":
        assert cfg.precision == "auto" and cfg.tile is None
