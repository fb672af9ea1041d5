"""data=mixed: synthetic scenes and HDR folders mixed by weight, with epochs of a set length
and the same batches after a resume."""

import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from torch.utils.data import Dataset

from hdrunet_pl.camera import CameraModel
from hdrunet_pl.data import HeldOutCaptures, MixedDataModule, MixedSources
from hdrunet_pl.errors import HDRUNetError
from hdrunet_pl.io import write_radiance
from hdrunet_pl.outputs import OutputFolder

from .support import compose_config, compose_train


class Labelled(Dataset):
    """``size`` items whose "name" says the source and which key they were given."""

    def __init__(self, label: str, size: int) -> None:
        self.label, self.size = label, size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, key):
        index, seed = key
        assert 0 <= index < self.size
        return {"name": f"{self.label}:{index}:{seed}"}


def test_sources_are_drawn_by_weight_whatever_their_size():
    mixed = MixedSources([Labelled("a", 2), Labelled("b", 5000), Labelled("c", 7)], [1, 2, 0], 50)
    assert len(mixed) == 50  # the epoch's length is set, not the sum of the sources'
    names = [mixed[(i % 50, seed)]["name"] for i, seed in enumerate(range(3000))]
    share = {s: sum(n.startswith(s + ":") for n in names) / len(names) for s in "abc"}
    assert share["a"] == pytest.approx(1 / 3, abs=0.03)
    assert share["b"] == pytest.approx(2 / 3, abs=0.03)
    assert share["c"] == 0
    # a small source is drawn from all over, many times (many crops per image)
    assert {n.split(":")[1] for n in names if n.startswith("a:")} == {"0", "1"}


def test_an_item_is_a_function_of_its_key():
    mixed = MixedSources([Labelled("a", 10), Labelled("b", 10)])
    assert mixed[(3, 77)] == mixed[(3, 77)]
    assert len({mixed[(3, seed)]["name"] for seed in range(20)}) > 10
    assert mixed[4] == mixed[4]  # a plain index (validation-style keys) is deterministic


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sources": []}, "at least one source"),
        ({"sources": [Labelled("a", 1)], "weights": [1, 2]}, "weights"),
        ({"sources": [Labelled("a", 1)], "weights": [0]}, "not all 0"),
        ({"sources": [Labelled("a", 1)], "length": 0}, "length"),
    ],
)
def test_mixture_settings_are_checked(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MixedSources(**kwargs)


def write_photos(folder, name: str, size: tuple[int, int], seed: int = 0):
    """Three random linear HDR 'photographs' ``<name>0.hdr``... of ``size`` in ``folder``."""
    folder.mkdir()
    rng = np.random.default_rng(seed)
    for i in range(3):
        image = (rng.random((*size, 3)) ** 4 * 50 + 0.01).astype(np.float32)
        write_radiance(folder / f"{name}{i}.hdr", image)
    return folder


@pytest.fixture
def photos(tmp_path):
    """Three small linear HDR 'photographs'."""
    return write_photos(tmp_path / "photos", "photo", (40, 56))


def _datamodule(photos, *overrides: str) -> MixedDataModule:
    cfg = compose_train(
        [
            "data=mixed",
            f"data.folders.photos.root={photos}",
            "data.folders.photos.val_count=1",
            "data.synthetic_val_images=2",
            "data.samples_per_epoch=24",
            "patch=32px",
            "data.batch_size=4",
            "data.num_workers=0",
            "camera=real",
            *overrides,
        ]
    )
    return instantiate(cfg.data)


def _epochs(datamodule: MixedDataModule, step: int, count: int = 1) -> list[list[dict]]:
    """The batches of ``count`` epochs of a run that starts (or resumes) after ``step``."""
    datamodule.trainer = _fake_trainer(step)
    loader = datamodule.train_dataloader()
    return [list(loader) for _ in range(count)]


def _fake_trainer(step: int, device: str = "cpu") -> SimpleNamespace:
    strategy = SimpleNamespace(root_device=torch.device(device))
    return SimpleNamespace(global_step=step, global_rank=0, world_size=1, strategy=strategy)


def test_batches_are_page_locked_for_a_gpu_only(photos):
    datamodule = _datamodule(photos)
    for device, pinned in (("cpu", False), ("cuda", True)):
        datamodule.trainer = _fake_trainer(0, device)
        assert datamodule.train_dataloader().pin_memory is pinned
        assert datamodule.val_dataloader().pin_memory is pinned


def test_mixed_config_builds_sources_epochs_and_validation(photos):
    datamodule = _datamodule(photos)
    assert len(datamodule.train_set) == 24  # samples_per_epoch, not 2 files + scenes
    (epoch,) = _epochs(datamodule, 0)
    assert len(epoch) == 6
    names = [name for batch in epoch for name in batch["name"]]
    assert any(n.startswith("photo") for n in names) and any(n.startswith("synth") for n in names)
    assert not any(n == "photo2" for n in names), "the held-out photo never trains"
    val = [datamodule.val_set[i]["name"] for i in range(len(datamodule.val_set))]
    assert len(val) == 3 and val[-1] == "photo2"  # 2 synthetic scenes, then the held-out file


def test_a_resumed_mixed_stream_repeats_the_same_batches(photos):
    first, second = _epochs(_datamodule(photos), 0, 2)  # 6 steps an epoch
    resumed = _epochs(_datamodule(photos), 4, 2)  # a run resumed after step 4 ...
    later = _epochs(_datamodule(photos), 7)  # ... and one after step 7, in the second epoch
    pairs = [
        *zip(first[4:], resumed[0], strict=True),
        *zip(second, resumed[1], strict=True),
        *zip(second[1:], later[0], strict=True),
    ]
    assert len(pairs) == 2 + 6 + 5
    for a, b in pairs:
        assert a["name"] == b["name"]
        assert torch.equal(a["ldr"], b["ldr"]) and torch.equal(a["hdr"], b["hdr"])
    assert first[0]["name"] != second[0]["name"], "epochs differ"
    (other_seed,) = _epochs(_datamodule(photos, "seed=5"), 4)
    assert not torch.equal(other_seed[0]["ldr"], first[4]["ldr"])


def test_validation_files_that_are_also_training_files_are_refused(photos, tmp_path):
    """A validation folder inside the training folder (searched with its subfolders), the
    same NTIRE folder twice, or a mixed folder's held-out files under another folder's
    root: training would validate on images it trains on. Evaluation reads the validation
    files only, so it may name one folder as both."""
    from hdrunet_pl.errors import DatasetError

    from .ntire_files import random_hdr, write_ntire_frame

    def split_of(*overrides: str):
        datamodule = instantiate(compose_train(list(overrides)).data)  # as eval builds it
        return datamodule.check_split  # what training calls

    def refused(match: str, *overrides: str) -> None:
        with pytest.raises(
            DatasetError, match=r"validation file\(s\) are training files too " + match
        ):
            split_of(*overrides)()

    nested = photos / "val"
    nested.mkdir()
    shutil.move(photos / "photo2.hdr", nested / "photo2.hdr")
    folder = ["data=hdr_folder", f"data.root={photos}", "patch=32px", "data.num_workers=0"]
    refused(
        r"\(photo2\.hdr\): data\.val_root=.* and data\.root=.* share them",
        *folder,
        f"data.val_root={nested}",
    )
    apart = tmp_path / "apart"
    shutil.move(nested, apart)
    split_of(*folder, f"data.val_root={apart}")()  # outside: fine
    os.link(photos / "photo0.hdr", apart / "copy.hdr")  # a hard link: the same file
    refused(r"\(copy\.hdr\)", *folder, f"data.val_root={apart}")
    (apart / "copy.hdr").unlink()
    (photos / "zz_last.hdr").symlink_to(photos / "photo0.hdr")  # held out, yet trained on
    refused(r"\(zz_last\.hdr\): the last data\.val_count files", *folder, "data.val_count=1")
    (photos / "zz_last.hdr").unlink()
    ntire = tmp_path / "ntire"
    for i in range(3):
        write_ntire_frame(ntire, f"{i:04d}", random_hdr(40, 40, seed=i))
    pairs = ["data=ntire2021", f"data.root={ntire}", "patch=32px", "data.num_workers=0"]
    refused(r"\(0000_gt\.png, .*and data\.root=.* share them", *pairs, f"data.val_root={ntire}")
    more = "+data.folders.more={root:" + str(tmp_path) + ",weight:1,val_count:0}"
    with pytest.raises(DatasetError, match=r"photo1\.hdr\): a folder's held-out files .* under"):
        _datamodule(photos, more).check_split()  # photos' held-out photo1.hdr lies under it
    _datamodule(photos).check_split()
    # hdrunet-train refuses before it writes anything into the run's folder
    from hdrunet_pl.train import train

    cfg = compose_train([*pairs, f"data.val_root={ntire}", f"paths.output_dir={tmp_path / 'run'}"])
    with pytest.raises(DatasetError, match="are training files too"):
        train(cfg)
    assert list((tmp_path / "run").iterdir()) == []


def test_folder_settings_are_checked(photos):
    with pytest.raises(InstantiationException, match=r"unknown setting.*colour"):
        _datamodule(photos, "+data.folders.photos.colour=x")


@pytest.mark.parametrize("data", ["hdr_folder", "mixed"])
def test_training_folders_fill_negative_pixels_unless_told_to_clip(photos, data):
    """Lossy EXR ringing (negative radiance) must not become black holes in the ground truth
    that training and validation score against."""
    import OpenEXR

    image = np.full((40, 56, 3), 0.8, dtype=np.float32)
    image[10:14, 20:24] = -5.0  # a hole of ringing next to a light
    channels = {c: np.ascontiguousarray(image[..., i]) for i, c in enumerate("RGB")}
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    with OpenEXR.File(header, channels) as exr:
        exr.write(str(photos / "zz_ringing.exr"))  # the last file: held out for validation
    root = "data.root" if data == "hdr_folder" else "data.folders.photos.root"
    common = [f"data={data}", f"{root}={photos}", "patch=32px", "data.num_workers=0"]
    if data == "mixed":
        common += ["data.folders.photos.val_count=1", "data.synthetic_val_images=0"]
    else:
        common += ["data.val_count=1"]
    key = "data.negative" if data == "hdr_folder" else "data.folders.photos.negative"
    for negative, holes in (("default", False), ("clip", True)):
        extra = [] if negative == "default" else [f"{key}={negative}"]
        val_set = instantiate(compose_train([*common, *extra]).data).val_set
        item = val_set[len(val_set) - 1]
        assert item["name"] == "zz_ringing"
        assert bool((item["hdr"] == 0).all(dim=0).any()) is holes, negative


def test_held_out_captures_are_scored_per_setting_with_side_by_sides(photos, tmp_path, capsys):
    from hydra import compose, initialize_config_dir

    from hdrunet_pl.evaluate import run

    from .organisers import ntire_psnr_mu_numpy
    from .support import CONF_DIR, held_out_eval_args

    overrides = [
        *held_out_eval_args(photos, tmp_path / "eval", tmp_path),
        "side_by_side=all",
        "precision=32",
    ]
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        cfg = compose(config_name="eval", overrides=overrides)
    scores = {s.name: s for s in run(cfg)}
    settings = ("dark", "normal", "bright")
    assert sorted(scores) == sorted(f"photo{i}_{s}" for i in range(3) for s in settings)
    # the summary: images below the identity, and each setting's means over its 3 captures
    printed = capsys.readouterr().out
    below_mu = sum(s.psnr_mu < s.identity_psnr_mu for s in scores.values())
    below_l = sum(s.psnr_l < s.identity_psnr_l for s in scores.values())
    assert f"below the LDR identity: {below_mu} in PSNR-mu, {below_l} in PSNR-L" in printed
    for setting in settings:
        group = [scores[f"photo{i}_{setting}"] for i in range(3)]
        (line,) = [x for x in printed.splitlines() if x.split()[:1] == [setting]]
        for column in ("psnr_mu", "identity_psnr_mu", "psnr_l", "identity_psnr_l"):
            mean = sum(getattr(s, column) for s in group) / 3
            assert f"{mean:8.4f}" in line, (setting, column, line)
    strips = sorted(p.name for p in (tmp_path / "eval" / "side_by_side").iterdir())
    assert strips == sorted(f"{name}.png" for name in scores)
    # once more into the same folder, on other photos, best/worst only: the earlier run's
    # images go (they would pass for this run's results), a user's file stays
    (tmp_path / "eval" / "best_mine.png").write_bytes(b"a user's image")
    predicted = OutputFolder(tmp_path / "eval", "hdrunet-predict")  # another tool's result
    predicted.claim([tmp_path / "eval" / "best_photo.png"])
    (tmp_path / "eval" / "best_photo.png").write_bytes(b"a prediction")
    predicted.written([tmp_path / "eval" / "best_photo.png"])
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(photos / "photo1.hdr", other / "solo.hdr")
    rerun = [f"data.root={other}" if o.startswith("data.root=") else o for o in overrides]
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        again = run(compose(config_name="eval", overrides=[*rerun, "side_by_side=best_worst"]))
    best = max(again, key=lambda s: s.psnr_mu).name
    worst = min(again, key=lambda s: s.psnr_mu).name
    left = sorted(
        p.relative_to(tmp_path / "eval").as_posix() for p in (tmp_path / "eval").rglob("*.png")
    )
    assert left == sorted(
        ["best_mine.png", "best_photo.png", f"best_{best}.png", f"worst_{worst}.png"]
    )
    # the identity baseline of each capture, by the organisers' formula
    val_set = instantiate(cfg.data).val_set
    assert all(part.dataset.negative == "fill" for part in val_set.datasets)  # no black holes
    for i in range(len(val_set)):
        item = val_set[i]
        res, ref = (item[k].permute(1, 2, 0).numpy() for k in ("ldr", "hdr"))
        assert scores[item["name"]].identity_psnr_mu == pytest.approx(
            ntire_psnr_mu_numpy(res, ref), abs=1e-3
        )
    # the settings are what they say: the dark capture clips least and is darkest
    by_setting = {item["name"].split("_")[1]: item for item in (val_set[i] for i in (0, 3, 6))}
    clipped = {s: (by_setting[s]["hdr"].amax(0) >= 1).float().mean() for s in settings}
    assert clipped["dark"] < 1e-3 < clipped["normal"] < clipped["bright"]
    assert by_setting["dark"]["ldr"].mean() < by_setting["normal"]["ldr"].mean()
    with pytest.raises(HDRUNetError, match="evaluation set"):
        instantiate(cfg.data).train_dataloader()
    with pytest.raises(HDRUNetError, match=r"data.rows=\[0.5, 0.501\] keeps none of its 40 rows"):
        HeldOutCaptures(str(photos), {"any": CameraModel()}, rows=(0.5, 0.501))
    with pytest.raises(HDRUNetError, match="evaluation set"):  # as hdrunet-train builds it
        HeldOutCaptures(str(photos), {"any": CameraModel()}, patch_size=64)
    from hdrunet_pl.train import train

    with pytest.raises(HDRUNetError, match="evaluation set"):  # said before "add data.root"
        train(compose_train(["data=held_out"]))


def test_validation_images_of_two_folders_never_share_a_name(photos, tmp_path):
    """Two folders holding ``photo2.hdr`` each: their validation images are named apart
    (previews and score rows were written over each other, two ``photo2`` rows); one
    folder given twice would validate its files twice, and is refused."""
    other = write_photos(tmp_path / "other", "photo", (40, 56), seed=1)
    more = f"+data.folders.more={{root:{other},weight:1,val_count:1}}"
    datamodule = _datamodule(photos, more, "data.synthetic_val_images=0")
    names = [datamodule.val_set[i]["name"] for i in range(len(datamodule.val_set))]
    assert names == ["photos__photo2", "more__photo2"]
    alone = _datamodule(photos, "data.synthetic_val_images=0")  # no clash: names unchanged
    assert [alone.val_set[i]["name"] for i in range(len(alone.val_set))] == ["photo2"]
    twice = f"+data.folders.again={{root:{photos},weight:1,val_count:1}}"
    with pytest.raises(InstantiationException, match=r"photo2.hdr: held out for validation by"):
        _datamodule(photos, twice)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.folders.photos.weight=nan", r"data.folders.photos.weight=nan: give a finite"),
        ("data.folders.photos.weight=inf", r"data.folders.photos.weight=inf: give a finite"),
        ("data.synthetic_weight=-1", r"data.synthetic_weight=-1 < 0 \(0: folders only\)"),
        ("data.synthetic_weight=nan", r"data.synthetic_weight=nan is no finite number"),
        ("data.synthetic_val_images=-3", r"data.synthetic_val_images=-3: give a count >= 0"),
        ("data.samples_per_epoch=100000000000", r"data.samples_per_epoch=100000000000: give"),
        ("data.folders.photos.val_count=1.7", r"data.folders.photos.val_count=1.7: give a whole"),
        ("camera.read_noise=[0.001,inf]", r"camera read_noise must satisfy 0 < low <= high < inf"),
    ],
)
def test_mixed_settings_out_of_range_are_refused(photos, override, message):
    """Typos that trained anyway (a NaN or negative synthetic weight: the folders alone;
    an infinite read noise: every LDR pixel 0 or 1), crashed after set-up (a NaN folder
    weight) or asked for 745 GiB (an epoch of 10^11 samples): refused, naming the setting."""
    with pytest.raises((InstantiationException, HDRUNetError, ValueError), match=message):
        _datamodule(photos, override)


@pytest.mark.parametrize("count", ["1.5", "abc", "-1"])
def test_a_folders_val_count_that_is_no_count_is_named(photos, tmp_path, count):
    """``data.val_count=1.5`` stopped with Python's "slice indices must be integers"."""
    from hdrunet_pl.train import train

    cfg = compose_train(
        [
            "data=hdr_folder",
            f"data.root={photos}",
            f"data.val_count={count}",
            f"paths.output_dir={tmp_path}",
        ]
    )
    with pytest.raises(HDRUNetError, match=r"data.val_count must be an integer >= 0, got"):
        train(cfg)


def test_held_out_files_are_all_read_before_any_is_scored(photos, tmp_path, monkeypatch):
    """Broken photographs sorted last (a truncated file, one holding NaN) stop the
    evaluation at its start, both named, before the network runs: before, the captures of
    the files before them were scored and their scores lost with the first broken one."""
    from hydra import compose, initialize_config_dir

    from hdrunet_pl import evaluate

    from .support import CONF_DIR, held_out_eval_args

    data = (photos / "photo0.hdr").read_bytes()
    (photos / "z_truncated.hdr").write_bytes(data[: len(data) * 2 // 3])
    nan = np.full((40, 56, 3), 0.5, np.float32)
    nan[3, 4] = np.nan
    (photos / "z_nan.pfm").write_bytes(b"PF\n56 40\n-1.0\n" + nan[::-1].tobytes())
    scored = []
    monkeypatch.setattr(evaluate, "score", lambda *a, **k: scored.append(a) or 1 / 0)
    overrides = [*held_out_eval_args(photos, tmp_path / "eval", tmp_path), "precision=32"]
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        cfg = compose(config_name="eval", overrides=overrides)
    with pytest.raises(HDRUNetError, match="reading every HDR file before scoring") as raised:
        evaluate.run(cfg)
    assert "z_truncated.hdr" in str(raised.value) and "z_nan.pfm" in str(raised.value)
    assert scored == [] and not (tmp_path / "eval" / "scores.csv").exists()


def test_held_out_means_group_captures_by_setting_not_by_name_ending(photos, tmp_path, capsys):
    """A setting named ``super_dark`` beside ``dark``: each mean is over its own captures
    (``photo0_super_dark`` ends in ``_dark`` too, and was counted in both)."""
    from hydra import compose, initialize_config_dir

    from hdrunet_pl.evaluate import run

    from .support import CONF_DIR, held_out_eval_args

    camera = "{_target_:hdrunet_pl.camera.CameraModel,clip_fraction:[1e-5,1e-5]}"
    overrides = [
        *held_out_eval_args(photos, tmp_path / "eval", tmp_path),
        "precision=32",
        "metrics=[psnr_mu,psnr_l]",
        f"+data.captures.super_dark={camera}",
    ]
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        scores = run(compose(config_name="eval", overrides=overrides))
    assert len(scores) == 12
    printed = capsys.readouterr().out.splitlines()
    for setting in ("dark", "normal", "bright", "super_dark"):
        group = [s for s in scores if s.name.split("_", 1)[1] == setting]
        assert len(group) == 3 and {s.group for s in group} == {setting}
        (line,) = [x for x in printed if x.split()[:1] == [setting]]
        mean = sum(s.psnr_mu for s in group) / 3
        assert f"PSNR-mu {mean:8.4f}" in line and line.endswith("[3 images]"), line


def test_held_out_scores_the_middle_of_panoramas_and_all_of_other_photographs(tmp_path):
    """data=held_out's default rows: an equirectangular panorama (2:1) loses its stretched
    poles, an ordinary photograph is scored whole; a band or null applies to every image."""
    folder = tmp_path / "mine"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, width in {"pano": 80, "photo": 60, "square": 40}.items():
        write_radiance(
            folder / f"{name}.hdr", (rng.random((40, width, 3)) + 0.1).astype(np.float32)
        )
    cfg = compose_config("eval", ["data=held_out", f"data.root={folder}"])

    def heights(**rows: object) -> dict[str, int]:
        data = instantiate(cfg.data, **rows)
        return {item["name"]: item["hdr"].shape[1] for item in data.val_set}

    settings = ("dark", "normal", "bright")
    every_setting = {f"{name}_{s}" for name in ("pano", "photo", "square") for s in settings}
    assert heights() == {n: 20 if n.startswith("pano") else 40 for n in every_setting}
    assert heights(rows=None) == dict.fromkeys(every_setting, 40)
    assert heights(rows=[0.5, 1.0]) == dict.fromkeys(every_setting, 20)
    assert instantiate(cfg.data).rows_note == (  # what hdrunet-eval prints
        "the middle half of the rows of 1 equirectangular panorama(s), every row of the 2 "
        "other image(s) (data.rows=panoramas)"
    )
    assert instantiate(cfg.data, rows=None).rows_note == ""
    for wrong in ("panorama", 5, True, ["a", "b"], [0.25], [0.5, 0.25], [True, 1]):
        with pytest.raises(ValueError, match=r"data.rows must be .* or null; got "):
            HeldOutCaptures(str(folder), {"any": CameraModel()}, rows=wrong)
    assert heights(rows=np.array([0.5, 1.0])) == dict.fromkeys(every_setting, 20)
    # a mixed data set's folder is named; a panorama that its band leaves below the patch
    # says so
    with pytest.raises(ValueError, match=r"data.folders.photos.rows must be"):
        MixedDataModule({"photos": {"root": str(folder), "rows": "panorama"}}, patch_size=32)
    with pytest.raises(
        HDRUNetError,
        match=r"pano.hdr: 20x80 \(the 20 of its 40 rows that data.folders.photos.rows=",
    ):
        MixedDataModule({"photos": {"root": str(folder), "rows": "panoramas"}}, patch_size=32)


def test_make_train_mixes_the_fetched_photos_with_synthetic_scenes(tmp_path):
    """experiment=demo (`make train`): photos from paths.samples_dir plus synthetic scenes,
    captured by camera=real, trained with Tanh_L1 + the PSNR-mu loss; and the recipe on it."""
    folder = write_photos(tmp_path / "samples", "pano", (160, 192), seed=1)
    cfg = compose_train(["experiment=demo", f"paths.samples_dir={folder}", "data.num_workers=0"])
    assert cfg.model.loss.name == "tanh_l1_ntire_mu_l1"
    camera = instantiate(cfg.camera)
    assert camera.clip_sampling == "log" and camera.clip_fraction[0] < 1e-3
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    assert batch["ldr"].shape == batch["hdr"].shape == (8, 3, 64, 64)
    assert len(datamodule.val_set) == 8 + 2  # synthetic scenes + the last two photos
    recipe = compose_train(["experiment=real_photos", f"paths.samples_dir={folder}"])
    assert recipe.data.folders == cfg.data.folders and recipe.model.loss == cfg.model.loss
    assert recipe.trainer.max_steps > cfg.trainer.max_steps
    assert recipe.callbacks.snapshots.save_top_k == -1
    assert cfg.model.scheduler.milestones == [800, 1000]
    assert recipe.model.scheduler.milestones == [10000, 15000]


def test_a_missing_photo_folder_says_how_to_fetch_one(tmp_path):
    missing = tmp_path / "not_fetched"
    cfg = compose_train(["experiment=demo", f"paths.samples_dir={missing}"])
    with pytest.raises(InstantiationException, match=rf"no such folder.*samples {missing}"):
        instantiate(cfg.data)


def test_a_missing_extra_folder_is_not_told_to_fetch_the_demo_photos(tmp_path):
    """Followed for a second folder, the fetch hint put the demo's photographs (its two
    validation ones too) into it: the run trained on copies of its validation images."""
    from hdrunet_pl.io import write_exr

    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        write_exr(photos / f"p{i}.exr", np.full((160, 320, 3), 0.5 + i, np.float32))
    extra = "+data.folders.more={root:" + str(tmp_path / "extra") + ",weight:1,val_count:0}"
    cfg = compose_train(["experiment=demo", f"paths.samples_dir={photos}", extra])
    with pytest.raises(InstantiationException) as err:
        instantiate(cfg.data)
    message = str(err.value.__cause__ or err.value)
    assert f"data.folders.more.root={tmp_path / 'extra'}: no such folder" in message
    assert "samples" not in message and "HDRUNET_SAMPLES_DIR" not in message


def test_an_empty_samples_dir_is_refused_not_read_as_the_current_folder(monkeypatch):
    """``HDRUNET_SAMPLES_DIR=""`` (set but empty) must not make the current folder the photos."""
    from hdrunet_pl.run_files import check_no_empty_paths

    monkeypatch.setenv("HDRUNET_SAMPLES_DIR", "")
    cfg = compose_train(["experiment=demo"])
    assert cfg.data.folders.photos.root == ""
    with pytest.raises(HDRUNetError, match=r"data.folders.photos.root is empty.*SAMPLES_DIR"):
        check_no_empty_paths(cfg)
    monkeypatch.setenv("HDRUNET_SAMPLES_DIR", "/some/photos")
    check_no_empty_paths(compose_train(["experiment=demo"]))  # a path: no error


def test_files_that_share_a_stem_get_distinct_names(tmp_path):
    """Scores, previews and side-by-sides are keyed by name: two `scene` files in different
    folders (or with different suffixes) must not share one, or one overwrites the other."""
    from hdrunet_pl.data.hdr_folder import HDRFolderDataset, find_hdr_files, item_names

    image = np.full((24, 32, 3), 0.5, dtype=np.float32)
    for relative in ("val/scene.hdr", "val/sub1/scene.hdr", "val/sub2/scene.hdr", "val/x.hdr"):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        write_radiance(tmp_path / relative, image)
    files = find_hdr_files(tmp_path / "val")
    dataset = HDRFolderDataset(files, random_camera=False)
    assert [dataset[i]["name"] for i in range(len(dataset))] == [
        "scene",
        "sub1__scene",
        "sub2__scene",
        "x",
    ]
    assert item_names([Path("a/b.exr"), Path("a/b.hdr"), Path("a/c.exr")]) == [
        "b.exr",
        "b.hdr",
        "c",
    ]
    built_to_collide = [Path("r/a/b.exr"), Path("r/b.exr"), Path("r/a__b.exr")]
    assert item_names(built_to_collide) == ["a__b.exr_0000", "b", "a__b.exr_0002"]
