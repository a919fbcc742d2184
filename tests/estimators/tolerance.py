"""Statistical tolerances shared by the estimator tests, each stated with its reason.

Replicas are i.i.d. gradient estimates (`est.grad_samples`), so the checks are classical:

- a mean is within `n_se` standard errors sd / sqrt(R), the sd taken from the replicas;
- a variance is within `n_se` standard errors of the sample variance s^2, with
  se(s^2) = sqrt((m4 - s^4) / R) from the replicas' own fourth central moment m4. For
  Gaussian replicas this is the chi-square interval ((R - 1) s^2 / var ~ chi2(R - 1), whose
  sd is var * sqrt(2 / (R - 1))); the m4 form also holds for the heavy-tailed estimates of
  the score function, whose kurtosis is far from 3.

4 standard errors: a two-sided false alarm at most ~6e-5 per coordinate under a normal
approximation (R >= 10^4 here), so with fixed seeds a failure means a wrong estimator, not
bad luck, while a bias or variance error of a few per cent still fails.
"""

from __future__ import annotations

import numpy as np

N_SE = 4.0


def mean_and_se(samples) -> tuple[np.ndarray, np.ndarray]:
    """Mean over the leading replica axis and its standard error."""
    x = np.asarray(samples, np.float64)
    return x.mean(0), x.std(0, ddof=1) / np.sqrt(x.shape[0])


def variance_and_se(samples) -> tuple[np.ndarray, np.ndarray]:
    """Sample variance over the leading axis and its (kurtosis-aware) standard error."""
    x = np.asarray(samples, np.float64)
    c = x - x.mean(0)
    s2, m4 = np.mean(c**2, 0), np.mean(c**4, 0)
    return s2, np.sqrt(np.maximum(m4 - s2**2, 0.0) / x.shape[0])


def assert_mean_close(samples, truth, n_se: float = N_SE, what: str = "mean") -> None:
    mean, se = mean_and_se(samples)
    truth = np.asarray(truth, np.float64)
    err = np.abs(mean - truth)
    bad = err > n_se * se + 1e-6  # 1e-6: float32 rounding of exact (zero-variance) estimates
    assert not np.any(bad), f"{what}: {mean} vs truth {truth} (se {se}, {n_se} se allowed)"


def assert_variance_close(samples, truth, n_se: float = N_SE, what: str = "variance") -> None:
    s2, se = variance_and_se(samples)
    truth = np.asarray(truth, np.float64)
    bad = np.abs(s2 - truth) > n_se * se
    assert not np.any(bad), f"{what}: {s2} vs closed form {truth} (se {se}, {n_se} se allowed)"
