"""The camera model's statistics match its settings: clip share, noise against signal level,
the bias of clipping at zero, quantisation and banding, the responses and JPEG."""

import math

import pytest
import torch

from hdrunet_pl.camera import (
    CameraModel,
    jpeg,
    quantise,
    respond,
    s_curve,
    sensor,
    srgb_encode,
)


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _clip_shares(camera: CameraModel, draws: int) -> torch.Tensor:
    """The share of saturated pixels in ``draws`` captures of one image of distinct values
    (the target is >= 1 exactly where the exposed scene saturates)."""
    linear = torch.rand(3, 96, 96, generator=_generator(1)).exp() ** 6
    generator = _generator(2)
    shares = [(camera(linear, generator)[1].amax(0) >= 1).double().mean() for _ in range(draws)]
    return torch.stack(shares)


def test_log_clip_sampling_spans_under_to_over_exposed_captures():
    low, high = 1e-4, 0.3
    shares = _clip_shares(CameraModel(clip_fraction=(low, high), clip_sampling="log"), 300)
    assert shares.min() >= low - 1 / 96**2 and shares.max() <= high + 1 / 96**2
    # log-uniform: the share below 0.1% is log(10) / log(3000) = 0.288 of the draws ...
    under = (shares <= 1e-3).double().mean().item()
    assert under == pytest.approx(math.log(10) / math.log(high / low), abs=0.08)
    # ... and the median is the geometric mean of the bounds
    assert shares.median().item() == pytest.approx(math.sqrt(low * high), rel=0.5)


def test_uniform_clip_sampling_stays_in_its_range_with_its_mean():
    shares = _clip_shares(CameraModel(clip_fraction=(0.02, 0.12)), 200)
    assert shares.min() >= 0.02 - 1e-3 and shares.max() <= 0.12 + 1e-3
    assert shares.mean().item() == pytest.approx(0.07, abs=0.01)


@pytest.mark.parametrize(("shot", "read"), [(1e-4, 8e-5), (2e-3, 1e-3), (1.2e-2, 1.5e-2)])
def test_noise_variance_grows_with_the_signal_as_configured(shot, read):
    for level in (0.1, 0.3, 0.6):
        flat = torch.full((200_000,), level, dtype=torch.float64)
        reading = sensor(flat, shot, read, _generator())
        expected = shot * level + read**2
        assert reading.var().item() == pytest.approx(expected, rel=0.03)
        assert reading.mean().item() == pytest.approx(level, abs=4 * math.sqrt(expected / 2e5))


def test_clipping_at_zero_biases_dark_pixels_upwards():
    read = 0.01
    reading = sensor(torch.zeros(200_000, dtype=torch.float64), 1e-3, read, _generator())
    assert reading.min() == 0 and (reading == 0).double().mean() == pytest.approx(0.5, abs=0.01)
    # the mean of max(0, N(0, read**2)) is read / sqrt(2 pi)
    assert reading.mean().item() == pytest.approx(read / math.sqrt(2 * math.pi), rel=0.02)


@pytest.mark.parametrize("response", ["gamma", "srgb", "s_curve"])
def test_ldr_is_8_bit_and_smooth_gradients_band(response):
    camera = CameraModel(
        shot_noise=(1e-9, 1e-9),
        read_noise=(1e-9, 1e-9),
        response=response,
        clip_fraction=(0.1, 0.1),
    )
    ramp = torch.linspace(0.01, 0.5, 4096).expand(3, 4, 4096).contiguous()  # a smooth gradient
    ldr, _ = camera(ramp, _generator())
    codes = ldr * 255
    assert torch.equal(codes, codes.round()) and ldr.min() >= 0 and ldr.max() <= 1
    row = codes[0, 0]
    steps = (row[1:] != row[:-1]).sum().item()
    assert steps < 256 and steps < row.numel() / 10, "runs of equal codes: banding"
    assert (row[1:] >= row[:-1]).all(), "the response is increasing"


def test_responses_follow_their_definitions():
    x = torch.tensor([0.0, 0.0031308, 0.18, 0.5, 1.0], dtype=torch.float64)
    # the sRGB curve at its published points (IEC 61966-2-1)
    expected = torch.tensor([0.0, 0.04045, 0.46135, 0.73536, 1.0], dtype=torch.float64)
    torch.testing.assert_close(srgb_encode(x), expected, atol=2e-5, rtol=0)
    torch.testing.assert_close(respond(x, "gamma"), x ** (1 / 2.24))
    y = torch.linspace(0, 1, 1001, dtype=torch.float64, requires_grad=True)
    curve = s_curve(y, 0.3)
    (slope,) = torch.autograd.grad(curve.sum(), y)
    curve, y = curve.detach(), y.detach()
    assert curve[0] == 0 and curve[500] == pytest.approx(0.5) and curve[-1] == 1
    assert slope[500].item() == pytest.approx(1.3) and (slope > 0).all()
    assert curve[250] < y[250] and curve[750] > y[750], "darker shadows, brighter highlights"


def test_jpeg_adds_compression_artefacts_of_bounded_size():
    y, x = torch.meshgrid(torch.linspace(0, 1, 64), torch.linspace(0, 1, 96), indexing="ij")
    image = quantise(torch.stack([x, y, (x + y) / 2]) * 0.8 + 0.1)
    low, high = jpeg(image, 30), jpeg(image, 95)
    for out in (low, high):
        assert out.shape == image.shape and torch.equal(out * 255, (out * 255).round())
    error_low, error_high = (low - image).abs().mean(), (high - image).abs().mean()
    assert 0 < error_high < error_low < 4 / 255


def test_phone_camera_changes_the_ldr_but_not_the_target():
    linear = torch.rand(3, 48, 48, generator=_generator(1)).exp() ** 6
    plain = CameraModel(clip_sampling="log", clip_fraction=(0.01, 0.2))
    phone = CameraModel(
        clip_sampling="log", clip_fraction=(0.01, 0.2), response="s_curve", jpeg_quality=(70, 95)
    )
    ldr_plain, hdr_plain = plain(linear, _generator(5))
    ldr_phone, hdr_phone = phone(linear, _generator(5))
    assert torch.equal(hdr_plain, hdr_phone)  # the same exposure: the target is the scene's
    assert not torch.equal(ldr_plain, ldr_phone)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"clip_sampling": "normal"}, "clip_sampling"),
        ({"response": "log"}, "response"),
        ({"jpeg_quality": (0, 90)}, "jpeg_quality"),
        ({"s_curve_strength": (0.1, 0.8)}, "s_curve_strength"),
        # a range given as one value ("not enough values to unpack" before)
        ({"read_noise": [0.1]}, r"read_noise must be a range \[low, high\], got \[0.1\]"),
        ({"clip_fraction": 0.1}, r"clip_fraction must be a range \[low, high\], got 0.1"),
        ({"shot_noise": "ab"}, r"shot_noise must be a range \[low, high\], got 'ab'"),
        ({"read_noise": [True, True]}, r"read_noise must be a range"),
        ({"jpeg_quality": 80}, r"jpeg_quality must be null or \[low, high\]"),
        ({"jpeg_quality": ["a", "b"]}, r"jpeg_quality must be null or \[low, high\]"),
    ],
)
def test_camera_settings_are_checked(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CameraModel(**kwargs)


def test_the_sensor_saturates_at_white_before_any_response():
    """Radiance above white reads 1 (clipped), so that an S-curve response keeps saturated
    highlights white: without the clip the curve folds them back down (to black)."""
    bright = torch.full((10_000,), 5.0)
    assert torch.equal(sensor(bright, 4e-3, 4e-3, _generator()), torch.ones(10_000))
    scene = torch.linspace(0.01, 0.5, 256).reshape(1, 16, 16).repeat(3, 1, 1)
    scene[:, 4:6, 4:6] = 1000.0  # a sun, 1.6% of the pixels
    camera = CameraModel(clip_fraction=(0.02, 0.02), response="s_curve")
    ldr, target = camera(scene, _generator(1))
    sun = target[0] > 1.5  # well above white in the exposed scene
    assert sun.sum() == 4 and torch.equal(ldr[:, sun], torch.ones(3, 4))


def test_noise_levels_are_drawn_log_uniformly(monkeypatch):
    """Shot and read noise span their ranges evenly in log: half the captures below the
    geometric mean of the bounds (uniform draws would put 9% there for these bounds)."""
    import hdrunet_pl.camera as camera_file

    drawn: list[tuple[float, float]] = []

    def recording_sensor(exposed, shot, read, generator):
        drawn.append((shot, read))
        return exposed.clamp(0, 1)

    monkeypatch.setattr(camera_file, "sensor", recording_sensor)
    low, high = 1e-4, 1e-2
    camera = CameraModel(shot_noise=(low, high), read_noise=(low, high))
    generator = _generator(5)
    for _ in range(400):
        camera(torch.rand(3, 8, 8), generator)
    shots, reads = torch.tensor(drawn, dtype=torch.float64).T
    middle = math.sqrt(low * high)
    for values in (shots, reads):
        assert values.min() >= low and values.max() <= high
        assert (values < middle).double().mean().item() == pytest.approx(0.5, abs=0.08)
