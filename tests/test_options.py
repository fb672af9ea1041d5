"""Options the README advertises, each checked for its effect (not only that it runs).

``compile=true`` / ``model.compile=true``: an inductor compile of even the nf-8 network
took 54-72 s on the 2-core development CPU with an empty compile cache (9 s with a warm
one), too slow for ``make test``. The fast tests therefore run ``torch.compile`` with
dynamo's ``eager`` backend: the frames are still captured by dynamo (the counters show it)
and the graph is run as captured, so they show that the flag really compiles the network
and that the compiled network gives the eager results. The inductor path itself is checked
by the ``slow`` test at the end (``make test-slow``).
"""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import lightning as L
import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from lightning.pytorch.plugins import MixedPrecision
from torch._dynamo.utils import counters

from hdrunet_pl import evaluate
from hdrunet_pl.io import imread, read_hdr_png, read_ldr, read_radiance, write_exr, write_hdr
from hdrunet_pl.predict import make_predictor
from hdrunet_pl.reliability import NonFiniteError
from hdrunet_pl.train import train

from .helpers import NaNGradientAt
from .ntire_files import random_hdr, write_ntire_frame
from .organisers import ntire_psnr_l_numpy, ntire_psnr_mu_numpy
from .support import (
    FAST,
    SMALL_SYNTHETIC_VAL,
    bare_trainer,
    compose_config,
    compose_train,
)


@pytest.fixture
def eager_backend(monkeypatch):
    """``torch.compile`` with dynamo's eager backend (see the module docstring); dynamo's
    counters start from zero."""
    real = torch.compile

    def compile_eagerly(*args, **kwargs):
        kwargs["backend"] = "eager"
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "compile", compile_eagerly)
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


def compiled_graphs() -> int:
    return counters["stats"]["unique_graphs"]


# --- compile=true (predict/eval) and model.compile=true (training) ------------------------


def test_compile_true_compiles_the_predictors_network(tiny_checkpoint, eager_backend):
    ldr = torch.rand(3, 36, 52)
    eager = make_predictor(compose_config("predict", [f"ckpt={tiny_checkpoint}", "precision=32"]))
    expected = eager(ldr)
    assert compiled_graphs() == 0
    for tool in ("predict", "eval"):
        cfg = compose_config(tool, [f"ckpt={tiny_checkpoint}", "precision=32", "compile=true"])
        predictor = make_predictor(cfg)
        assert predictor.model._compiled_call_impl is not None, tool  # nn.Module.compile
    got = predictor(ldr)
    assert compiled_graphs() >= 1  # dynamo captured and compiled the forward pass
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-6)


@pytest.fixture(scope="module")
def csv_run(tmp_path_factory) -> Path:
    """A few steps of the tiny network with the default (csv) logger and callbacks."""
    run_dir = tmp_path_factory.mktemp("csv_run")
    train(compose_train([*FAST, *SMALL_SYNTHETIC_VAL, f"paths.output_dir={run_dir}"]))
    return run_dir


def _losses(run_dir: Path) -> list[float]:
    with open(run_dir / "csv" / "metrics.csv") as f:
        return [float(r["train/loss"]) for r in csv.DictReader(f) if r["train/loss"]]


def test_model_compile_true_compiles_training_with_eager_results(tmp_path, eager_backend):
    """Two steps, no validation (a validation image's other shape would compile again)."""
    losses = {}
    for name, flag in (("eager", "false"), ("compiled", "true")):
        graphs = compiled_graphs()
        overrides = [*FAST, "validate_first=false", "+trainer.limit_val_batches=0"]
        cfg = compose_train(
            [
                *overrides,
                "trainer.max_steps=2",
                f"model.compile={flag}",
                f"paths.output_dir={tmp_path / name}",
            ]
        )
        train(cfg)
        losses[name] = _losses(tmp_path / name)
        assert (compiled_graphs() > graphs) == (flag == "true"), name
    assert len(losses["compiled"]) == 2
    np.testing.assert_allclose(losses["compiled"], losses["eager"], rtol=1e-5)


@pytest.mark.slow
def test_inductor_compile_matches_eager_inference(tiny_checkpoint):
    """The real thing: inductor on the CPU (54-72 s with an empty compile cache)."""
    torch._dynamo.reset()
    counters.clear()
    ldr = torch.rand(3, 32, 32)
    eager = make_predictor(compose_config("predict", [f"ckpt={tiny_checkpoint}", "precision=32"]))
    cfg = compose_config("predict", [f"ckpt={tiny_checkpoint}", "precision=32", "compile=true"])
    got = make_predictor(cfg)(ldr)
    assert compiled_graphs() >= 1
    torch.testing.assert_close(got, eager(ldr), atol=1e-4, rtol=1e-4)
    torch._dynamo.reset()


# --- tile_batch > 1 ------------------------------------------------------------------------


def test_tile_batch_runs_tiles_together_with_the_same_result(tiny_checkpoint):
    ldr = torch.rand(3, 100, 140)
    tiling = [f"ckpt={tiny_checkpoint}", "precision=32", "tile=48", "overlap=16"]
    outputs, batch_sizes = {}, {}
    for tile_batch in (1, 3):
        predictor = make_predictor(compose_config("predict", [*tiling, f"tile_batch={tile_batch}"]))
        sizes = batch_sizes[tile_batch] = []
        predictor.network.register_forward_pre_hook(lambda m, a, s=sizes: s.append(len(a[0])))
        outputs[tile_batch] = predictor(ldr)
    # 3 x 4 tiles: one at a time, or (where three have one size) three in one pass
    assert batch_sizes[1] == [1] * 12
    assert 3 in batch_sizes[3] and sum(batch_sizes[3]) == 12 and len(batch_sizes[3]) < 12
    torch.testing.assert_close(outputs[3], outputs[1], atol=1e-5, rtol=1e-5)


# --- data.val_root and data.rows -----------------------------------------------------------


def _names(loader) -> list[str]:
    return [name for batch in loader for name in batch["name"]]


def test_ntire_val_root_is_what_validation_and_eval_read(tmp_path, tiny_checkpoint):
    for i, folder in ((0, "train"), (1, "train"), (2, "train"), (7, "val"), (8, "val")):
        write_ntire_frame(tmp_path / folder, f"{i:04d}", random_hdr(24, 32, seed=i))
    data = [
        "data=ntire2021",
        f"data.root={tmp_path / 'train'}",
        f"data.val_root={tmp_path / 'val'}",
        "data.val_count=1",  # ignored with val_root (without: 0002 would be held out)
        "data.num_workers=0",
        "data.patch_size=16",
    ]
    datamodule = instantiate(compose_train(data).data)
    assert _names(datamodule.val_dataloader()) == ["0007", "0008"]
    assert [p.name for p in datamodule.train_set.dataset.pairs] == ["0000", "0001", "0002"]
    # hdrunet-eval ckpt=... data=ntire2021 data.root=... data.val_root=...
    cfg = compose_config(
        "eval", [f"ckpt={tiny_checkpoint}", "precision=32", f"output={tmp_path / 'eval'}", *data]
    )
    scores = evaluate.run(cfg)
    assert [s.name for s in scores] == ["0007", "0008"]


def _banded_exr(path: Path, height: int = 40, width: int = 24) -> np.ndarray:
    """Linear radiance that differs on every row (so that a band can be recognised)."""
    rows = np.geomspace(0.01, 50.0, height, dtype=np.float32)
    image = rows[:, None, None] * np.linspace(0.5, 1.0, width, dtype=np.float32)[None, :, None]
    image = np.repeat(image, 3, axis=2).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_exr(path, image)
    return image


def test_hdr_folder_rows_and_val_root(tmp_path):
    linear = {}
    for name, folder in (("a", "train"), ("b", "train"), ("c", "val")):
        linear[name] = _banded_exr(tmp_path / folder / f"{name}.exr")
    cfg = compose_train(
        [
            "data=hdr_folder",
            f"data.root={tmp_path / 'train'}",
            f"data.val_root={tmp_path / 'val'}",
            "data.val_count=1",  # ignored with val_root (without: b would be held out)
            "data.rows=[0.25,0.75]",
            "data.num_workers=0",
            "data.patch_size=8",
        ]
    )
    datamodule = instantiate(cfg.data)
    assert _names(datamodule.val_dataloader()) == ["c"]  # val_root, not root's last files
    assert [p.name for p in datamodule.train_set.dataset.files] == ["a.exr", "b.exr"]
    band = slice(10, 30)  # rows 0.25 to 0.75 of 40
    for dataset, name in ((datamodule.val_set, "c"), (datamodule.train_set.dataset, "a")):
        hdr = dataset[0]["hdr"].double().numpy().transpose(1, 2, 0)
        assert hdr.shape == (20, 24, 3)
        # the target is (exposure * linear) ** (1 / 2.24): one exposure for the whole band
        exposure = hdr**2.24 / linear[name][band]
        np.testing.assert_allclose(exposure, exposure.mean(), rtol=1e-4)


# --- previews with the csv logger ----------------------------------------------------------


def test_image_preview_writes_pngs_with_the_csv_logger(csv_run):
    previews = sorted(p.name for p in (csv_run / "previews").iterdir())
    # two validation images at each validation: before training (step 0), after 2 and 4
    assert previews == [
        f"step{step:07d}_synthetic_1_{i:06d}.png" for step in (0, 2, 4) for i in range(2)
    ]
    assert not (csv_run / "tensorboard").exists() and not (csv_run / "wandb").exists()
    strip = imread(csv_run / "previews" / previews[-1])
    # LDR | prediction | GT | error, each a 36x52 image
    assert strip.dtype == np.uint8 and strip.shape[0] >= 36 and strip.shape[1] >= 4 * 52
    assert strip.std() > 0


# --- hdrunet-eval: ldr_dir= and .exr/.hdr results ------------------------------------------


@pytest.fixture(scope="module")
def scored(tmp_path_factory) -> dict:
    """NTIRE ground truth + LDR in ``data/`` and the same results as PNG pairs, EXR and
    Radiance files; ``scores[kind]`` is hdrunet-eval's rows for each."""
    root = tmp_path_factory.mktemp("eval")
    rng = np.random.default_rng(5)
    exact = {}
    for kind in ("png", "exr", "hdr"):
        (root / kind).mkdir()
    for i in range(3):
        name = f"{i:04d}"
        exact[name], _, _ = write_ntire_frame(root / "data", name, random_hdr(24, 32, seed=10 + i))
        pred = np.clip(exact[name] * rng.uniform(0.7, 1.3, exact[name].shape), 0, None)
        # RGBE shares one exponent per pixel (a channel far below the pixel's brightest
        # loses its bits), so the values are first made what a .hdr can hold; then the
        # PNG pair holds them (16-bit) and the EXR holds the PNG pair's values
        write_hdr(root / "hdr" / f"{name}.hdr", pred.astype(np.float32))
        held = read_radiance(root / "hdr" / f"{name}.hdr") ** np.float32(1 / 2.24)
        write_hdr(root / "png" / f"{name}.png", held)
        write_hdr(root / "exr" / f"{name}.exr", read_hdr_png(root / "png" / f"{name}.png"))
    scores = {}
    for kind, extra in (("png", []), ("png+ldr", [f"ldr_dir={root / 'data'}"]), ("exr", [])):
        kind_dir = kind.split("+")[0]
        cfg = compose_config(
            "eval",
            [
                f"pred_dir={root / kind_dir}",
                f"gt_dir={root / 'data'}",
                f"output={root / kind}",
                *extra,
            ],
        )
        evaluate.run(cfg)
        with open(root / kind / "scores.csv") as f:
            scores[kind] = {r["name"]: r for r in csv.DictReader(f)}
    cfg = compose_config(
        "eval", [f"pred_dir={root / 'hdr'}", f"gt_dir={root / 'data'}", f"output={root / 'hdr_'}"]
    )
    evaluate.run(cfg)
    with open(root / "hdr_" / "scores.csv") as f:
        scores["hdr"] = {r["name"]: r for r in csv.DictReader(f)}
    return {"root": root, "scores": scores}


def test_eval_ldr_dir_adds_the_identity_baseline(scored):
    root, scores = scored["root"], scored["scores"]
    without, with_ldr = scores["png"], scores["png+ldr"]
    assert all(row["identity_psnr_mu"] == "" for row in without.values())
    mu, l_ = [], []
    for name in ("0000", "0001", "0002"):
        ldr = read_ldr(root / "data" / f"{name}_medium.png")
        gt = read_hdr_png(root / "data" / f"{name}_gt.png")
        mu.append(ntire_psnr_mu_numpy(ldr, gt))
        l_.append(ntire_psnr_l_numpy(ldr, gt))
        row = with_ldr[name]
        assert float(row["identity_psnr_mu"]) == pytest.approx(mu[-1], abs=1e-3)
        assert float(row["identity_psnr_l"]) == pytest.approx(l_[-1], abs=1e-3)
        assert row["psnr_mu"] == without[name]["psnr_mu"]  # the result's own scores stay
    assert float(with_ldr["mean"]["identity_psnr_mu"]) == pytest.approx(np.mean(mu), abs=1e-3)
    assert float(with_ldr["mean"]["identity_psnr_l"]) == pytest.approx(np.mean(l_), abs=1e-3)


def test_eval_ldr_dir_finds_photos_by_the_names_predict_gives_their_results(tmp_path):
    """Results of photos (``holiday_medium.png`` -> ``holiday_medium.exr``, ``scene.png`` ->
    ``scene.exr``) find their LDR in ``ldr_dir``; 8-bit PNGs beside the results (an
    overview, eval's own best_/worst_ images) are no results."""
    from hdrunet_pl.errors import HDRUNetError

    photos, gts, preds = (tmp_path / n for n in ("photos", "gt", "pred"))
    for folder in (photos, gts, preds):
        folder.mkdir()
    rng = np.random.default_rng(2)
    # the LDR of each result: photos by the result's own name (shot_pred, whose frame id
    # drops _pred), an NTIRE frame by its id (an upper-case suffix too)
    ldr_names = {
        "holiday_medium": "holiday_medium.png",
        "scene": "scene.png",
        "shot_pred": "shot_pred.png",
        "0003": "0003_medium.PNG",
    }
    for i, (name, ldr_name) in enumerate(ldr_names.items()):
        gt = random_hdr(20, 28, seed=30 + i)
        write_hdr(gts / f"{name}.exr", gt)
        write_hdr(preds / f"{name}.exr", gt * rng.uniform(0.8, 1.2, gt.shape).astype(np.float32))
        cv2.imwrite(str(photos / ldr_name), rng.integers(0, 256, (20, 28, 3), np.uint8))
    for extra in ("overview.png", "best_scene.png"):  # 8-bit, no align ratio: no results
        cv2.imwrite(str(preds / extra), np.full((20, 28, 3), 128, np.uint8))
    args = [f"pred_dir={preds}", f"gt_dir={gts}", "metrics=[psnr_mu,psnr_l]"]
    scores = evaluate.run(
        compose_config("eval", [*args, f"ldr_dir={photos}", f"output={tmp_path / 'e'}"])
    )
    assert sorted(s.name for s in scores) == ["0003", "holiday_medium", "scene", "shot"]
    for s in scores:
        stem = "shot_pred" if s.name == "shot" else s.name
        ldr = read_ldr(photos / ldr_names[stem])
        gt = evaluate.read_nonlinear(gts / f"{stem}.exr", "fill").permute(1, 2, 0).numpy()
        assert s.identity_psnr_mu == pytest.approx(ntire_psnr_mu_numpy(ldr, gt), abs=1e-3)
        assert s.identity_psnr_l == pytest.approx(ntire_psnr_l_numpy(ldr, gt), abs=1e-3)
    cv2.imwrite(str(photos / "scene.jpg"), np.full((20, 28, 3), 99, np.uint8))
    with pytest.raises(
        HDRUNetError, match=r"scene\.jpg and scene\.png could each be the LDR of scene"
    ):
        evaluate.run(
            compose_config("eval", [*args, f"ldr_dir={photos}", f"output={tmp_path / 'f'}"])
        )
    (photos / "scene.jpg").unlink()
    (photos / "scene.png").unlink()
    with pytest.raises(HDRUNetError, match=r"no LDR image for scene \(scene_medium\.png, or scene"):
        evaluate.run(
            compose_config("eval", [*args, f"ldr_dir={photos}", f"output={tmp_path / 'g'}"])
        )
    # a result PNG that lost its align ratio: named as the reason its GT has no result
    (preds / "scene.exr").unlink()
    cv2.imwrite(str(preds / "scene.png"), np.full((20, 28, 3), 128, np.uint16))
    with pytest.raises(
        HDRUNetError,
        match=r"no result for 1 GT image.*scene\.png there: a PNG without its align ratio",
    ):
        evaluate.run(compose_config("eval", [*args, f"output={tmp_path / 'h'}"]))


@pytest.mark.parametrize(("kind", "tolerance_db"), [("exr", 1e-3), ("hdr", 2e-3)])
def test_exr_and_hdr_results_score_as_their_png_pair(scored, kind, tolerance_db):
    """EXR (float32) holds the PNG pair's values to float rounding; the PNG pair holds the
    Radiance file's values to 16 bits."""
    png, other = scored["scores"]["png"], scored["scores"][kind]
    assert sorted(other) == sorted(png)
    for name in png:
        for column in ("psnr_mu", "psnr_l"):
            assert float(other[name][column]) == pytest.approx(
                float(png[name][column]), abs=tolerance_db
            ), (name, column)


# --- the fp16 branch of the NaN/Inf check ---------------------------------------------------


class NaNTargetAt(L.Callback):
    """Makes the target of step ``step``'s batch NaN (so its loss is NaN)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            batch["hdr"][:] = float("nan")


def _fp16_fit(poison: L.Callback) -> tuple:
    """Three steps under fp16 mixed precision (a gradient scaler; on the CPU, by giving
    Lightning the plugin, as a GPU's ``trainer.precision=16-mixed`` would make it)."""
    cfg = compose_train([*FAST, *SMALL_SYNTHETIC_VAL])
    model = instantiate(cfg.model)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    snapshots = []

    class Snapshot(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, *args):
            weights = [p.detach().clone() for p in pl_module.parameters()]
            snapshots.append((weights, scaler.get_scale()))

    trainer = bare_trainer(
        accelerator="cpu",
        max_steps=3,
        limit_val_batches=0,
        plugins=[MixedPrecision("16-mixed", "cpu", scaler)],
        callbacks=[poison, Snapshot()],
    )
    assert trainer.precision_plugin.scaler is scaler
    return model, trainer, instantiate(cfg.data), snapshots


def test_fp16_nan_gradient_is_left_to_the_gradient_scaler():
    model, trainer, data, snapshots = _fp16_fit(NaNGradientAt(1))
    trainer.fit(model, datamodule=data)  # not stopped: the scaler skips the step
    assert model.skipped_batches == 0
    (after_0, scale_0), (after_1, scale_1), (after_2, _) = snapshots
    assert all(torch.equal(a, b) for a, b in zip(after_0, after_1, strict=True))  # skipped
    assert scale_1 == scale_0 / 2  # the scaler saw the inf/NaN and backed off
    assert not all(torch.equal(a, b) for a, b in zip(after_1, after_2, strict=True))
    assert all(torch.isfinite(p).all() for p in after_2)


def test_fp16_nan_loss_still_stops_the_run():
    model, trainer, data, _ = _fp16_fit(NaNTargetAt(1))
    with pytest.raises(NonFiniteError, match=r"step 2: loss is nan"):
        trainer.fit(model, datamodule=data)
