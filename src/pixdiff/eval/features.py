"""Feature extractors for sample-quality metrics (FD, KID, precision/recall, IS-style scores).

A :class:`FeatureExtractor` maps images (N, C, H, W) in model space [-1, 1] to features
(N, D) float64 and, when it has a classification head, to logits (N, K). Four come built in,
all loaded from local files (nothing is ever downloaded):

- ``"fashion-classifier"`` (the default): the shipped Fashion-MNIST CNN of
  :mod:`pixdiff.eval.classifier`, 128-d penultimate features and 10 logits, 92.2 % test
  accuracy (``pixdiff/assets/fashion_classifier/README.md``). It plays the role Inception-v3
  plays for ImageNet-like data (Heusel et al. 2017), so its numbers only compare with numbers
  made with the same weights: they are not FIDs.
- ``"inception"``: the standard FID network (:mod:`pixdiff.eval.inception`), pool3 2048-d
  features, from a weights file the user has (``weights=`` or ``PIXDIFF_INCEPTION_WEIGHTS``).
  Images are quantized to uint8 as a saved PNG would be, grey repeated to RGB, resized to
  299 x 299 with TensorFlow 1.x's bilinear: torch-fidelity's preprocessing, so its FIDs
  compare with published ones.
- a directory written by :func:`pixdiff.eval.save_classifier` (``model.safetensors`` +
  ``config.json``): the same architecture with the user's weights.
- a TorchScript file (``torch.jit.save``): its output, flattened to (N, D), is the feature
  vector; it has no logits. Its input shape comes from the ``input_shape`` argument, else from
  an ``input_shape`` attribute of the scripted module; pixdiff does not guess it, because a
  network with adaptive pooling accepts many shapes and a wrong guess gives silently wrong
  numbers. TorchScript files can hold code, so load only files you trust.

Every extractor takes images of any size: its ``prepare`` step converts their channels and
resizes them to its input shape (:mod:`pixdiff.eval.resize`; antialiased bilinear unless the
extractor says otherwise), and leaves images of that shape untouched. Each is probed once with
a dummy batch of zeros in its input shape: that checks the network and records the feature
width (and class count).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from pixdiff.data import from_model_space, to_model_space
from pixdiff.eval.classifier import (
    DEFAULT_DIR,
    WEIGHTS_NAME,
    FashionClassifier,
    load_classifier,
)
from pixdiff.eval.inception import INPUT_SIZE, WEIGHTS_ENV, load_inception
from pixdiff.eval.resize import channel_problem, fit_images
from pixdiff.files import file_sha256

DEFAULT_EXTRACTOR = "fashion-classifier"
# Samples must be clamped to [-1, 1]; the slack only absorbs float rounding of a conversion.
RANGE_TOLERANCE = 1e-3

# images (N, C, H, W) float32 in [-1, 1] -> (features (N, D), logits (N, K) or None)
Forward = Callable[[Tensor], tuple[Tensor, Tensor | None]]
# images (N, C, H, W) float32 in [-1, 1], any C and size -> the network's input (N, *input_shape)
Prepare = Callable[[Tensor], Tensor]


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
        prepare: brings images of any channel count (that converts) and size to
            ``input_shape``; default :func:`pixdiff.eval.resize.fit_images` (bilinear).
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
        prepare: Prepare | None = None,
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
        self._prepare = prepare or self._fit
        self.feature_dim, self.num_classes = self._probe()

    def __repr__(self) -> str:
        return (
            f"FeatureExtractor(name={self.name!r}, input_shape={self.input_shape}, "
            f"feature_dim={self.feature_dim}, num_classes={self.num_classes})"
        )

    def _fit(self, x: Tensor) -> Tensor:
        return fit_images(x, self.input_shape, who=f"feature extractor {self.name!r}")

    @torch.no_grad()
    def _probe(self) -> tuple[int, int | None]:
        """Run a dummy batch of zeros; returns (feature width D, class count K or None)."""
        dummy = torch.zeros(2, *self.input_shape, device=self.device)
        try:
            feats, logits = self._forward(self._prepare(dummy))
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
        """Raise a ValueError unless ``images`` is (N, C, H, W) in [-1, 1] (or uint8) with C
        convertible to the extractor's channels (any H, W: they are resized)."""
        who = f"feature extractor {self.name!r}"
        check_model_space(images, None, who=who)
        problem = channel_problem(images.shape[1], self.input_shape[0])
        if problem is not None:
            raise ValueError(
                f"{who} takes images shaped (N, {', '.join(map(str, self.input_shape))}), got "
                f"{tuple(images.shape)}: {problem}"
            )

    def check_convertible(self, image_shape: tuple[int, ...], *, who: str, fix: str) -> None:
        """Raise one line (``who`` takes ..., the model makes ...; ``fix``) unless a model's
        images shaped ``image_shape`` (C, H, W) can be fed to this extractor: any size can,
        channels as :func:`pixdiff.eval.resize.channel_problem` says."""
        problem = channel_problem(int(image_shape[0]), self.input_shape[0])
        if problem is not None:
            raise ValueError(
                f"{who} takes images shaped {self.input_shape}, the model makes "
                f"{tuple(image_shape)}: {problem}; {fix}"
            )

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
            f, g = self._forward(self._prepare(x))
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
    images: Tensor, input_shape: tuple[int, int, int] | None, *, who: str = "the feature extractor"
) -> None:
    """Raise a one-line ValueError unless ``images`` fit ``input_shape`` and lie in [-1, 1].

    uint8 images (any values) pass the range check: they are [0, 255] by construction.

    Args:
        images: (N, C, H, W) float in [-1, 1] (up to ``RANGE_TOLERANCE``), or uint8.
        input_shape: the expected (C, H, W); None: any 4-D shape.
        who: names the consumer in the messages.
    """
    if not isinstance(images, Tensor):
        raise ValueError(f"{who} expects a torch.Tensor of images, got {type(images).__name__}")
    if images.ndim != 4 and input_shape is None:
        raise ValueError(f"{who} expects images shaped (N, C, H, W), got {tuple(images.shape)}")
    wrong_shape = images.ndim != 4 or tuple(images.shape[1:]) != tuple(input_shape or ())
    if input_shape is not None and wrong_shape:
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
    return file_sha256(path)[:16]


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


def inception_extractor(
    weights: str | Path, *, batch_size: int = 256, device: torch.device | str = "cpu"
) -> FeatureExtractor:
    """The standard FID extractor: Inception-v3 pool3 features (N, 2048), no logits.

    Preprocessing as torch-fidelity (and the original TF code of Heusel et al. 2017): images
    quantized to uint8 (:func:`pixdiff.data.from_model_space`, as a saved PNG), grey repeated
    to RGB, resized to 299 x 299 by TensorFlow 1.x's bilinear, normalised by the network.

    Args:
        weights: the released ``.pth`` state dict or its safetensors conversion
            (:mod:`pixdiff.eval.inception`).
        batch_size: images per forward pass.
        device: where the network runs.
    """
    net = load_inception(weights, device=device)
    shape = (3, INPUT_SIZE, INPUT_SIZE)

    def prepare(x: Tensor) -> Tensor:  # (N, C, H, W) in [-1, 1] -> (N, 3, 299, 299) in [0, 255]
        pixels = from_model_space(x).float()
        return fit_images(pixels, shape, mode="tf1-bilinear", who="feature extractor 'inception'")

    return FeatureExtractor(
        lambda x: (net(x), None), name="inception", input_shape=shape, prepare=prepare,
        fingerprint=file_fingerprint(Path(weights).expanduser()), batch_size=batch_size,
        device=device,
    )  # fmt: skip


def load_extractor(
    spec: str = DEFAULT_EXTRACTOR,
    *,
    weights: str | Path | None = None,
    input_shape: tuple[int, int, int] | None = None,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
) -> FeatureExtractor:
    """Resolve ``spec``: ``"fashion-classifier"``, ``"inception"``, a classifier directory or a
    TorchScript file.

    Args:
        spec: a built-in name, a folder written by :func:`pixdiff.eval.save_classifier`, or a
            TorchScript file. Local paths only: nothing is downloaded.
        weights: the weights file of ``"inception"``; default the environment variable
            ``PIXDIFF_INCEPTION_WEIGHTS``. Refused for the other extractors.
        input_shape: (C, H, W) of a TorchScript model (see :func:`torchscript_extractor`).
        batch_size: images per forward pass.
        device: where the network runs.

    Raises:
        FileNotFoundError: ``spec`` is neither a built-in name nor an existing path.
        ValueError: the file is not in the expected format (the message says which).
    """
    if spec == "inception":
        weights = weights or os.environ.get(WEIGHTS_ENV)
        if not weights:
            raise ValueError(
                f"extractor 'inception' needs its weights file: pass --weights FILE (or set "
                f"{WEIGHTS_ENV}); see docs/concepts.md, 'Standard FID', for where to get it"
            )
        return inception_extractor(weights, batch_size=batch_size, device=device)
    if weights is not None:
        raise ValueError(f"weights are given only to the 'inception' extractor, not to {spec!r}")
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
        f"unknown feature extractor {spec!r}: it is neither {DEFAULT_EXTRACTOR!r}, 'inception' "
        f"nor an existing classifier folder or TorchScript file ({path.resolve()})"
    )
