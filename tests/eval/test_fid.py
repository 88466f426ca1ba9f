"""FD, KID, Inception Score and precision/recall."""

import math

import numpy as np
import pytest
import torch

from pixdiff.eval import FeatureStats, frechet_distance, inception_score, kid, precision_recall
from pixdiff.eval import fid as fid_module


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _random_spd(d: int, seed: int) -> torch.Tensor:
    a = torch.randn(d, d, generator=_gen(seed), dtype=torch.float64)
    return a @ a.T / d + 0.1 * torch.eye(d, dtype=torch.float64)


def _stats(mu: torch.Tensor, sigma: torch.Tensor) -> FeatureStats:
    return FeatureStats(mu, sigma, n=10_000)


# ----------------------------------------------------------------------------- FD


def test_fd_of_a_set_to_itself_is_zero():
    feats = torch.randn(500, 16, generator=_gen(0)) @ torch.randn(16, 16, generator=_gen(1))
    stats = FeatureStats.from_features(feats)
    assert 0 <= frechet_distance(stats, stats) < 1e-6
    assert frechet_distance(stats, FeatureStats.from_features(feats.clone())) < 1e-6


def test_fd_diagonal_gaussians_closed_form():
    g = _gen(2)
    mu1, mu2 = torch.randn(6, generator=g).double(), torch.randn(6, generator=g).double()
    s1, s2 = torch.rand(6, generator=g).double() + 0.1, torch.rand(6, generator=g).double() * 3
    expected = (mu1 - mu2).square().sum() + (s1 + s2 - 2 * (s1 * s2).sqrt()).sum()
    got = frechet_distance(_stats(mu1, torch.diag(s1)), _stats(mu2, torch.diag(s2)))
    assert got == pytest.approx(expected.item(), rel=1e-12)


def test_fd_non_commuting_2d_closed_form():
    """In 2-D, Tr (S1 S2)^(1/2) = sqrt(Tr(S1 S2) + 2 sqrt(det(S1 S2))).

    The eigenvalues l1, l2 >= 0 of S1 S2 give (sqrt(l1) + sqrt(l2))^2 = l1 + l2 + 2 sqrt(l1 l2).
    """
    s1 = torch.tensor([[2.0, 0.9], [0.9, 1.0]], dtype=torch.float64)
    s2 = torch.tensor([[0.5, -0.3], [-0.3, 3.0]], dtype=torch.float64)
    assert (s1 @ s2 - s2 @ s1).abs().max() > 0.5  # they do not commute
    mu1, mu2 = torch.tensor([0.0, 1.0]).double(), torch.tensor([2.0, -1.0]).double()
    p = s1 @ s2
    tr_sqrt = math.sqrt(p.trace().item() + 2 * math.sqrt(torch.linalg.det(p).item()))
    expected = 8.0 + s1.trace().item() + s2.trace().item() - 2 * tr_sqrt
    got = frechet_distance(_stats(mu1, s1), _stats(mu2, s2))
    assert got == pytest.approx(expected, rel=1e-12)


def test_fd_full_covariance_against_non_symmetric_eigenvalues():
    """Tr (S1 S2)^(1/2) as the sum of square roots of the (real, >= 0) eigenvalues of S1 S2."""
    s1, s2 = _random_spd(12, 3), _random_spd(12, 4)
    mu1, mu2 = torch.randn(12, generator=_gen(5)).double(), torch.zeros(12).double()
    eig = torch.linalg.eigvals(s1 @ s2)
    assert eig.imag.abs().max() < 1e-9
    tr_sqrt = eig.real.clamp(min=0).sqrt().sum()
    expected = mu1.square().sum() + s1.trace() + s2.trace() - 2 * tr_sqrt
    got = frechet_distance(_stats(mu1, s1), _stats(mu2, s2))
    assert got == pytest.approx(expected.item(), rel=1e-10)


def test_fd_is_symmetric():
    a = _stats(torch.randn(10, generator=_gen(6)).double(), _random_spd(10, 7))
    b = _stats(torch.randn(10, generator=_gen(8)).double(), _random_spd(10, 9))
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=1e-10)


def test_fd_singular_covariances_stay_real():
    low_rank = torch.randn(300, 3, generator=_gen(10)) @ torch.randn(3, 8, generator=_gen(11))
    a = FeatureStats.from_features(low_rank)  # rank 3 of 8
    b = FeatureStats.from_features(torch.randn(300, 8, generator=_gen(12)))
    for x, y in [(a, b), (b, a), (a, a)]:
        value = frechet_distance(x, y)
        assert math.isfinite(value) and value >= 0
    assert frechet_distance(a, a) < 1e-5
    # a constant set (covariance 0): FD = |mu1 - mu2|^2 + Tr S2 exactly
    constant = FeatureStats(torch.ones(8), torch.zeros(8, 8), n=300)
    expected = (b.mu - 1).square().sum() + b.sigma.trace()
    assert frechet_distance(constant, b) == pytest.approx(expected.item(), rel=1e-12)


def test_fd_refuses_too_few_samples():
    few = FeatureStats.from_features(torch.randn(50, 128, generator=_gen(13)))
    enough = FeatureStats.from_features(torch.randn(129, 128, generator=_gen(14)))
    message = r"FD needs at least D\+1 = 129 samples for a full-rank 128x128 covariance, got 50"
    with pytest.raises(ValueError, match=message):
        frechet_distance(enough, few)
    assert frechet_distance(enough, enough) < 1e-6
    with pytest.raises(ValueError, match="different widths"):
        frechet_distance(enough, _stats(torch.zeros(3), torch.eye(3)))


@pytest.mark.parametrize(
    ("n_a", "n_b", "d", "rel"), [(400, 300, 32, 1e-10), (65, 65, 64, 1e-9), (20, 30, 64, 1e-7)]
)  # a zero eigenvalue comes out as +-1e-14, whose square root is 1e-7: looser when singular
def test_fd_equals_the_reference_library(torchmetrics_fid, n_a, n_b, d, rel):
    """pixdiff's FD against torchmetrics' (``_compute_fid``: the eigenvalues of S1 S2, the
    FID of torchmetrics and torch-fidelity) on the same random features: well conditioned,
    just full rank (N = D + 1) and rank deficient (N < D, with ``require_full_rank=False``)."""
    mix = torch.randn(d, d, generator=_gen(20), dtype=torch.float64)
    a = FeatureStats.from_features(torch.randn(n_a, d, generator=_gen(21)).double() @ mix)
    b = FeatureStats.from_features(torch.rand(n_b, d, generator=_gen(22)).double() * 3 + 0.5)
    expected = torchmetrics_fid._compute_fid(a.mu, a.sigma, b.mu, b.sigma).item()
    got = frechet_distance(a, b, require_full_rank=min(n_a, n_b) > d)
    assert expected > 10 and got == pytest.approx(expected, rel=rel)


def test_stats_match_numpy_and_round_trip(tmp_path):
    feats = torch.randn(40, 5, generator=_gen(15)).double()
    stats = FeatureStats.from_features(feats)
    np.testing.assert_allclose(stats.sigma.numpy(), np.cov(feats.numpy(), rowvar=False))
    np.testing.assert_allclose(stats.mu.numpy(), feats.numpy().mean(0))
    stats.save(tmp_path / "stats.safetensors")
    loaded = FeatureStats.load(tmp_path / "stats.safetensors")
    assert torch.equal(loaded.mu, stats.mu) and torch.equal(loaded.sigma, stats.sigma)
    assert loaded.n == 40 and loaded.mu.dtype == torch.float64
    assert not list(tmp_path.glob(".*tmp"))  # atomic write left no temp file


def test_stats_load_errors_name_the_file(tmp_path):
    with pytest.raises(ValueError, match="missing.safetensors does not exist"):
        FeatureStats.load(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(ValueError, match="junk.safetensors is corrupt"):
        FeatureStats.load(tmp_path / "junk.safetensors")
    from pixdiff.checkpoint import save_tensors

    save_tensors(tmp_path / "other.safetensors", {"w": torch.zeros(2)})
    with pytest.raises(ValueError, match="other.safetensors is not a pixdiff feature-stats"):
        FeatureStats.load(tmp_path / "other.safetensors")


# ----------------------------------------------------------------------------- KID


def _kid_by_loops(x: torch.Tensor, y: torch.Tensor) -> float:
    """Unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3, written as explicit sums over pairs."""
    m, d = x.shape
    k = lambda a, b: (float(a @ b) / d + 1) ** 3  # noqa: E731
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j)
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m))
    return (xx + yy) / (m * (m - 1)) - 2 * xy / m**2


def test_kid_matches_the_pairwise_sums():
    x = torch.randn(6, 3, generator=_gen(16)).double()
    y = torch.randn(6, 3, generator=_gen(17)).double() + 0.5
    # subsets of the whole set are permutations, which MMD^2 does not see: std 0
    mean, std = kid(x, y, subsets=3, subset_size=1000)
    assert mean == pytest.approx(_kid_by_loops(x, y), rel=1e-12)
    assert std < 1e-12


def test_kid_is_unbiased_and_detects_a_shift():
    draws, m, d = 300, 40, 8
    g = _gen(18)
    unbiased, biased = [], []
    for _ in range(draws):
        x, y = torch.randn(m, d, generator=g).double(), torch.randn(m, d, generator=g).double()
        unbiased.append(kid(x, y, subsets=1, subset_size=m, generator=g)[0])
        kxx, kyy = fid_module._poly_kernel(x, x), fid_module._poly_kernel(y, y)
        biased.append((kxx.mean() + kyy.mean() - 2 * fid_module._poly_kernel(x, y).mean()).item())
    unbiased, biased = torch.tensor(unbiased), torch.tensor(biased)
    stderr = unbiased.std() / math.sqrt(draws)
    assert unbiased.mean().abs() < 3 * stderr
    assert biased.mean() > 10 * stderr  # the test can see a bias of this (1/m) size
    x = torch.randn(200, d, generator=g)
    mean, std = kid(x, torch.randn(200, d, generator=g) + 0.5, subsets=20, subset_size=100)
    assert mean > 0.05 and mean > 5 * std


def test_kid_is_reproducible_and_clips_the_subset_size():
    x, y = torch.randn(30, 4, generator=_gen(19)), torch.randn(50, 4, generator=_gen(20))
    assert kid(x, y, subsets=5) == kid(x, y, subsets=5)
    assert kid(x, y, subsets=5, generator=_gen(1)) != kid(x, y, subsets=5, generator=_gen(2))


def test_kid_refuses_too_few_samples():
    with pytest.raises(ValueError, match="KID needs at least 2 samples per set"):
        kid(torch.randn(1, 4), torch.randn(10, 4))
    with pytest.raises(ValueError, match="different widths"):
        kid(torch.randn(5, 4), torch.randn(5, 3))


# ----------------------------------------------------------------------------- Inception Score


def test_inception_score_bounds():
    mean, std = inception_score(torch.zeros(100, 10))
    assert mean == pytest.approx(1.0, abs=1e-12) and std < 1e-12
    k = 7
    labels = torch.arange(10 * k * 3) % k  # every split of 3k rows holds each class 3 times
    mean, std = inception_score(100 * torch.nn.functional.one_hot(labels, k).double())
    assert mean == pytest.approx(k, rel=1e-9) and std < 1e-9


def test_inception_score_small_case_by_hand():
    # p(y|x1) = (1, 0), p(y|x2) = (1/2, 1/2): p(y) = (3/4, 1/4)
    logits = torch.tensor([[0.0, -math.inf], [0.0, 0.0]])
    kl1 = math.log(1 / 0.75)
    kl2 = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    mean, _ = inception_score(logits, splits=1)
    assert mean == pytest.approx(math.exp((kl1 + kl2) / 2), rel=1e-12)


def test_inception_score_refuses_fewer_samples_than_splits():
    with pytest.raises(ValueError, match="N >= splits"):
        inception_score(torch.zeros(5, 10), splits=10)


# ----------------------------------------------------------------------------- precision/recall


def _pr_by_loops(real: torch.Tensor, fake: torch.Tensor, k: int) -> tuple[float, float]:
    """Kynkaanniemi et al. 2019 Eq. 1-2 from full, sorted distance matrices."""

    def radii(x):
        return torch.cdist(x, x).sort(dim=1).values[:, k]

    precision = (torch.cdist(fake, real) <= radii(real)).any(1).double().mean()
    recall = (torch.cdist(real, fake) <= radii(fake)).any(1).double().mean()
    return precision.item(), recall.item()


def test_precision_recall_blocks_match_the_full_computation(monkeypatch):
    real = torch.randn(60, 3, generator=_gen(21)).double()
    fake = torch.randn(45, 3, generator=_gen(22)).double() * 1.5 + 0.3
    monkeypatch.setattr(fid_module, "_BLOCK_ROWS", 7)
    assert precision_recall(real, fake, k=3) == pytest.approx(_pr_by_loops(real, fake, 3))


def test_precision_recall_identical_and_disjoint_sets():
    real = torch.randn(300, 4, generator=_gen(23))
    assert precision_recall(real, real.clone()) == (1.0, 1.0)
    assert precision_recall(real, real + 100) == (0.0, 0.0)


def _clusters(centers: list[float], n: int, seed: int) -> torch.Tensor:
    """n points around each centre (c, 0) with unit-variance noise, (len(centers) n, 2)."""
    g = _gen(seed)
    return torch.cat([torch.randn(n, 2, generator=g) + torch.tensor([c, 0.0]) for c in centers])


def test_dropped_mode_lowers_recall_not_precision():
    real = _clusters([-20, 20], 300, seed=24)
    fake = _clusters([20], 300, seed=25)  # covers only half of the real data
    precision, recall = precision_recall(real, fake)
    assert precision > 0.9 and 0.4 < recall < 0.55


def test_spurious_mode_lowers_precision_not_recall():
    real = _clusters([-20, 20], 300, seed=26)
    fake = _clusters([-20, 20, 60], 300, seed=27)  # a third of the fakes are off the data
    precision, recall = precision_recall(real, fake)
    assert 0.55 < precision < 0.7 and recall > 0.9


def test_precision_recall_refuses_too_few_samples():
    with pytest.raises(ValueError, match=r"k=3 needs at least k\+1 = 4 samples per set"):
        precision_recall(torch.randn(3, 2), torch.randn(10, 2))
