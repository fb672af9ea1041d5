"""ExpandNet, the classic baseline (``model=expandnet``): its published structure, any input
size, its checkpoints, and training, validation, prediction and the sweep report through the
code paths HDRUNet uses."""

import csv
import json
import math
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from hydra.utils import instantiate

import hdrunet_pl.models.checkpoints as checkpoints
from hdrunet_pl import CheckpointError, HDRUNet, HDRUNetError, load_model, save_model
from hdrunet_pl.bench import conv_macs
from hdrunet_pl.data import SyntheticHDRDataset
from hdrunet_pl.inference import Predictor, tiled_forward
from hdrunet_pl.io import read_exr, read_ldr, write_ldr
from hdrunet_pl.models import ExpandNet, ExpandNetConfig, HDRUNetConfig
from hdrunet_pl.models.checkpoints import published_expandnet_to_ours
from hdrunet_pl.module import HDRUNetModule
from hdrunet_pl.reliability import ResumePoint, check_resume_checkpoint, check_resume_fits
from hdrunet_pl.report import collect, markdown_table, write_report
from hdrunet_pl.report import main as report_main
from hdrunet_pl.train import _load_initial_weights, train

from .organisers import organisers_val_scores
from .support import DATA_DIR, compose_train, ok, run_tool

PUBLISHED = json.loads((DATA_DIR / "expandnet_published_layout.json").read_text())
"""Names and shapes of ``weights.pth`` in github.com/dmarnerides/hdr-expandnet (2b47572)."""


def random_expandnet(nf: int = 8, output: str = "softplus", std: float = 0.1) -> ExpandNet:
    torch.manual_seed(0)
    net = ExpandNet(nf=nf, output=output)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, std)
    return net.eval()


# --- the published structure --------------------------------------------------------------


def test_default_network_has_the_published_parameter_count():
    assert ExpandNet().num_parameters == 456_899
    assert sum(math.prod(shape) for shape in PUBLISHED.values()) == 456_899


def test_published_names_map_one_to_one_onto_the_default_network():
    ours = {k: list(v.shape) for k, v in ExpandNet().state_dict().items()}
    assert {published_expandnet_to_ours(k): s for k, s in PUBLISHED.items()} == ours


def published_forward(sd: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The published forward pass written against its own key names (sigmoid output)."""

    def conv(name, t, stride=1, padding=1, dilation=1):
        return F.conv2d(t, sd[name + ".weight"], sd[name + ".bias"], stride, padding, dilation)

    local = F.selu(conv("local_net.1.0", F.selu(conv("local_net.0.0", x))))
    mid = x
    for i in range(3):
        mid = F.selu(conv(f"mid_net.{i}.0", mid, padding=2, dilation=2))
    mid = conv("mid_net.3", mid, padding=2, dilation=2)
    glob = F.interpolate(x, (256, 256), mode="bilinear", align_corners=False)
    for i in range(6):
        glob = F.selu(conv(f"glob_net.{i}.0", glob, stride=2))
    glob = conv("glob_net.6", glob, padding=0).expand(-1, -1, *x.shape[-2:])
    fuse = torch.cat((local, mid, glob), 1)
    return torch.sigmoid(conv("end_net.1", F.selu(conv("end_net.0.0", fuse, padding=0)), padding=0))


def test_published_weights_load_and_give_the_published_output(tmp_path):
    g = torch.Generator().manual_seed(0)
    sd = {k: 0.05 * torch.randn(shape, generator=g) for k, shape in PUBLISHED.items()}
    torch.save(sd, tmp_path / "weights.pth")
    net = load_model(tmp_path / "weights.pth")
    assert isinstance(net, ExpandNet)
    assert net.config == ExpandNetConfig(nf=64, output="sigmoid")  # the published map
    x = torch.rand(1, 3, 37, 53)
    with torch.no_grad():
        expected, got = published_forward(sd, x), net(x)
    assert expected.std() > 1e-3  # not a constant image
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


# --- any size, output maps, the global branch ---------------------------------------------


@pytest.mark.parametrize("size", [(1, 1), (16, 16), (33, 4), (97, 131), (260, 300)])
def test_any_size_returns_the_input_size(size):
    with torch.no_grad():
        out = random_expandnet()(torch.rand(2, 3, *size))
    assert out.shape == (2, 3, *size) and torch.isfinite(out).all()


def test_output_maps_reach_the_target_domain_or_the_published_range():
    x = torch.rand(1, 3, 20, 24)
    nets = {o: random_expandnet(output=o) for o in ("identity", "softplus", "sigmoid")}
    for bias, above_one in ((3.0, True), (-3.0, False)):
        with torch.no_grad():
            for net in nets.values():
                net.fusion[-1].bias.fill_(bias)
            raw, soft, sig = (nets[o](x) for o in ("identity", "softplus", "sigmoid"))
        torch.testing.assert_close(soft, F.softplus(raw))
        torch.testing.assert_close(sig, torch.sigmoid(raw))
        assert soft.min() >= 0 and sig.min() > 0 and sig.max() < 1
        # softplus reaches HDR highlights (> 1); identity goes negative, softplus never
        assert bool((soft > 1).any()) == above_one and bool((raw < 0).any()) != above_one


def test_global_branch_sees_the_whole_image_resized_to_256():
    net = random_expandnet()
    x = torch.rand(1, 3, 120, 150)
    y = x.clone()
    y[..., 100:, 130:] = 1 - y[..., 100:, 130:]  # a change far from the top-left corner
    resized = F.interpolate(x, (256, 256), mode="bilinear", align_corners=False)
    with torch.no_grad():
        assert not torch.allclose(net(x)[..., :8, :8], net(y)[..., :8, :8])
        torch.testing.assert_close(net.global_features(x), net.global_features(resized))
        # the second argument stands for the global branch: the image's own features give
        # the same output, another image's features another output
        torch.testing.assert_close(net(x, net.global_features(x)), net(x))
        assert not torch.allclose(net(x, net.global_features(y)), net(x))


def test_tiled_prediction_shares_the_whole_images_global_features():
    net = random_expandnet()
    x = torch.rand(2, 3, 100, 130)  # 2x2 tiles of 96 pixels
    whole = Predictor(net, device="cpu", precision="32", tile=0)(x)
    for tile_batch in (1, 3):
        tiled = Predictor(
            net, device="cpu", precision="32", tile=96, overlap=56, tile_batch=tile_batch
        )(x)
        torch.testing.assert_close(tiled, whole, atol=1e-5, rtol=1e-5)
    with torch.no_grad():  # tiles that each compute their own global branch would not stitch
        naive = tiled_forward(net, x, 96, 56)
    assert (naive - whole).abs().max() > 1e-3


def test_every_parameter_learns():
    net = ExpandNet(nf=8)
    ldr, hdr = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32) * 2
    before = [p.detach().clone() for p in net.parameters()]
    loss = F.l1_loss(net(ldr), hdr)
    loss.backward()
    torch.optim.Adam(net.parameters(), lr=1e-3).step()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
    assert all(not torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"output": "relu"}, "unknown output 'relu'"), ({"nf": 0}, "nf must be >= 1")],
)
def test_bad_arguments_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ExpandNet(**kwargs)


# --- checkpoints --------------------------------------------------------------------------


def test_save_model_round_trip_keeps_width_and_output_map(tmp_path):
    net = random_expandnet(output="sigmoid")
    path = save_model(net, tmp_path / "e.ckpt")
    record = torch.load(path, weights_only=True)["hdrunet_config"]
    assert record == {"arch": "expandnet", "nf": 8, "output": "sigmoid"}
    loaded = load_model(path)
    assert isinstance(loaded, ExpandNet) and loaded.config == net.config
    x = torch.rand(1, 3, 21, 30)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net(x))


def test_lightning_and_plain_state_dicts_load(tmp_path, recwarn):
    net = random_expandnet(output="identity")
    module = HDRUNetModule(net)
    assert module.hparams["net"] == {"arch": "expandnet", "nf": 8, "output": "identity"}
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)  # records the config, as training does
    torch.save(checkpoint, tmp_path / "run.ckpt")
    assert load_model(tmp_path / "run.ckpt").config == net.config
    assert not recwarn.list
    # without a record the output map is not known: the default is assumed, and said so
    for state, name in ((module.state_dict(), "module.pth"), (net.state_dict(), "net.pth")):
        torch.save(state, tmp_path / name)
        with pytest.warns(UserWarning, match=r"does not record the output map.*'softplus'"):
            loaded = load_model(tmp_path / name)
        assert loaded.config == ExpandNetConfig(nf=8, output="softplus")
        for key, tensor in net.state_dict().items():
            assert torch.equal(loaded.state_dict()[key], tensor), key


def _expandnet_file(tmp_path: Path, edit) -> Path:
    net = random_expandnet()
    ckpt = {
        "state_dict": {"net." + k: v for k, v in net.state_dict().items()},
        "hdrunet_config": asdict(net.config),
    }
    edit(ckpt)
    torch.save(ckpt, tmp_path / "crafted.ckpt")
    return tmp_path / "crafted.ckpt"


def _record(**changes):
    return lambda ckpt: ckpt["hdrunet_config"].update(changes)


def _hdrunet_tensors(ckpt):
    ckpt["state_dict"] = {"net." + k: v for k, v in HDRUNet(nf=8).state_dict().items()}


CRAFTED = {
    "arch-unknown": (_record(arch="unet"), r"arch='unet': unknown network; known: 'expandnet'"),
    "arch-int": (_record(arch=1), r"arch=1: unknown network"),
    "output-unknown": (_record(output="relu"), r"output='relu'; must be one of softplus, sig"),
    "output-int": (_record(output=1), r"output=1: expected str, got int"),
    "hdrunet-key": (_record(modulation="sft"), r"unknown keys 'modulation'"),
    "nf-zero": (_record(nf=0), r"nf=0; ExpandNet needs a width >= 1"),
    "nf-claimed": (_record(nf=4096), r"says nf=4096 but local_branch.0.weight has shape \(8,"),
    "record-of-hdrunet": (
        lambda ckpt: ckpt.update(hdrunet_config={"nf": 8}),
        r"'hdrunet_config' describes HDRUNet but the tensors have ExpandNet's names",
    ),
    "tensors-of-hdrunet": (
        _hdrunet_tensors,
        r"'hdrunet_config' describes ExpandNet but the tensors have HDRUNet's names",
    ),
    "missing-tensor": (
        lambda ckpt: ckpt["state_dict"].pop("net.fusion.2.bias"),
        r"does not fit ExpandNet\(nf=8, output='softplus'\); missing: fusion.2.bias",
    ),
}


@pytest.mark.parametrize("case", list(CRAFTED))
def test_a_crafted_expandnet_checkpoint_is_refused_in_one_line(tmp_path, monkeypatch, case):
    built = []
    real = checkpoints.ExpandNet
    monkeypatch.setattr(checkpoints, "ExpandNet", lambda **kw: built.append(kw) or real(**kw))
    edit, expected = CRAFTED[case]
    path = _expandnet_file(tmp_path, edit)
    with pytest.raises(CheckpointError, match=expected) as err:
        load_model(path)
    assert "\n" not in str(err.value) and str(path) in str(err.value)
    assert all(kw["nf"] == 8 for kw in built)  # a claimed width is never built


def test_resume_and_init_weights_refuse_the_other_network(tmp_path):
    expandnet, hdrunet = ExpandNetConfig(nf=8), HDRUNetConfig(nf=8)
    with pytest.raises(CheckpointError, match="holds ExpandNet, this run configures HDRUNet"):
        check_resume_fits(ResumePoint(4, expandnet), hdrunet, "last.ckpt")
    with pytest.raises(CheckpointError, match="holds HDRUNet, this run configures ExpandNet"):
        check_resume_fits(ResumePoint(4, hdrunet), expandnet, "last.ckpt")
    with pytest.raises(CheckpointError) as err:  # one kind: each setting that differs, named
        check_resume_fits(
            ResumePoint(4, hdrunet), HDRUNetConfig(nf=16, modulation="channel"), "last.ckpt"
        )
    assert (
        "(model.net.nf: 8 in the checkpoint, 16 here; model.net.modulation: 'sft' in the "
        "checkpoint, 'channel' here)" in str(err.value)
    )
    check_resume_fits(ResumePoint(4, expandnet), ExpandNetConfig(nf=8), "last.ckpt")
    source = random_expandnet()
    path = save_model(source, tmp_path / "e.ckpt")
    with pytest.raises(HDRUNetError, match=r"holds ExpandNet\(.*configured network is HDRUNet"):
        _load_initial_weights(HDRUNetModule(HDRUNet(nf=8)), str(path))
    module = HDRUNetModule(ExpandNet(nf=8))
    _load_initial_weights(module, str(path))
    for key, tensor in source.state_dict().items():
        assert torch.equal(module.net.state_dict()[key], tensor), key


# --- model=expandnet through hdrunet-train, the report, resume and hdrunet-predict ---------

SWEEP = ["model=full,expandnet", "+scale=smoke", "patch=32px"]
EXPANDNET_RUN = ["model=expandnet", "+scale=smoke", "patch=32px"]


@pytest.fixture(scope="module")
def model_sweep(tmp_path_factory) -> Path:
    """``hdrunet-train -m model=full,expandnet +scale=smoke patch=32px``: the side-by-side."""
    root = tmp_path_factory.mktemp("models")
    sweep = root / "sweep"
    result = ok(run_tool("hdrunet-train", ["-m", *SWEEP, f"hydra.sweep.dir={sweep}"], root))
    assert result.stdout.count("hdrunet-train summary") == 2
    return sweep


def _run(sweep: Path, model: str) -> Path:
    return sweep / f"{0 if model == 'full' else 1}_model-{model}_patch-32px"


def test_sweep_report_shows_both_networks_with_params_and_macs(model_sweep, capsys):
    assert report_main([str(model_sweep)]) == 0
    out = capsys.readouterr().out
    header = out.splitlines()[0]
    assert header.startswith("| variant | params | GMAC (256x256) | PSNR-mu (dB) |")
    assert "PU21" not in header and "CVVDP" not in header  # no run logged them
    rows = {line.split(" | ")[0][2:]: line for line in out.splitlines() if "| model=" in line}
    assert list(rows) == ["model=full", "model=expandnet"]
    for variant, net in (("model=full", HDRUNet(nf=8)), ("model=expandnet", ExpandNet(nf=8))):
        cells = [c.strip() for c in rows[variant].split("|")[1:-1]]
        gmacs = conv_macs(net, 256, 256) / 1e9  # counted by forward hooks, not by the report
        assert cells[1:3] == [f"{net.num_parameters:,}", f"{gmacs:.3g}"], variant
        metrics = json.loads((_run(model_sweep, variant[6:]) / "metrics.json").read_text())
        assert cells[3] == f"{metrics['psnr_mu_after']:.2f}" and cells[-2:] == ["4", "done"]
    table = list(csv.DictReader((model_sweep / "report.csv").open()))
    assert [(r["variant"], r["params"]) for r in table] == [
        ("model=full", str(HDRUNet(nf=8).num_parameters)),
        ("model=expandnet", str(ExpandNet(nf=8).num_parameters)),
    ]


def test_report_shows_perceptual_scores_a_run_logged(model_sweep, tmp_path):
    sweep = tmp_path / "sweep"
    shutil.copytree(model_sweep, sweep)
    log = _run(sweep, "expandnet") / "csv" / "metrics.csv"
    rows = list(csv.DictReader(log.open()))
    rows[-1]["val/pu21_psnr"] = "31.25"
    with log.open("w", newline="") as f:
        writer = csv.DictWriter(f, [*rows[0].keys(), "val/pu21_psnr"])
        writer.writeheader()
        writer.writerows(rows)
    table = markdown_table(collect(sweep)).splitlines()
    assert "| PU21-PSNR (dB) |" in table[0] and "SSIM" not in table[0]
    assert "| 31.25 | 4 | done |" in table[3] and "| - | 4 | done |" in table[2]
    # an SSIM in [0, 1] shows 3 decimals (0.04 and 0.28 said too little); report.csv, for
    # programs, keeps every value as logged
    rows[-1]["val/pu21_ssim"] = "0.27514"
    with log.open("w", newline="") as f:
        writer = csv.DictWriter(f, list(rows[-1].keys()))
        writer.writeheader()
        writer.writerows(rows)
    assert "| 31.25 | 0.275 | 4 | done |" in markdown_table(collect(sweep)).splitlines()[3]
    write_report(sweep, collect(sweep))
    (_, expandnet) = csv.DictReader((sweep / "report.csv").open())
    metrics = json.loads((_run(sweep, "expandnet") / "metrics.json").read_text())
    assert float(expandnet["psnr_mu"]) == metrics["psnr_mu_after"]  # not rounded to 0.01
    assert expandnet["pu21_ssim"] == "0.27514"


def test_expandnet_run_trains_validates_and_saves_as_hdrunet_runs_do(model_sweep):
    runs = {m: _run(model_sweep, m) for m in ("full", "expandnet")}
    configs = {m: yaml.safe_load((r / "config.yaml").read_text()) for m, r in runs.items()}
    net = configs["expandnet"]["model"].pop("net")
    assert net == {"_target_": "hdrunet_pl.models.ExpandNet", "nf": 8, "output": "softplus"}
    configs["full"]["model"].pop("net")
    assert configs["expandnet"]["model"] == configs["full"]["model"]  # module, loss, optimizer
    assert configs["expandnet"]["data"] == configs["full"]["data"]
    last = runs["expandnet"] / "checkpoints" / "last.ckpt"
    model = load_model(last)
    assert isinstance(model, ExpandNet) and model.config == ExpandNetConfig(nf=8)
    hparams = torch.load(last, weights_only=True)["hyper_parameters"]
    assert hparams["net"] == asdict(model.config)
    # its validation scores are the organisers' scores of the saved network's predictions
    metrics = json.loads((runs["expandnet"] / "metrics.json").read_text())
    mu, psnr_l = organisers_val_scores(compose_train(EXPANDNET_RUN), model)
    assert metrics["psnr_mu_after"] == pytest.approx(mu, abs=1e-3)
    assert metrics["psnr_l_after"] == pytest.approx(psnr_l, abs=1e-3)
    assert metrics["steps"] == 4 and metrics["psnr_mu_before"] != metrics["psnr_mu_after"]


def test_expandnet_run_resumes_where_it_stopped(model_sweep, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(_run(model_sweep, "expandnet"), run)
    point = check_resume_checkpoint(run / "checkpoints" / "last.ckpt")
    assert (point.step, point.config) == (4, ExpandNetConfig(nf=8))
    cfg = compose_train([*EXPANDNET_RUN, f"paths.output_dir={run}", "resume=auto"])
    cfg.trainer.max_steps = 6
    assert train(cfg).steps == 6
    full = compose_train(["+scale=smoke", f"paths.output_dir={run}", "resume=auto"])
    full.trainer.max_steps = 8
    with pytest.raises(CheckpointError, match=r"holds ExpandNet.*configures HDRUNet"):
        train(full)


def test_predict_cli_converts_with_an_expandnet_checkpoint(model_sweep, tmp_path):
    ckpt = _run(model_sweep, "expandnet") / "checkpoints" / "last.ckpt"
    for i, item in enumerate(SyntheticHDRDataset(2, 33, 45, seed=4)):
        write_ldr(tmp_path / "in" / f"{i:04d}_medium.png", item["ldr"].permute(1, 2, 0).numpy())
    args = [
        f"ckpt={ckpt}",
        f"input={tmp_path / 'in'}",
        f"output={tmp_path / 'out'}",
        "format=exr",
        "precision=32",
    ]
    result = ok(run_tool("hdrunet-predict", args, tmp_path))
    assert "2 written, 0 skipped (exist), 0 failed" in result.stdout
    net = load_model(ckpt)
    for i in range(2):
        ldr = torch.from_numpy(read_ldr(tmp_path / "in" / f"{i:04d}_medium.png"))
        with torch.no_grad():
            expected = net(ldr.permute(2, 0, 1)[None])[0].clamp_min(0).permute(1, 2, 0).numpy()
        got = read_exr(tmp_path / "out" / f"{i:04d}.exr") ** (1 / 2.24)  # linear in EXR
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_model_expandnet_composes_with_hdrunets_groups_and_recipes():
    for overrides in (["modulation=channel", "condition=gradient"], ["experiment=paper"]):
        cfg = compose_train(["model=expandnet", *overrides])
        assert set(cfg.model.net) == {"_target_", "nf", "output"}, overrides
        module = instantiate(cfg.model)
        assert isinstance(module.net, ExpandNet) and module.net.num_parameters == 456_899
    hdrunet = compose_train(["modulation=channel", "condition=gradient"]).model.net
    assert (hdrunet.modulation, hdrunet.condition) == ("channel", "gradient")
