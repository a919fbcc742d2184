"""The per-pixel baseline against a direct computation; the image grid's layout."""

import numpy as np

from ssl_gen.evals import images, pixel_baseline


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
