"""Reading image files: one checked entry point for sizes, one documented pixel format.

`load_image(path)` returns **float32 numpy array, shape (3, H, W), values in [0, 1], RGB
channel order**, whatever the file holds:

- EXIF orientation is applied first (a phone photo tagged "rotate 90" comes out upright), so
  (H, W) and every box coordinate refer to the image as it is displayed;
- grayscale (PIL "L", "1", "LA") is copied into all three channels (HIT-UAV is "L");
- 16-bit and 32-bit integer images (PIL "I;16", "I;16B", "I") are divided by 65535, the full
  range of a 16-bit sensor, *not* stretched per image, so intensities stay comparable
  between images; values outside [0, 65535] are clipped. Float images ("F") are taken as
  [0, 1] when their maximum is <= 1, else treated like 16-bit;
- palette ("P"), RGBA, CMYK, YCbCr and the rest are converted to RGB by Pillow; alpha is
  dropped (not composited).

`image_info(path)` returns (width, height, channels) after EXIF orientation, where channels is
1 for grayscale content and 3 for colour (alpha not counted), and by default decodes the whole
file so a truncated JPEG is caught at import time, not in the middle of training.

Every failure raises `ImageError`, whose message names the file and what to do.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Aerial images (DOTA) reach 20000 x 20000 px; Pillow's default bomb guard (~179 Mpx) would
# refuse them. 1 Gpx still stops a corrupt header from allocating absurd memory.
Image.MAX_IMAGE_PIXELS = max(Image.MAX_IMAGE_PIXELS or 0, 1_000_000_000)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp")
GRAYSCALE_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
_EXIF_ORIENTATION = 0x0112
_EXIF_DATETIME_ORIGINAL = 0x9003
_EXIF_DATETIME = 0x0132
_EXIF_IFD = 0x8769


class ImageError(ValueError):
    """An image file that cannot be used; the message names the file and the fix."""

    def __init__(self, path: str | os.PathLike, reason: str, fix: str):
        self.path, self.reason, self.fix = str(path), reason, fix
        super().__init__(f"{path}: {reason}; {fix}")


@dataclass(frozen=True)
class ImageInfo:
    width: int
    height: int
    channels: int               # 1 grayscale, 3 colour (alpha not counted)
    mode: str                   # Pillow mode of the file, e.g. "L", "I;16", "RGB"
    capture_time: str | None    # ISO 8601 from EXIF DateTimeOriginal, when the file has it


def inspect_image(path: str | os.PathLike, decode: bool = True) -> ImageInfo:
    """Size, channels and capture time of an image file.

    decode=True decodes every pixel (a truncated or corrupt file raises ImageError);
    decode=False reads the header only (about 50x faster, catches missing and non-image
    files but not truncation).
    """
    path = Path(path)
    with _open(path) as im:
        if decode:
            _decode(im, path)
        width, height = im.size
        exif = im.getexif()
        if exif.get(_EXIF_ORIENTATION, 1) in (5, 6, 7, 8):  # rotated by 90 degrees
            width, height = height, width
        channels = 1 if im.mode in GRAYSCALE_MODES else 3
        return ImageInfo(width, height, channels, im.mode, _capture_time(exif))


def image_info(path: str | os.PathLike, decode: bool = True) -> tuple[int, int, int]:
    """(width, height, channels) as displayed (EXIF orientation applied); see inspect_image."""
    info = inspect_image(path, decode)
    return info.width, info.height, info.channels


def load_image(path: str | os.PathLike) -> np.ndarray:
    """The image as float32 (3, H, W) in [0, 1], RGB; see the module docstring."""
    path = Path(path)
    with _open(path) as im:
        _decode(im, path)
        im = ImageOps.exif_transpose(im)
        return to_chw_float(im)


def to_chw_float(im: Image.Image) -> np.ndarray:
    """A decoded PIL image in the documented format: float32 (3, H, W) in [0, 1]."""
    if im.mode.startswith("I") or im.mode == "F":
        a = np.asarray(im, dtype=np.float32)
        if not (im.mode == "F" and a.size and float(a.max()) <= 1.0):
            a = a / 65535.0
        a = np.clip(a, 0.0, 1.0)
        return np.repeat(a[None], 3, axis=0)
    if im.mode in ("1", "L", "LA", "La"):
        a = np.asarray(im if im.mode == "L" else im.convert("L"), dtype=np.float32)
        a *= 1.0 / 255.0
        return np.repeat(a[None], 3, axis=0)
    a = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    return np.ascontiguousarray(a.transpose(2, 0, 1))


def is_image_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def _pillow_open():
    """Pillow's own Image.open. Importing ultralytics replaces Image.open process-wide with a
    wrapper that, on an unreadable file, tries to pip-install pi-heif and then fails with
    ModuleNotFoundError instead of Pillow's error; a corrupt image must stay an ImageError."""
    opener = Image.open
    module = getattr(opener, "__module__", "") or ""
    if module.startswith("ultralytics"):
        opener = getattr(sys.modules.get(module), "_image_open", opener)
    return opener


def _open(path: Path) -> Image.Image:
    try:
        return _pillow_open()(path)
    except FileNotFoundError:
        raise ImageError(path, "image file not found",
                         "check the path, or remove the labels that refer to it") from None
    except IsADirectoryError:
        raise ImageError(path, "is a directory, not an image file",
                         "point at the image file inside it") from None
    except UnidentifiedImageError:
        raise ImageError(path, "not a readable image (unknown or corrupt format)",
                         "re-export it as PNG or JPEG, or remove it from the dataset") from None
    except (OSError, ImportError, Image.DecompressionBombError) as e:
        raise ImageError(path, f"cannot open image ({e})",
                         "re-export it as PNG or JPEG, or remove it from the dataset") from None


def _decode(im: Image.Image, path: Path) -> None:
    try:
        im.load()
    except (OSError, SyntaxError, ValueError) as e:
        kind = "truncated" if "truncated" in str(e).lower() else "corrupt"
        raise ImageError(path, f"image is {kind} ({e})", "copy the file again from its "
                         "source, or remove it and its labels from the dataset") from None


def _capture_time(exif: Image.Exif) -> str | None:
    """EXIF 'YYYY:MM:DD HH:MM:SS' -> ISO 8601, or None when absent or malformed."""
    raw = None
    try:
        raw = exif.get_ifd(_EXIF_IFD).get(_EXIF_DATETIME_ORIGINAL)
    except Exception:  # a broken EXIF block must not fail the import
        pass
    raw = raw or exif.get(_EXIF_DATETIME)
    if not isinstance(raw, str):
        return None
    try:
        return datetime.strptime(raw.strip("\x00 "), "%Y:%m:%d %H:%M:%S").isoformat()
    except ValueError:
        return None
