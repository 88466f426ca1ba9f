"""Feature extractors for sample-quality metrics (FD, KID, precision/recall, IS-style scores).

A :class:`FeatureExtractor` maps images (N, C, H, W) in model space [-1, 1] to features
(N, D) float64 and, when it has a classification head, to logits (N, K). Three come built in,
all loaded from local files (nothing is ever downloaded):

- ``"fashion-classifier"`` (the default): the shipped Fashion-MNIST CNN of
  :mod:`pixdiff.eval.classifier`, 128-d penultimate features and 10 logits, 92.2 % test
  accuracy (``pixdiff/assets/fashion_classifier/README.md``). It plays the role Inception-v3
  plays for ImageNet-like data (Heusel et al. 2017), so its numbers only compare with numbers
  made with the same weights.
- a directory written by :func:`pixdiff.eval.save_classifier` (``model.safetensors`` +
  ``config.json``): the same architecture with the user's weights.
- a TorchScript file (``torch.jit.save``): its output, flattened to (N, D), is the feature
  vector; it has no logits. Its input shape comes from the ``input_shape`` argument, else from
  an ``input_shape`` attribute of the scripted module; pixdiff does not guess it, because a
  network with adaptive pooling accepts many shapes and a wrong guess gives silently wrong
  numbers. TorchScript files can hold code, so load only files you trust.

Every extractor is probed once with a dummy batch of zeros in its input shape: that checks the
shape and records the feature width (and class count).
"""

from __future__ import annotations

import hashlib
import math
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from pixdiff.data import to_model_space
from pixdiff.eval.classifier import (
    DEFAULT_DIR,
    WEIGHTS_NAME,
    FashionClassifier,
    load_classifier,
)

DEFAULT_EXTRACTOR = "fashion-classifier"
# Samples must be clamped to [-1, 1]; the slack only absorbs float rounding of a conversion.
RANGE_TOLERANCE = 1e-3

# images (N, C, H, W) float32 in [-1, 1] -> (features (N, D), logits (N, K) or None)
Forward = Callable[[Tensor], tuple[Tensor, Tensor | None]]


class FeatureExtractor:
    """A network seen as ``images -> (features, logits)``, evaluated in batches without grad.

    Args:
        forward: maps a float32 batch (B, C, H, W) in [-1, 1] on ``device`` to features (B, D)
            and logits (B, K) or None. It must not depend on the batch composition (eval-mode
            BatchNorm), so that results do not depend on ``batch_size``.
        name: short name, used in cache keys and reports.
        input_shape: (C, H, W) the network accepts.
        fingerprint: identifies the weights (e.g. a file hash), so caches never mix them.
        batch_size: images per forward pass.
        device: where ``forward`` runs; results come back on the CPU.
    """

    def __init__(
        self,
        forward: Forward,
        *,
        name: str,
        input_shape: tuple[int, int, int],
        fingerprint: str = "",
        batch_size: int = 256,
        device: torch.device | str = "cpu",
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if len(input_shape) != 3 or min(input_shape) < 1:
            raise ValueError(f"input_shape must be 3 positive ints (C, H, W), got {input_shape}")
        self._forward = forward
        self.name = name
        self.input_shape = tuple(int(s) for s in input_shape)
        self.fingerprint = fingerprint
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.feature_dim, self.num_classes = self._probe()

    def __repr__(self) -> str:
        return (
            f"FeatureExtractor(name={self.name!r}, input_shape={self.input_shape}, "
            f"feature_dim={self.feature_dim}, num_classes={self.num_classes})"
        )

    @torch.no_grad()
    def _probe(self) -> tuple[int, int | None]:
        """Run a dummy batch of zeros; returns (feature width D, class count K or None)."""
        dummy = torch.zeros(2, *self.input_shape, device=self.device)
        try:
            feats, logits = self._forward(dummy)
        except RuntimeError as err:
            first_line = str(err).strip().splitlines()[0] if str(err).strip() else ""
            raise ValueError(
                f"feature extractor {self.name!r} fails on a dummy batch of shape "
                f"{tuple(dummy.shape)} ({first_line}); is input_shape={self.input_shape} right?"
            ) from None
        _check_output(feats, 2, f"{self.name!r} features")
        if logits is not None:
            _check_output(logits, 2, f"{self.name!r} logits")
        return feats.shape[1], None if logits is None else logits.shape[1]

    def check_images(self, images: Tensor) -> None:
        """Raise a ValueError unless ``images`` is (N, *input_shape) in [-1, 1] (or uint8)."""
        check_model_space(images, self.input_shape, who=f"feature extractor {self.name!r}")

    @torch.no_grad()
    def embed(self, images: Tensor) -> tuple[Tensor, Tensor | None]:
        """Features (N, D) and logits (N, K) or None, float64 on the CPU, in one pass.

        Args:
            images: (N, C, H, W) float in [-1, 1], or uint8 in [0, 255] (converted here).
        """
        self.check_images(images)
        feats, logits = [], []
        for start in range(0, len(images), self.batch_size):
            x = images[start : start + self.batch_size].to(self.device)
            x = to_model_space(x) if x.dtype == torch.uint8 else x.float()
            f, g = self._forward(x)
            feats.append(f.reshape(len(x), -1).double().cpu())
            if g is not None:
                logits.append(g.double().cpu())
        f = torch.cat(feats) if feats else torch.empty(0, self.feature_dim, dtype=torch.float64)
        if self.num_classes is None:
            return f, None
        g = torch.cat(logits) if logits else torch.empty(0, self.num_classes, dtype=torch.float64)
        return f, g

    def features(self, images: Tensor) -> Tensor:
        """Features (N, D) float64 of images (N, C, H, W) in [-1, 1] (or uint8)."""
        return self.embed(images)[0]

    def logits(self, images: Tensor) -> Tensor | None:
        """Class logits (N, K) float64, or None when the extractor has no classifier head."""
        if self.num_classes is None:
            return None
        return self.embed(images)[1]


def _check_output(out: object, n: int, what: str) -> None:
    """Raise a ValueError unless ``out`` is a tensor with ``n`` rows."""
    if not isinstance(out, Tensor) or out.ndim < 2 or len(out) != n:
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"{what}: expected a tensor of shape ({n}, D), got {got}")


def check_model_space(
    images: Tensor, input_shape: tuple[int, int, int], *, who: str = "the feature extractor"
) -> None:
    """Raise a one-line ValueError unless ``images`` fit ``input_shape`` and lie in [-1, 1].

    uint8 images (any values) pass the range check: they are [0, 255] by construction.

    Args:
        images: (N, C, H, W) float in [-1, 1] (up to ``RANGE_TOLERANCE``), or uint8.
        input_shape: the expected (C, H, W).
        who: names the consumer in the messages.
    """
    if not isinstance(images, Tensor):
        raise ValueError(f"{who} expects a torch.Tensor of images, got {type(images).__name__}")
    if images.ndim != 4 or tuple(images.shape[1:]) != tuple(input_shape):
        raise ValueError(
            f"{who} expects images of shape (N, {', '.join(map(str, input_shape))}), got "
            f"{tuple(images.shape)}; convert the channels and resize first"
        )
    if images.dtype == torch.uint8 or images.numel() == 0:
        return
    if not images.is_floating_point():
        raise ValueError(f"{who} expects float images in [-1, 1] or uint8, got {images.dtype}")
    low, high = (v.item() for v in torch.aminmax(images.detach()))
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"{who}: the images contain NaN or infinite values")
    if low < -1 - RANGE_TOLERANCE or high > 1 + RANGE_TOLERANCE:
        raise ValueError(
            f"{who}: images must be in [-1, 1] (model space), but their values span "
            f"[{low:.4g}, {high:.4g}]; clamp samples with x.clamp(-1, 1), map [0, 255] images "
            f"with pixdiff.data.to_model_space and [0, 1] images with x * 2 - 1"
        )


# ----------------------------------------------------------------------------- built-ins


def file_fingerprint(path: Path) -> str:
    """First 16 hex digits of the SHA-256 of a file: identifies weights in cache keys."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def classifier_extractor(
    model: FashionClassifier,
    *,
    name: str = DEFAULT_EXTRACTOR,
    fingerprint: str = "",
    batch_size: int = 256,
) -> FeatureExtractor:
    """A :class:`FashionClassifier` as an extractor: its penultimate features and logits."""
    model.eval()

    def forward(x: Tensor) -> tuple[Tensor, Tensor]:
        feats = model.features(x)
        return feats, model.head(feats)

    device = next(model.parameters()).device
    return FeatureExtractor(
        forward, name=name, input_shape=model.input_shape, fingerprint=fingerprint,
        batch_size=batch_size, device=device,
    )  # fmt: skip


def torchscript_extractor(
    path: str | Path,
    *,
    input_shape: tuple[int, int, int] | None = None,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
) -> FeatureExtractor:
    """A TorchScript module whose output, flattened to (N, D), is the feature vector.

    Args:
        path: a file written by ``torch.jit.save``; loaded to the CPU, then moved to ``device``.
        input_shape: (C, H, W) it accepts; default the module's ``input_shape`` attribute.
        batch_size: images per forward pass.
        device: where it runs.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"feature extractor file {path} does not exist")
    try:
        with warnings.catch_warnings():  # torch >= 2.10 deprecates TorchScript; still supported
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(str(path), map_location="cpu")
    except (RuntimeError, ValueError):
        raise ValueError(
            f"{path} is not a TorchScript file: expected a module saved with torch.jit.save "
            f"(state dicts and other pickles are not loaded)"
        ) from None
    module = module.to(device).eval()
    shape = input_shape if input_shape is not None else getattr(module, "input_shape", None)
    if shape is None:
        raise ValueError(
            f"{path}: give the (C, H, W) input shape the TorchScript model expects "
            f"(input_shape=...), or store it on the module as an `input_shape` attribute"
        )

    def forward(x: Tensor) -> tuple[Tensor, None]:
        out = module(x)
        _check_output(out, len(x), f"TorchScript model {path.name}")
        return out.reshape(len(x), -1), None

    return FeatureExtractor(
        forward, name=f"torchscript-{path.stem}", input_shape=tuple(shape),
        fingerprint=file_fingerprint(path), batch_size=batch_size, device=device,
    )  # fmt: skip


def load_extractor(
    spec: str = DEFAULT_EXTRACTOR,
    *,
    input_shape: tuple[int, int, int] | None = None,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
) -> FeatureExtractor:
    """Resolve ``spec``: ``"fashion-classifier"``, a classifier directory or a TorchScript file.

    Args:
        spec: the built-in name, a folder written by :func:`pixdiff.eval.save_classifier`, or a
            TorchScript file. Local paths only: nothing is downloaded.
        input_shape: (C, H, W) of a TorchScript model (see :func:`torchscript_extractor`).
        batch_size: images per forward pass.
        device: where the network runs.

    Raises:
        FileNotFoundError: ``spec`` is neither the built-in name nor an existing path.
        ValueError: the file is not in the expected format (the message says which).
    """
    path = Path(spec).expanduser()
    if spec == DEFAULT_EXTRACTOR or path.is_dir():
        folder = DEFAULT_DIR if spec == DEFAULT_EXTRACTOR else path
        model = load_classifier(folder, device=device)
        if input_shape is not None and tuple(input_shape) != model.input_shape:
            raise ValueError(f"{spec}: the classifier takes {model.input_shape}, not {input_shape}")
        name = DEFAULT_EXTRACTOR if spec == DEFAULT_EXTRACTOR else f"classifier-{path.name}"
        return classifier_extractor(
            model, name=name, fingerprint=file_fingerprint(folder / WEIGHTS_NAME),
            batch_size=batch_size,
        )  # fmt: skip
    if path.is_file():
        return torchscript_extractor(
            path, input_shape=input_shape, batch_size=batch_size, device=device
        )
    raise FileNotFoundError(
        f"unknown feature extractor {spec!r}: it is neither {DEFAULT_EXTRACTOR!r} nor an "
        f"existing classifier folder or TorchScript file ({path.resolve()})"
    )
