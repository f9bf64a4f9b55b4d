"""Single uploaded images (PNG, JPEG or one DICOM file) as uint8 arrays, or a DataError saying why not.

The app's Explain and Recognize pages read uploads in memory with :func:`read_image`; a DICOM
file goes through the same pixel pipeline as the DICOM data set loader (modality LUT, window,
MONOCHROME1 inverted, padded to a square, resized), so an uploaded scan looks like the training
images did. :func:`stack_images` brings images of any size to one (N, size, size, 3) batch.
"""
from __future__ import annotations

import io
import warnings

import numpy as np

from rerelrp.errors import DataError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"
MIN_SIDE = 4
MAX_PIXELS = 64_000_000


def sniff(data: bytes):
    """'png', 'jpeg', 'dicom' or None, from the content (never the file name)."""
    if data[:8] == PNG_MAGIC:
        return "png"
    if data[:3] == JPEG_MAGIC:
        return "jpeg"
    from rerelrp.data.dicom import sniff_dicom

    if sniff_dicom(data):  # the DICM marker, or a data set without the 128-byte preamble: what the loader accepts
        return "dicom"
    return None


def read_image(data, name="upload", dicom_size=64):
    """One image from the bytes of an upload: uint8 (H, W, 1) for gray, (H, W, 3) for colour.

    Raises :class:`DataError` naming the file and the reason: empty, not an image, corrupt,
    3D / multi-frame, too large or too small, or an unsupported pixel format.
    """
    if hasattr(data, "read"):
        name = getattr(data, "name", name)
        data = data.read()
    data = bytes(data)
    if not data:
        raise DataError(name, "empty file (0 bytes)")
    kind = sniff(data)
    if kind in ("png", "jpeg"):
        return _read_pil(data, name, kind)
    if kind == "dicom":
        from rerelrp.data.dicom import read_dicom_image

        return read_dicom_image(data, name, dicom_size)
    if data[:2] == b"PK":
        raise DataError(name, "a zip archive, not an image: load DICOM zips and .npz data sets on the Data page")
    if data[:1] == b"\x93" and data[1:6] == b"NUMPY":
        raise DataError(name, "a NumPy array file, not an image: load data sets on the Data page")
    raise DataError(name, "not a PNG, JPEG or DICOM image (the content matches none of these formats)")


def _read_pil(data, name, kind):
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            frames = getattr(image, "n_frames", 1)
            if frames > 1:
                raise DataError(name, f"has {frames} frames (an animation or a 3D stack); upload a single 2D image")
            w, h = image.size
            if w * h > MAX_PIXELS:
                raise DataError(name, f"{w}x{h} pixels is too large (limit {MAX_PIXELS:,} pixels)")
            image.load()
    except DataError:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise DataError(name, f"refused as a possible decompression bomb ({exc})") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise DataError(name, f"corrupt or truncated {kind.upper()} file ({exc})") from exc
    if min(image.size) < MIN_SIDE:
        raise DataError(name, f"{image.size[0]}x{image.size[1]} pixels is too small (at least {MIN_SIDE} per side)")
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        lo, hi = float(values.min()), float(values.max())
        scaled = np.zeros_like(values) if hi <= lo else (values - lo) * (255.0 / (hi - lo))
        return np.round(scaled).astype(np.uint8)[..., None]
    if mode in ("1", "L", "LA"):
        return np.array(image.convert("L"), dtype=np.uint8)[..., None]
    if mode in ("P", "PA"):
        image = image.convert("RGBA")
    if mode not in ("RGB", "RGBA", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "RGBX", "RGBa"):
        raise DataError(name, f"unsupported pixel format '{mode}'; save it as 8-bit gray or RGB")
    rgb = np.array(image.convert("RGB"), dtype=np.uint8)
    if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2]):
        return np.ascontiguousarray(rgb[..., :1])  # gray stored as RGB
    return rgb


def square(image, size=None):
    """Pad to a square with 0 (centred, nothing cropped), then resize to ``size`` x ``size`` (bilinear; None: no resize).

    Returns uint8 (side, side, C): a 2D image gets a channel axis. Used for uploads, batches and DICOM frames alike.
    """
    from PIL import Image

    image = np.asarray(image, dtype=np.uint8)
    if image.ndim == 2:
        image = image[..., None]
    h, w, c = image.shape
    side = max(h, w)
    if h != w:
        padded = np.zeros((side, side, c), dtype=np.uint8)
        top, left = (side - h) // 2, (side - w) // 2
        padded[top : top + h, left : left + w] = image
        image = padded
    if size is not None and side != size:
        plane = image[..., 0] if c == 1 else image
        plane = np.array(Image.fromarray(plane).resize((size, size), Image.Resampling.BILINEAR))
        image = plane[..., None] if c == 1 else plane
    return np.ascontiguousarray(image)


def stack_images(images, size):
    """Images of any sizes and channels as one uint8 batch (N, side, side, 3).

    Images are padded to squares; if they all have the same side they keep it (the learner
    resizes them exactly as it resizes its test images), otherwise all are resized to ``size``.
    """
    sides = {max(np.shape(image)[:2]) for image in images}
    if len(sides) == 1:
        size = sides.pop()
    out = []
    for image in images:
        image = square(image, size)
        if image.shape[-1] == 1:
            image = np.repeat(image, 3, axis=-1)
        out.append(image[..., :3])
    if not out:
        return np.zeros((0, size, size, 3), np.uint8)
    return np.stack(out)


def resize_nearest(image, shape):
    """Nearest-neighbour resize of (H, W, ...) to ``shape`` (h, w): sharp pixels for display, pure numpy."""
    image = np.asarray(image)
    h, w = image.shape[:2]
    if (h, w) == tuple(shape):
        return image
    rows = np.minimum((np.arange(shape[0]) + 0.5) * h / shape[0], h - 1).astype(int)
    cols = np.minimum((np.arange(shape[1]) + 0.5) * w / shape[1], w - 1).astype(int)
    return image[rows][:, cols]


def encode_png(image, scale=1):
    """uint8 (H, W[, C]) as PNG bytes, enlarged ``scale`` times with nearest neighbours (sharp pixels)."""
    from PIL import Image

    image = np.asarray(image, dtype=np.uint8)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if scale > 1:
        image = resize_nearest(image, (image.shape[0] * scale, image.shape[1] * scale))
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buffer, format="PNG", optimize=scale > 1)
    return buffer.getvalue()
