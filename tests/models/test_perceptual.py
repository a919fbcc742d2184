"""The no-download perceptual losses (ssl_gen.models.perceptual) against direct references.

SSIM is checked against a float64 NumPy/SciPy transcription of Wang et al. (2004): the 2-D
11x11 Gaussian window (sigma 1.5) as one 'valid' correlation (not the separable filtering
the module uses), K1 = 0.01, K2 = 0.03, per channel, averaged over the map and channels.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import signal

from ssl_gen.models import perceptual


def _ssim_reference(x, y, data_range=1.0, size=11, sigma=1.5, k1=0.01, k2=0.03):
    """Per-image SSIM (B,) of float64 images (B, H, W, C), straight from eq. 13."""
    r = np.arange(size) - (size - 1) / 2
    g = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * sigma**2))
    w = g / g.sum()
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    out = []
    for xb, yb in zip(x, y, strict=True):
        maps = []
        for c in range(x.shape[-1]):
            a, b = xb[..., c], yb[..., c]
            f = lambda v: signal.correlate2d(v, w, mode="valid")
            mx, my = f(a), f(b)
            sxx, syy, sxy = f(a * a) - mx**2, f(b * b) - my**2, f(a * b) - mx * my
            maps.append(((2 * mx * my + c1) * (2 * sxy + c2))
                        / ((mx**2 + my**2 + c1) * (sxx + syy + c2)))
        out.append(np.mean(maps))
    return np.array(out)


def test_ssim_matches_the_direct_reference_on_random_images():
    """Unrelated, correlated and identical images (seed 0), 1e-5 absolute."""
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(3, 24, 20, 3))
    y = np.stack([rng.uniform(size=(24, 20, 3)),  # unrelated: SSIM near 0
                  np.clip(x[1] + 0.1 * rng.standard_normal((24, 20, 3)), 0, 1),  # noisy copy
                  0.5 * x[2] + 0.2])  # contrast and brightness changed
    got = np.asarray(perceptual.ssim(jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)))
    want = _ssim_reference(x, y)
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert abs(want[0]) < 0.1 and 0.3 < want[1] < 0.99  # the cases differ as they should


def test_ssim_of_an_image_with_itself_is_one_and_data_range_scales_the_constants():
    x = jax.random.uniform(jax.random.key(1), (2, 16, 16, 1))
    np.testing.assert_allclose(perceptual.ssim(x, x), 1.0, atol=1e-6)
    np.testing.assert_allclose(perceptual.ssim_loss(x, x), 0.0, atol=1e-6)
    y = jax.random.uniform(jax.random.key(2), (2, 16, 16, 1))
    np.testing.assert_allclose(perceptual.ssim(255 * x, 255 * y, data_range=255.0),
                               perceptual.ssim(x, y), atol=1e-4)


def test_ssim_rejects_images_smaller_than_the_window():
    x = jnp.zeros((1, 8, 8, 1))
    with pytest.raises(ValueError, match="smaller than the 11x11 window"):
        perceptual.ssim(x, x)


def test_fourier_l1_is_the_mean_modulus_of_the_orthonormal_dft_difference():
    rng = np.random.default_rng(3)
    a, b = rng.uniform(size=(2, 8, 6, 3)), rng.uniform(size=(2, 8, 6, 3))
    want = np.abs(np.fft.fft2(a - b, axes=(1, 2), norm="ortho")).reshape(2, -1).mean(-1)
    got = perceptual.fourier_l1(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32))
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_random_conv_distance_is_fixed_zero_on_equal_images_and_grows_with_noise():
    """Constants (the same kernels every call), 0 at x̂ = u, larger for more noise."""
    u = jax.random.uniform(jax.random.key(4), (2, 16, 16, 3))
    noise = jax.random.normal(jax.random.key(5), u.shape)
    d = lambda s: np.asarray(perceptual.random_conv_distance(jnp.clip(u + s * noise, 0, 1), u))
    np.testing.assert_allclose(d(0.0), 0.0, atol=1e-6)
    assert np.all(d(0.3) > d(0.05)) and np.all(d(0.05) > 0)
    k1, k2 = perceptual.random_conv_kernels(3), perceptual.random_conv_kernels(3)
    assert all(np.array_equal(a, b) for a, b in zip(k1, k2, strict=True))
