"""Reading clip files as frames: GIF with Pillow, MP4 (and the other containers ffmpeg reads)
with imageio's ffmpeg plugin, an optional dependency (``pip install imageio imageio-ffmpeg``,
or the ``video`` extra).

Every problem is one line naming the file: a missing file, a corrupt one, a missing reader.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from types import ModuleType

from PIL import Image, ImageSequence

from pixdiff.data.folder import MAX_PIXELS, ImageTooLarge, open_image

VIDEO_INSTALL = "pip install imageio imageio-ffmpeg"
VIDEO_EXTENSIONS = (".mp4", ".mov", ".webm", ".mkv", ".avi")
# the GIF comment in which pixdiff records one frame's duration in ms, e.g. b"pixdiff frame_ms=125"
FRAME_MS_COMMENT = b"pixdiff frame_ms="


class VideoBackendMissing(ImportError):
    """imageio or its ffmpeg plugin is not installed; the message says how to install them."""


def import_imageio(purpose: str) -> ModuleType:
    """``imageio.v3`` with its ffmpeg plugin, or VideoBackendMissing: one line saying that
    ``purpose`` ("writing out/0.mp4") needs them and how to install them."""
    try:
        import imageio.v3 as iio
        import imageio_ffmpeg  # noqa: F401  (the ffmpeg binary the plugin runs)
    except ImportError:
        raise VideoBackendMissing(
            f"{purpose} needs imageio and its ffmpeg plugin: `{VIDEO_INSTALL}` installs them "
            "(or `pip install 'pixdiff[video]'`)"
        ) from None
    return iio


def read_gif(path: str | Path, *, max_frames: int | None = None) -> list[Image.Image]:
    """The frames of a GIF, in order, each repeated by its duration over one frame's (encoders,
    Pillow's included, merge identical consecutive frames into one longer frame; this restores
    them). One frame's duration is the shortest one, or what pixdiff's writer records in the
    GIF's comment (:data:`FRAME_MS_COMMENT`), which stays right when every frame was merged.
    Stops after ``max_frames`` frames when given."""
    image = _open(path)
    try:
        recorded = re.fullmatch(FRAME_MS_COMMENT + rb"([0-9.]+)", image.info.get("comment", b""))
        durations = [frame.info.get("duration") or 0 for frame in ImageSequence.Iterator(image)]
        shortest = min((d for d in durations if d > 0), default=0)
        base = float(recorded[1]) if recorded else shortest
        frames: list[Image.Image] = []
        for frame, duration in zip(ImageSequence.Iterator(image), durations, strict=True):
            repeats = max(1, round(duration / base)) if base else 1
            frames += [frame.convert("RGBA")] * repeats
            if max_frames is not None and len(frames) >= max_frames:
                return frames[:max_frames]
        return frames
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise ValueError(f"cannot read GIF {path}: {err} (corrupt or truncated?)") from None
    finally:
        image.close()


def _open(path: str | Path) -> Image.Image:
    """The GIF at ``path``, opened lazily; a one-line error naming it otherwise."""
    try:
        image = Image.open(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"clip {path} does not exist") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"cannot read GIF {path}: {err}") from None
    if image.width * image.height > MAX_PIXELS:
        image.close()
        raise ImageTooLarge(f"GIF {path} is {image.width}x{image.height}: too large to decode")
    return image


def read_mp4(path: str | Path, *, max_frames: int | None = None) -> list[Image.Image]:
    """The frames of a video file (MP4 or any container ffmpeg reads), in order, as RGB.
    Stops after ``max_frames`` frames when given. Needs imageio and imageio-ffmpeg."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"clip {path} does not exist")
    iio = import_imageio(f"reading {path}")
    frames: list[Image.Image] = []
    problem = None
    with warnings.catch_warnings():
        # imageio-ffmpeg leaves the pipes of an ffmpeg that has exited to the collector: let
        # them go here, before the error (whose traceback holds them) is raised
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            with iio.imopen(path, "r", plugin="FFMPEG") as video:
                for array in video.iter():
                    frames.append(Image.fromarray(array).convert("RGB"))
                    if max_frames is not None and len(frames) >= max_frames:
                        break
        except (OSError, RuntimeError, ValueError, IndexError) as err:
            text = str(err).strip()
            problem = text.splitlines()[0] if text else type(err).__name__
    if problem is not None:
        raise ValueError(f"cannot read video {path}: {problem} (corrupt or not a video?)")
    if not frames:
        raise ValueError(f"cannot read video {path}: it holds no frames")
    return frames


def read_frame_folder(folder: Path, files: list[Path]) -> list[Image.Image]:
    """The frame files of one clip folder, decoded; frames of different sizes are an error
    naming both files (a clip's frames must have one size)."""
    frames = [open_image(path) for path in files]
    first = frames[0]
    for path, frame in zip(files, frames, strict=True):
        if frame.size != first.size:
            raise ValueError(
                f"clip folder {folder}: frame {path.name} is {frame.width}x{frame.height} but "
                f"{files[0].name} is {first.width}x{first.height}; a clip's frames must share "
                "one size"
            )
    return frames
