"""The recognition frontier's own arithmetic (bench/recognition_frontier.py): Gaussian log-densities,
the low-rank-plus-diagonal factorisation and the posterior through the chain. Tiny cases, no data."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import multivariate_normal

spec = importlib.util.spec_from_file_location(
    "recognition_frontier", Path(__file__).resolve().parents[1] / "bench" / "recognition_frontier.py")
frontier = importlib.util.module_from_spec(spec)
spec.loader.exec_module(frontier)


def _case(dim=6, rank=2, seed=0):
    rng = np.random.default_rng(seed)
    U, _ = np.linalg.qr(rng.normal(size=(dim, rank)))
    lam = rng.uniform(0.5, 3.0, rank)
    d = rng.uniform(0.1, 1.0, dim)
    return rng.normal(size=dim), U, lam, d, rng.normal(size=(7, dim))


@pytest.mark.parametrize("rank", [0, 1, 3])
def test_low_rank_log_density_matches_scipy(rank):
    mean, U, lam, d, X = _case(rank=rank)
    cov = U @ np.diag(lam) @ U.T + np.diag(d)
    g = frontier.LowRankGaussian(mean, U, lam, d)
    np.testing.assert_allclose(g.logpdf(X), multivariate_normal(mean, cov).logpdf(X), rtol=1e-10, atol=1e-10)
    means = np.stack([mean, mean + 1.0])  # several means sharing the covariance: (n, c)
    both = g.logpdf(X, means)
    assert both.shape == (7, 2)
    np.testing.assert_allclose(both[:, 1], multivariate_normal(mean + 1.0, cov).logpdf(X), rtol=1e-10)
    assert g.n_params == U.size + lam.size + d.size


def test_full_log_density_matches_scipy():
    mean, U, lam, d, X = _case()
    cov = U @ np.diag(lam) @ U.T + np.diag(d)
    g = frontier.FullGaussian(mean, cov)
    np.testing.assert_allclose(g.logpdf(X), multivariate_normal(mean, cov).logpdf(X), rtol=1e-10)
    assert g.n_params == 21


def test_low_rank_plus_diagonal_keeps_the_diagonal_and_the_top_directions():
    _, U, lam, d, _ = _case(dim=8, rank=3)
    cov = U @ np.diag(lam) @ U.T + np.diag(d)
    U2, lam2, d2 = frontier.low_rank_plus_diagonal(cov, 3)
    approx = U2 @ np.diag(lam2) @ U2.T + np.diag(d2)
    np.testing.assert_allclose(np.diag(approx), np.diag(cov), rtol=1e-10)  # the residual diagonal is exact
    w = np.linalg.eigvalsh(cov)[::-1][:3]
    np.testing.assert_allclose(lam2, w, rtol=1e-10)
    U0, lam0, d0 = frontier.low_rank_plus_diagonal(cov, 0)
    assert U0.shape == (8, 0) and np.allclose(d0, np.diag(cov))


def test_posterior_through_the_chain_and_argmax():
    # recogniser 0 sees tasks 0..2, recogniser 1 tasks 1..2; one image clearly task 1
    ll = [np.array([[-10.0, 0.0, -10.0]]), np.array([[0.0, -10.0]])]
    p = frontier.posterior_pt(ll, 3, tau=1.0)
    assert p.shape == (1, 3) and np.isclose(p.sum(), 1.0) and p.argmax() == 1
    assert frontier.posterior_pt(ll, 3, tau=1.0, combine="argmax").argmax() == 1
    # a high temperature flattens P_R towards the softmax of small differences
    flat = frontier.posterior_pt([ll[0] / 1e6, ll[1] / 1e6], 3, tau=1.0)
    np.testing.assert_allclose(flat[0], [1 / 3, 2 / 3 * 1 / 2, 2 / 3 * 1 / 2], atol=1e-5)
