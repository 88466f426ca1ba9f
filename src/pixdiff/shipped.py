"""The models shipped inside the package (src/pixdiff/assets), by name."""

from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).resolve().parent / "assets"

# name -> run directory; each has a README with its training command and scores
SHIPPED_RUNS = {
    "fashion": ASSETS / "fashion_unet",  # Fashion-MNIST 28x28, class-conditional
    # the same, progressively distilled to 2 DDIM steps at guidance 2 (pixdiff distill)
    "fashion-distilled": ASSETS / "fashion_distilled",
    "emoji": ASSETS / "emoji_unet",  # emoji 32x32, text-to-image
    # the same, progressively distilled to 2 DDIM steps at guidance 3 (pixdiff distill)
    "emoji-distilled": ASSETS / "emoji_distilled",
    "emoji-sr": ASSETS / "emoji_sr",  # emoji 32 -> 64 super-resolution
}
# name -> the runs of a cascade, base first
SHIPPED_CASCADES = {"emoji-cascade": ("emoji", "emoji-sr")}


def shipped_run(name: str) -> Path:
    """A shipped run's directory; a FileNotFoundError when it is missing from this install."""
    if name not in SHIPPED_RUNS:
        valid = sorted([*SHIPPED_RUNS, *SHIPPED_CASCADES])
        raise ValueError(f"unknown shipped model {name!r}; valid: {valid}")
    path = SHIPPED_RUNS[name]
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"the shipped model is missing from {path}; pass a run directory")
    return path


def shipped_cascade(name: str = "emoji-cascade") -> list[Path]:
    """The run directories of a shipped cascade, base first."""
    if name not in SHIPPED_CASCADES:
        raise ValueError(f"unknown shipped cascade {name!r}; valid: {sorted(SHIPPED_CASCADES)}")
    return [shipped_run(run) for run in SHIPPED_CASCADES[name]]
