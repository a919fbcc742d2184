"""What each no-download perceptual term (`ssl_gen.models.perceptual`) says about blur
against noise of the same MSE, and what it costs.

On every 8th of the 2,000 `labelled_photos` test crops (250, unit scale): a Gaussian blur
(sigma 1 pixel per channel) and additive Gaussian noise scaled to the blur's MSE exactly.
A term that punished blur as hard as noise would read blur/noise ~1 where L1 reads ~0.55;
the time is one jitted call on 16 crops (forward only), the median of 5.

  python -m benchmarks.bench_perceptual

Measured (loaded 2-core CPU, seed 0; MSE 0.00089 both; L1 blur 0.0131, noise 0.0238):

  ssim         blur 0.0958  noise 0.3260  blur/noise 0.29   22 ms / 16 crops
  fourier_l1   blur 0.0151  noise 0.0265  blur/noise 0.57    1 ms
  random_conv  blur 0.0445  noise 0.0750  blur/noise 0.59    6 ms

So no term here singles out blur: 1 - SSIM punishes noise 3.4x harder than a blur of the
same MSE (L1: 1.8x), the Fourier L1 and random-conv distance about as L1 does. Sharpness is
the GAN term's job.
"""

import time

import jax
import jax.numpy as jnp
import numpy as np
from scipy import ndimage


def main():
    import tensorflow_datasets as tfds

    from ssl_gen import data  # noqa: F401  (registers the embedded builders)
    from ssl_gen.models import perceptual

    src = tfds.data_source("labelled_photos", split="test")
    u = np.stack([src[i]["image"] for i in range(0, len(src), 8)]).astype(np.float32) / 255
    blur = np.stack([ndimage.gaussian_filter(im, sigma=(1, 1, 0)) for im in u])
    mse = float(((blur - u) ** 2).mean())
    noise = np.random.default_rng(0).standard_normal(u.shape).astype(np.float32)
    noisy = u + noise * np.sqrt(mse / float((noise**2).mean()))
    print(f"n={len(u)}  MSE blur {mse:.5f} noise {float(((noisy - u) ** 2).mean()):.5f}  "
          f"L1 blur {np.abs(blur - u).mean():.4f} noise {np.abs(noisy - u).mean():.4f}")
    for name, fn in perceptual.LOSSES.items():
        f = jax.jit(fn)
        b, n = float(f(blur, u).mean()), float(f(noisy, u).mean())
        x = jnp.asarray(u[:16])
        f(x, x).block_until_ready()
        times = []
        for _ in range(5):
            t = time.perf_counter()
            f(x, x).block_until_ready()
            times.append(time.perf_counter() - t)
        print(f"{name:12s} blur {b:.4f}  noise {n:.4f}  blur/noise {b / n:.2f}  "
              f"{1e3 * np.median(times):5.1f} ms / 16 crops")


if __name__ == "__main__":
    main()
