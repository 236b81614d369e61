"""LogME: how well frozen features suit a labelled task (You, Liu, Wang, Long, ICML 2021).

For each class ``c`` the 0/1 indicator ``y`` of ``c`` is modelled as ``y = F w + noise`` with
the prior ``w ~ N(0, 1/alpha I)`` and noise ``N(0, 1/beta I)``, so that
``y ~ N(0, 1/beta I + 1/alpha F F^T)``. With ``A = alpha I + beta F^T F`` and the posterior
mean ``m = beta A^-1 F^T y`` its log marginal evidence is

    L = D/2 log alpha + N/2 log beta - N/2 log 2pi - beta/2 |F m - y|^2 - alpha/2 |m|^2 - 1/2 log|A|

and MacKay's fixed point ``gamma = sum_i beta s_i / (alpha + beta s_i)``,
``alpha <- gamma / |m|^2``, ``beta <- (N - gamma) / |F m - y|^2`` (``s_i`` the squared
singular values of ``F``) maximises it. One thin SVD ``F = U S V^T`` turns every quantity
into sums over the coordinates ``U^T y``, for ``N > D`` and ``N <= D`` alike. The score is the
mean over classes of ``L / N``: higher means the features separate the classes with a simpler
linear model. ``log|A|`` keeps its ``D - rank`` eigenvalues equal to ``alpha``, so padding the
features with zero columns does not change the score.

The iteration starts from the best point of a coarse grid of ``alpha / beta`` (relative to the
spectrum, so the result does not depend on the features' scale) and stops after
:data:`MAX_ITERATIONS` updates or when ``alpha / beta`` moves by less than :data:`TOLERANCE`;
where the evidence keeps rising toward a boundary (features that say nothing of a class, or
``N <= D`` where the labels can be interpolated), ``alpha / beta`` is clipped to a range in
which the evidence is already at its limit. About 0.2 s for 2,000 x 512 features on one core.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from automl_transfer.ranking.checks import at_least_two_classes, features_and_labels

#: The most fixed-point updates per class.
MAX_ITERATIONS = 11
#: A class stops when ``alpha / beta`` changes by less than this share.
TOLERANCE = 1e-3
_LOG_2PI = float(np.log(2 * np.pi))
_TINY = 1e-300


def logme(features: Any, labels: Any) -> float:
    """Return the LogME score of ``features`` for ``labels`` (see the module docstring).

    :param features: ``(N, D)`` real numbers (a numpy array or a CPU tensor), e.g. pooled features.
    :param labels: ``(N,)`` integer class ids.
    :returns: the mean over the classes present of the maximised log evidence per sample.
        Compare scores only on the same images and labels.
    :raises ValueError: bad shapes or values, or fewer than two classes.
    """
    f, y = features_and_labels(features, labels)
    classes = at_least_two_classes(y)
    n = len(f)
    targets = (y[:, None] == classes[None, :]).astype(np.float64)
    u, s = _thin_svd(f)
    rank = s.size
    sigma = (s**2)[:, None]
    coords = u.T @ targets
    projected = coords**2
    outside = np.sum((targets - u @ coords) ** 2, axis=0)  # the part of the targets outside span(U)
    ratio, alpha, beta = _fixed_point(sigma, projected, outside, n)
    _, m2, residual = _posterior_terms(sigma, projected, outside, ratio)
    log_det = np.sum(np.log(alpha + beta * sigma), axis=0) if rank else np.zeros(len(classes))
    evidence = (
        0.5 * rank * np.log(alpha)
        + 0.5 * n * np.log(beta)
        - 0.5 * n * _LOG_2PI
        - 0.5 * beta * residual
        - 0.5 * alpha * m2
        - 0.5 * log_det
    ) / n
    return float(np.mean(evidence))


def _thin_svd(f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``U`` and the singular values of ``f``, numerically zero ones dropped (numpy's rank threshold)."""
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    if s.size == 0 or s[0] == 0.0:
        return u[:, :0], s[:0]
    rank = int(np.count_nonzero(s > s[0] * max(f.shape) * np.finfo(np.float64).eps))
    return u[:, :rank], s[:rank]


def _posterior_terms(sigma: np.ndarray, projected: np.ndarray, outside: np.ndarray, ratio: np.ndarray):
    """``gamma``, ``|m|^2`` and ``|F m - y|^2`` at ``ratio = alpha / beta``, per class (``m`` depends on the ratio only)."""
    denominator = sigma + ratio
    gamma = np.sum(sigma / denominator, axis=0)
    m2 = np.sum(sigma * projected / denominator**2, axis=0)
    residual = np.sum(projected * (ratio / denominator) ** 2, axis=0) + outside
    return gamma, m2, residual


def _profiled_evidence(sigma: np.ndarray, projected: np.ndarray, outside: np.ndarray, ratios: np.ndarray, n: int):
    """N times the log evidence with ``beta`` at its optimum, up to a constant, for each ratio and class."""
    shrink = ratios[None, :] / (sigma + ratios[None, :])
    quadratic = shrink.T @ projected + outside[None, :]
    log_det = np.sum(np.log(sigma + ratios[None, :]), axis=0)
    return (0.5 * sigma.shape[0] * np.log(ratios) - 0.5 * log_det)[:, None] - 0.5 * n * np.log(np.maximum(quadratic, _TINY))


def _fixed_point(sigma: np.ndarray, projected: np.ndarray, outside: np.ndarray, n: int):
    """Run MacKay's updates for every class; return ``(alpha / beta, alpha, beta)`` per class."""
    rank, count = sigma.shape[0], projected.shape[1]
    if rank == 0:
        ratio = np.ones(count)
        low, high = 0.0, np.inf
    else:
        low, high = float(sigma[-1, 0]) * 1e-10, float(sigma[0, 0]) * 1e10
        grid = float(sigma[0, 0]) * 10.0 ** np.arange(-12.0, 6.01, 0.25)
        grid = grid[(grid >= low) & (grid <= high)]
        ratio = grid[np.argmax(_profiled_evidence(sigma, projected, outside, grid, n), axis=0)]
    alpha, beta = ratio.copy(), np.ones(count)
    active = np.ones(count, dtype=bool)
    for _ in range(MAX_ITERATIONS):
        index = np.flatnonzero(active)
        if index.size == 0:
            break
        current = ratio[index]
        gamma, m2, residual = _posterior_terms(sigma, projected[:, index], outside[index], current)
        # N - gamma = (N - rank) + sum ratio / (sigma + ratio): no cancellation as the ratio -> 0.
        n_minus_gamma = (n - rank) + np.sum(current / (sigma + current), axis=0)
        new_alpha = gamma / np.maximum(m2, _TINY) if rank else np.ones(index.size)
        new_beta = n_minus_gamma / np.maximum(residual, _TINY)
        new_ratio = new_alpha / new_beta
        done = np.abs(new_ratio - current) <= TOLERANCE * current
        clipped = (new_ratio < low) | (new_ratio > high)
        if np.any(clipped):  # at the boundary the evidence is at its limit: take the best beta there
            new_ratio = np.clip(new_ratio, low, high)
            _, m2, residual = _posterior_terms(sigma, projected[:, index], outside[index], new_ratio)
            best_beta = n / np.maximum(residual + new_ratio * m2, _TINY)
            new_beta = np.where(clipped, best_beta, new_beta)
            new_alpha = np.where(clipped, new_ratio * best_beta, new_alpha)
            done |= clipped
        alpha[index], beta[index], ratio[index] = new_alpha, new_beta, new_ratio
        active[index[done]] = False
    return ratio, alpha, beta
