"""Image grids for generative models: reconstructions and prior samples, as PNG and TensorBoard.

Each grid is one labelled figure: a title naming the run (the workdir's basename) and the
step, a label on every row (`data` above its `reconstruction`, or `samples`), and images
upscaled by nearest neighbour to at least `MIN_PIXELS` on a side, so 8x8 digits read.
Written by process 0 only, to `workdir/plots/{reconstructions,samples}_step{N}.png` (and
`*_latest.png`), and as TensorBoard images `images/{reconstructions,samples}` at step N in
`workdir/tensorboard/images/` (a run of its own next to the trainer's scalars in
`workdir/tensorboard/`; tensorboardX, no TensorFlow). Works for any model with
`decode_mean(z)` in [0, 1] and either `encode(x) -> (loc, ...)` and a `latent_size` property
(a Gaussian VAE: reconstructions from the posterior mean, samples from N(0, I)) or
`posterior_mode(x)` and `sample_prior(key, n)` (e.g. a discrete VAE, `ssl_gen.models.dvae`).
"""

from __future__ import annotations

import functools
import os

import jax
import numpy as np
from PIL import Image

from ssl_gen.evals.context import model_variables
from ssl_gen.models import protocols

MIN_PIXELS = 48  # the smallest side an image is drawn at (8x8 digits: 6x nearest neighbour)
COLS = 8  # images per row
_FONT_PT, _TITLE_PT, _DPI = 10, 11, 100
_GAP, _GROUP_GAP, _MARGIN = 2, 10, 8  # pixels: between images, between row groups, outside
_GAP_RGB = (150, 180, 220)  # the lines between images: a light blue


def upscale_factor(h: int, w: int, min_pixels: int = MIN_PIXELS) -> int:
    """The integer nearest-neighbour factor that brings an (h, w) image to >= min_pixels."""
    return max(1, -(-min_pixels // min(h, w)))


def grid(images: np.ndarray, cols: int = COLS, pad: int = _GAP, scale: int = 1,
         fill: float = 1.0) -> np.ndarray:
    """Tiles (N, H, W, C) images in [0, 1], upscaled `scale` times by nearest neighbour.

    Returns uint8 (rows * (H s + pad) + pad, cols * (W s + pad) + pad, C), s = scale: `pad`
    pixels of `fill` around and between the tiles (not scaled), row-major.
    """
    images = np.repeat(np.repeat(images, scale, axis=1), scale, axis=2)  # nearest neighbour
    n, h, w, c = images.shape
    rows = -(-n // cols)
    out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), fill, np.float32)
    for i in range(n):
        r, q = divmod(i, cols)
        top, left = pad + r * (h + pad), pad + q * (w + pad)
        out[top:top + h, left:left + w] = images[i]
    return (np.clip(out, 0, 1) * 255).round().astype(np.uint8)


@functools.lru_cache(maxsize=64)
def _text_px(text: str, points: float) -> float:
    """The width in pixels of `text` at `points` (Agg's own text metrics)."""
    from matplotlib.backends.backend_agg import RendererAgg
    from matplotlib.font_manager import FontProperties

    width, _, _ = RendererAgg(1, 1, _DPI).get_text_width_height_descent(
        text, FontProperties(size=points), ismath=False)
    return width


def figure(blocks: list[tuple[str, np.ndarray]], title: str, group: int = 1,
           cols: int = COLS) -> np.ndarray:
    """A titled figure of labelled image blocks, as an RGB uint8 (height, width, 3) array.

    Args:
      blocks: (label, (N, H, W, C) images in [0, 1]) pairs, drawn top to bottom; a block of
        more than `cols` images wraps onto several rows, its label centred beside them.
      title: drawn above the blocks.
      group: a wider gap after every `group` blocks (2: data / reconstruction pairs).
      cols: images per row.

    The images are placed pixel for pixel (upscaled by nearest neighbour to at least
    `MIN_PIXELS`, never resampled); the text is matplotlib's (Agg, no pyplot).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    h, w = blocks[0][1].shape[1:3]
    scale = upscale_factor(h, w)
    tiles = []
    for _, x in blocks:
        x = np.asarray(x, np.float32)
        tile = grid(x, cols=cols, scale=scale)
        tile = np.repeat(tile, 3, axis=-1) if tile.shape[-1] == 1 else tile  # grey -> RGB
        # The gaps in a colour no grey image has, so white strokes at an image's edge (and
        # grey pixel means) stay inside visible frames.
        inside = grid(np.ones_like(x[..., :1]), cols=cols, scale=scale, fill=0.0) > 0
        tiles.append(np.where(inside, tile, np.array(_GAP_RGB, np.uint8)))
    label_w = int(np.ceil(max(_text_px(label, _FONT_PT) for label, _ in blocks))) + 2 * _MARGIN
    title_h = int(2.2 * _TITLE_PT * _DPI / 72)
    gaps = [_GROUP_GAP if (i + 1) % group == 0 else 0 for i in range(len(tiles) - 1)] + [0]
    width = int(np.ceil(max(label_w + max(t.shape[1] for t in tiles),
                            _text_px(title, _TITLE_PT) + _MARGIN) + _MARGIN))
    height = title_h + sum(t.shape[0] for t in tiles) + sum(gaps) + _MARGIN

    # The text first, on a white canvas; the images are pasted into its pixels afterwards.
    fig = Figure(figsize=(width / _DPI, height / _DPI), dpi=_DPI, facecolor="white")
    canvas = FigureCanvasAgg(fig)
    fig.text(0.5, 1 - 0.5 * title_h / height, title, ha="center", va="center",
             fontsize=_TITLE_PT)
    tops = np.cumsum([title_h] + [t.shape[0] + g for t, g in zip(tiles, gaps, strict=True)])
    for (label, _), tile, top in zip(blocks, tiles, tops, strict=False):
        fig.text((label_w - _MARGIN) / width, 1 - (top + tile.shape[0] / 2) / height, label,
                 ha="right", va="center", fontsize=_FONT_PT)
    canvas.draw()
    out = np.asarray(canvas.buffer_rgba())[..., :3].copy()
    assert out.shape[:2] == (height, width), (out.shape, height, width)
    for tile, top in zip(tiles, tops, strict=False):
        out[top:top + tile.shape[0], label_w:label_w + tile.shape[1]] = tile
    return out


def save_png(array: np.ndarray, path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    img = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
    img.save(path)


def write_tensorboard(logdir: str, step: int, figures: dict[str, np.ndarray]) -> None:
    """Writes (H, W, 3) uint8 figures as TensorBoard images `images/<name>` at `step`.

    One short-lived event file per call in `logdir` (closed before returning, so a reader
    never sees a half-written file); `tensorboard --logdir WORKDIR` shows them in its
    Images tab, with a step slider.
    """
    from tensorboardX import SummaryWriter

    writer = SummaryWriter(logdir)
    try:
        for name, array in figures.items():
            writer.add_image(f"images/{name}", array, step, dataformats="HWC")
    finally:
        writer.close()


@functools.partial(jax.jit, static_argnames=("model",))
def _recon_and_samples(params, x, key, *, model):
    """Decoded posterior codes of x, and decoded prior samples: both (N, H, W, C) in [0, 1]."""
    if isinstance(model, protocols.PosteriorMode):  # a latent without a mean in its space
        code = model.apply(params, x, method=model.posterior_mode)
    else:
        code, _ = model.apply(params, x, method=model.encode)  # the posterior mean
    if isinstance(model, protocols.PriorSampler):
        z = model.apply(params, key, x.shape[0], method=model.sample_prior)
    else:
        z = jax.random.normal(key, (x.shape[0], model.latent_size))
    return (model.apply(params, code, method=model.decode_mean),
            model.apply(params, z, method=model.decode_mean))


def run_name(workdir: str) -> str:
    """The name a figure's title gives the run: the workdir's basename (`runs/vae/` -> vae)."""
    return os.path.basename(os.path.normpath(str(workdir))) or str(workdir)


def evaluate(state, ctx, *, num: int = 32, levels: int | None = None,
             tensorboard: bool = True) -> dict[str, float]:
    """Writes a reconstruction figure (data rows above their reconstructions) and a sample one.

    Args:
      state: the train state (its model variables are evaluated). ctx: the trainer's
        `EvalContext`.
      num: images per figure (a multiple of 8 reads best).
      levels: the data's grey levels, to scale inputs to [0, 1] (default: the model's).
      tensorboard: also write the figures as TensorBoard images (`images/<name>`).

    Returns:
      {} (no metrics).
    """
    params = model_variables(state)
    model = ctx.model
    if not isinstance(model, protocols.ImageModel):
        raise TypeError(f"images: {type(model).__name__} is not an ImageModel (encode, "
                        "decode_mean, ...: ssl_gen.models.protocols); for samples of a "
                        "generator use the two_sample eval")
    # The first `num` eval examples, read on every host from its own copy of the eval split
    # (identical everywhere), so the jitted call below sees the same inputs on every process.
    x = np.stack([ctx.eval_source[i]["image"] for i in range(min(num, len(ctx.eval_source)))])
    recon, samples = _recon_and_samples(params, x, ctx.rng, model=model)
    # The outputs are replicated: each host reads its local copy (multi-host safe).
    recon, samples = (np.asarray(a.addressable_data(0)) for a in (recon, samples))
    if not ctx.is_main:
        return {}
    levels = levels or (model.num_levels if model.likelihood == "categorical" else 2)
    inputs = x.astype(np.float32) / (levels - 1)
    pairs = [block for i in range(0, len(x), COLS)
             for block in (("data", inputs[i:i + COLS]), ("reconstruction", recon[i:i + COLS]))]
    run = run_name(ctx.workdir)
    figures = {
        "reconstructions": figure(pairs, f"reconstructions: {run}, step {ctx.step}", group=2),
        "samples": figure([("samples", samples)], f"prior samples: {run}, step {ctx.step}"),
    }
    plots = os.path.join(ctx.workdir, "plots")
    for name, png in figures.items():
        save_png(png, os.path.join(plots, f"{name}_step{ctx.step}.png"))
        save_png(png, os.path.join(plots, f"{name}_latest.png"))
    if tensorboard:
        write_tensorboard(os.path.join(ctx.workdir, "tensorboard", "images"), ctx.step, figures)
    return {}
