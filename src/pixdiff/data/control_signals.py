"""Spatial control signals computed from images: edges, a soft sketch, a silhouette mask and a
coarse colour layout. Every one is a deterministic function of the image (no randomness, no
learned weights), so a dataset's maps are computed once, offline, and any image set gets them.

Images are uint8 (N, C, H, W), C in {1, 3}; maps are uint8 (N, C', H, W) with the image's size:

- **edges** (1 channel, 0 or 255): the Canny detector (Canny 1986) on the luma (ITU-R 601):
  Gaussian smoothing (sigma = CANNY_SIGMA), Sobel gradients, non-maximum suppression along the
  gradient direction quantised to 0, 45, 90 and 135 degrees, then hysteresis between two
  thresholds on the gradient magnitude (a pixel above CANNY_LOW is an edge when it is
  8-connected to one above CANNY_HIGH).
- **sketch** (1 channel): the edges blurred by a Gaussian (sigma = SKETCH_SIGMA) and scaled by
  sqrt(2 pi) sigma, so the middle of a long straight edge stays at 255: a soft, thick stroke
  like a hand-drawn sketch.
- **mask** (1 channel, 0 or 255): the silhouette. From an alpha channel where there is one
  (the emoji: alpha >= 128); otherwise the pixels whose colour differs from the background by
  more than MASK_THRESHOLD in some channel, the background being the median colour of the
  image's border (black for Fashion-MNIST, white for emoji and most product photos).
- **layout** (the image's channels): the image area-downsampled to ``cells`` x ``cells``
  (each cell the mean of the pixels it covers) and upsampled back by nearest neighbour: the
  coarse colour layout.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

CANNY_SIGMA = 1.0  # the Gaussian's std in pixels (as scikit-image's canny)
# thresholds on |grad L| of the smoothed luma L in [0, 1], Sobel normalised to a derivative per
# pixel (a blurred step of height h peaks at h / (sqrt(2 pi) sigma) = 0.4 h)
CANNY_LOW, CANNY_HIGH = 0.04, 0.08
SKETCH_SIGMA = 1.0
MASK_THRESHOLD = 25  # out of 255: about 10% of the range
LUMA = (0.299, 0.587, 0.114)  # ITU-R 601, as pixdiff.data.convert_channels


def luma(images: Tensor) -> Tensor:
    """uint8 (N, C, H, W) -> float32 (N, 1, H, W) in [0, 1]."""
    x = images.float() / 255
    if x.shape[1] == 1:
        return x
    weights = torch.tensor(LUMA, device=x.device).view(1, 3, 1, 1)
    return (x * weights).sum(1, keepdim=True)


def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of (N, 1, H, W) with radius ceil(3 sigma), edges replicated."""
    radius = math.ceil(3 * sigma)
    taps = torch.arange(-radius, radius + 1, dtype=torch.float32, device=x.device)
    kernel = torch.exp(-(taps**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    x = F.pad(x, (radius, radius, radius, radius), mode="replicate")
    x = F.conv2d(x, kernel.view(1, 1, 1, -1))
    return F.conv2d(x, kernel.view(1, 1, -1, 1))


def sobel(x: Tensor) -> tuple[Tensor, Tensor]:
    """(d/dx, d/dy) of (N, 1, H, W) by the Sobel operator, divided by 8 so that it estimates
    the derivative per pixel; edges replicated."""
    kx = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]], device=x.device) / 8
    x = F.pad(x, (1, 1, 1, 1), mode="replicate")
    return F.conv2d(x, kx.view(1, 1, 3, 3)), F.conv2d(x, kx.t().contiguous().view(1, 1, 3, 3))


def _shifted(x: Tensor, dy: int, dx: int) -> Tensor:
    """x[..., i + dy, j + dx] (zero outside the image)."""
    padded = F.pad(x, (1, 1, 1, 1))
    h, w = x.shape[-2:]
    return padded[..., 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]


def non_maximum_suppression(magnitude: Tensor, gx: Tensor, gy: Tensor) -> Tensor:
    """Canny's thinning: keep a pixel whose magnitude is a maximum along its gradient direction,
    quantised to 0, 45, 90 or 135 degrees; of two equal neighbours the one on the negative side
    wins, so a ridge two pixels wide leaves one. (N, 1, H, W) -> bool."""
    angle = torch.rad2deg(torch.atan2(gy, gx)) % 180  # image rows grow downwards
    sector = torch.round(angle / 45).long() % 4  # 0: horizontal gradient, 2: vertical
    keep = torch.zeros_like(magnitude, dtype=torch.bool)
    for k, (dy, dx) in enumerate(((0, 1), (1, 1), (1, 0), (1, -1))):
        ahead, behind = _shifted(magnitude, dy, dx), _shifted(magnitude, -dy, -dx)
        keep |= (sector == k) & (magnitude >= ahead) & (magnitude > behind)
    return keep


def hysteresis(weak: Tensor, strong: Tensor) -> Tensor:
    """The weak pixels 8-connected to a strong one, through weak ones (Canny 1986): grown from
    the strong pixels one 3x3 dilation at a time, each image until it stops changing.
    bool (N, 1, H, W)."""
    edges = strong & weak
    active = torch.arange(len(edges), device=edges.device)
    while active.numel():
        before = edges[active]
        grown = weak[active] & (F.max_pool2d(before.float(), 3, stride=1, padding=1) > 0)
        edges[active] = grown
        active = active[(grown != before).flatten(1).any(dim=1)]
    return edges


def canny(images: Tensor, *, low: float = CANNY_LOW, high: float = CANNY_HIGH) -> Tensor:
    """The Canny edges (Canny 1986) of uint8 (N, C, H, W) images: bool (N, 1, H, W)."""
    smooth = gaussian_blur(luma(images), CANNY_SIGMA)
    gx, gy = sobel(smooth)
    magnitude = torch.hypot(gx, gy)
    thin = non_maximum_suppression(magnitude, gx, gy)
    return hysteresis(thin & (magnitude >= low), magnitude >= high)


def edges(images: Tensor) -> Tensor:
    """Canny edge map, uint8 (N, 1, H, W) in {0, 255}."""
    return canny(images).to(torch.uint8) * 255


def sketch(images: Tensor) -> Tensor:
    """The edges as soft strokes: blurred (sigma = SKETCH_SIGMA), scaled by sqrt(2 pi) sigma so
    a straight edge keeps 255 in its middle, clipped; uint8 (N, 1, H, W)."""
    blurred = gaussian_blur(canny(images).float(), SKETCH_SIGMA)
    scaled = blurred * math.sqrt(2 * math.pi) * SKETCH_SIGMA
    return (scaled.clamp(0, 1) * 255).round().to(torch.uint8)


def mask(images: Tensor, alpha: Tensor | None = None) -> Tensor:
    """The silhouette, uint8 (N, 1, H, W) in {0, 255}: ``alpha`` (N, 1, H, W) uint8 >= 128 where
    given, else the pixels more than MASK_THRESHOLD from the median colour of the border."""
    if alpha is not None:
        return (alpha >= 128).to(torch.uint8) * 255
    x = images.float()
    border = torch.cat(
        [x[..., 0, :], x[..., -1, :], x[..., 1:-1, 0], x[..., 1:-1, -1]], dim=-1
    )  # (N, C, border pixels)
    background = border.median(dim=-1).values[..., None, None]  # (N, C, 1, 1)
    far = (x - background).abs().amax(dim=1, keepdim=True) > MASK_THRESHOLD
    return far.to(torch.uint8) * 255


def layout(images: Tensor, cells: int = 8) -> Tensor:
    """The coarse colour layout: area-downsampled to cells x cells, upsampled back by nearest
    neighbour; uint8 like ``images``."""
    coarse = F.adaptive_avg_pool2d(images.float(), cells)
    up = F.interpolate(coarse, size=images.shape[-2:], mode="nearest")
    return up.round().clamp(0, 255).to(torch.uint8)
