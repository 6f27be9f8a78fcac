"""The rank statistics of ``_rotation_reinit`` (SciPy's, with the edge cases
the report needs), and the re-initialization drops they are fed."""

import math

import numpy as np
import pytest


stats = pytest.importorskip("scipy.stats")

from layca_optax.experiments.reproduce import rank_tests as rr  # noqa: E402


@pytest.mark.parametrize("seed", range(6))
def test_spearman_matches_scipy_with_ties(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 12))
    x = rng.integers(0, 4, size=n).astype(float)  # many ties
    y = rng.normal(size=n)
    y[: n // 3] = y[0]  # ties in y too
    expected = stats.spearmanr(x, y).statistic
    if np.isnan(expected):
        assert math.isnan(rr.spearman(x, y))
    else:
        assert rr.spearman(x, y) == pytest.approx(expected, abs=1e-12)


def test_spearman_undefined():
    assert math.isnan(rr.spearman([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))
    assert math.isnan(rr.spearman([1.0], [2.0]))
    assert rr.spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)


@pytest.mark.parametrize("n", [2, 3, 5, 15, 40])
def test_t_test_matches_scipy(n):
    rng = np.random.default_rng(n)
    for shift in (0.0, 0.3, -1.5):
        values = rng.normal(shift, 0.5, size=n)
        t, p = rr.t_test(values)
        expected = stats.ttest_1samp(values, 0.0)
        assert t == pytest.approx(expected.statistic, rel=1e-10)
        assert p == pytest.approx(expected.pvalue, rel=1e-8, abs=1e-14)


def test_t_test_edge_cases():
    assert all(math.isnan(v) for v in rr.t_test([0.4]))
    assert rr.t_test([0.5, 0.5, 0.5]) == (math.inf, 0.0)
    assert all(math.isnan(v) for v in rr.t_test([0.0, 0.0]))


def test_permutation_p():
    rng = np.random.default_rng(0)
    layers = 5
    aligned = [(list(range(layers)), list(range(layers)))] * 6
    p = rr.permutation_p(aligned, draws=2000)
    # Six runs in perfect order: a mean of 1 has chance (1/120)^6.
    assert p == pytest.approx(1 / 2001)
    null = [
        (rng.normal(size=layers).tolist(), rng.normal(size=layers).tolist())
        for _ in range(6)
    ]
    p_null = rr.permutation_p(null, draws=2000)
    assert 0.05 < p_null <= 1.0
    assert rr.permutation_p(null, draws=2000) == p_null  # seeded
    assert math.isnan(rr.permutation_p([([1, 2, 3], [0, 0, 0])]))


def test_drops_and_summary():
    layers = ["a", "b", "c"]
    run = {
        "validation_accuracy": 0.9,
        "reset_accuracy": {"a": 0.9, "b": 0.5, "c": 0.1},
        "final_rotation": {"a": 0.1, "b": 0.2, "c": 0.3},
    }
    rotations, drops = rr.drops(run, layers)
    assert rotations == [0.1, 0.2, 0.3]
    np.testing.assert_allclose(drops, [0.0, 40.0, 80.0])
    diverged = {**run, "validation_accuracy": None}
    assert rr.drops(diverged, layers) is None
    assert rr.drops({**run, "reset_accuracy": {}}, layers) is None
    flat = ([0.1, 0.2, 0.3], [0.0, 0.0, 0.0])  # every drop ties: no rho
    found = rr.summarize([(rotations, drops), (rotations, drops[::-1]), flat])
    assert (found["runs"], found["defined"], found["layers"]) == (3, 2, 3)
    assert found["correlations"][:2] == [1.0, -1.0]
    assert math.isnan(found["correlations"][2])
    assert found["mean"] == 0.0
    assert found["sd"] == pytest.approx(math.sqrt(2))
    assert found["t"] == 0.0 and found["p_t"] == pytest.approx(1.0)
