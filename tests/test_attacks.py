"""The attack suite: every tool, driven as a careless or hostile user would (a subprocess of
the real command on files made in ``tmp_path``), must lose no data, run no payload, print
no traceback and never report success for a wrong result. The counts are printed at the
end of the session (``tests/attacks.py``)."""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from hdrunet_pl import HDRUNet
from hdrunet_pl.data.ntire import find_ntire_pairs
from hdrunet_pl.reliability import run_folder_lock
from hdrunet_pl.report import main as report_main

from .attacks import snapshot
from .ntire_files import random_hdr, write_ntire_frame
from .support import FAST, SMALL_SYNTHETIC_VAL, bomb_png, run_tool

TRAIN = [*FAST, *SMALL_SYNTHETIC_VAL]
CPU = ["device=cpu", "precision=32"]


class RunsCode:
    """Unpickling this runs ``touch marker``: the payload of a crafted file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def data(tmp_path) -> Path:
    """An NTIRE-style folder with four 32x32 frames."""
    folder = tmp_path / "data"
    for i in range(4):
        write_ntire_frame(folder, f"{i:04d}", random_hdr(32, 32, seed=i))
    return folder


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished 4-step run of a tiny network (its folder)."""
    root = tmp_path_factory.mktemp("finished")
    result = run_tool("hdrunet-train", [*TRAIN, f"hydra.run.dir={root / 'run'}"], root)
    assert result.returncode == 0, result.stderr[-2000:]
    return root / "run"


# ------------------------------------------------------------------ data loss


def test_predict_into_an_ntire_data_folder(attacks, data, tiny_checkpoint, tmp_path):
    before = snapshot(data)
    result = run_tool(
        "hdrunet-predict", [f"ckpt={tiny_checkpoint}", f"input={data}", f"output={data}"], tmp_path
    )
    attacks.check("predict output= its NTIRE input folder", result, protected=before)
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "0001_medium.png").write_bytes((data / "0001_medium.png").read_bytes())
    result = run_tool(
        "hdrunet-predict",
        [f"ckpt={tiny_checkpoint}", f"input={photos}", f"output={data}"],
        tmp_path,
    )
    attacks.check(
        "predict output= a folder of NTIRE ground truth",
        result,
        protected=before,
        message="ground truth",
    )


def test_predict_with_input_and_output_the_same_folder(attacks, tiny_checkpoint, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    cv2.imwrite(str(photos / "a.png"), np.full((20, 24, 3), 90, np.uint8))
    before = snapshot(photos)
    for extra in ([], ["overwrite=true"]):
        result = run_tool(
            "hdrunet-predict",
            [f"ckpt={tiny_checkpoint}", f"input={photos}", f"output={photos}", *extra],
            tmp_path,
        )
        attacks.check(f"predict input=output {extra}", result, protected=before)


def test_predict_never_writes_over_a_file_it_did_not_write(attacks, tiny_checkpoint, tmp_path):
    photos, out = tmp_path / "photos", tmp_path / "out"
    photos.mkdir()
    out.mkdir()
    cv2.imwrite(str(photos / "a.png"), np.full((20, 24, 3), 90, np.uint8))
    cv2.imwrite(str(photos / "b.png"), np.full((20, 24, 3), 30, np.uint8))
    (out / "a.png").write_bytes(b"the user's own file")
    before = snapshot(out)
    args = [f"ckpt={tiny_checkpoint}", f"input={photos}", f"output={out}", *CPU]
    for extra in ([], ["overwrite=true"]):
        result = run_tool("hdrunet-predict", [*args, *extra], tmp_path)
        attacks.check(
            f"predict over a foreign result name {extra}",
            result,
            protected=before,
            exit_code=1,
            message="was not written by hdrunet-predict",
        )
    assert (out / "b.png").is_file()  # the other image was converted


def test_eval_never_writes_over_a_prediction_in_its_output(attacks, tiny_checkpoint, tmp_path):
    """The results folder may be eval's output too: its best/worst images must not take the
    place of a result named like them (best_x.png, a prediction of best_x.jpg)."""
    from hdrunet_pl.io import read_hdr_png

    photos, out, gt = tmp_path / "photos", tmp_path / "out", tmp_path / "gt"
    photos.mkdir()
    for name, value in (("x", 90), ("best_x", 30)):
        cv2.imwrite(str(photos / f"{name}.png"), np.full((20, 24, 3), value, np.uint8))
    ok_run = run_tool(
        "hdrunet-predict",
        [f"ckpt={tiny_checkpoint}", f"input={photos}", f"output={out}", *CPU],
        tmp_path,
    )
    assert ok_run.returncode == 0, ok_run.stderr
    pred = read_hdr_png(out / "x.png", out / "x_alignratio.npy")[..., ::-1]  # RGB
    write_ntire_frame(gt, "x", pred * 1.02 + 0.01)  # close: x scores best
    write_ntire_frame(gt, "best_x", random_hdr(20, 24, seed=1))
    for medium in gt.glob("*_medium.png"):
        medium.unlink()
    before = snapshot(out)
    args = [f"pred_dir={out}", f"gt_dir={gt}", f"output={out}", "metrics=[psnr_mu,psnr_l]"]
    result = run_tool("hdrunet-eval", args, tmp_path)
    attacks.check(
        "eval output=its pred_dir, a result named best_<image>",
        result,
        protected={p: b for p, b in before.items() if p.name != ".hdrunet-outputs"},
        message="best_x.png: a result of hdrunet-predict; not written over by hdrunet-eval",
    )
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in before)  # no part


def test_a_result_without_its_align_ratio_is_made_again(attacks, tiny_checkpoint, tmp_path):
    """A kill between the two files of a result: the re-run must not skip it."""
    photos, out = tmp_path / "photos", tmp_path / "out"
    photos.mkdir()
    cv2.imwrite(str(photos / "a.png"), np.full((20, 24, 3), 90, np.uint8))
    args = [f"ckpt={tiny_checkpoint}", f"input={photos}", f"output={out}", *CPU]
    assert run_tool("hdrunet-predict", args, tmp_path).returncode == 0
    (out / "a_alignratio.npy").unlink()
    result = run_tool("hdrunet-predict", args, tmp_path)
    attacks.check("predict re-run after a torn result", result, exit_code=0, message="1 written")
    assert (out / "a_alignratio.npy").is_file()


def test_a_photo_of_the_same_name_or_another_checkpoint_is_converted_again(
    attacks, tiny_checkpoint, tmp_path
):
    """IMG_0001 of another memory card, then another checkpoint, into one output folder:
    each result must be made again, not skipped as done (it was another photo's)."""
    from hdrunet_pl import HDRUNet, save_model
    from hdrunet_pl.io import read_linear_hdr

    card1, card2, out = tmp_path / "card1", tmp_path / "card2", tmp_path / "out"
    card1.mkdir()
    card2.mkdir()
    cv2.imwrite(str(card1 / "IMG_0001.png"), np.full((20, 24, 3), 90, np.uint8))
    cv2.imwrite(str(card2 / "IMG_0001.png"), np.full((28, 36, 3), 160, np.uint8))

    def convert(card: Path, ckpt: Path, *more: str):
        args = [f"ckpt={ckpt}", f"input={card}", f"output={out}", "format=exr", *CPU, *more]
        return run_tool("hdrunet-predict", args, tmp_path)

    assert convert(card1, tiny_checkpoint).returncode == 0
    result = convert(card2, tiny_checkpoint)
    attacks.check("predict: a photo of the same name from another folder", result, exit_code=0)
    assert "1 written, 0 skipped" in result.stdout
    first = read_linear_hdr(out / "IMG_0001.exr")
    assert first.shape[:2] == (28, 36)  # card 2's photo, not card 1's result
    assert "0 written, 1 skipped" in convert(card2, tiny_checkpoint).stdout  # done: skipped
    torch.manual_seed(9)
    other = save_model(HDRUNet(nf=8), tmp_path / "other.ckpt")
    result = convert(card2, other)
    attacks.check("predict: the same photo with another checkpoint", result, exit_code=0)
    assert "1 written, 0 skipped" in result.stdout
    assert not np.array_equal(read_linear_hdr(out / "IMG_0001.exr"), first)
    assert "1 written, 0 skipped" in convert(card2, other, "tile=24", "overlap=8").stdout


def test_a_second_predict_into_a_folder_in_use_stops_before_writing(
    attacks, tiny_checkpoint, tmp_path
):
    """Another run holds the output folder (here: this test, by the same lock): the second
    stops with one line and leaves the first run's files and manifest as they are."""
    from hdrunet_pl.outputs import MANIFEST, OutputFolder

    photos, out = tmp_path / "photos", tmp_path / "out"
    photos.mkdir()
    cv2.imwrite(str(photos / "a.png"), np.full((20, 24, 3), 90, np.uint8))
    args = [f"ckpt={tiny_checkpoint}", f"input={photos}", f"output={out}", *CPU]
    assert run_tool("hdrunet-predict", args, tmp_path).returncode == 0
    (out / "a.png").unlink()  # the first run is making it again, say
    before = snapshot(out)
    with OutputFolder(out, "hdrunet-predict").sole_writer():
        result = run_tool("hdrunet-predict", args, tmp_path)
    attacks.check(
        "predict into a folder another run is writing",
        result,
        protected=before,
        message="in use by another run of this package",
    )
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in before)
    assert (out / MANIFEST) in before


def test_resume_auto_on_a_finished_run_changes_nothing(attacks, finished_run, tmp_path):
    before = snapshot(finished_run / "checkpoints") | {
        finished_run / "metrics.json": (finished_run / "metrics.json").read_bytes()
    }
    result = run_tool(
        "hdrunet-train", [*TRAIN, f"hydra.run.dir={finished_run}", "resume=auto"], tmp_path
    )
    attacks.check(
        "train resume=auto on a finished run",
        result,
        protected=before,
        exit_code=0,
        message="the run is finished",
    )


def test_a_run_folder_is_never_started_over(attacks, finished_run, tmp_path):
    """Refused before Hydra writes: the run's record (its .hydra/ files, which
    hdrunet-report reads) stays the finished run's, and no failed.txt is added."""
    before = snapshot(finished_run)
    result = run_tool(
        "hdrunet-train",
        [*TRAIN, "model.net.nf=16", f"hydra.run.dir={finished_run}", "resume=false"],
        tmp_path,
    )
    attacks.check(
        "train resume=false in a finished run's folder",
        result,
        protected=before,
        message="already holds a run",
    )
    assert snapshot(finished_run) == before  # nothing added either (failed.txt)


def test_a_refused_resume_leaves_the_runs_record_as_it_was(attacks, finished_run, tmp_path):
    """Refused inside the job (the checkpoint holds another width): the run's .hydra/
    record (what hdrunet-report labels it by) is not rewritten and no failed.txt added."""
    before = snapshot(finished_run)
    result = run_tool(
        "hdrunet-train",
        [
            *TRAIN,
            "model.net.nf=16",
            "trainer.max_steps=8",
            f"hydra.run.dir={finished_run}",
            "resume=auto",
        ],
        tmp_path,
    )
    attacks.check(
        "train resume=auto of an nf-8 run as nf 16",
        result,
        protected={p: b for p, b in before.items() if p.name not in ("train.log", ".hdrunet.lock")},
        message="model.net.nf: 8 in the checkpoint, 16 here",
    )
    assert not (finished_run / "failed.txt").exists()
    assert sorted(snapshot(finished_run)) == sorted(before)  # nothing added


def test_resume_true_without_a_checkpoint_is_an_error(attacks, tmp_path):
    result = run_tool(
        "hdrunet-train", [*TRAIN, f"hydra.run.dir={tmp_path / 'r'}", "resume=true"], tmp_path
    )
    attacks.check("train resume=true without last.ckpt", result, message="resume=true: no ")


def test_two_runs_in_one_folder(attacks, tmp_path):
    """The second run touches nothing of the first one's (it used to take the folder for
    its own failed start and delete it)."""
    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)  # a run that is starting: Hydra's files, a log
    (run_dir / ".hydra" / "config.yaml").write_text("model: {_target_: hdrunet_pl.HDRUNet}\n")
    (run_dir / "train.log").write_text("")
    with run_folder_lock(run_dir):  # a run holding the folder (this process)
        before = snapshot(run_dir)
        result = run_tool("hdrunet-train", [*TRAIN, f"hydra.run.dir={run_dir}"], tmp_path)
        attacks.check(
            "train in a folder another run is using",
            result,
            protected=before,
            message=f"is in use by another run (process {os.getpid()})",
        )
        assert sorted(p for p in run_dir.rglob("*") if p.is_file()) == sorted(before)


def test_a_run_lock_planted_as_a_link_is_never_written_through(tmp_path):
    """The lock file is truncated to hold the run's process id: a link planted in its place
    (a run folder others can write into) must not truncate the file it points to."""
    from hdrunet_pl.errors import HDRUNetError

    victim = tmp_path / "victim.txt"
    victim.write_text("a user's file")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / ".hdrunet.lock").symlink_to(victim)
    refusal = r"\.hdrunet\.lock: a symbolic link, not a run's lock"
    with pytest.raises(HDRUNetError, match=refusal), run_folder_lock(run_dir):
        pass
    assert victim.read_text() == "a user's file"
    with run_folder_lock(tmp_path / "fresh"):  # a plain lock still works
        assert (tmp_path / "fresh" / ".hdrunet.lock").read_text() == str(os.getpid())


def test_last_checkpoint_records_the_current_best(tmp_path):
    """last.ckpt is written after the best-checkpoint callback has updated: the best it
    names is the file that exists (the best checkpoint changes at every validation here)."""
    run_dir = tmp_path / "run"
    result = run_tool(
        "hdrunet-train",
        [*TRAIN, "callbacks.model_checkpoint.monitor=null", f"hydra.run.dir={run_dir}"],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    (best_state,) = (v for k, v in state["callbacks"].items() if k.startswith("ModelCheckpoint"))
    best = Path(best_state["best_model_path"])
    assert best.is_file() and best.name == "best-step0000004.ckpt"


# ------------------------------------------------------------------ code execution


def test_a_checkpoint_with_a_payload_is_refused_by_every_tool(attacks, tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.ckpt"
    evil.write_bytes(pickle.dumps({"state_dict": RunsCode(marker)}, protocol=2))
    photos = tmp_path / "photos"
    photos.mkdir()
    cv2.imwrite(str(photos / "a.png"), np.full((20, 24, 3), 90, np.uint8))
    for tool, args in (
        ("hdrunet-predict", [f"ckpt={evil}", f"input={photos}", f"output={tmp_path / 'o'}"]),
        ("hdrunet-export", [f"ckpt={evil}"]),
        ("hdrunet-train", [*TRAIN, f"init_weights={evil}", f"hydra.run.dir={tmp_path / 'r'}"]),
    ):
        result = run_tool(tool, args, tmp_path)
        attacks.check(
            f"{tool} with a pickle payload checkpoint", result, payload=marker, message="refused"
        )


# ------------------------------------------------------------------ silently wrong


@pytest.mark.parametrize(
    "ratio",
    [pytest.param(1e-50, marks=pytest.mark.slow), 1e300],  # the tiny one: `make test-slow`
)
def test_an_align_ratio_out_of_float32_range_stops_training(attacks, data, tmp_path, ratio):
    np.save(data / "0002_alignratio.npy", np.float64(ratio))
    result = run_tool(
        "hdrunet-train",
        [
            *FAST,
            "data=ntire2021",
            f"data.root={data}",
            "data.val_count=1",
            f"hydra.run.dir={tmp_path / 'r'}",
        ],
        tmp_path,
    )
    attacks.check(f"train with align ratio {ratio}", result, message="finite and > 0 in float32")


def test_symlinked_subfolders_are_followed_and_loops_end(data, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "linked").symlink_to(data, target_is_directory=True)
    (root / "loop").symlink_to(root, target_is_directory=True)
    pairs = find_ntire_pairs(root)
    assert [p.name for p in pairs] == ["0000", "0001", "0002", "0003"]


# ------------------------------------------------------------------ one line, not a traceback


def test_a_decompression_bomb_is_skipped_and_the_rest_converted(attacks, tiny_checkpoint, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    bomb_png(photos / "bomb.png")
    bomb_png(photos / "bomb2.png", side=25000)  # under OpenCV's limit: 7 GB as float32
    cv2.imwrite(str(photos / "good.png"), np.full((20, 24, 3), 90, np.uint8))
    os.link(photos / "good.png", os.fsdecode(os.fsencode(photos) + b"/caf\xe9.png"))
    result = run_tool(
        "hdrunet-predict",
        [f"ckpt={tiny_checkpoint}", f"input={photos}", f"output={tmp_path / 'o'}", *CPU],
        tmp_path,
    )
    attacks.check("predict on a decompression bomb", result, exit_code=1, message="1 written")
    assert (tmp_path / "o" / "good.png").is_file()
    failed = [x for x in result.stdout.splitlines() if x.startswith("  failed:")]
    assert len(failed) == 3, result.stdout  # each named in one line; the rest converted
    (bomb2,) = [x for x in failed if "bomb2.png" in x]
    assert "than an image file may have here" in bomb2
    assert "b'caf\\xe9.png': a file name that is not valid UTF-8" in result.stdout


@pytest.mark.parametrize(
    ("tool", "args", "message"),
    [
        ("hdrunet-train", ["data=hdr_folder"], "missing required setting(s): data.root"),
        ("hdrunet-predict", ["ckpt=x.ckpt", "input=y"], "missing required setting(s): output"),
        ("hdrunet-train", ["model.optimizer.lr=abc"], "model.optimizer.lr must be a number > 0"),
        ("hdrunet-predict", ["ckpt=CKPT", "input=PHOTO", "output=o", "device=cuda"], "device=cuda"),
        (
            "hdrunet-predict",
            ["ckpt=CKPT", "input=x/${oops}.png", "output=o"],
            "Interpolation key 'oops' not found (in input: a ${...} in a value names another",
        ),
        ("hdrunet-predict", ["ckpt=CKPT", "input=PHOTO", "output=o", "preview=no"], "preview"),
        ("hdrunet-predict", ["ckpt=CKPT", "input=2024", "output=o"], "'input=\"2024\"'"),
        ("hdrunet-export", ["ckpt=CKPT", "output=m.pt"], "no name for a format=onnx file"),
        (
            "hdrunet-export",
            ["ckpt=CKPT", "output=m.onnx", "check_size=[1,3,64,big]"],
            "check_size must be [batch, channels, height, width]",
        ),
        (
            "hdrunet-export",
            ["ckpt=CKPT", "output=m.onnx", "check_size=[1,3,30000,30000]"],
            "at most 4,194,304 pixels",
        ),
        (
            "hdrunet-export",
            ["ckpt=CKPT", "output=m.onnx", "opset=17"],
            "opset must be an ONNX opset number from 18",
        ),
        (  # beyond what onnx knows: onnxscript's logged traceback came before the line
            "hdrunet-export",
            ["ckpt=CKPT", "output=m.onnx", "opset=1000"],
            "to the newest the installed onnx package knows, got 1000",
        ),
    ],
    ids=[
        "no-root",
        "no-output",
        "lr",
        "cuda",
        "interpolation",
        "bool",
        "number",
        "suffix",
        "check-size-text",
        "check-size-huge",
        "opset",
        "opset-newer",
    ],
)
def test_bad_settings_are_one_line(attacks, tiny_checkpoint, tmp_path, tool, args, message):
    if tool == "hdrunet-train":
        base = FAST if args[0].startswith("data=") else TRAIN
        args = [*base, *args, f"hydra.run.dir={tmp_path / 'r'}"]
    photo = tmp_path / "a.png"
    cv2.imwrite(str(photo), np.full((20, 24, 3), 90, np.uint8))
    args = [a.replace("PHOTO", str(photo)).replace("CKPT", str(tiny_checkpoint)) for a in args]
    if "device=cuda" in args and torch.cuda.is_available():
        args = [a.replace("device=cuda", "device=cuda:99") for a in args]
    result = run_tool(tool, args, tmp_path)
    attacks.check(f"{tool} {' '.join(args[-2:])}", result, message=message)
    assert not (tmp_path / "r").exists()  # failed at start: nothing left


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.scheduler.gamma=abc", "model.scheduler.gamma must be a number in (0, 1]"),
        ("model.scheduler.milestones=[5,3]", "increasing positive step numbers"),
        ("trainer.val_check_interval=0", "trainer.val_check_interval must be"),
        ("trainer.max_steps=0", "trainer.max_steps must be -1 or an integer >= 1"),
        ("data.batch_size=0", "data.batch_size must be an integer >= 1"),
        ("model.optimizer.betas=[0.9]", "model.optimizer.betas must be two numbers"),
        ("resume=maybe", "resume must be auto, true or false"),
        ("seed=-1", "seed must be an integer from 0 to 4294967295"),
        ("trainer.precision=bf16-true", "trainer.precision must be one of 32, 32-true"),
        ("trainer.precision=64-true", "bf16-true, 16-true and 64-true are not supported"),
        ("+trainer.accumulate_grad_batches=2", "would not resume its stream of training"),
        ("trainer.val_check_interval=0.5", "needs trainer.check_val_every_n_epoch=N too"),
    ],
)
def test_bad_numbers_stop_the_run_before_it_starts(tmp_path, override, message):
    """The same checks as above, in process (``hdrunet-train`` calls :func:`train`)."""
    from hdrunet_pl.errors import HDRUNetError
    from hdrunet_pl.train import train

    from .support import compose_train

    cfg = compose_train([*TRAIN, override, f"paths.output_dir={tmp_path}"])
    with pytest.raises(HDRUNetError, match=re.escape(message)):
        train(cfg)
    assert list(tmp_path.iterdir()) == []


def test_a_truncated_png_read_in_a_worker_is_one_line(attacks, data, tmp_path):
    gt = data / "0001_gt.png"
    gt.write_bytes(gt.read_bytes()[:200])
    result = run_tool(
        "hdrunet-train",
        [
            *FAST,
            "data=ntire2021",
            f"data.root={data}",
            "data.val_count=1",
            "data.num_workers=2",
            f"hydra.run.dir={tmp_path / 'r'}",
        ],
        tmp_path,
    )
    attacks.check(
        "train on a truncated PNG with 2 workers",
        result,
        message="0001_gt.png: unreadable, truncated or not an image",
    )
    assert "failed" not in result.stdout  # one line, on stderr
    assert (tmp_path / "r" / "failed.txt").read_text().startswith("ImageFileError: ")


def test_resuming_with_another_width_is_one_line(attacks, finished_run, tmp_path):
    last = finished_run / "checkpoints" / "last.ckpt"
    result = run_tool(
        "hdrunet-train",
        [
            *TRAIN,
            f"ckpt_path={last}",
            "model.net.nf=16",
            "trainer.max_steps=8",
            f"hydra.run.dir={tmp_path / 'r'}",
        ],
        tmp_path,
    )
    attacks.check(
        "train resuming an nf-8 checkpoint as nf 16",
        result,
        message="model.net.nf: 8 in the checkpoint, 16 here",
    )


def test_plain_weights_as_ckpt_path_point_to_init_weights(attacks, tmp_path):
    torch.manual_seed(0)
    weights = tmp_path / "weights.pth"
    torch.save(HDRUNet(nf=8).state_dict(), weights)
    result = run_tool(
        "hdrunet-train",
        [*TRAIN, f"ckpt_path={weights}", f"hydra.run.dir={tmp_path / 'r'}"],
        tmp_path,
    )
    attacks.check("train ckpt_path= plain weights", result, message=f"init_weights={weights}")
    fine_tune = run_tool(
        "hdrunet-train",
        [*TRAIN, f"init_weights={weights}", f"hydra.run.dir={tmp_path / 'f'}"],
        tmp_path,
    )
    assert fine_tune.returncode == 0, fine_tune.stderr[-2000:]


def test_unwritable_outputs_are_one_line(attacks, tiny_checkpoint, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    cv2.imwrite(str(photos / "a.png"), np.full((20, 24, 3), 90, np.uint8))
    blocker = tmp_path / "a-file"
    blocker.write_text("")  # nothing can be made under a file, even by root
    result = run_tool(
        "hdrunet-predict",
        [f"ckpt={tiny_checkpoint}", f"input={photos}", f"output={blocker / 'out'}", *CPU],
        tmp_path,
    )
    attacks.check("predict output= under a file", result, message="cannot be made")


# ------------------------------------------------------------------ prepare, export, stream


def test_prepare_stream_never_deletes_what_it_did_not_write(attacks, data, tmp_path):
    root = tmp_path / "dataset"
    (root / "train").mkdir(parents=True)
    for f in data.iterdir():
        (root / "train" / f.name).write_bytes(f.read_bytes())
    (root / "notes.txt").write_text("my notes")
    before = snapshot(root)
    for args, message in (
        (["--input", str(data), "--output", str(root)], "was not written by hdrunet-prepare"),
        (["--input", str(root / "train"), "--output", str(root)], "holds the input pairs"),
    ):
        result = run_tool("hdrunet-prepare", ["stream", *args, "--val-count", "1"], tmp_path)
        attacks.check(
            f"prepare stream {' '.join(args[-2:])}", result, protected=before, message=message
        )


def test_prepare_crop_refuses_bad_sizes_and_outputs_in_its_input(attacks, data, tmp_path):
    (tmp_path / "outer").mkdir()
    (data / "link").symlink_to(tmp_path / "outer", target_is_directory=True)
    before = snapshot(data)
    for args, message in (
        (["--output", str(tmp_path / "sub"), "--crop", "0"], "--crop and --step must be >= 1"),
        (["--output", str(data / "sub")], "is inside --input"),
        (["--output", str(data)], "is inside --input"),
        # a not yet existing output reached through a link in the input tree: the link
        # was only seen once crops were there (in the input tree by then)
        (["--output", str(tmp_path / "outer" / "new")], "through"),
        (
            ["--output", str(tmp_path / "sub"), "--crop", "4096"],
            "x4096 crop (--crop); choose a smaller crop (--crop) or remove the image",
        ),
    ):
        result = run_tool("hdrunet-prepare", ["crop", "--input", str(data), *args], tmp_path)
        attacks.check(f"prepare crop {' '.join(args)}", result, protected=before, message=message)
    assert not any((tmp_path / "outer").iterdir())  # nothing written through the link


def test_export_never_writes_over_the_checkpoint_or_a_foreign_file(
    attacks, tiny_checkpoint, tmp_path
):
    foreign = tmp_path / "model.onnx"
    foreign.write_text("somebody's model")
    before = snapshot(tmp_path)
    for output in (tiny_checkpoint, foreign, tmp_path / "a-file" / "x.onnx"):
        if output.parent.name == "a-file":
            output.parent.write_text("")  # no folder can be made under a file
            before = snapshot(tmp_path)
        result = run_tool(
            "hdrunet-export", [f"ckpt={tiny_checkpoint}", f"output={output}"], tmp_path
        )
        attacks.check(f"export output={output.name}", result, protected=before)


def test_shards_with_a_pickle_payload_are_refused(attacks, tmp_path):
    from litdata.streaming.writer import BinaryWriter

    marker = tmp_path / "pwned"
    shards = tmp_path / "shards"
    for part in ("train", "val"):
        writer = BinaryWriter(str(shards / part), chunk_size=4)
        writer[0] = {"name": "0000", "ldr": RunsCode(marker)}
        writer.done()
        writer.merge()
    before = snapshot(shards)
    result = run_tool(
        "hdrunet-train",
        [*FAST, "data=stream", f"data.input_dir={shards}", f"hydra.run.dir={tmp_path / 'r'}"],
        tmp_path,
    )
    attacks.check(
        "train data=stream on shards holding a pickle",
        result,
        protected=before,
        payload=marker,
        message="fields stored as pickle; refused",
    )
    missing = run_tool(
        "hdrunet-train",
        [
            *FAST,
            "data=stream",
            f"data.input_dir={tmp_path / 'nowhere'}",
            f"hydra.run.dir={tmp_path / 'r'}",
        ],
        tmp_path,
    )
    attacks.check("train data=stream on a missing folder", missing, message="no index.json")


def test_eval_train_and_report_never_write_over_a_users_files(attacks, data, tmp_path, capsys):
    (data / "scores.csv").write_text("my own scores")
    pred = tmp_path / "pred"
    pred.mkdir()
    for name in ("0000_gt.png", "0000_alignratio.npy"):
        (pred / name.replace("_gt", "")).write_bytes((data / name).read_bytes())
    (data / "0001_gt.png").rename(tmp_path / "0001_gt.png")  # one GT frame only
    (data / "0002_gt.png").rename(tmp_path / "0002_gt.png")
    (data / "0003_gt.png").rename(tmp_path / "0003_gt.png")
    before = snapshot(data)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "scores.csv").write_text("my own scores")
    for case, output, protected, message in (
        (
            "a folder with the user's scores.csv",
            mine,
            snapshot(mine),
            "not written by hdrunet-eval",
        ),
        ("its ground-truth folder", data, before, "is the gt_dir folder"),
    ):
        result = run_tool(
            "hdrunet-eval", [f"pred_dir={pred}", f"gt_dir={data}", f"output={output}"], tmp_path
        )
        attacks.check(f"eval output= {case}", result, protected=protected, message=message)
    result = run_tool("hdrunet-train", [*TRAIN, f"hydra.run.dir={data}"], tmp_path)
    attacks.check(
        "train hydra.run.dir= a data folder",
        result,
        protected=before,
        message="holds files but no run of hdrunet-train",
    )
    assert snapshot(data) == before  # Hydra's .hydra/ and train.log removed again
    sweep = tmp_path / "sweep"
    (sweep / "0_loss-l1" / ".hydra").mkdir(parents=True)
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    (sweep / "report.md").write_text("my notes")
    before = snapshot(sweep)
    assert report_main([str(sweep)]) == 2  # in process: the report is a plain function
    assert "was not written by hdrunet-report" in capsys.readouterr().err
    assert snapshot(sweep) == before


def test_a_run_config_that_names_other_code_is_refused(attacks, tiny_checkpoint, tmp_path):
    """``hdrunet-eval run=`` instantiates the run's data settings: a crafted config.yaml must
    not get anything called but the package's own data classes (numpy.savetxt writes files;
    reached directly, through a package module's import, nested or by an interpolation)."""
    marker = tmp_path / "pwned"
    savetxt = f"{{fname: {marker}, X: [x], fmt: '%s'}}"
    configs = {
        "top": f"data: {{_target_: numpy.savetxt, {savetxt[1:]}\n",
        "via-module": f"data: {{_target_: hdrunet_pl.evaluate.np.savetxt, {savetxt[1:]}\n",
        "nested": "data:\n  _target_: hdrunet_pl.data.HDRDataModule\n  camera: "
        f"{{_target_: numpy.savetxt, {savetxt[1:]}\n",
        "interpolated": f"other: {{_target_: numpy.savetxt, {savetxt[1:]}\n"
        "data:\n  _target_: hdrunet_pl.data.HDRDataModule\n  train_set: ${other}\n",
    }
    for name, text in configs.items():
        run = tmp_path / name
        run.mkdir()
        (run / "config.yaml").write_text(text)
        result = run_tool(
            "hdrunet-eval",
            [f"ckpt={tiny_checkpoint}", f"run={run}", f"output={tmp_path / 'e'}", *CPU],
            tmp_path,
        )
        attacks.check(
            f"eval run= a config naming numpy.savetxt ({name})",
            result,
            payload=marker,
            message="not one of the package's data classes",
        )


def test_a_run_never_writes_into_another_programs_folder(attacks, tmp_path):
    """A folder with another Hydra program's ``.hydra/`` and ``train.log``, or any files
    (a ``config.yaml`` of the user's), is no run folder: ``hdrunet-train`` refuses it before
    Hydra writes its own files over theirs, whether the run would fail or succeed."""
    other = tmp_path / "theirs"
    (other / ".hydra").mkdir(parents=True)
    for name in ("config.yaml", "hydra.yaml", "overrides.yaml", "notes.yaml"):
        (other / ".hydra" / name).write_text(f"their: {name}\n")
    (other / "train.log").write_text("three days of log\n")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.yaml").write_text("my: settings\n")
    (mine / "notes.txt").write_text("my notes\n")
    cases = [
        (other, ["model.optimizer.lr=abc", f"hydra.run.dir={other}"]),
        (other, [f"hydra.run.dir={other}"]),
        (mine, [f"hydra.run.dir={mine}"]),
        (other, [f"hydra.run={{dir:{other}}}"]),  # the folder given in other forms
        (other, ["hydra.run.dir=${oc.env:HDRUNET_TEST_RUN_DIR}"]),
        (mine, [f"hydra.run.dir={mine.parent}/${{oc.env:HDRUNET_TEST_NAME}}"]),
        # resolved by Hydra alone: refused in the job, Hydra having written nothing there
        (other, ["hydra.run.dir=${hydra:runtime.cwd}/theirs"]),
        (other, ["-cn", "train", f"hydra.run.dir={other}"]),  # Hydra's own options
    ]
    for folder, extra in cases:
        before = snapshot(folder)
        options = [a for a in extra[:2] if a.startswith("-") or a == "train"]
        result = run_tool(
            "hdrunet-train",
            [*options, *TRAIN, *extra[len(options) :]],
            tmp_path,
            env={"HDRUNET_TEST_RUN_DIR": str(other), "HDRUNET_TEST_NAME": "mine"},
        )
        attacks.check(
            f"train into another program's folder {folder.name} {extra}",
            result,
            protected=before,
            message="holds files" + (" that are not a run's" if "hydra:" in extra[0] else ""),
        )
        assert sorted(p for p in folder.rglob("*") if p.is_file()) == sorted(before)
    # what a crashed start of this package leaves (an empty log, Hydra's files of this
    # package's config) holds nothing to lose: a new start there is a fresh run's
    crashed = tmp_path / "crashed"
    (crashed / ".hydra").mkdir(parents=True)
    (crashed / "train.log").write_text("")
    (crashed / ".hydra" / "config.yaml").write_text(
        "model:\n  _target_: hdrunet_pl.module.HDRUNetModule\n"
    )
    for path in (crashed / "train.log", crashed / ".hydra" / "config.yaml"):
        os.utime(path, (1e9, 1e9))
    result = run_tool(
        "hdrunet-train", [*TRAIN, "model.optimizer.lr=abc", f"hydra.run.dir={crashed}"], tmp_path
    )
    attacks.check("train failing at start after a crashed start", result, message="lr")
    assert not crashed.exists()  # failed at start: nothing left


CHANGED_LR = ["trainer.max_steps=6", "model.optimizer.lr=0.001"]


def test_a_refused_resume_advises_the_runs_own_command(finished_run, tmp_path):
    """Hydra records each start's overrides before the checks, so the advice must come from
    the run's own record of its last accepted start, not from the refused command."""
    result = run_tool(
        "hdrunet-train",
        [*TRAIN, f"hydra.run.dir={finished_run}", "resume=auto", *CHANGED_LR],
        tmp_path,
    )
    assert result.returncode == 2
    advice = result.stderr.split("resumes that run as it was set up: ", 1)[1].split(", or ")[0]
    assert "model.optimizer.lr" not in advice and advice.endswith("resume=auto")


def test_a_resume_with_another_batch_size_is_refused(attacks, finished_run, tmp_path):
    """The resumed stream of samples starts at step x batch size x processes: another batch
    size would skip or repeat the run's own samples."""
    from hdrunet_pl.models.checkpoints import STREAM_KEY

    saved = torch.load(finished_run / "checkpoints" / "last.ckpt", weights_only=True)
    batch = saved[STREAM_KEY]["batch_size"]
    assert saved[STREAM_KEY] == {"batch_size": batch, "processes": 1}
    before = snapshot(finished_run / "checkpoints")
    args = [*TRAIN, f"hydra.run.dir={finished_run}", "resume=auto", "trainer.max_steps=6"]
    result = run_tool("hdrunet-train", [*args, f"data.batch_size={batch + 1}"], tmp_path)
    attacks.check(
        "train resume=auto with another data.batch_size",
        result,
        protected=before,
        message=f"trained with data.batch_size={batch} on 1 process(es), this run has "
        f"{batch + 1} on 1",
    )


def test_outputs_are_never_written_through_links(attacks, tiny_checkpoint, tmp_path):
    from hdrunet_pl.io import NEW_FILE_MODE, new_temporary, write_ldr

    victim = tmp_path / "victim.txt"
    victim.write_text("a user's file")
    photo = tmp_path / "a.png"
    cv2.imwrite(str(photo), np.full((20, 24, 3), 90, np.uint8))
    out = tmp_path / "o"
    out.mkdir()
    (out / ".hdrunet-outputs").symlink_to(victim)  # would say which files are the package's
    result = run_tool(
        "hdrunet-predict", [f"ckpt={tiny_checkpoint}", f"input={photo}", f"output={out}"], tmp_path
    )
    attacks.check(
        "predict with a linked manifest",
        result,
        protected={victim: b"a user's file"},
        message="a symbolic link?",
    )
    # temporaries have names nobody can plant a link under: the old pid-only name is linked
    (out / ".hdrunet-outputs").unlink()
    (out / f".b.tmp-{os.getpid()}.png").symlink_to(victim)
    write_ldr(out / "b.png", np.zeros((4, 5, 3), np.float32))
    assert victim.read_text() == "a user's file" and cv2.imread(str(out / "b.png")).shape == (
        4,
        5,
        3,
    )
    first, second = new_temporary(out / "c.png"), new_temporary(out / "c.png")
    assert first != second and not first.is_symlink() and first.stat().st_size == 0
    assert first.stat().st_mode & 0o777 == NEW_FILE_MODE == (out / "b.png").stat().st_mode & 0o777


def test_broken_weights_make_no_scores_or_files(attacks, tiny_checkpoint, tmp_path, data):
    """NaN weights are refused on loading; weights whose output overflows stop the eval and
    fail each predicted image: a cast to uint16 would otherwise turn NaN into numbers."""
    from hdrunet_pl import load_model
    from hdrunet_pl.errors import CheckpointError

    saved = torch.load(tiny_checkpoint, weights_only=True)
    weights = saved["state_dict"]
    key = next(k for k in weights if k.endswith("bias"))
    weights[key] = weights[key].clone()
    weights[key][0] = float("nan")
    torch.save(saved, tmp_path / "nan.ckpt")
    with pytest.raises(CheckpointError, match=r"1 weight tensor\(s\) hold NaN/Inf values"):
        load_model(tmp_path / "nan.ckpt")
    weights[key][0] = 0.0
    saved["state_dict"] = {k: v * 1e30 if v.is_floating_point() else v for k, v in weights.items()}
    torch.save(saved, tmp_path / "inf.ckpt")
    ckpt = f"ckpt={tmp_path / 'inf.ckpt'}"
    result = run_tool(
        "hdrunet-eval",
        [
            ckpt,
            "data=ntire2021",
            f"data.root={data}",
            "data.val_count=2",
            f"output={tmp_path / 'e'}",
            *CPU,
        ],
        tmp_path,
    )
    attacks.check("eval of weights that overflow", result, message="NaN/Inf values")
    assert not (tmp_path / "e" / "scores.csv").exists()
    photo = tmp_path / "a.png"
    cv2.imwrite(str(photo), np.full((20, 24, 3), 90, np.uint8))
    result = run_tool(
        "hdrunet-predict", [ckpt, f"input={photo}", f"output={tmp_path / 'p'}", *CPU], tmp_path
    )
    attacks.check("predict with weights that overflow", result, exit_code=1, message="0 written")
    assert f"{photo}: the network's output has 1,440 NaN/Inf values" in result.stdout


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("csv/metrics.csv", b"step,val/psnr_mu\n0,1.5\n10,,1.2e-\n"),
        ("metrics.json", b'{"psnr_mu_after": "abc", "steps": NaN}'),
        ("metrics.json", b'{"psnr_mu_after": 1e400, "steps": 4}'),
        ("failed.txt", b"\xff\xfe not UTF-8"),
        ("metrics.json", b"[" * 100_000),
        (".hydra/overrides.yaml", b"\xff\xfe"),
        (".hydra/overrides.yaml", b"5"),
        (".hydra/overrides.yaml", b"[a"),
        ("csv/metrics.csv", b"step,val/psnr_mu\n0,1.5\n" + b'"' + b"x" * 200_000 + b'"\n'),
    ],
    ids=[
        "truncated-csv",
        "text-number",
        "infinite",
        "bytes",
        "deep-json",
        "overrides-bytes",
        "overrides-number",
        "overrides-broken-yaml",
        "csv-huge-field",
    ],
)
def test_report_reads_damaged_job_files(tmp_path, capsys, name, content):
    """A job's damaged record is shown as what it is, never a traceback or a number made up
    (a non-finite score is left out of the table and the plot)."""
    job = tmp_path / "sweep" / "0_loss-l1"
    (job / ".hydra").mkdir(parents=True)
    (job / "csv").mkdir()
    (tmp_path / "sweep" / "multirun.yaml").write_text("hydra: {}\n")
    (job / name).write_bytes(content)
    assert report_main([str(tmp_path / "sweep")]) == 0
    table = capsys.readouterr().out
    (row,) = [line for line in table.splitlines() if "0_loss-l1" in line]
    assert "abc" not in row and "inf" not in row.lower() and "nan" not in row.lower()
    if name == "csv/metrics.csv":
        assert "1.50" in row  # the readable value is kept


def test_eval_refuses_a_result_that_is_its_ground_truth(attacks, data, tmp_path):
    """One result that is a copy of its GT would make every mean infinite (and hide the
    other images' scores): refused, nothing written."""
    pred = tmp_path / "pred"
    pred.mkdir()
    for name in ("0000_gt.png", "0000_alignratio.npy", "0001_gt.png", "0001_alignratio.npy"):
        (pred / name.replace("_gt", "")).write_bytes((data / name).read_bytes())
    ratio = np.load(pred / "0001_alignratio.npy")
    np.save(pred / "0001_alignratio.npy", np.float32(ratio * 1.01))  # a result, not a copy
    for name in ("0002_gt.png", "0003_gt.png"):
        (data / name).rename(tmp_path / name)
    out = tmp_path / "e"
    result = run_tool(
        "hdrunet-eval", [f"pred_dir={pred}", f"gt_dir={data}", f"output={out}"], tmp_path
    )
    attacks.check(
        "eval with a result that is a copy of its GT",
        result,
        message="0000: the result is its ground truth",
    )
    assert not (out / "scores.csv").exists()


def test_report_refuses_a_sweep_record_of_endless_values(tmp_path, capsys):
    """A few bytes of multirun.yaml may claim 100 million values: refused, not expanded."""
    sweep = tmp_path / "sweep"
    (sweep / "0_x" / ".hydra").mkdir(parents=True)
    (sweep / "multirun.yaml").write_text(
        "hydra:\n  sweeper:\n    params:\n      model.nf: range(0,100000000)\n"
    )
    assert report_main([str(sweep)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hdrunet-report: error: ") and "more than 10,000 values" in err
    # three keys of 10,000 values each: 10^12 combinations
    (sweep / "multirun.yaml").write_text(
        "hydra:\n  overrides:\n    task:\n"
        + "".join(f"      - '{key}=range(0,10000)'\n" for key in "abc")
    )
    assert report_main([str(sweep)]) == 2
    err = capsys.readouterr().err.strip()
    assert "sweeps 1,000,000,000,000 combinations, more than 10,000" in err
