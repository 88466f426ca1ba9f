"""The FID Inception-v3: pool3 (2048-d) features of the TensorFlow graph of 2015-12-05.

Inception-v3 is Szegedy et al. 2016, "Rethinking the Inception Architecture for Computer
Vision"; FID (Heusel et al. 2017, "GANs Trained by a Two Time-Scale Update Rule Converge to a
Local Nash Equilibrium") is the Frechet distance of its pool3 features, as computed by their
TensorFlow code on the graph ``inception-2015-12-05``. pytorch-fid and torch-fidelity port that
graph to PyTorch (Apache-2.0); this module follows their blocks (pytorch-fid's
``FIDInceptionA/C/E``), which differ from torchvision's ``Inception3`` in three places: the
average pools leave the padding out of the mean, the last block pools with a max, and the
classifier has 1008 classes. Its parameter names are those of the released weight files, so
their state dicts load unchanged. torch-fidelity cannot be used directly here because it
imports torchvision, which pixdiff does without.

The weights are not shipped and never downloaded: the user fetches the file once (on any
machine) and gives its path (``pixdiff eval --extractor inception --weights FILE``, or the
environment variable ``PIXDIFF_INCEPTION_WEIGHTS``). Both releases below are a PyTorch state
dict of tensors, read with ``torch.load(weights_only=True)`` (no code runs), or converted once
to safetensors with ``pixdiff convert-inception FILE --out inception.safetensors``.
"""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pixdiff.checkpoint import read_tensors, save_tensors
from pixdiff.files import file_sha256

WEIGHTS_ENV = "PIXDIFF_INCEPTION_WEIGHTS"
# torch-fidelity's release file (95,628,359 bytes), also published by pytorch-fid as
# pt_inception-2015-12-05-6726825d.pth: the hex in both names is the start of this hash.
WEIGHTS_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
WEIGHTS_URLS = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
    "weights-inception-2015-12-05-6726825d.pth",
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
    "pt_inception-2015-12-05-6726825d.pth",
)
WEIGHTS_FORMAT = "pixdiff.fid-inception-v3/1"
INPUT_SIZE = 299
FEATURE_DIM = 2048


class BasicConv2d(nn.Module):
    """Convolution without bias, BatchNorm (eps 1e-3, as TF) and ReLU."""

    def __init__(self, c_in: int, c_out: int, **conv) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, bias=False, **conv)
        self.bn = nn.BatchNorm2d(c_out, eps=0.001)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg_pool_tf(x: Tensor) -> Tensor:
    """3x3 average pool, stride 1, whose mean leaves the zero padding out (as TF)."""
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    """35x35 block (Szegedy et al. 2016, Fig. 5): 1x1, 5x5, double 3x3 and pool branches."""

    def __init__(self, c_in: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(c_in, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(c_in, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(c_in, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(c_in, pool_features, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        pool = self.branch_pool(_avg_pool_tf(x))
        return torch.cat([self.branch1x1(x), b5, b3, pool], 1)


class InceptionB(nn.Module):
    """35 -> 17 grid reduction (Szegedy et al. 2016, Fig. 10)."""

    def __init__(self, c_in: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(c_in, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(c_in, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        pool = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([self.branch3x3(x), b3, pool], 1)


class InceptionC(nn.Module):
    """17x17 block with factorized 7x7 convolutions (Szegedy et al. 2016, Fig. 6)."""

    def __init__(self, c_in: int, channels_7x7: int) -> None:
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(c_in, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(c_in, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(c_in, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(c_in, 192, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        b7d = self.branch7x7dbl_1(x)
        for conv in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4):
            b7d = conv(b7d)
        b7d = self.branch7x7dbl_5(b7d)
        pool = self.branch_pool(_avg_pool_tf(x))
        return torch.cat([self.branch1x1(x), b7, b7d, pool], 1)


class InceptionD(nn.Module):
    """17 -> 8 grid reduction."""

    def __init__(self, c_in: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(c_in, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(c_in, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_1(x)
        for conv in (self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            b7 = conv(b7)
        return torch.cat([b3, b7, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionE(nn.Module):
    """8x8 block with expanded filter banks (Szegedy et al. 2016, Fig. 7).

    Args:
        pool: "avg" (Mixed_7b) or "max": the TF graph's last block (Mixed_7c) max-pools, unlike
            the paper; the FID weights were trained with that.
    """

    def __init__(self, c_in: int, *, pool: str) -> None:
        super().__init__()
        self.pool = pool
        self.branch1x1 = BasicConv2d(c_in, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(c_in, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(c_in, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(c_in, 192, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        b3d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        b3d = torch.cat([self.branch3x3dbl_3a(b3d), self.branch3x3dbl_3b(b3d)], 1)
        if self.pool == "max":
            pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        else:
            pooled = _avg_pool_tf(x)
        return torch.cat([self.branch1x1(x), b3, b3d, self.branch_pool(pooled)], 1)


class FIDInceptionV3(nn.Module):
    """The FID Inception-v3 to pool3: (N, 3, 299, 299) -> (N, 2048) features.

    Its input is pixel values in [0, 255] (float), resized to 299 x 299 beforehand (see
    :mod:`pixdiff.eval.resize`); it normalises them as the graph does, ``(x - 128) / 128``.
    ``fc`` (1008 ImageNet logits) is kept so the released state dicts load strictly.
    """

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, pool="avg")
        self.Mixed_7c = InceptionE(2048, pool="max")
        self.fc = nn.Linear(FEATURE_DIM, 1008)

    def forward(self, x: Tensor) -> Tensor:
        x = (x - 128) / 128  # the graph's Sub/Mul on [0, 255] pixels
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))  # (N, 64, 147, 147)
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))  # (N, 192, 71, 71)
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # (N, 192, 35, 35)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b,
                      self.Mixed_6c, self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b,
                      self.Mixed_7c):  # fmt: skip
            x = block(x)  # ends (N, 2048, 8, 8)
        return x.mean(dim=(2, 3))  # pool3, (N, 2048)


# ----------------------------------------------------------------------------- weights files


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    """The tensors of a safetensors file or of a PyTorch state dict (``weights_only``)."""
    if path.suffix == ".safetensors":
        tensors, metadata = read_tensors(path)  # CheckpointError (a ValueError) names the file
        if metadata.get("format") not in (None, WEIGHTS_FORMAT):
            raise ValueError(f"{path} is a {metadata['format']} file, not Inception weights")
        return tensors
    try:
        with warnings.catch_warnings():  # e.g. "pickle protocol 4": the error below says it
            warnings.simplefilter("ignore", UserWarning)
            state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError):
        raise ValueError(  # torch's own message suggests weights_only=False: not an option
            f"{path} is not a PyTorch state dict of tensors: not a torch.save file, or it "
            f"holds other objects (read with weights_only=True, so no code runs)"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict of tensors")
    return dict(state)


def inception_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read and check FID Inception-v3 weights (``.pth`` state dict or ``.safetensors``).

    Raises:
        FileNotFoundError: no file at ``path`` (the message says where to get it).
        IsADirectoryError: ``path`` is a folder.
        ValueError: one line naming the file: not a state dict, or keys/shapes that do not fit.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory, not an Inception weights file")
    if not path.is_file():
        raise FileNotFoundError(
            f"Inception weights file {path} does not exist; download it on a machine with "
            f"internet from {WEIGHTS_URLS[0]} (see docs/concepts.md, 'Standard FID')"
        )
    state = _read_state_dict(path)
    with torch.device("meta"):  # names, shapes and dtypes only: no 24M-parameter init
        expected = FIDInceptionV3().state_dict()
    for key in expected:  # files saved before BatchNorm counted its batches
        if key.endswith("num_batches_tracked"):
            state.setdefault(key, torch.zeros((), dtype=torch.long))
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        parts = [f"{len(keys)} {what} (e.g. {keys[0]})" for what, keys in
                 (("missing keys", missing), ("unexpected keys", unexpected),
                  ("tensors of the wrong shape", wrong)) if keys]  # fmt: skip
        raise ValueError(f"{path} does not hold FID Inception-v3 weights: {', '.join(parts)}")
    return {k: state[k].to(expected[k].dtype) for k in expected}


def load_inception(path: str | Path, *, device: torch.device | str = "cpu") -> FIDInceptionV3:
    """The FID Inception-v3 with the weights in ``path``, in eval mode, without gradients."""
    state = inception_state_dict(path)
    with torch.device("meta"):
        net = FIDInceptionV3()
    net.load_state_dict(state, assign=True)  # the file's tensors become the parameters
    return net.to(device).eval().requires_grad_(False)


def convert_inception_weights(source: str | Path, out: str | Path) -> str:
    """Check the weights in ``source`` and write them to the safetensors file ``out``.

    Returns:
        The SHA-256 of ``source``, also stored in ``out``'s metadata; it equals
        ``WEIGHTS_SHA256`` for the released file, whose FIDs compare with published ones.
    """
    state = inception_state_dict(source)
    digest = file_sha256(Path(source).expanduser())
    save_tensors(out, state, {"format": WEIGHTS_FORMAT, "source_sha256": digest})
    return digest
