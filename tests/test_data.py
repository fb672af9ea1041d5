import pytest
import torch

from hdrunet_pl.camera import CameraModel, capture, exposure_for_clipping
from hdrunet_pl.data import HDRDataModule, RandomPatches, SyntheticHDRDataset, augment_pair
from hdrunet_pl.data.synthetic import render_scene, scene_generator


def test_scenes_have_real_dynamic_range():
    for i in range(4):
        linear = render_scene(128, 128, scene_generator(0, i))
        assert linear.shape == (3, 128, 128) and (linear > 0).all()
        lum = linear.mean(0).flatten()
        assert lum.max() / lum.quantile(0.05) > 100, "highlights at least 100x the shadows"


def test_items_are_deterministic_by_seed_and_differ_across_seeds():
    a, b = SyntheticHDRDataset(4, 32, seed=7), SyntheticHDRDataset(4, 32, seed=7)
    assert torch.equal(a[2]["ldr"], b[2]["ldr"]) and torch.equal(a[2]["hdr"], b[2]["hdr"])
    assert not torch.equal(a[2]["hdr"], SyntheticHDRDataset(4, 32, seed=8)[2]["hdr"])
    assert not torch.equal(a[1]["hdr"], a[2]["hdr"])


def test_camera_clips_the_requested_share():
    linear = render_scene(96, 96, scene_generator(0, 0))
    exposed = linear * exposure_for_clipping(linear, 0.1)
    share = (exposed.amax(0) >= 1).float().mean().item()
    assert share == pytest.approx(0.1, abs=0.01)
    # whatever the file's units: the same capture for radiance 1e-30 to 1e30 times as large
    for scale in (1e-30, 1e-12, 1e12, 1e30):
        scaled = linear * scale
        torch.testing.assert_close(scaled * exposure_for_clipping(scaled, 0.1), exposed)
    # a frame black but for one pixel: a finite exposure, that pixel clipped
    black = torch.zeros(3, 10, 10)
    black[:, 4, 4] = 10.0
    exposure = exposure_for_clipping(black, 0.1)
    assert torch.isfinite(black * exposure).all() and (black * exposure).max() >= 1


def test_capture_quantises_to_8_bit_and_clips():
    exposed = torch.linspace(0, 2, 1000).view(1, 1, 1000)
    ldr = capture(
        exposed, shot_noise=1e-3, read_noise=1e-3, generator=torch.Generator().manual_seed(0)
    )
    assert ldr.min() >= 0 and ldr.max() <= 1
    assert torch.allclose(ldr * 255, (ldr * 255).round(), atol=1e-4)
    assert (ldr[exposed > 1.1] == 1).all(), "over-exposed pixels clip"


def test_target_is_the_exposed_scene_and_matches_the_ldr_where_well_exposed():
    camera = CameraModel(
        clip_fraction=(0.05, 0.05), shot_noise=(1e-12, 1e-12), read_noise=(1e-9, 1e-9)
    )
    item = SyntheticHDRDataset(1, 128, seed=3, camera=camera)[0]
    ldr, hdr = item["ldr"], item["hdr"]
    scene = render_scene(128, 128, scene_generator(3, 0)).double()
    # the target, made linear with the challenge's gamma (a literal here), is the rendered
    # scene times one exposure ...
    exposure = hdr.double() ** 2.24 / scene
    assert (exposure.max() - exposure.min()) / exposure.median() < 1e-4
    # ... the exposure that saturates the requested 5% of the pixels
    clipped = ((scene * exposure.median()).amax(0) >= 1).double().mean().item()
    assert clipped == pytest.approx(0.05, abs=0.005)
    assert hdr.max() > 1, "highlights exceed 1 in the non-linear target"
    well_exposed = (hdr > 0.2) & (hdr < 0.9)
    assert well_exposed.float().mean() > 0.1
    # without noise, LDR = quantised target where nothing clips
    assert (ldr[well_exposed] - hdr[well_exposed]).abs().max() <= 0.5 / 255 + 1e-6


def test_camera_ranges_are_checked():
    with pytest.raises(ValueError, match="clip_fraction"):
        CameraModel(clip_fraction=(0.1, 1.5))
    with pytest.raises(ValueError, match="read_noise"):
        CameraModel(read_noise=(0.0, 1e-3))


def test_augment_pair_keeps_ldr_and_hdr_aligned_for_all_eight_codes():
    ldr = torch.arange(2 * 4 * 4, dtype=torch.float32).view(2, 4, 4)
    hdr = ldr * 10
    seen = set()
    for code in range(8):
        a, b = augment_pair(ldr, hdr, code)
        assert torch.equal(b, a * 10)
        seen.add(tuple(a.flatten().tolist()))
    assert len(seen) == 8
    with pytest.raises(ValueError):
        augment_pair(ldr, hdr, 8)


def test_random_patches_crop_aligned_pairs_and_refuse_small_images():
    base = SyntheticHDRDataset(3, 48, seed=0)
    patches = RandomPatches(base, 32)
    for i in range(3):
        item = patches[i]
        assert item["ldr"].shape == item["hdr"].shape == (3, 32, 32)
    with pytest.raises(ValueError, match="smaller than the 64x64 patch"):
        RandomPatches(base, 64)[0]
    with pytest.raises(ValueError, match="multiple of 4"):
        RandomPatches(base, 30)


def test_datamodule_serves_patch_batches_and_whole_validation_images():
    dm = HDRDataModule(
        SyntheticHDRDataset(8, 32),
        SyntheticHDRDataset(2, 36, 52, seed=1),
        patch_size=16,
        batch_size=4,
        num_workers=0,
    )
    batch = next(iter(dm.train_dataloader()))
    assert batch["ldr"].shape == (4, 3, 16, 16) and len(batch["name"]) == 4
    val = next(iter(dm.val_dataloader()))
    assert val["ldr"].shape == (1, 3, 36, 52)


def test_validation_split_over_processes_needs_an_image_for_each():
    """With DDP each process scores its share of the validation images; one without any
    stopped Lightning with a traceback. Every image is scored once, and too few are refused."""
    from types import SimpleNamespace

    from hdrunet_pl.errors import DatasetError

    dm = HDRDataModule(SyntheticHDRDataset(8, 32), SyntheticHDRDataset(3, 36, 52, seed=1), 16, 4, 0)
    names = []
    cpu = SimpleNamespace(root_device=torch.device("cpu"))
    for rank in (0, 1):
        dm.trainer = SimpleNamespace(global_rank=rank, world_size=2, strategy=cpu)
        names += [n for batch in dm.val_dataloader() for n in batch["name"]]
    assert sorted(names) == sorted(
        SyntheticHDRDataset(3, 36, 52, seed=1)[i]["name"] for i in range(3)
    )
    dm.trainer = SimpleNamespace(global_rank=0, world_size=4, strategy=cpu)
    with pytest.raises(DatasetError, match=r"3 validation image.* for 4 processes"):
        dm.val_dataloader()
