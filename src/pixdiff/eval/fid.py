"""Feature-space sample-quality metrics: Frechet distance, KID, Inception Score, precision/recall.

All metrics take features (N, D) from a :class:`~pixdiff.eval.features.FeatureExtractor`
(logits (N, K) for the Inception Score) and compute in float64 on the CPU. Their values only
compare between runs that use the same extractor weights and the same sample counts: FD and
the Inception Score are biased at finite N (Chong & Forsyth 2020, "Effectively Unbiased FID and
Inception Score and where to find them"); KID is unbiased.

Minimum sample counts (each set; the functions refuse fewer with a ValueError):

- FD: ``D + 1``, the fewest samples whose covariance can be full rank (the sample covariance
  of N points has rank at most N - 1). Below it FD mostly measures the missing rank. D + 1 is a
  floor, not a recommendation: use 10k samples (5k at least) for numbers worth reporting.
- KID: 2 (the unbiased estimator averages over pairs of distinct samples).
- precision/recall: ``k + 1`` (a point's k-th nearest neighbour excludes the point itself).
- Inception Score: ``splits`` (each split needs one sample).

The real data's side (statistics and features, computed once and cached) is
:func:`pixdiff.eval.reference.reference_stats`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from pixdiff.checkpoint import CheckpointError, read_tensors, save_tensors

STATS_FORMAT = "pixdiff.feature_stats/1"
_BLOCK_ROWS = 512  # rows per cdist block: 512 x 10k float64 distances = 41 MB


def _as_features(feats: Tensor, what: str) -> Tensor:
    """``feats`` as a finite (N, D) float64 CPU tensor, or a one-line ValueError."""
    if not isinstance(feats, Tensor) or feats.ndim != 2:
        got = tuple(feats.shape) if isinstance(feats, Tensor) else type(feats).__name__
        raise ValueError(f"{what} must be a (N, D) tensor of features, got {got}")
    feats = feats.detach().to("cpu", torch.float64)
    if not torch.isfinite(feats).all():
        raise ValueError(f"{what} contain NaN or infinite values")
    return feats


def _same_width(a: Tensor, b: Tensor) -> None:
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"the two feature sets have different widths ({a.shape[1]} vs {b.shape[1]}); "
            f"were they made by the same extractor?"
        )


# ----------------------------------------------------------------------------- statistics


@dataclass(frozen=True, eq=False)
class FeatureStats:
    """Mean and covariance of a feature set: all the Frechet distance needs.

    Attributes:
        mu: (D,) float64 mean.
        sigma: (D, D) float64 unbiased covariance (divides by n - 1).
        n: number of samples the statistics come from.
    """

    mu: Tensor
    sigma: Tensor
    n: int

    def __post_init__(self) -> None:
        mu, sigma = self.mu.to("cpu", torch.float64), self.sigma.to("cpu", torch.float64)
        d = mu.shape[0] if mu.ndim == 1 else -1
        if d < 1 or sigma.shape != (d, d) or self.n < 2:
            raise ValueError(
                f"FeatureStats needs mu (D,), sigma (D, D) and n >= 2; got mu "
                f"{tuple(mu.shape)}, sigma {tuple(sigma.shape)}, n={self.n}"
            )
        object.__setattr__(self, "mu", mu)
        object.__setattr__(self, "sigma", sigma)
        object.__setattr__(self, "n", int(self.n))

    @property
    def dim(self) -> int:
        """Feature width D."""
        return self.mu.shape[0]

    @classmethod
    def from_features(cls, feats: Tensor) -> FeatureStats:
        """Statistics of features (N, D), N >= 2, computed in float64."""
        feats = _as_features(feats, "features")
        if len(feats) < 2:
            raise ValueError(f"a covariance needs at least 2 samples, got {len(feats)}")
        return cls(feats.mean(0), torch.cov(feats.T), len(feats))

    def tensors(self) -> dict[str, Tensor]:
        """The tensors stored on disk."""
        return {"mu": self.mu, "sigma": self.sigma}

    def metadata(self) -> dict[str, str]:
        """The string metadata stored on disk."""
        return {"format": STATS_FORMAT, "n": str(self.n)}

    def save(self, path: str | Path) -> None:
        """Write ``mu``, ``sigma`` and ``n`` to a safetensors file, atomically."""
        save_tensors(path, self.tensors(), self.metadata())

    @classmethod
    def load(cls, path: str | Path) -> FeatureStats:
        """Read a file written by :meth:`save` (or a :func:`reference_stats` cache file)."""
        tensors, metadata = read_tensors(path)
        return stats_from_file(tensors, metadata, Path(path))


def stats_from_file(
    tensors: dict[str, Tensor], metadata: dict[str, str], path: Path
) -> FeatureStats:
    """The statistics in a file's tensors and metadata; raises CheckpointError naming ``path``."""
    if metadata.get("format") != STATS_FORMAT or not {"mu", "sigma"} <= set(tensors):
        raise CheckpointError(
            f"{path} is not a pixdiff feature-stats file (expected format {STATS_FORMAT} "
            f"with tensors mu and sigma)"
        )
    try:
        return FeatureStats(tensors["mu"], tensors["sigma"], int(metadata.get("n", "")))
    except ValueError as err:
        raise CheckpointError(f"{path}: invalid feature statistics ({err})") from None


# ----------------------------------------------------------------------------- Frechet distance


def _sqrt_psd(s: Tensor) -> Tensor:
    """Square root of a symmetric PSD matrix by eigendecomposition, negative eigenvalues -> 0."""
    w, v = torch.linalg.eigh(s)
    return (v * w.clamp(min=0).sqrt()) @ v.T


def _check_fd_count(stats: FeatureStats, which: str) -> None:
    d = stats.dim
    if stats.n < d + 1:
        raise ValueError(
            f"FD needs at least D+1 = {d + 1} samples for a full-rank {d}x{d} covariance, got "
            f"{stats.n} ({which} set); use more samples (10k for reportable numbers)"
        )


def frechet_distance(a: FeatureStats, b: FeatureStats, *, require_full_rank: bool = True) -> float:
    """Frechet distance between the Gaussians fitted to two feature sets (FID-style).

    ``|mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))`` (Dowson & Landau 1982, "The Frechet
    distance between multivariate normal distributions"; used as FID by Heusel et al. 2017).
    ``(S1 S2)^(1/2)`` is similar to ``(S1^(1/2) S2 S1^(1/2))^(1/2)``, which is symmetric PSD,
    so its trace is the sum of the square roots of that matrix's eigenvalues: two ``eigh``
    calls, no complex numbers and no NaN for singular covariances (tiny negative eigenvalues
    from rounding are clamped to 0, and so is the tiny negative result of identical inputs).

    Args:
        a, b: the two sets' statistics.
        require_full_rank: refuse sets of fewer than D + 1 samples. False computes the number
            anyway, as torch-fidelity and torchmetrics do (a parity check on a few images);
            it then mostly measures the missing rank.

    Raises:
        ValueError: the widths differ, or a set has fewer than D + 1 samples.
    """
    if a.dim != b.dim:
        raise ValueError(f"the two statistics have different widths ({a.dim} vs {b.dim})")
    if require_full_rank:
        _check_fd_count(a, "first")
        _check_fd_count(b, "second")
    s1, s2 = (a.sigma + a.sigma.T) / 2, (b.sigma + b.sigma.T) / 2
    r1 = _sqrt_psd(s1)
    m = r1 @ s2 @ r1
    tr_sqrt = torch.linalg.eigvalsh((m + m.T) / 2).clamp(min=0).sqrt().sum()
    fd = (a.mu - b.mu).square().sum() + s1.trace() + s2.trace() - 2 * tr_sqrt
    return max(fd.item(), 0.0)


# ----------------------------------------------------------------------------- KID


def _poly_kernel(x: Tensor, y: Tensor) -> Tensor:
    """Cubic polynomial kernel k(x, y) = (x.y / d + 1)^3 (Binkowski et al. 2018), (M, M')."""
    return (x @ y.T / x.shape[1] + 1) ** 3


def mmd2_unbiased(x: Tensor, y: Tensor) -> Tensor:
    """Unbiased MMD^2 of two equal-size sets (m, D) (Gretton et al. 2012, Eq. 3)."""
    m = len(x)
    kxx, kyy = _poly_kernel(x, x), _poly_kernel(y, y)
    within = (kxx.sum() - kxx.trace() + kyy.sum() - kyy.trace()) / (m * (m - 1))
    return within - 2 * _poly_kernel(x, y).mean()


def kid(
    feats_a: Tensor,
    feats_b: Tensor,
    *,
    subsets: int = 100,
    subset_size: int = 1000,
    generator: torch.Generator | None = None,
) -> tuple[float, float]:
    """Kernel Inception Distance: mean and std of unbiased MMD^2 over random subsets.

    Binkowski et al. 2018, "Demystifying MMD GANs", with their cubic polynomial kernel. Each
    subset draws ``subset_size`` samples without replacement from each set; the std is the
    population std over subsets (as in torch-fidelity), a spread, not a standard error.

    Args:
        feats_a, feats_b: features (N_a, D) and (N_b, D).
        subsets: number of random subsets.
        subset_size: samples per subset and set; clipped to ``min(N_a, N_b)``.
        generator: source of the subsets; default a fresh one seeded 0 (reproducible).

    Returns:
        (mean, std) of MMD^2; the mean can be slightly negative for equal distributions.
    """
    a, b = _as_features(feats_a, "features a"), _as_features(feats_b, "features b")
    _same_width(a, b)
    if min(len(a), len(b)) < 2:
        raise ValueError(
            f"KID needs at least 2 samples per set (the unbiased estimator averages over "
            f"pairs), got {len(a)} and {len(b)}"
        )
    if subsets < 1 or subset_size < 2:
        raise ValueError(f"need subsets >= 1 and subset_size >= 2, got {subsets}, {subset_size}")
    m = min(subset_size, len(a), len(b))
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    values = torch.stack(
        [
            mmd2_unbiased(
                a[torch.randperm(len(a), generator=generator)[:m]],
                b[torch.randperm(len(b), generator=generator)[:m]],
            )
            for _ in range(subsets)
        ]
    )
    return values.mean().item(), values.std(unbiased=False).item()


# ----------------------------------------------------------------------------- Inception Score


def inception_score(logits: Tensor, *, splits: int = 10) -> tuple[float, float]:
    """Inception Score exp(E_x KL(p(y|x) || p(y))): mean and std over ``splits`` chunks.

    Salimans et al. 2016, "Improved Techniques for Training GANs", Sec. 4; p(y) is the mean of
    p(y|x) within each chunk, as in their code. Computed from log-softmax in float64. It ranges
    from 1 (every prediction equal) to K (confident predictions, balanced over the K classes).

    Args:
        logits: (N, K) class logits of the samples, N >= ``splits``. Shuffle samples that
            were generated class by class: each chunk's p(y) must see every class.
        splits: number of contiguous chunks; the std is the population std over them.
    """
    if not isinstance(logits, Tensor) or logits.ndim != 2 or logits.shape[1] < 2:
        got = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(f"logits must be a (N, K) tensor with K >= 2, got {got}")
    if splits < 1 or len(logits) < splits:
        raise ValueError(
            f"the Inception Score needs N >= splits >= 1, got N={len(logits)}, splits={splits}"
        )
    log_p = F.log_softmax(logits.detach().to("cpu", torch.float64), dim=1)
    if torch.isnan(log_p).any():
        raise ValueError("the logits contain NaN or +inf values")
    scores = []
    for chunk in torch.tensor_split(log_p, splits):
        log_py = torch.logsumexp(chunk, dim=0) - math.log(len(chunk))  # (K,) log p(y)
        p = chunk.exp()
        kl = torch.where(p > 0, p * (chunk - log_py), 0.0).sum(1)  # (n,) KL(p(y|x) || p(y))
        scores.append(kl.mean().exp())
    scores = torch.stack(scores)
    return scores.mean().item(), scores.std(unbiased=False).item()


# ----------------------------------------------------------------------------- precision/recall


def knn_radii(x: Tensor, k: int) -> Tensor:
    """Distance (N,) from each row of x (N, D) to its k-th nearest other row, blockwise."""
    return torch.cat(
        [torch.cdist(block, x).kthvalue(k + 1, dim=1).values for block in x.split(_BLOCK_ROWS)]
    )  # k + 1: the nearest "neighbour" at distance 0 is the point itself


def manifold_coverage(points: Tensor, centers: Tensor, radii: Tensor) -> Tensor:
    """Whether each of ``points`` (M, D) lies in some ball (centers (N, D), radii (N,)), (M,)."""
    return torch.cat(
        [(torch.cdist(block, centers) <= radii).any(dim=1) for block in points.split(_BLOCK_ROWS)]
    )


def precision_recall(real_feats: Tensor, fake_feats: Tensor, *, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019, Sec. 3, Eq. 1-2).

    Each set's manifold is the union of balls around its points reaching their k-th nearest
    neighbour. Precision is the fraction of fakes inside the real manifold (fidelity); recall is
    the fraction of reals inside the fake manifold (coverage). Distances are computed in blocks
    of rows, so 10k x 10k sets need ~40 MB at a time.

    Args:
        real_feats: (N_r, D) features of real data.
        fake_feats: (N_f, D) features of samples.
        k: neighbour rank of the ball radii (the paper uses 3); each set needs k + 1 samples.
    """
    real, fake = (
        _as_features(real_feats, "real features"),
        _as_features(fake_feats, "fake features"),
    )
    _same_width(real, fake)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if min(len(real), len(fake)) < k + 1:
        raise ValueError(
            f"precision/recall with k={k} needs at least k+1 = {k + 1} samples per set (the "
            f"k-th nearest neighbour excludes the point itself), got {len(real)} real and "
            f"{len(fake)} fake"
        )
    precision = manifold_coverage(fake, real, knn_radii(real, k)).double().mean()
    recall = manifold_coverage(real, fake, knn_radii(fake, k)).double().mean()
    return precision.item(), recall.item()
