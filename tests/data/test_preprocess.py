"""Preprocessing ops: each against a hand-computed truth, and deterministic in (seed, epoch,
example) with new draws every epoch. Synthetic arrays only (fast)."""

import numpy as np
import pytest

from ssl_gen import data
from ssl_gen.data import preprocess as pp

B = 64


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).random((B, 12, 10, 3)).astype(np.float32)


def _ctx(epoch=0, seed=0, examples=None, train=True):
    examples = np.arange(B) if examples is None else examples
    return pp.Context.make(seed, epoch, examples, train=train)


def _run(spec, x, ctx, field="image"):
    return pp.apply(pp.parse([spec]), {field: x}, ctx)[field]


RANDOM_OPS = [
    "flip",
    {"name": "random_resized_crop", "size": 8},
    {"name": "color_jitter", "p": 1.0},
    {"name": "grayscale", "p": 0.5},
    {"name": "gaussian_blur", "kernel_size": 3, "p": 0.5},
]


@pytest.mark.parametrize("spec", RANDOM_OPS, ids=str)
def test_random_ops_are_functions_of_seed_epoch_example(images, spec):
    out = _run(spec, images, _ctx(epoch=3))
    np.testing.assert_array_equal(out, _run(spec, images, _ctx(epoch=3)))
    # Another batch order (and batch composition): each example gets the same output.
    order = np.random.default_rng(1).permutation(B)[:40]
    moved = _run(spec, images[order], _ctx(epoch=3, examples=order))
    np.testing.assert_array_equal(moved, out[order])
    # Another epoch or seed: new draws.
    assert not np.array_equal(out, _run(spec, images, _ctx(epoch=4)))
    assert not np.array_equal(out, _run(spec, images, _ctx(epoch=3, seed=1)))
    # A batch may straddle two epochs: per-example epochs equal the per-epoch batches.
    mixed = _run(spec, images, pp.Context.make(0, np.repeat([3, 4], B // 2), np.arange(B)))
    np.testing.assert_array_equal(mixed[:B // 2], out[:B // 2])
    np.testing.assert_array_equal(mixed[B // 2:], _run(spec, images, _ctx(epoch=4))[B // 2:])


def test_two_ops_of_one_kind_draw_independently(images):
    once = pp.apply(pp.parse(["flip"]), {"image": images}, _ctx())["image"]
    twice = pp.apply(pp.parse(["flip", "flip"]), {"image": images}, _ctx())["image"]
    assert not np.array_equal(twice, images) and not np.array_equal(twice, once)


def test_flip_reverses_exactly_the_chosen_examples(images):
    out = _run({"name": "flip", "p": 0.5}, images, _ctx())
    flipped = np.array([np.array_equal(o, x[:, ::-1]) for o, x in zip(out, images, strict=True)])
    same = np.array([np.array_equal(o, x) for o, x in zip(out, images, strict=True)])
    assert np.all(flipped ^ same)  # each example exactly one of the two
    assert 16 < flipped.sum() < 48  # Binomial(64, 1/2): within 4 sd
    np.testing.assert_array_equal(_run({"name": "flip", "p": 1.0}, images, _ctx()),
                                  images[:, :, ::-1])
    np.testing.assert_array_equal(_run("flip", images, _ctx(train=False)), images)  # eval: off


def test_crop_boxes_in_bounds_with_the_right_scale_and_ratio():
    u = np.random.default_rng(0).random((4000, 40))
    height, width, scale, ratio = 200, 300, (0.2, 0.6), (0.5, 2.0)
    boxes = pp.crop_boxes(u, height, width, scale, ratio)
    top, left, h, w = boxes.T
    assert np.all((top >= 0) & (left >= 0) & (h >= 1) & (w >= 1))
    assert np.all((top + h <= height) & (left + w <= width))
    # Rounding h and w to ints moves the area by at most (h + w) / 2 + 1/4 pixels.
    area = h * w
    slack = (h + w) / 2 + 0.25
    assert np.all(area >= scale[0] * height * width - slack)
    assert np.all(area <= scale[1] * height * width + slack)
    assert np.all(w / h >= ratio[0] * (1 - 1.5 / h)) and np.all(w / h <= ratio[1] * (1 + 1.5 / w))
    # The area fraction covers its range (uniform): both ends are reached.
    frac = area / (height * width)
    assert frac.min() < 0.22 and frac.max() > 0.58
    # Placement is uniform over the free space: mean offset ~ half of it.
    np.testing.assert_allclose(np.mean(top / (height - h + 1)), 0.5, atol=0.03)


def test_crop_boxes_fall_back_to_a_centre_crop():
    # No try fits (scale 1 with ratio 2 in a square): the centred crop at the nearest ratio.
    boxes = pp.crop_boxes(np.full((3, 40), 0.5), 10, 10, (1.0, 1.0), (2.0, 2.0))
    np.testing.assert_array_equal(boxes, [[2, 0, 5, 10]] * 3)  # top (10 - 5) // 2


def test_resize_of_the_whole_box_at_its_own_size_is_a_copy(images):
    boxes = np.tile([0, 0, 12, 10], (B, 1))
    np.testing.assert_array_equal(pp.resize_boxes(images, boxes, (12, 10)), images)
    out = _run({"name": "random_resized_crop", "size": (12, 10)}, images, _ctx(train=False))
    np.testing.assert_array_equal(out, images)  # eval: the whole image


def test_bilinear_resize_of_an_affine_image_is_affine():
    # I(y, x) = 2 y - 3 x + 5: bilinear interpolation reproduces it at the (clamped) centres.
    yy, xx = np.mgrid[0:20, 0:16].astype(np.float64)
    img = np.repeat((2 * yy - 3 * xx + 5)[None, :, :, None], 2, 0).astype(np.float32)
    boxes = np.array([[3, 2, 9, 11], [0, 0, 4, 3]])
    out = pp.resize_boxes(img, boxes, (7, 5))
    for k, (top, left, h, w) in enumerate(boxes):
        y = np.clip(top + (np.arange(7) + 0.5) * h / 7 - 0.5, 0, 19)
        x = np.clip(left + (np.arange(5) + 0.5) * w / 5 - 0.5, 0, 15)
        np.testing.assert_allclose(out[k, :, :, 0], 2 * y[:, None] - 3 * x[None, :] + 5,
                                   rtol=1e-5, atol=1e-4)


def test_random_resized_crop_output(images):
    out = _run({"name": "random_resized_crop", "size": 8, "scale": (0.5, 1.0)}, images, _ctx())
    assert out.shape == (B, 8, 8, 3) and out.dtype == np.float32
    assert out.min() >= images.min() and out.max() <= images.max()  # convex combinations


def test_normalize_gives_the_configured_mean_and_std(images):
    x = (images * 255).astype(np.uint8)
    mean = (x / 255.0).mean(axis=(0, 1, 2))
    std = (x / 255.0).std(axis=(0, 1, 2))
    spec = {"name": "normalize", "scale": 1 / 255, "mean": tuple(mean), "std": tuple(std)}
    out = _run(spec, x, _ctx())
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.mean(axis=(0, 1, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=(0, 1, 2)), 1, atol=1e-5)
    np.testing.assert_allclose(_run({"name": "normalize", "mean": 0.5, "std": 0.25}, images,
                                    _ctx()), (images - 0.5) / 0.25, rtol=1e-6)
    np.testing.assert_array_equal(_run(spec, x, _ctx(train=False)), out)  # same at eval


def test_brightness_scales_each_image_by_one_factor_in_range(images):
    x = images * 0.5  # in [0, 0.5]: a factor <= 1.4 never clips
    out = _run({"name": "color_jitter", "brightness": 0.4, "contrast": 0, "saturation": 0,
                "hue": 0, "p": 1.0}, x, _ctx())
    ratio = out / np.maximum(x, 1e-6)
    factors = ratio.reshape(B, -1)[np.arange(B), np.argmax(x.reshape(B, -1), 1)]
    np.testing.assert_allclose(out, x * factors[:, None, None, None], rtol=1e-5, atol=1e-6)
    assert np.all((factors >= 0.6) & (factors <= 1.4)) and np.std(factors) > 0.1


def test_saturation_and_hue_keep_the_luma(images):
    x = 0.25 + 0.5 * images  # away from 0 and 1: little clipping
    luma = x @ np.array([0.299, 0.587, 0.114], np.float32)
    for spec in ({"saturation": 0.4}, {"hue": 0.1}):
        kwargs = {"brightness": 0, "contrast": 0, "saturation": 0, "hue": 0, **spec}
        out = _run({"name": "color_jitter", "p": 1.0, **kwargs}, x, _ctx())
        assert not np.allclose(out, x)
        unclipped = np.all((out > 0) & (out < 1), axis=-1)
        np.testing.assert_allclose((out @ np.array([0.299, 0.587, 0.114]))[unclipped],
                                   luma[unclipped], atol=2e-3)  # YIQ's Y row rounds to 1e-3


def test_contrast_keeps_the_mean_grey(images):
    x = 0.3 + 0.4 * images
    out = _run({"name": "color_jitter", "brightness": 0, "contrast": 0.4, "saturation": 0,
                "hue": 0, "p": 1.0}, x, _ctx())
    luma = np.array([0.299, 0.587, 0.114])
    np.testing.assert_allclose((out @ luma).mean(axis=(1, 2)), (x @ luma).mean(axis=(1, 2)),
                               atol=1e-5)


def test_jitter_probability_and_eval_form(images):
    spec = {"name": "color_jitter", "p": 0.5}
    out = _run(spec, images, _ctx())
    changed = np.array([not np.array_equal(o, x) for o, x in zip(out, images, strict=True)])
    assert 16 < changed.sum() < 48
    np.testing.assert_array_equal(_run({**spec, "p": 0.0}, images, _ctx()), images)
    np.testing.assert_array_equal(_run(spec, images, _ctx(train=False)), images)


def test_grayscale_is_the_luma_on_every_channel(images):
    out = _run("grayscale", images, _ctx())
    luma = images @ np.array([0.299, 0.587, 0.114], np.float32)
    for c in range(3):
        np.testing.assert_allclose(out[..., c], luma, rtol=1e-6)
    np.testing.assert_array_equal(_run("grayscale", images, _ctx(train=False)), out)
    np.testing.assert_array_equal(_run({"name": "grayscale", "p": 0.2}, images,
                                       _ctx(train=False)), images)


def _scipy_blur(image, sigma, size):
    """The reference: a 2-D convolution with the outer product of the normalized 1-D Gaussian,
    zero padding, per channel (scipy)."""
    from scipy.signal import convolve2d

    t = np.arange(size) - size // 2
    g = np.exp(-t ** 2 / (2 * sigma ** 2))
    k2 = np.outer(g, g) / g.sum() ** 2
    return np.stack([convolve2d(image[..., c], k2, mode="same") for c in
                     range(image.shape[-1])], -1)


def test_gaussian_blur_is_the_direct_convolution(images):
    spec = {"name": "gaussian_blur", "kernel_size": 5, "sigma": (0.1, 2.0), "p": 0.5}
    ctx = _ctx(epoch=1)
    out = _run(spec, images, ctx)
    u = ctx.uniform(2)  # the op's uniforms (it is op 0: salt 0): sigma, then the coin
    sigma = 0.1 + 1.9 * u[:, 0]
    on = u[:, 1] < 0.5
    assert 16 < on.sum() < 48  # Binomial(64, 1/2): within 4 sd
    for b in range(B):
        want = _scipy_blur(images[b].astype(np.float64), sigma[b], 5) if on[b] else images[b]
        np.testing.assert_allclose(out[b], want, rtol=0, atol=2e-6)
    assert np.abs(out[on] - images[on]).max() > 0.05  # the blur did something
    assert 0.1 <= sigma.min() and sigma.max() <= 2.0 and sigma.max() - sigma.min() > 1.5
    np.testing.assert_array_equal(_run(spec, images, _ctx(train=False)), images)  # eval: off


def test_gaussian_blur_default_kernel_is_ten_percent_of_the_side():
    x = np.random.default_rng(2).random((4, 40, 40, 1)).astype(np.float32)
    ctx = pp.Context.make(0, 0, np.arange(4))
    out = _run({"name": "gaussian_blur", "p": 1.0}, x, ctx)
    sigma = 0.1 + 1.9 * ctx.uniform(2)[:, 0]
    for b in range(4):  # 40 // 10 = 4: SimCLR's radius 2, kernel 5
        np.testing.assert_allclose(out[b], _scipy_blur(x[b].astype(np.float64), sigma[b], 5),
                                   atol=2e-6)
    small = np.random.default_rng(2).random((4, 12, 12, 1)).astype(np.float32)
    np.testing.assert_array_equal(_run({"name": "gaussian_blur", "p": 1.0}, small, ctx), small)


def test_gaussian_blur_per_view_probabilities(images):
    blur = {"name": "gaussian_blur", "kernel_size": 3, "sigma": (1.0, 2.0), "p": (1.0, 0.0)}
    out = pp.apply(pp.parse([{"name": "views", "ops": [blur], "num": 2}]), {"image": images},
                   _ctx())["views"]
    np.testing.assert_array_equal(out[:, 1], images)  # view 1: p = 0, never blurred
    changed = np.abs(out[:, 0] - images).reshape(B, -1).max(1)
    assert np.all(changed > 1e-3)  # view 0: p = 1, every example blurred
    with pytest.raises(ValueError, match=r"p=\(1.0, 0.0\) must have one entry per view"):
        pp.parse([{"name": "views", "ops": [blur], "num": 3}])


def test_two_views_are_independent_draws_of_the_same_ops(images):
    sub = ["flip", {"name": "random_resized_crop", "size": 8}]
    ops = pp.parse([{"name": "views", "ops": sub, "num": 2}])
    ctx = _ctx(epoch=2)
    out = pp.apply(ops, {"image": images}, ctx)
    assert out["views"].shape == (B, 2, 8, 8, 3)
    np.testing.assert_array_equal(out["image"], images)  # the source field is kept
    assert not np.array_equal(out["views"][:, 0], out["views"][:, 1])
    for v in range(2):
        one = pp.apply(pp.parse(sub), {"image": images}, ctx.view(v)._replace(salt=0))
        np.testing.assert_array_equal(out["views"][:, v], one["image"])


def test_binarize_dynamic_is_bernoulli_bits_of_seed_epoch_id():
    grey = np.random.default_rng(0).integers(0, 17, (B, 8, 8, 1)).astype(np.uint8)
    ids = 1000 + 7 * np.arange(B)
    out = pp.apply(pp.parse([{"name": "binarize", "mode": "dynamic"}]), {"image": grey},
                   pp.Context.make(3, 5, ids))["image"]
    np.testing.assert_array_equal(out, data.bernoulli_bits(grey, ids, seed=3, epoch=5))
    # Fixed modes at evaluation; the data as stored by default for "dynamic".
    ev = pp.Context.make(0, data.FIXED_EPOCH, ids, train=False)
    dyn = pp.parse([{"name": "binarize", "mode": "dynamic"}])
    np.testing.assert_array_equal(pp.apply(dyn, {"image": grey}, ev)["image"], grey)
    thr = pp.parse([{"name": "binarize", "mode": "dynamic", "eval": "threshold"}])
    np.testing.assert_array_equal(pp.apply(thr, {"image": grey}, ev)["image"], grey >= 8)


@pytest.mark.parametrize("spec, message", [
    (["flp"], "unknown op 'flp'; did you mean 'flip'?"),
    ([{"name": "flip", "prob": 0.5}], "flip has no argument 'prob'"),
    ([{"name": "random_resized_crop"}], "random_resized_crop needs size"),
    ([{"name": "random_resized_crop", "size": 8, "scale": (0.5, 0.1)}], "scale=(0.5, 0.1)"),
    ([{"name": "flip", "p": 2}], "flip's p=2 must be a probability"),
    ([{"name": "binarize", "mode": "dynamc"}], "binarize's mode='dynamc' must be None, "),
    ([{"name": "binarize", "mode": "dynamic", "grey_max": 0}], "grey_max=0 must be an int"),
    ([{"name": "normalize", "std": 0}], "normalize's std=0 must be non-zero"),
    ([{"name": "gaussian_blur", "kernel_size": 4}], "kernel_size=4 must be None"),
    ([{"name": "gaussian_blur", "sigma": (2.0, 0.1)}], "sigma=(2.0, 0.1) must be (low, high)"),
    ([{"name": "gaussian_blur", "p": (0.5, 1.5)}], "p=(0.5, 1.5) must be a probability"),
    ([{"name": "views", "ops": ["flop"]}], "preprocess[0].views.ops[0]: unknown op 'flop'"),
    ([42], "preprocess[0]=42 must be an op name or a dict"),
    ("flip", "preprocess='flip' must be a list"),
])
def test_bad_specs_are_one_line_errors(spec, message):
    with pytest.raises(ValueError) as e:
        pp.parse(spec)
    assert message in str(e.value) and "\n" not in str(e.value)
