"""The per-pixel baseline against a direct computation; the image grids' layout, their
labelled figures and what `images.evaluate` writes (PNG and TensorBoard)."""

import glob
import io
import os
import struct

import jax
import numpy as np
from PIL import Image

from ssl_gen.evals import EvalContext, images, pixel_baseline


def test_pixel_baseline_matches_hand_computation():
    train = np.array([[0, 1], [0, 1], [1, 1], [0, 0]])  # 4 images of 2 pixels, 2 levels
    test = np.array([[1, 0]])
    # add-one counts: pixel 0 levels (0,1) -> (3+1, 1+1); pixel 1 -> (1+1, 3+1).
    want = -(np.log(2 / 6) + np.log(2 / 6))
    np.testing.assert_allclose(pixel_baseline.fit_and_score(train, test, 2), want)
    # A level never seen in training still has finite cost thanks to the pseudo-count.
    assert np.isfinite(pixel_baseline.fit_and_score(train, np.array([[2, 2]]), 3))


def test_grid_layout():
    imgs = np.zeros((10, 3, 2, 1), np.float32)
    imgs[9] = 1.0
    g = images.grid(imgs, cols=4, pad=1, scale=1)
    assert g.shape == (3 * 4 + 1, 4 * 3 + 1, 1) and g.dtype == np.uint8
    # image 9 sits at row 2, column 1: white pixels there, black in image 0's place.
    assert (g[1 + 2 * 4: 1 + 2 * 4 + 3, 1 + 1 * 3: 1 + 1 * 3 + 2] == 255).all()
    assert (g[1:4, 1:3] == 0).all()


def test_grid_upscales_by_nearest_neighbour_and_pads_unscaled():
    imgs = np.random.default_rng(0).uniform(size=(3, 2, 2, 1)).astype(np.float32)
    g = images.grid(imgs, cols=3, pad=2, scale=4)
    assert g.shape == (2 + 8 + 2, 3 * (8 + 2) + 2, 1)
    want = (np.kron(imgs[1], np.ones((4, 4, 1))) * 255).round().astype(np.uint8)
    np.testing.assert_array_equal(g[2:10, 12:20], want)  # tile 1: each pixel a 4x4 block
    assert (g[:2] == 255).all() and (g[:, 10:12] == 255).all()  # the padding is not scaled
    assert images.upscale_factor(8, 8) * 8 >= images.MIN_PIXELS >= 32
    assert images.upscale_factor(28, 28) == 2 and images.upscale_factor(64, 64) == 1


def _find(haystack, needle):
    """(row, col) of every top-left corner where `needle` occurs in `haystack` (exactly)."""
    h, w = needle.shape[:2]
    rows, cols = np.nonzero(haystack[..., 0] == needle[0, 0, 0])
    return [(r, c) for r, c in zip(rows, cols, strict=True)
            if r + h <= haystack.shape[0] and c + w <= haystack.shape[1]
            and np.array_equal(haystack[r:r + h, c:c + w], needle)]


def test_figure_draws_each_image_pixel_for_pixel_beside_its_label():
    rng = np.random.default_rng(0)
    data, recon = (rng.uniform(size=(8, 8, 8, 1)).astype(np.float32) for _ in range(2))
    fig = images.figure([("data", data), ("reconstruction", recon)], "run, step 3", group=2)
    assert fig.dtype == np.uint8 and fig.shape[2] == 3
    s = images.upscale_factor(8, 8)
    tile = lambda x: np.repeat((np.kron(x, np.ones((s, s, 1))) * 255).round().astype(
        np.uint8), 3, axis=-1)
    (r0, c0), = _find(fig, tile(data[0]))  # found once, unresampled
    (r1, c1), = _find(fig, tile(recon[0]))
    assert c1 == c0 and r1 > r0 and fig.shape[1] >= 8 * 8 * s  # reconstructions below
    # Left of the images: the labels' column holds (dark) text; above them, the title.
    assert fig[r0:r0 + 8 * s, :c0 - 2].min() < 128 and fig[:r0 - 2].min() < 128


def _events(logdir):
    """The (tag, step, PNG bytes) image summaries of every tensorboard event file in logdir."""
    from tensorboardX.proto import event_pb2

    out = []
    for path in sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*"))):
        data = open(path, "rb").read()
        i = 0
        while i < len(data):  # TFRecord: length (u64), its crc, the record, its crc
            (n,) = struct.unpack("<Q", data[i:i + 8])
            event = event_pb2.Event.FromString(data[i + 12:i + 12 + n])
            i += 12 + n + 4
            out += [(v.tag, event.step, v.image.encoded_image_string)
                    for v in event.summary.value if v.HasField("image")]
    return out


def test_evaluate_writes_titled_pngs_and_tensorboard_images(tmp_path):
    from ssl_gen.models import dvae

    model = dvae.Model(latent="categorical", num_latents=3, num_classes=4, hidden=(8,))
    x = np.random.default_rng(0).integers(0, 2, size=(16, 8, 8, 1)).astype(np.uint8)
    params = model.init({"params": jax.random.key(0)}, x[:2])
    workdir = tmp_path / "my_run"
    ctx = EvalContext(model=model, rng=jax.random.key(1), step=7, workdir=str(workdir),
                      eval_batches=None, train_source=None,
                      eval_source=[{"image": image} for image in x])
    assert images.evaluate({"params": params, "collections": {}}, ctx, num=16) == {}
    plots = workdir / "plots"
    for name in ("reconstructions", "samples"):
        png = np.asarray(Image.open(plots / f"{name}_step7.png"))
        assert png.ndim == 3 and png.shape[1] > 8 * images.MIN_PIXELS, png.shape
        assert (plots / f"{name}_latest.png").read_bytes() == (
            plots / f"{name}_step7.png").read_bytes()
    # The reconstruction figure holds 4 rows (data, reconstruction, twice), the samples' 2.
    recon = np.asarray(Image.open(plots / "reconstructions_step7.png"))
    samples = np.asarray(Image.open(plots / "samples_step7.png"))
    assert recon.shape[0] > 4 * images.MIN_PIXELS > samples.shape[0] > 2 * images.MIN_PIXELS
    assert images.run_name(str(workdir) + "/") == "my_run"
    events = _events(workdir / "tensorboard" / "images")
    assert [(tag, step) for tag, step, _ in events] == [
        ("images/reconstructions", 7), ("images/samples", 7)]
    for (_, _, encoded), png in zip(events, (recon, samples), strict=True):
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(encoded)))[..., :3], png)
