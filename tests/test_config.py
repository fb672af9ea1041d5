"""Every config group option composes, and the composed objects are what the option says."""

import inspect
import re
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra._internal.utils import _locate
from hydra.utils import instantiate
from lightning.pytorch.accelerators import CPUAccelerator
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger, WandbLogger
from lightning.pytorch.strategies import DDPStrategy
from omegaconf import DictConfig, ListConfig, OmegaConf

from hdrunet_pl.callbacks import EMA, ImagePreview, StepRichProgressBar, StepTQDMProgressBar
from hdrunet_pl.camera import CameraModel
from hdrunet_pl.errors import HDRUNetError
from hdrunet_pl.inference import DEFAULT_OVERLAP, resolve_device, resolve_dtype
from hdrunet_pl.io import write_radiance
from hdrunet_pl.predict import make_predictor
from hdrunet_pl.reliability import AtomicCheckpointIO, BestCheckpoint, LastCheckpoint, Preemption
from hdrunet_pl.validation import check_groups_apply

from .support import CONF_DIR, REPO, compose_config, compose_train, sweep_jobs

GROUPS = [
    "data",
    "camera",
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
OTHER_GROUPS = ["scale", "inference"]
"""Groups not in train.yaml's defaults list (``+scale=``, the predict/eval configs'
inference); tested below."""


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def test_every_group_has_options():
    for group in GROUPS + OTHER_GROUPS:
        assert options(group), f"conf/{group} is empty"
    assert options("patch") == sorted(["32px", "64px", "128px", "160px", "256px", "480px"])


@pytest.mark.parametrize(("group", "option"), [(g, o) for g in GROUPS for o in options(g)])
def test_every_option_composes(group, option):
    cfg = compose_train([f"{group}={option}"], with_hydra=True)
    network = "ExpandNet" if (group, option) == ("model", "expandnet") else "HDRUNet"
    assert cfg.model.net._target_ == f"hdrunet_pl.models.{network}"
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
        ],
        with_hydra=True,
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
    cfg = compose_train([], with_hydra=True)
    assert cfg.data.patch_size == 160 and cfg.model.loss.name == "tanh_l1"
    assert cfg.model.net.nf == 64 and cfg.model.net.modulation == "sft"
    assert cfg.model.optimizer.lr == 2e-4 and list(cfg.model.optimizer.betas) == [0.9, 0.99]
    assert cfg.model.scheduler.gamma == 0.5
    paper = compose_train(["experiment=paper"], with_hydra=True)
    assert paper.data.patch_size == 256 and paper.data.batch_size == 16
    assert paper.trainer.max_steps == 1_000_000
    assert list(paper.model.scheduler.milestones) == [200_000, 400_000, 600_000, 800_000]
    # float32 as the public code, whatever the trainer group (its default picks bf16 where fast)
    for trainer in ("default", "gpu", "ddp"):
        cfg = compose_train(["experiment=paper", f"trainer={trainer}"], with_hydra=True)
        assert cfg.trainer.precision == "32-true", trainer


def test_model_ablations_set_the_modules():
    expected = {
        "full": (True, True),
        "base": (False, False),
        "base_weighting": (False, True),
        "base_condition": (True, False),
    }
    for option, (cond, weight) in expected.items():
        cfg = compose_train([f"model={option}"], with_hydra=True)
        net = cfg.model.net
        assert (net.use_condition, net.use_weighting) == (cond, weight), option
        for choice in ("modulation=channel", "condition=gradient", "+modulation=none"):
            if cond:  # the condition network reads hdrunet.modulation / hdrunet.condition
                check_groups_apply(cfg, [choice], option)
            else:  # nothing reads them: the run would repeat another under a new name
                with pytest.raises(
                    HDRUNetError, match=re.escape(f"{choice} does not apply to model=")
                ):
                    check_groups_apply(cfg, [choice], option)
        check_groups_apply(cfg, ["loss=l1", "data.modulation=x"], option)  # other settings


def test_a_condition_choice_is_refused_where_no_condition_network_is_built():
    """modulation=none builds no condition network: condition=gradient would repeat the
    modulation=none run under another name; key forms of the choices count too."""
    for choice in ("condition=gradient", "hdrunet.condition=gradient"):
        cfg = compose_train(["modulation=none", choice], with_hydra=True)
        with pytest.raises(
            HDRUNetError, match=re.escape(f"{choice} does not apply to modulation=none")
        ):
            check_groups_apply(cfg, ["modulation=none", choice], "full")
    cfg = compose_train(["modulation=none"], with_hydra=True)
    check_groups_apply(cfg, ["modulation=none"], "full")  # the ablation's own row
    cfg = compose_train(["model=base", "hdrunet.modulation=channel"], with_hydra=True)
    with pytest.raises(
        HDRUNetError, match=r"hdrunet\.modulation=channel does not apply to model=base"
    ):
        check_groups_apply(cfg, ["hdrunet.modulation=channel"], "base")


def test_configs_ship_inside_the_package():
    import hdrunet_pl

    assert (Path(hdrunet_pl.__file__).parent / "conf" / "train.yaml").is_file()


def test_camera_model_is_one_config_shared_by_data_sources():
    synthetic = compose_train([], with_hydra=True)
    folder = compose_train(["data=hdr_folder", "data.root=/x"], with_hydra=True)
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


# --- every trainer, logger and callbacks option is instantiated (or, where this machine
# cannot, every `_target_` in it is imported and its arguments checked) -------------------


def _targets(node, where: str = "") -> list[tuple[str, dict]]:
    """Every ``_target_`` node under ``node`` as (where, the node as a plain dict)."""
    found = []
    if isinstance(node, DictConfig):
        if "_target_" in node:
            found.append((where, OmegaConf.to_container(node, resolve=True)))
        for key in node:
            found += _targets(node[key], f"{where}.{key}")
    elif isinstance(node, ListConfig):
        for i, item in enumerate(node):
            found += _targets(item, f"{where}[{i}]")
    return found


def _check_target(where: str, node: dict) -> type:
    """``_target_`` imports and the class (or function) accepts the node's arguments."""
    target = _locate(node["_target_"])  # raises ImportError on a typo
    kwargs = {k: v for k, v in node.items() if not k.startswith("_")}
    try:
        inspect.signature(target).bind_partial(**kwargs)
    except TypeError as err:
        raise AssertionError(
            f"{where}: {node['_target_']} does not accept {kwargs}: {err}"
        ) from None
    return target


def _machine_has(trainer_cfg: DictConfig) -> bool:
    """Whether this machine can build the Trainer (no GPU, one node, 2 CPUs)."""
    return trainer_cfg.accelerator in ("cpu", "auto") and trainer_cfg.get("num_nodes", 1) == 1


@pytest.mark.parametrize("option", options("trainer"))
def test_every_trainer_option_instantiates(option, tmp_path):
    cfg = compose_train([f"trainer={option}", f"paths.output_dir={tmp_path}"])
    targets = _targets(cfg.trainer, "trainer")
    assert [t[1]["_target_"] for t in targets][:1] == ["lightning.Trainer"]
    for where, node in targets:
        _check_target(where, node)
    if not _machine_has(cfg.trainer):
        # a GPU, several nodes: not buildable here; the config still says what it is for
        assert cfg.trainer.accelerator == "gpu", option
        return
    trainer = instantiate(cfg.trainer, logger=False, enable_progress_bar=False)
    assert isinstance(trainer, L.Trainer)
    assert trainer.max_steps == cfg.trainer.max_steps
    assert trainer.val_check_interval == cfg.trainer.val_check_interval
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    assert trainer.default_root_dir == str(tmp_path)
    assert trainer.precision == str(cfg.trainer.precision)
    if cfg.trainer.get("strategy") == "ddp":  # ddp_cpu: two gloo processes, started by fit()
        assert isinstance(trainer.strategy, DDPStrategy)
        assert trainer.num_devices == 2 and trainer.world_size == 2
    assert isinstance(trainer.accelerator, CPUAccelerator)


@pytest.mark.parametrize("option", options("logger"))
def test_every_logger_option_instantiates_into_the_run_folder(option, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = compose_train([f"logger={option}", f"paths.output_dir={tmp_path}"])
    expected = {
        "csv": {CSVLogger},
        "tensorboard": {TensorBoardLogger},
        "wandb": {WandbLogger},
        "many": {CSVLogger, TensorBoardLogger, WandbLogger},
    }[option]
    loggers = [instantiate(node) for node in cfg.logger.values()]
    assert {type(logger) for logger in loggers} == expected
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            # not started (a W&B run is in test_experiments): its files would go here
            assert Path(logger.save_dir) == tmp_path
            assert logger._wandb_init["dir"] == str(tmp_path)
            continue
        logger.log_metrics({"val/psnr_mu": 1.5}, step=3)
        logger.save()
        logger.finalize("success")
        assert Path(logger.log_dir).is_relative_to(tmp_path), logger.log_dir
        assert any(Path(logger.log_dir).iterdir()), f"{type(logger).__name__} wrote nothing"


CALLBACKS = {
    "model_checkpoint": BestCheckpoint,
    "last_checkpoint": LastCheckpoint,
    "preemption": Preemption,
    "lr_monitor": LearningRateMonitor,
    "tqdm_progress_bar": StepTQDMProgressBar,
    "rich_progress_bar": StepRichProgressBar,
    "image_preview": ImagePreview,
    "ema": EMA,  # added to another option: callbacks=[default,ema]
}


def test_every_callbacks_option_instantiates_and_a_trainer_takes_it(tmp_path):
    """The composite options are composed by Hydra; the one-callback files (composed in
    ``test_every_option_composes``) are resolved against the same paths, to save time."""
    single = {
        option: OmegaConf.merge(
            {"paths": {"output_dir": str(tmp_path)}},
            {"callbacks": OmegaConf.load(CONF_DIR / "callbacks" / f"{option}.yaml")},
        ).callbacks
        for option in options("callbacks")
        if option in CALLBACKS
    }
    composite = {
        option: compose_train([f"callbacks={option}", f"paths.output_dir={tmp_path}"]).callbacks
        for option in options("callbacks")
        if option not in CALLBACKS
    }
    assert sorted(composite) == ["default", "none", "rich"]
    assert sorted(single) == sorted(CALLBACKS)
    for option, nodes in {**single, **composite}.items():
        callbacks = [instantiate(node) for node in (nodes or {}).values()]
        kinds = {type(c) for c in callbacks}
        if option in CALLBACKS:
            assert kinds == {CALLBACKS[option]}
        elif option == "none":
            assert callbacks == []
        else:
            bar = StepRichProgressBar if option == "rich" else StepTQDMProgressBar
            bars = {StepTQDMProgressBar, StepRichProgressBar}
            assert kinds == (set(CALLBACKS.values()) - bars - {EMA}) | {bar}, option
        for callback in callbacks:
            if hasattr(callback, "dirpath"):
                assert Path(callback.dirpath) == tmp_path / "checkpoints"
        trainer = L.Trainer(
            accelerator="cpu", logger=False, callbacks=callbacks, default_root_dir=tmp_path
        )
        assert all(c in trainer.callbacks for c in callbacks), option


# --- the paper's ablation sweeps, expanded as Hydra's basic sweeper does ----------------

PAPER_SWEEPS = {  # the README's table (and the paper's ablation tables): group, variants
    "ablation_patch": ("patch", ["64px", "128px", "160px", "256px"]),
    "ablation_loss": ("loss", ["l1", "l2", "tanh_l1", "tanh_l2", "mu_l1"]),
    "ablation_modules": ("model", ["base", "base_weighting", "base_condition", "full"]),
    "ablation_modulation": ("modulation", ["none", "channel", "sft"]),
    "ablation_condition": ("condition", ["image", "gradient"]),
}


def _readme_sweeps() -> dict[str, str]:
    readme = (REPO / "README.md").read_text()
    rows = re.findall(r"^\| `(ablation_\w+)` \| `(\w+=[\w,]+)`", readme, flags=re.M)
    return dict(rows)


def test_every_ablation_sweep_expands_to_the_papers_jobs_and_each_job_composes():
    sweeps = [
        o for o in options("experiment") if o.startswith("ablation_") and o != "ablation_base"
    ]
    assert sorted(sweeps) == sorted(PAPER_SWEEPS)
    readme = _readme_sweeps()
    for experiment, (group, variants) in PAPER_SWEEPS.items():
        assert readme[experiment] == f"{group}={','.join(variants)}", experiment
        params = OmegaConf.load(CONF_DIR / "experiment" / f"{experiment}.yaml").hydra.sweeper.params
        jobs = sweep_jobs([f"{k}={v}" for k, v in params.items()])
        assert jobs == [[f"{group}={v}"] for v in variants], experiment  # in the table's order
        for job in jobs:
            cfg = compose_train([f"experiment={experiment}", *job], with_hydra=True)
            assert cfg.hydra.sweeper.params == params  # what `-m` expands is this file's
            choices = cfg.hydra.runtime.choices
            assert choices[group] == job[0].split("=")[1]
            # the ablation recipe: the paper's, with 160-px patches where patch is not swept
            assert cfg.data.batch_size == 16 and cfg.trainer.max_steps == 1_000_000
            assert cfg.trainer.precision == "32-true"
            patch = int(choices.patch.removesuffix("px"))
            assert cfg.data.patch_size == patch and (group == "patch" or patch == 160)
            assert cfg.model.loss.name == (choices.loss if group == "loss" else "tanh_l1")
            assert cfg.model.net.modulation == choices.modulation
            check_groups_apply(cfg, job, choices.model)  # no paper job is refused
            assert cfg.model.net.condition == choices.condition
            if group == "model":
                assert cfg.model.net.use_condition == ("condition" in job[0] or "full" in job[0])
                assert cfg.model.net.use_weighting == ("weighting" in job[0] or "full" in job[0])


# --- scale, camera and inference: each option composes and its values reach the objects --


@pytest.mark.parametrize("option", options("scale"))
def test_every_scale_option_reaches_data_model_and_trainer(option, tmp_path):
    scale = OmegaConf.load(CONF_DIR / "scale" / f"{option}.yaml")
    cfg = compose_train(
        [
            "experiment=ablation_loss",
            f"+scale={option}",
            "trainer=cpu",
            f"paths.output_dir={tmp_path}",
        ]
    )
    if option == "short":  # the paper's network: keep the test light
        cfg.model.net.nf = 8
    module = instantiate(cfg.model)
    scheduler = module.configure_optimizers()["lr_scheduler"]["scheduler"]
    trainer = instantiate(cfg.trainer, logger=False, enable_progress_bar=False)
    assert trainer.max_steps == scale.trainer.max_steps
    assert trainer.val_check_interval == scale.trainer.val_check_interval
    milestones = scale.model.get("scheduler", {}).get(
        "milestones", [200_000, 400_000, 600_000, 800_000]
    )
    assert sorted(scheduler.milestones) == list(milestones)
    if "data" in scale:
        datamodule = instantiate(cfg.data)
        assert datamodule.batch_size == scale.data.batch_size
        assert datamodule.num_workers == scale.data.num_workers
        val = datamodule.val_set
        assert len(val) == scale.data.val_set.num_images
        assert tuple(val[0]["ldr"].shape[-2:]) == (
            scale.data.val_set.height,
            scale.data.val_set.width,
        )
        assert module.net.config.nf == scale.model.net.nf
        assert trainer.precision == scale.trainer.precision


def _camera_of(dataset):
    return getattr(dataset, "dataset", dataset).camera


@pytest.mark.parametrize("option", options("camera"))
def test_every_camera_option_reaches_the_datasets_camera_model(option, tmp_path):
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        camera = compose(config_name=f"camera/{option}").camera  # with its defaults list
    settings = {
        key: tuple(value) if isinstance(value, ListConfig) else value
        for key, value in camera.items()
        if not key.startswith("_")
    }
    write_radiance(tmp_path / "a.hdr", np.ones((8, 8, 3), np.float32))
    write_radiance(tmp_path / "b.hdr", np.ones((8, 8, 3), np.float32))
    synthetic = compose_train([f"camera={option}", "data.num_workers=0"])
    folder = compose_train(
        [
            "data=hdr_folder",
            f"camera={option}",
            "camera.clip_fraction=[0.3,0.4]",  # a changed value reaches the objects too
            f"data.root={tmp_path}",
            "data.val_count=1",
            "data.patch_size=8",
            "data.num_workers=0",
        ]
    )
    for data, expected in (
        (synthetic.data, settings),
        (folder.data, {**settings, "clip_fraction": (0.3, 0.4)}),
    ):
        datamodule = instantiate(data)
        for dataset in (datamodule.train_set, datamodule.val_set):
            model = _camera_of(dataset)
            assert isinstance(model, CameraModel)
            assert {k: getattr(model, k) for k in settings} == expected


@pytest.mark.parametrize("option", options("inference"))
def test_every_inference_option_reaches_the_predictor(option, tiny_checkpoint):
    """The group's values reach predict's Predictor; eval's, with overrides, win over them."""
    settings = OmegaConf.load(CONF_DIR / "inference" / f"{option}.yaml")
    cfg = compose_config("predict", [f"inference={option}", f"ckpt={tiny_checkpoint}"])
    assert {key: cfg[key] for key in settings} == settings
    predictor = make_predictor(cfg)
    assert predictor.device == resolve_device(settings.device)
    assert predictor.dtype == resolve_dtype(settings.precision, predictor.device)
    assert predictor.tile == settings.tile and predictor.memory_gb == settings.memory_gb
    assert predictor.overlap == (settings.overlap or DEFAULT_OVERLAP)
    assert predictor.tile_batch == settings.tile_batch
    assert (predictor.model._compiled_call_impl is not None) == settings.compile
    changed = {"precision": 32, "tile": 320, "overlap": 100, "memory_gb": 0.5, "tile_batch": 3}
    cfg = compose_config(
        "eval",
        [
            f"inference={option}",
            f"ckpt={tiny_checkpoint}",
            *(f"{k}={v}" for k, v in changed.items()),
        ],
    )
    assert {key: cfg[key] for key in settings} == {**settings, **changed}
    predictor = make_predictor(cfg)
    assert predictor.dtype == torch.float32
    assert (predictor.tile, predictor.overlap, predictor.memory_gb, predictor.tile_batch) == (
        320,
        100,
        0.5,
        3,
    )


@pytest.mark.parametrize(
    "overrides", [["experiment=demo"], ["data=hdr_folder", "data.root=photos"]], ids=str
)
def test_scale_smoke_on_other_data_than_synthetic_is_one_clear_line(overrides, tmp_path):
    """+scale=smoke shrinks data=synthetic's validation scenes: elsewhere it names the cause
    instead of a data module's "unexpected keyword argument 'val_set'"."""
    from hdrunet_pl.train import train

    cfg = compose_train([*overrides, "+scale=smoke", f"paths.output_dir={tmp_path / 'run'}"])
    with pytest.raises(HDRUNetError, match=r"^data\.val_set: only data=synthetic has it"):
        train(cfg)
    ablation = compose_train(["experiment=ablation_loss", "+scale=smoke"])
    assert ablation.data._target_ == "hdrunet_pl.data.HDRDataModule"  # what smoke is for


@pytest.mark.parametrize("trainer", ["gpu", "ddp"])
def test_a_gpu_trainer_without_a_gpu_says_what_to_do(trainer, tmp_path, monkeypatch):
    """Instead of Lightning's "No supported gpu backend found!"."""
    from hdrunet_pl.train import train

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = compose_train([f"trainer={trainer}", f"paths.output_dir={tmp_path / 'run'}"])
    with pytest.raises(
        HDRUNetError, match=r"^trainer.accelerator=gpu: no CUDA GPU here .*trainer=cpu"
    ):
        train(cfg)
    assert not (tmp_path / "run").exists()  # refused before the run folder is made


def test_run_folder_names_leave_paths_out():
    """A folder name says what ran (the variant), not where files were read from."""
    paths = ["paths.samples_dir=/data/hdri", "init_weights=/w/x.pth", "paths.min_free_gb=2"]
    cfg = compose_train([*paths, "loss=l1", "data=stream", "data.cache_dir=/c"], True)
    assert cfg.hydra.job.override_dirname == "data-stream_loss-l1"
