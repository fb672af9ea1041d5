"""Loading the public HDRUNet state_dict and this project's checkpoints."""

import dataclasses
import json
import pickle

import pytest
import torch
import torch.nn.functional as F

from hdrunet_pl import CheckpointError, HDRUNet, load_model, save_model
from hdrunet_pl.errors import HDRUNetError
from hdrunet_pl.models.checkpoints import official_to_ours
from hdrunet_pl.models.hdrunet import HDRUNetConfig

from .support import DATA_DIR

LAYOUT = json.loads((DATA_DIR / "official_checkpoint_layout.json").read_text())


def official_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors with the public checkpoint's names and shapes."""
    g = torch.Generator().manual_seed(seed)
    return {k: 0.05 * torch.randn(shape, generator=g) for k, shape in LAYOUT.items()}


def official_forward(sd: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The public HDRUNet forward pass written against its own key names (condition = image)."""

    def conv(name, t, stride=1):
        w = sd[name + ".weight"]
        return F.conv2d(t, w, sd[name + ".bias"], stride=stride, padding=w.shape[-1] // 2)

    def lrelu(t):
        return F.leaky_relu(t, 0.1)

    def sft(p, f, c):
        scale = conv(p + "SFT_scale_conv1", lrelu(conv(p + "SFT_scale_conv0", c)))
        shift = conv(p + "SFT_shift_conv1", lrelu(conv(p + "SFT_shift_conv0", c)))
        return f * (scale + 1) + shift

    def trunk(name, n, f, c):
        for i in range(n):
            p = f"{name}.{i}."
            fea = F.relu(conv(p + "conv1", sft(p + "sft1.", f, c)))
            f = f + conv(p + "conv2", sft(p + "sft2.", fea, c))
        return f

    mask = x
    for i, act in ((0, F.relu), (2, F.relu), (4, F.relu), (6, None)):
        mask = conv(f"mask_est.{i}", mask)
        mask = act(mask) if act else mask
    cond = lrelu(conv("cond_first.4", lrelu(conv("cond_first.2", lrelu(conv("cond_first.0", x))))))
    cond1 = conv("CondNet1.2", lrelu(conv("CondNet1.0", cond)))
    cond2 = conv("CondNet2.2", lrelu(conv("CondNet2.0", cond, 2)))
    cond3 = conv("CondNet3.2", lrelu(conv("CondNet3.0", cond, 2)), 2)

    fea0 = F.relu(conv("conv_first", x))
    fea0 = F.relu(conv("HR_conv1", sft("SFT_layer1.", fea0, cond1)))
    fea1 = trunk("recon_trunk1", 2, F.relu(conv("down_conv1", fea0, 2)), cond2)
    fea2 = F.relu(conv("down_conv2", fea1, 2))
    out = trunk("recon_trunk2", 8, fea2, cond3) + fea2
    out = F.relu(F.pixel_shuffle(conv("up_conv1.0", out), 2)) + fea1
    out = trunk("recon_trunk3", 2, out, cond2)
    out = F.relu(F.pixel_shuffle(conv("up_conv2.0", out), 2)) + fea0
    out = F.relu(conv("HR_conv2", sft("SFT_layer2.", out, cond1)))
    return mask * x + conv("conv_last", out)


@pytest.fixture
def official_file(tmp_path):
    sd = official_state_dict()
    path = tmp_path / "HDRUNet_official.pth"
    torch.save(sd, path)
    return path, sd


def test_layout_maps_one_to_one_onto_the_default_network():
    ours = HDRUNet().state_dict()
    mapped = {official_to_ours(k): tuple(v) for k, v in LAYOUT.items()}
    assert len(LAYOUT) == 298
    assert len(set(mapped)) == len(LAYOUT)
    assert mapped == {k: tuple(v.shape) for k, v in ours.items()}


def test_official_state_dict_loads_strictly_with_every_tensor_placed(official_file):
    path, sd = official_file
    model = load_model(path)
    assert not model.training
    ours = model.state_dict()
    for key, tensor in sd.items():
        assert torch.equal(ours[official_to_ours(key)], tensor), key


def test_state_dicts_saved_from_a_data_parallel_wrapper_load(tmp_path, official_file):
    """``module.``-prefixed names (nn.DataParallel / DDP around the network), of the public
    layout and of this package's own, load as the bare names do."""
    _, sd = official_file
    path = tmp_path / "parallel_official.pth"
    torch.save({f"module.{k}": v for k, v in sd.items()}, path)
    ours = load_model(path).state_dict()
    assert all(torch.equal(ours[official_to_ours(k)], v) for k, v in sd.items())
    torch.manual_seed(4)
    own = HDRUNet(nf=8).state_dict()
    torch.save({f"module.{k}": v for k, v in own.items()}, tmp_path / "parallel_own.pth")
    loaded = load_model(tmp_path / "parallel_own.pth").state_dict()
    assert loaded.keys() == own.keys() and all(torch.equal(loaded[k], v) for k, v in own.items())


def test_official_weights_give_the_public_implementations_output(official_file):
    path, sd = official_file
    model = load_model(path).double()  # float64: the same function, not just close in fp32
    x = torch.rand(1, 3, 32, 48, dtype=torch.float64)
    with torch.no_grad():
        expected = official_forward({k: v.double() for k, v in sd.items()}, x)
        torch.testing.assert_close(model(x), expected, rtol=1e-10, atol=1e-10)


def test_missing_and_unexpected_keys_are_named(tmp_path):
    sd = official_state_dict()
    del sd["recon_trunk2.3.conv1.weight"]
    sd["extra.weight"] = torch.zeros(1)
    path = tmp_path / "bad.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointError) as err:
        load_model(path)
    message = str(err.value)
    assert "missing: trunk_quarter.3.conv1.weight" in message
    assert "unexpected: extra.weight" in message


def test_two_tensors_for_one_weight_are_refused(tmp_path):
    """The public name and this package's side by side (``HR_conv1`` and ``hr_conv1``): one
    of them was dropped silently, whichever came last kept."""
    sd = official_state_dict()
    sd["hr_conv1.weight"] = torch.zeros_like(sd["HR_conv1.weight"])
    torch.save(sd, tmp_path / "mixed.pth")
    with pytest.raises(
        CheckpointError,
        match=r"two tensors for one weight: 'HR_conv1.weight' "
        r"and 'hr_conv1.weight' are both 'hr_conv1.weight'",
    ):
        load_model(tmp_path / "mixed.pth")


def test_wrong_shape_is_named(tmp_path):
    sd = official_state_dict()
    sd["conv_last.bias"] = torch.zeros(4)
    path = tmp_path / "bad.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointError, match=r"shape: conv_last.bias \(4,\)"):
        load_model(path)


def test_corrupt_and_missing_files_raise_clear_errors(tmp_path, official_file):
    path, _ = official_file
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match=r"truncated\.pth: not a loadable weights file"):
        load_model(truncated)
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        load_model(tmp_path / "nope.pth")
    other = tmp_path / "other.pth"
    torch.save({"encoder.weight": torch.zeros(1)}, other)
    with pytest.raises(CheckpointError, match="not an HDRUNet checkpoint"):
        load_model(other)
    # conv_first alone: the message names the key that is missing, not the one present
    torch.save({"conv_first.weight": torch.zeros(8, 3, 3, 3)}, other)
    with pytest.raises(CheckpointError, match=r"'conv_first.weight' with 'hr_conv1.weight'"):
        load_model(other)


class _RunsCode:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickles_that_run_code_are_refused(tmp_path, capsys):
    path = tmp_path / "evil.pth"
    torch.save({"conv_first.weight": _RunsCode()}, path, pickle_module=pickle)
    with pytest.raises(CheckpointError, match="weights_only"):
        load_model(path)
    assert "this must never run" not in capsys.readouterr().out


def test_lightning_checkpoint_round_trip_keeps_the_variant(tmp_path):
    from hdrunet_pl.module import HDRUNetModule

    net = HDRUNet(nf=8, modulation="channel", condition="gradient", use_weighting=False)
    module = HDRUNetModule(net)
    checkpoint = {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}
    module.on_save_checkpoint(checkpoint)
    path = tmp_path / "run.ckpt"
    torch.save(checkpoint, path)
    loaded = load_model(path)
    assert loaded.config == net.config
    x = torch.rand(1, 3, 20, 20)
    with torch.no_grad():
        assert torch.allclose(loaded(x), net.eval()(x), atol=1e-5)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"nf": 8},
        {"nf": 8, "use_weighting": False},
        {"nf": 6, "use_condition": False},
        {"nf": 8, "modulation": "none"},
        {"nf": 4, "in_ch": 1},
    ],
    ids=["default", "no-weighting", "no-condition", "no-modulation", "one-channel"],
)
def test_own_plain_state_dict_loads_with_inferred_config(tmp_path, kwargs, recwarn):
    torch.manual_seed(0)
    net = HDRUNet(**kwargs).eval()
    path = tmp_path / "plain.pth"
    torch.save(net.state_dict(), path)
    loaded = load_model(path)
    assert (loaded.config.nf, loaded.config.in_ch) == (net.config.nf, net.config.in_ch)
    assert loaded.config.use_weighting == net.config.use_weighting
    assert (loaded.condition is None) == (net.condition is None)
    for key, tensor in net.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], tensor), key
    x = torch.rand(1, net.config.in_ch, 12, 16)
    with torch.no_grad():
        assert torch.allclose(loaded(x), net(x), atol=1e-6)
    # only what the keys cannot tell is warned about, in one line
    notes = [str(w.message) for w in recwarn if "plain state_dict" in str(w.message)]
    assert len(notes) == (net.condition is not None)
    assert all("\n" not in n and "'channel'" in n and "'gradient'" in n for n in notes)


def test_own_state_dict_warns_that_channel_modulation_cannot_be_told_from_sft(tmp_path):
    net = HDRUNet(nf=8, modulation="channel", condition="gradient")
    path = tmp_path / "plain.pth"
    torch.save(net.state_dict(), path)
    with pytest.warns(UserWarning, match=r"does not record the modulation.*assuming 'sft'"):
        loaded = load_model(path)
    assert loaded.config.modulation == "sft" and loaded.config.condition == "image"


def test_lightning_module_state_dict_and_checkpoint_without_config_load(tmp_path):
    from hdrunet_pl.module import HDRUNetModule

    net = HDRUNet(nf=8, use_condition=False).eval()
    module_state = HDRUNetModule(net).state_dict()
    assert all(k.startswith("net.") for k in module_state)
    plain, lightning = tmp_path / "module.pth", tmp_path / "noconfig.ckpt"
    torch.save(module_state, plain)
    torch.save({"state_dict": module_state, "epoch": 3}, lightning)
    x = torch.rand(1, 3, 8, 8)
    for path in (plain, lightning):
        loaded = load_model(path)
        with torch.no_grad():
            assert torch.allclose(loaded(x), net(x), atol=1e-6), path.name


@pytest.mark.parametrize(
    "config",
    [
        HDRUNetConfig(nf=8, modulation="channel", condition="gradient"),
        HDRUNetConfig(nf=8, modulation="sft", condition="gradient"),
    ],
    ids=["channel-gradient", "sft-gradient"],
)
def test_initial_weights_of_a_plain_state_dict_start_the_configured_variant(
    tmp_path, config, recwarn
):
    """``init_weights=`` with a plain state_dict of a ``channel`` (or ``gradient``) network:
    the keys cannot tell the variant, and the start was refused for holding 'sft'/'image',
    advising the variant the weights were not trained for."""
    from types import SimpleNamespace

    from hdrunet_pl.train import _load_initial_weights

    source = HDRUNet(**dataclasses.asdict(config))
    path = tmp_path / "plain.pth"
    torch.save(source.state_dict(), path)
    target = SimpleNamespace(net=HDRUNet(**dataclasses.asdict(config)))
    _load_initial_weights(target, str(path))
    for key, value in source.state_dict().items():
        assert torch.equal(target.net.state_dict()[key], value), key
    assert not [w for w in recwarn if "does not record" in str(w.message)]
    # what the keys do tell is still the file's: a network without the condition branch
    bare = tmp_path / "bare.pth"
    torch.save(HDRUNet(nf=8, use_condition=False).state_dict(), bare)
    with pytest.raises(HDRUNetError, match=r"holds HDRUNet\(.*use_condition=False"):
        _load_initial_weights(target, str(bare))


def test_save_model_never_writes_through_a_link_planted_at_a_temporary_name(tmp_path):
    """``save_model`` wrote ``.<name>.tmp`` and renamed it: a link planted under that name
    sent the weights into the file it pointed to, and left the result a link to it."""
    victim = tmp_path / "victim.txt"
    victim.write_text("a user's file")
    for planted in (".w.pth.tmp", ".w.pth.tmp-0.pth"):
        (tmp_path / planted).symlink_to(victim)
    saved = save_model(HDRUNet(nf=8), tmp_path / "w.pth")
    assert victim.read_text() == "a user's file"
    assert saved.is_file() and not saved.is_symlink()
    assert load_model(saved).config.nf == 8
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [".w.pth.tmp", ".w.pth.tmp-0.pth", "victim.txt", "w.pth"]
    )
