"""Named preprocessing ops: pure, vectorized over a batch, deterministic in (seed, epoch, example).

`config.dataset.preprocess` lists ops by name, each a string or a dict of its arguments:

```python
preprocess = (
    {"name": "normalize", "scale": 1 / 255},          # uint8 -> float32 in [0, 1]
    {"name": "random_resized_crop", "size": 32, "scale": (0.2, 1.0)},
    "flip",
    {"name": "color_jitter", "brightness": 0.4, "contrast": 0.4, "saturation": 0.4},
)
ops = parse(preprocess)                     # ValueError (one line) on a bad name or argument
batch = apply(ops, batch, Context.make(seed, epochs, examples, train=True))
```

Every op maps a batch dict (field -> array with a leading batch axis) to a new dict and
never mutates its input. Its random numbers are a pure function of (seed, epoch, example,
the op's position in the list, the view): each example's key is SplitMix64-hashed from
(seed, epoch, example), and an op's uniforms hash that key with a counter. So a batch is the
same whatever host, grain worker, batch or position in the batch an example lands in, a
resumed run sees the same augmentations, and each epoch sees new ones. The example is the
`id` field when the source has one, else its index in the source.

At evaluation (`Context.train == False`, a fixed epoch) every op takes its deterministic form:
random augmentations are skipped (`flip`, `color_jitter`, `grayscale` with p < 1),
`random_resized_crop` resizes the whole image (or, with `eval_crop`, its central square),
dynamic binarization becomes its `eval` mode.

Examples of different shapes (tfds' ImageNet: each image its own size) arrive as lists
(`pipeline.gather`); `apply` runs the ops one example at a time until every field has one
shape, so a `random_resized_crop` first makes such a dataset batchable, with the same draws
as a whole-batch call.

Ops (images are (batch, height, width, channels)):

- `normalize(mean=0, std=1, scale=1)`: float32 `(x * scale - mean) / std`, per channel or not.
- `binarize(mode, grey_max=16, eval=...)`: "threshold" (grey >= grey_max / 2), "bernoulli"
  (one fixed Bernoulli(grey / grey_max) sample), "dynamic" (a new sample every epoch), or
  None (training reads the data as stored). Grey levels come from the `grey` field when
  there is one (digits_binarized), else from the field itself. `eval`: what evaluations
  read (None: the data as stored; default: `mode` when it is fixed, else None).
- `random_resized_crop(size, scale=(0.08, 1), ratio=(3/4, 4/3), eval_crop=None)`: the
  Inception crop (Szegedy et al. 2015; torchvision's sampler: 10 tries, then a centre crop),
  bilinear resize. Evaluation resizes the whole image, or with `eval_crop=f` the central
  square of side f x the shorter side (0.875: the usual resize-256-crop-224).
- `flip(p=0.5)`: left-right mirror with probability p.
- `color_jitter(brightness, contrast, saturation, hue, p=0.8, max_value=1)`: SimCLR's jitter
  (Chen et al. 2020) in a fixed order (brightness, contrast, saturation, hue; SimCLR draws
  the order at random), each factor ~ U[1 - s, 1 + s], hue a rotation of the YIQ chroma
  plane by U[-h, h] turns; clipped to [0, max_value] after each step.
- `grayscale(p=1)`: ITU-R 601 luma, replicated over the channels.
- `gaussian_blur(kernel_size=None, sigma=(0.1, 2.0), p=0.5)`: SimCLR's blur (Chen et al.
  2020, Appendix A; its code's `gaussian_blur`): sigma ~ U[sigma], a separable normalized
  Gaussian kernel exp(-t^2 / (2 sigma^2)), t = -r..r, convolved with zero ('SAME')
  padding, per channel. `kernel_size` None is SimCLR's rule, about 10 % of the image
  side: r = (height // 10) // 2, kernel 2r + 1 (1, no blur, below 20 pixels: give an odd
  size such as 3 for 8x8 digits). `p` a probability, or one per view inside `views`
  (BYOL's asymmetric 1.0 / 0.1, Grill et al. 2020, Table 6).
- `views(ops, num=2, out="views")`: `ops` applied `num` times with independent randomness;
  `out` holds the views stacked on axis 1: (batch, num, ...). The source field is kept.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

_MASK64 = (1 << 64) - 1
_GOLDEN_INT = 0x9E3779B97F4A7C15
_GOLDEN = np.uint64(_GOLDEN_INT)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_KEY_TAG = 0x62696E6172697A65  # separates example keys from other streams
_OP_TAG = 0x6F70732D73616C74
_GOLDEN32 = np.uint32(0x9E3779B9)
_MIX32_1 = np.uint32(0x7FEB352D)
_MIX32_2 = np.uint32(0x846CA68B)
# The epoch of the deterministic (evaluation) forms: training (epochs 0, 1, ...) never reaches
# it, so a fixed Bernoulli sample differs from every epoch's dynamic one even at one seed.
FIXED_EPOCH = (1 << 32) - 1


def _mix64_int(x: int) -> int:
    """SplitMix64's finalizer on a Python int (mod 2**64)."""
    x &= _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def _mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finalizer on a uint64 array (wrapping arithmetic; returns a new array)."""
    x = x ^ (x >> np.uint64(30))
    x *= _MIX1
    x ^= x >> np.uint64(27)
    x *= _MIX2
    x ^= x >> np.uint64(31)
    return x


def _mix32_(x: np.ndarray) -> None:
    """The `lowbias32` integer hash (a bijection of uint32), in place."""
    x ^= x >> np.uint32(16)
    x *= _MIX32_1
    x ^= x >> np.uint32(15)
    x *= _MIX32_2
    x ^= x >> np.uint32(16)


def example_keys(seed: int, epoch: int | np.ndarray, example: np.ndarray) -> np.ndarray:
    """Per-example uint64 keys: SplitMix64 of (seed, epoch, example), vectorized.

    `key = mix(example * golden ^ mix(mix(seed ^ tag) + epoch * golden))`, epoch a scalar or
    one per example (a batch may straddle two epochs).
    """
    example = np.asarray(example).astype(np.uint64).reshape(-1)
    base = _mix64_int(int(seed) ^ _KEY_TAG)
    if np.ndim(epoch) == 0:
        epoch_key = np.uint64(_mix64_int(base + int(epoch) * _GOLDEN_INT))
    else:
        epoch_key = _mix64(np.asarray(epoch).astype(np.uint64) * _GOLDEN + np.uint64(base))
    keys = example * _GOLDEN
    keys ^= epoch_key
    return _mix64(keys)


def _bits_from_keys(grey: np.ndarray, keys: np.ndarray, grey_max: int) -> np.ndarray:
    batch = grey.shape[0]
    counters = np.arange(1, grey[0].size + 1, dtype=np.uint32) * _GOLDEN32
    h = keys.astype(np.uint32)[:, None] + counters[None, :]
    _mix32_(h)
    h >>= np.uint32(8)
    levels = grey.reshape(batch, -1)
    if (1 << 24) % grey_max == 0:
        thresholds = levels.astype(np.uint32)
        thresholds *= np.uint32((1 << 24) // grey_max)
    else:
        lut = (np.arange(grey_max + 1, dtype=np.uint64) << np.uint64(24)) // np.uint64(grey_max)
        if np.iinfo(levels.dtype).max > grey_max:  # else no level can exceed grey_max
            levels = np.minimum(levels, grey_max)
        thresholds = lut.astype(np.uint32)[levels]
    return (h < thresholds).view(np.uint8).reshape(grey.shape)


def bernoulli_bits(grey: np.ndarray, ids: np.ndarray, *, seed: int, epoch: int | np.ndarray,
                   grey_max: int = 16) -> np.ndarray:
    """Bits ~ Bernoulli(grey / grey_max), a pure function of (seed, epoch, id, element).

    Element `j` (flattened) of an example with key `example_keys(seed, epoch, id)` gets the
    24-bit uniform `lowbias32(key + (j + 1) * golden) >> 8` and is 1 when that is below
    `grey * 2**24 / grey_max`: the probability is exactly grey / grey_max when grey_max
    divides 2**24 (16 does); otherwise (255 for uint8 images) it is
    floor(grey * 2**24 / grey_max) / 2**24, within 2**-24 of it, and still exactly 0 at grey 0
    and 1 at grey_max. Vectorized: ~10 integer ops per element.

    Args:
      grey: integer array (batch, ...) with values in 0..grey_max.
      ids: int array (batch,): the examples' ids.
      seed: the pipeline seed (>= 0).
      epoch: the epoch (>= 0), one for the batch or one per example.
      grey_max: the grey level meaning probability 1.

    Returns:
      uint8 array shaped like `grey`, values in {0, 1}.
    """
    return _bits_from_keys(grey, example_keys(seed, epoch, ids), grey_max)


class Context(NamedTuple):
    """Where a batch's randomness comes from.

    Attributes:
      seed: the pipeline seed.
      epoch: int64 (batch,): each example's epoch (`FIXED_EPOCH` at evaluation).
      example: int64 (batch,): each example's id (or index in the source).
      train: True in training, False for the deterministic evaluation forms.
      keys: uint64 (batch,): `example_keys(seed, epoch, example)`, re-hashed per view.
      salt: the op's position (set by `apply`), so two ops of one kind draw independently.
      view_index: which view of `views` this is (0 outside it): ops with per-view settings
        (gaussian_blur's p) read theirs.
    """

    seed: int
    epoch: np.ndarray
    example: np.ndarray
    train: bool
    keys: np.ndarray
    salt: int = 0
    view_index: int = 0

    @classmethod
    def make(cls, seed: int, epoch: int | np.ndarray, example: np.ndarray, *,
             train: bool = True) -> Context:
        example = np.asarray(example, dtype=np.int64).reshape(-1)
        epoch = np.broadcast_to(np.asarray(epoch, dtype=np.int64), example.shape)
        return cls(int(seed), epoch, example, train, example_keys(seed, epoch, example))

    def uniform(self, count: int) -> np.ndarray:
        """float64 (batch, count) uniforms in [0, 1), for this op, view and example."""
        k = _mix64(self.keys ^ np.uint64(_mix64_int(_OP_TAG + self.salt * _GOLDEN_INT)))
        u = k[:, None] + np.arange(1, count + 1, dtype=np.uint64)[None, :] * _GOLDEN
        return (_mix64(u) >> np.uint64(11)).astype(np.float64) * 2.0 ** -53

    def view(self, v: int) -> Context:
        """The context of view `v`: keys re-hashed, so views draw independently."""
        keys = _mix64(self.keys + np.uint64(_mix64_int(_OP_TAG ^ (v + 1) * _GOLDEN_INT)))
        return self._replace(keys=keys, view_index=v)


class Op(NamedTuple):
    """A parsed op: its name and its (checked) arguments. Picklable (grain workers)."""

    name: str
    kwargs: Mapping[str, Any]

    def __call__(self, batch: Mapping[str, np.ndarray], ctx: Context) -> dict[str, np.ndarray]:
        return _OPS[self.name](dict(batch), ctx, **self.kwargs)

    @property
    def in_eval(self) -> bool:
        """Whether the op changes anything at evaluation."""
        return _IN_EVAL[self.name](self.kwargs)


def _ragged(batch: Mapping[str, Any]) -> list[str]:
    return [k for k, v in batch.items() if isinstance(v, list)]


def _one_at_a_time(op: Op, batch: Mapping[str, Any], ctx: Context) -> dict[str, Any]:
    """`op` on each example alone (a batch of one, the example's own context slice), the
    results stacked where they now share a shape. The same draws as on the whole batch:
    every op's randomness is per example (`Context.uniform`)."""
    n = len(ctx.example)
    outs = []
    for j in range(n):
        one = {k: (v[j][None] if isinstance(v, list) else v[j:j + 1]) for k, v in batch.items()}
        sl = slice(j, j + 1)
        outs.append(op(one, ctx._replace(epoch=ctx.epoch[sl], example=ctx.example[sl],
                                         keys=ctx.keys[sl])))
    merged = {}
    for k in outs[0]:
        values = [o[k][0] for o in outs]
        same = all(v.shape == values[0].shape for v in values)
        merged[k] = np.stack(values) if same else values
    return merged


def apply(ops: Sequence[Op], batch: Mapping[str, np.ndarray], ctx: Context
          ) -> dict[str, np.ndarray]:
    """Applies `ops` in order; op `i` draws with `ctx.salt = i`.

    A field that is a list (examples of different shapes, see `pipeline.gather`) makes the
    ops run one example at a time until every field has one shape (a `random_resized_crop`
    first, typically); fields still ragged after the last op are a one-line ValueError."""
    out = dict(batch)
    for i, op in enumerate(ops):
        if ctx.train or op.in_eval:
            octx = ctx._replace(salt=i)
            out = _one_at_a_time(op, out, octx) if _ragged(out) else op(out, octx)
    if ragged := _ragged(out):
        raise ValueError(f"field {ragged[0]!r} has examples of different shapes (e.g. "
                         f"{out[ragged[0]][0].shape} and {out[ragged[0]][-1].shape}) after the "
                         "preprocessing: start config.dataset.preprocess (and eval_preprocess) "
                         "with a random_resized_crop to one size")
    return out


# ---------------------------------------------------------------------------------- the ops


def normalize(batch, ctx, *, field="image", mean=0.0, std=1.0, scale=1.0):
    x = batch[field].astype(np.float32) * np.float32(scale)
    batch[field] = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return batch


BINARIZE_MODES = ("bernoulli", "threshold")


def binarize(batch, ctx, *, field="image", mode=None, grey_max=16, eval=None):  # noqa: A002
    mode = mode if ctx.train else eval
    if mode is None:
        return batch
    source = "grey" if "grey" in batch else field
    if source not in batch:
        raise ValueError(f"binarize needs a 'grey' or {field!r} field; the batch has "
                         f"{sorted(batch)}")
    grey = np.asarray(batch[source])
    if mode == "threshold":
        bits = (grey.astype(np.int64) * 2 >= grey_max).astype(np.uint8)
    elif mode == "bernoulli":
        bits = bernoulli_bits(grey, ctx.example, seed=ctx.seed, epoch=FIXED_EPOCH,
                              grey_max=grey_max)
    else:  # dynamic: the keys of (seed, epoch, example), the same bits as bernoulli_bits
        bits = _bits_from_keys(grey, ctx.keys, grey_max)
    batch[field] = bits
    return batch


def crop_boxes(u: np.ndarray, height: int, width: int, scale: tuple[float, float],
               ratio: tuple[float, float], tries: int = 10) -> np.ndarray:
    """Inception crop boxes (top, left, h, w) from uniforms u (batch, 4 * tries), vectorized.

    torchvision's `RandomResizedCrop.get_params`: try `tries` times an area fraction
    ~ U(scale) and a log-uniform aspect ratio w / h ~ ratio; the first box that fits is
    placed uniformly; if none does, the whole image cropped to the nearest allowed ratio,
    centred.

    Returns:
      int64 (batch, 4).
    """
    u = u.reshape(len(u), tries, 4)
    area = height * width * (scale[0] + (scale[1] - scale[0]) * u[..., 0])
    log_r = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u[..., 1]
    aspect = np.exp(log_r)
    w = np.round(np.sqrt(area * aspect)).astype(np.int64)
    h = np.round(np.sqrt(area / aspect)).astype(np.int64)
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = np.argmax(ok, axis=1)
    rows = np.arange(len(u))
    h, w, uu, found = h[rows, first], w[rows, first], u[rows, first], ok[rows, first]
    top = np.floor(uu[:, 2] * (height - h + 1)).astype(np.int64)
    left = np.floor(uu[:, 3] * (width - w + 1)).astype(np.int64)
    in_ratio = width / height
    if in_ratio < ratio[0]:
        fw, fh = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        fh, fw = height, int(round(height * ratio[1]))
    else:
        fw, fh = width, height
    boxes = np.stack([top, left, h, w], axis=1)
    fallback = np.array([(height - fh) // 2, (width - fw) // 2, fh, fw], np.int64)
    return np.where(found[:, None], boxes, fallback[None, :])


def resize_boxes(x: np.ndarray, boxes: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of each example's box (top, left, h, w) of x (B, H, W, C) to `size`.

    Output pixel (r, s) samples the box at y = top + (r + 0.5) h / S - 0.5 (half-pixel
    centres, clamped to the image), x likewise; no antialiasing. A box of exactly the
    output size is copied exactly. Returns float32 (B, S_h, S_w, C).
    """
    height, width = x.shape[1:3]

    def axis(start, length, n, limit):  # (B, n) indices below/above and the weight
        pos = start[:, None] + (np.arange(n)[None, :] + 0.5) * (length[:, None] / n) - 0.5
        pos = np.clip(pos, 0, limit - 1)
        lo = np.floor(pos).astype(np.int64)
        return lo, np.minimum(lo + 1, limit - 1), (pos - lo).astype(np.float32)

    y0, y1, wy = axis(boxes[:, 0], boxes[:, 2], size[0], height)
    x0, x1, wx = axis(boxes[:, 1], boxes[:, 3], size[1], width)
    x = x.astype(np.float32, copy=False)
    b = np.arange(len(x))[:, None]
    rows = x[b, y0] * (1 - wy)[..., None, None] + x[b, y1] * wy[..., None, None]  # (B, Sh, W, C)
    cols = np.ascontiguousarray(rows.transpose(0, 2, 1, 3))  # (B, W, Sh, C): rows of columns
    out = cols[b, x0] * (1 - wx)[..., None, None] + cols[b, x1] * wx[..., None, None]
    return out.transpose(0, 2, 1, 3)  # (B, Sh, Sw, C)


def random_resized_crop(batch, ctx, *, size, field="image", scale=(0.08, 1.0),
                        ratio=(3 / 4, 4 / 3), eval_crop=None):
    x = batch[field]
    height, width = x.shape[1:3]
    if ctx.train:
        boxes = crop_boxes(ctx.uniform(40), height, width, scale, ratio)
    elif eval_crop is not None:  # the central square of eval_crop x the shorter side
        side = max(1, int(round(eval_crop * min(height, width))))
        box = [(height - side) // 2, (width - side) // 2, side, side]
        boxes = np.broadcast_to(np.array(box, np.int64), (len(x), 4))
    else:  # the whole image
        boxes = np.broadcast_to(np.array([0, 0, height, width], np.int64), (len(x), 4))
    batch[field] = resize_boxes(x, boxes, _pair(size))
    return batch


def flip(batch, ctx, *, field="image", p=0.5):
    x = batch[field]
    which = ctx.uniform(1)[:, 0] < p
    out = x.copy()
    out[which] = x[which, :, ::-1]  # (B, H, W, C): W reversed
    batch[field] = out
    return batch


_LUMA = np.array([0.299, 0.587, 0.114], np.float32)
# RGB -> YIQ (rows: Y, I, Q), FCC NTSC; hue rotates the (I, Q) plane.
_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def _gray(x: np.ndarray) -> np.ndarray:
    if x.shape[-1] != 3:  # one channel (digits): already grey
        return x
    return (x @ _LUMA)[..., None]  # (B, H, W, 1)


def color_jitter(batch, ctx, *, field="image", brightness=0.4, contrast=0.4, saturation=0.4,
                 hue=0.1, p=0.8, max_value=1.0):
    x = batch[field].astype(np.float32)
    u = ctx.uniform(5)
    on = (u[:, 4] < p)[:, None, None, None]
    f = lambda s, col: (1 + s * (2 * u[:, col] - 1)).astype(np.float32)[:, None, None, None]
    y = x
    if brightness:
        y = np.clip(y * f(brightness, 0), 0, max_value)
    if contrast:
        m = _gray(y).mean(axis=(1, 2, 3), keepdims=True)
        y = np.clip((y - m) * f(contrast, 1) + m, 0, max_value)
    if saturation:
        g = _gray(y)
        y = np.clip((y - g) * f(saturation, 2) + g, 0, max_value)
    if hue and x.shape[-1] == 3:  # one channel: no chroma to rotate
        theta = 2 * np.pi * hue * (2 * u[:, 3] - 1)
        c, s = np.cos(theta), np.sin(theta)
        rot = np.zeros((len(x), 3, 3))
        rot[:, 0, 0], rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = 1, c, -s, s, c
        m = np.linalg.inv(_YIQ) @ rot @ _YIQ  # (B, 3, 3): x_rgb -> rotated x_rgb (columns)
        flat = y.reshape(len(y), -1, 3) @ m.transpose(0, 2, 1).astype(np.float32)
        y = np.clip(flat.reshape(y.shape), 0, max_value)
    batch[field] = np.where(on, y, x)
    return batch


def grayscale(batch, ctx, *, field="image", p=1.0):
    x = batch[field].astype(np.float32)
    g = np.broadcast_to(_gray(x), x.shape)
    which = ctx.uniform(1)[:, 0] < p if ctx.train else np.full(len(x), p >= 1)
    batch[field] = np.where(which[:, None, None, None], g, x)
    return batch


def blur_kernels(sigma: np.ndarray, radius: int) -> np.ndarray:
    """Normalized 1-D Gaussian kernels exp(-t^2 / (2 sigma^2)), t = -radius..radius, one per
    sigma (B,): float32 (B, 2 radius + 1)."""
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-t[None, :] ** 2 / (2 * np.asarray(sigma, np.float64)[:, None] ** 2))
    return (k / k.sum(axis=1, keepdims=True)).astype(np.float32)


def blur(x: np.ndarray, kernels: np.ndarray) -> np.ndarray:
    """Each example of x (B, H, W, C) convolved with its separable kernel (B, K) along H
    then W, zero padding, output the input's size (TF's 'SAME'): float32 (B, H, W, C)."""
    x = x.astype(np.float32, copy=False)
    r = kernels.shape[1] // 2
    height, width = x.shape[1:3]
    k = kernels[:, :, None, None, None]  # (B, K, 1, 1, 1): broadcast over H, W, C
    xp = np.pad(x, ((0, 0), (r, r), (0, 0), (0, 0)))
    y = sum(k[:, t] * xp[:, t:t + height] for t in range(2 * r + 1))  # rows
    yp = np.pad(y, ((0, 0), (0, 0), (r, r), (0, 0)))
    return sum(k[:, t] * yp[:, :, t:t + width] for t in range(2 * r + 1))  # columns


def gaussian_blur(batch, ctx, *, field="image", kernel_size=None, sigma=(0.1, 2.0), p=0.5):
    x = batch[field].astype(np.float32)
    if isinstance(p, (tuple, list)):
        if ctx.view_index >= len(p):
            raise ValueError(f"gaussian_blur: p={p!r} has no entry for view {ctx.view_index}")
        p = p[ctx.view_index]
    radius = (x.shape[1] // 10) // 2 if kernel_size is None else kernel_size // 2
    u = ctx.uniform(2)
    on = u[:, 1] < p
    if radius == 0 or not on.any():
        batch[field] = x
        return batch
    s = sigma[0] + (sigma[1] - sigma[0]) * u[:, 0]
    y = blur(x[on], blur_kernels(s[on], radius))
    out = x.copy()
    out[on] = y
    batch[field] = out
    return batch


def views(batch, ctx, *, ops, field="image", num=2, out="views"):
    made = [apply(ops, batch, ctx.view(v))[field] for v in range(num)]
    batch[out] = np.stack(made, axis=1)  # (B, num, ...)
    return batch


def _pair(size) -> tuple[int, int]:
    return (size, size) if isinstance(size, (int, np.integer)) else tuple(size)


_OPS: dict[str, Callable[..., dict]] = {
    "normalize": normalize, "binarize": binarize, "random_resized_crop": random_resized_crop,
    "flip": flip, "color_jitter": color_jitter, "grayscale": grayscale,
    "gaussian_blur": gaussian_blur, "views": views}
_IN_EVAL: dict[str, Callable[[Mapping[str, Any]], bool]] = {
    "normalize": lambda kw: True,
    "binarize": lambda kw: kw.get("eval") is not None,
    "random_resized_crop": lambda kw: True,
    "flip": lambda kw: False,
    "color_jitter": lambda kw: False,
    "grayscale": lambda kw: kw.get("p", 1.0) >= 1,
    "gaussian_blur": lambda kw: False,
    "views": lambda kw: True,
}
OP_NAMES = tuple(_OPS)

# ------------------------------------------------------------------------------- parsing

_NUM = (int, float, np.integer, np.floating)


def _is_num(v) -> bool:
    return isinstance(v, _NUM) and not isinstance(v, bool)


def _is_prob(v) -> bool:
    return _is_num(v) and 0 <= v <= 1


def _is_range(v, low=0.0, high=math.inf) -> bool:
    return (isinstance(v, (tuple, list)) and len(v) == 2 and all(_is_num(a) for a in v)
            and low < v[0] <= v[1] <= high)


def _check(name: str, kw: dict, where: str) -> dict:
    """Normalizes and checks an op's arguments; raises ValueError(one line)."""
    bad = lambda key, rule: ValueError(f"{where}: {name}'s {key}={kw.get(key)!r} must be {rule}")
    if not isinstance(kw.get("field", "image"), str):
        raise bad("field", "a field name")
    if name == "binarize":
        mode = kw.get("mode")
        if mode not in (None, "dynamic", *BINARIZE_MODES):
            raise bad("mode", "None, 'dynamic', 'bernoulli' or 'threshold'")
        grey_max = kw.get("grey_max", 16)
        if not (isinstance(grey_max, (int, np.integer)) and not isinstance(grey_max, bool)
                and grey_max >= 1):
            raise bad("grey_max", "an int >= 1 (the grey level meaning probability 1: 16 for "
                                  "digits, 255 for mnist)")
        kw["grey_max"] = int(grey_max)
        if "eval" not in kw:
            kw["eval"] = mode if mode in BINARIZE_MODES else None
        if kw["eval"] not in (None, *BINARIZE_MODES):
            raise bad("eval", "None, 'bernoulli' or 'threshold'")
    elif name == "normalize":
        for key in ("mean", "std", "scale"):
            v = kw.get(key, 1.0)
            if not (_is_num(v) or (isinstance(v, (tuple, list)) and v
                                   and all(_is_num(a) for a in v))):
                raise bad(key, "a number or one per channel")
            if key != "mean" and np.any(np.asarray(v) == 0):
                raise bad(key, "non-zero")
    elif name == "random_resized_crop":
        size = kw.get("size")
        ok = (isinstance(size, (int, np.integer)) and size > 0) or (
            isinstance(size, (tuple, list)) and len(size) == 2
            and all(isinstance(s, (int, np.integer)) and s > 0 for s in size))
        if not ok or isinstance(size, bool):
            raise bad("size", "an int > 0 or (height, width)")
        if not _is_range(kw.get("scale", (0.08, 1.0)), 0.0, 1.0):
            raise bad("scale", "(low, high) with 0 < low <= high <= 1")
        if not _is_range(kw.get("ratio", (0.75, 4 / 3))):
            raise bad("ratio", "(low, high) with 0 < low <= high")
        crop = kw.get("eval_crop")
        if crop is not None and not (_is_num(crop) and 0 < crop <= 1):
            raise bad("eval_crop", "None (evaluation resizes the whole image) or a fraction "
                                   "in (0, 1] of the shorter side (0.875: resize 256, crop 224)")
        for key in ("scale", "ratio"):
            if key in kw:
                kw[key] = tuple(float(a) for a in kw[key])
    elif name in ("flip", "grayscale", "color_jitter"):
        if not _is_prob(kw.get("p", 0.5)):
            raise bad("p", "a probability in [0, 1]")
        for key in ("brightness", "contrast", "saturation"):
            if key in kw and not (_is_num(kw[key]) and 0 <= kw[key] <= 1):
                raise bad(key, "in [0, 1]")
        if "hue" in kw and not (_is_num(kw["hue"]) and 0 <= kw["hue"] <= 0.5):
            raise bad("hue", "in [0, 0.5] (turns)")
        if "max_value" in kw and not (_is_num(kw["max_value"]) and kw["max_value"] > 0):
            raise bad("max_value", "a number > 0")
    elif name == "gaussian_blur":
        k = kw.get("kernel_size")
        if k is not None and not (isinstance(k, (int, np.integer)) and not isinstance(k, bool)
                                  and k >= 1 and k % 2 == 1):
            raise bad("kernel_size", "None (SimCLR's 10 % of the image side) or an odd int >= 1")
        if not _is_range(kw.get("sigma", (0.1, 2.0))):
            raise bad("sigma", "(low, high) with 0 < low <= high")
        p = kw.get("p", 0.5)
        if not (_is_prob(p) or (isinstance(p, (tuple, list)) and p and all(map(_is_prob, p)))):
            raise bad("p", "a probability in [0, 1], or one per view")
        kw["sigma"] = tuple(float(a) for a in kw.get("sigma", (0.1, 2.0)))
        if isinstance(p, (tuple, list)):
            kw["p"] = tuple(float(a) for a in p)
    elif name == "views":
        num = kw.get("num", 2)
        if not (isinstance(num, int) and num >= 1):
            raise bad("num", "an int >= 1")
        if not isinstance(kw.get("out", "views"), str):
            raise bad("out", "a field name")
        kw["ops"] = parse(kw.get("ops", ()), f"{where}.views.ops")
        for j, op in enumerate(kw["ops"]):
            p = op.kwargs.get("p")
            if isinstance(p, tuple) and len(p) != num:
                raise ValueError(f"{where}.views.ops[{j}]: {op.name}'s p={p!r} must have one "
                                 f"entry per view (num={num})")
    return kw


def parse(spec: Sequence[str | Mapping[str, Any]] | None, where: str = "preprocess"
          ) -> tuple[Op, ...]:
    """Parses a list of op specs: names ("flip") or dicts ({"name": "flip", "p": 0.5}).

    Args:
      spec: the list (None: no ops).
      where: how the error messages name the list (e.g. "config.dataset.preprocess").

    Returns:
      the ops, checked.

    Raises:
      ValueError: one line naming the bad entry, the op and the argument.
    """
    if spec is None:
        return ()
    if isinstance(spec, (str, Mapping)) or not isinstance(spec, Sequence):
        raise ValueError(f"{where}={spec!r} must be a list of op names or dicts")
    ops = []
    for i, item in enumerate(spec):
        at = f"{where}[{i}]"
        if isinstance(item, str):
            name, kw = item, {}
        elif isinstance(item, Mapping) and "name" in item:
            kw = {k: v for k, v in dict(item).items() if k != "name"}
            name = item["name"]
        else:
            raise ValueError(f"{at}={item!r} must be an op name or a dict with a 'name'")
        if name not in _OPS:
            import difflib

            near = difflib.get_close_matches(str(name), OP_NAMES, n=1)
            hint = f"did you mean {near[0]!r}?" if near else f"known: {', '.join(OP_NAMES)}"
            raise ValueError(f"{at}: unknown op {name!r}; {hint}")
        params = inspect.signature(_OPS[name]).parameters
        known = [p for p in params if p not in ("batch", "ctx")]
        for k in kw:
            if k not in known:
                raise ValueError(f"{at}: {name} has no argument {k!r}; its arguments: "
                                 f"{', '.join(known)}")
        missing = [p for p in known if params[p].default is inspect.Parameter.empty
                   and p not in kw]
        if missing:
            raise ValueError(f"{at}: {name} needs {', '.join(missing)}")
        ops.append(Op(name, _check(name, kw, at)))
    return tuple(ops)
