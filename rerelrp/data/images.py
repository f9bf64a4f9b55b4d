"""Single uploaded images (PNG, JPEG or one DICOM file) as uint8 arrays, or a DataError saying why not.

The app's Explain and Recognize pages read uploads in memory with :func:`read_image`; a DICOM
file goes through the same pixel pipeline as the DICOM data set loader (modality LUT, window,
MONOCHROME1 inverted, padded to a square, resized), so an uploaded scan looks like the training
images did.

Memory is bounded by one decoded image: a PNG or JPEG more than ``2 * REDUCE_TO`` times the
network's side is reduced on read (JPEG decoded at a reduced scale with ``draft``, then PIL's
box ``reduce``) to between ``REDUCE_TO`` and ``2 * REDUCE_TO`` times that side, and images above
``MAX_PIXELS`` are refused from their header. :func:`network_inputs` then makes every image the
network's input on its own, with the kernel the learner applies to its test images, so an image
gives the same input alone and beside images of other sizes; :func:`stack_images` is what the
network sees, as uint8 for display.
"""
from __future__ import annotations

import io
import warnings

import numpy as np

from rerelrp.data.dicom import read_dicom_image, sniff_dicom
from rerelrp.data.geometry import square
from rerelrp.errors import DataError
from rerelrp.model.inputs import to_input

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"
MIN_SIDE = 4
MAX_PIXELS = 64_000_000
REDUCE_TO = 4  # images wider than 2 * REDUCE_TO network sides are reduced on read to REDUCE_TO..2 * REDUCE_TO


def sniff(data: bytes):
    """'png', 'jpeg', 'dicom' or None, from the content (never the file name)."""
    if data[:8] == PNG_MAGIC:
        return "png"
    if data[:3] == JPEG_MAGIC:
        return "jpeg"

    if sniff_dicom(data):  # the DICM marker, or a data set without the 128-byte preamble: what the loader accepts
        return "dicom"
    return None


def read_image(data, name="upload", dicom_size=64):
    """One image from the bytes of an upload: uint8 (H, W, 1) for gray, (H, W, 3) for colour.

    ``dicom_size`` is the network's input side: DICOM files are read at it, and PNG or JPEG files
    many times larger are reduced on read (see the module's note). Raises :class:`DataError`
    naming the file and the reason: empty, not an image, corrupt, 3D / multi-frame, too large or
    too small, or an unsupported pixel format.
    """
    if hasattr(data, "read"):
        name = getattr(data, "name", name)
        data = data.read()
    data = bytes(data)
    if not data:
        raise DataError(name, "empty file (0 bytes)")
    kind = sniff(data)
    if kind in ("png", "jpeg"):
        return _read_pil(data, name, kind, dicom_size)
    if kind == "dicom":

        return read_dicom_image(data, name, dicom_size)
    if data[:2] == b"PK":
        raise DataError(name, "a zip archive, not an image: load DICOM zips and .npz data sets on the Data page")
    if data[:1] == b"\x93" and data[1:6] == b"NUMPY":
        raise DataError(name, "a NumPy array file, not an image: load data sets on the Data page")
    raise DataError(name, "not a PNG, JPEG or DICOM image (the content matches none of these formats)")


def _reduction(side, size):
    """The integer factor an image of ``side`` pixels is reduced by on read, for a network of ``size`` pixels."""
    floor = REDUCE_TO * max(1, int(size))
    return side // floor if side >= 2 * floor else 1


def _read_pil(data, name, kind, size):
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
            factor = _reduction(max(w, h), size)
            if factor > 1 and kind == "jpeg":  # decode at 1/2, 1/4 or 1/8 scale, never below the reduced size
                image.draft(None, (-(-w // factor), -(-h // factor)))
            image.load()
    except DataError:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise DataError(name, f"refused as a possible decompression bomb ({exc})") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise DataError(name, f"corrupt or truncated {kind.upper()} file ({exc})") from exc
    if min(w, h) < MIN_SIDE:
        raise DataError(name, f"{w}x{h} pixels is too small (at least {MIN_SIDE} per side)")
    image = _reduce(image, size)
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


def _reduce(image, size):
    """``image`` reduced by :func:`_reduction`'s factor with PIL's box filter (modes it cannot reduce converted first)."""
    factor = _reduction(max(image.size), size)
    if factor <= 1:
        return image
    if image.mode in ("1", "P", "PA") or image.mode.startswith("I;16"):
        image = image.convert({"1": "L", "P": "RGBA", "PA": "RGBA"}.get(image.mode, "I"))
    return image.reduce(factor)


def network_input(image, size):
    """One image as the network's input, float32 (1, 3, size, size): uint8 (H, W[, C]) padded to a square, then
    resized by the learner's own kernel (:func:`rerelrp.model.inputs.to_input`); float input (C, size, size) as it is
    (C = 1: gray, repeated to three channels as ``to_input`` repeats it)."""

    image = np.asarray(image)
    if image.dtype.kind == "f":
        return np.ascontiguousarray(np.broadcast_to(image.astype(np.float32, copy=False), (3, size, size)))[None]
    return to_input(square(image)[None], size).numpy()


def compact_input(image, size):
    """:func:`network_input` of one image kept small: float32 (1, size, size) for gray, (3, size, size) for colour."""
    image = np.asarray(image)
    x = network_input(image, size)[0]
    return x[:1].copy() if image.ndim == 2 or image.shape[-1] == 1 else x


def network_inputs(images, size):
    """Images of any sizes and channels as the network's inputs, float32 (N, 3, size, size), each made on its own.

    What the learner gets for a batch of one image side (``to_input`` of the stacked batch) to
    the last bit, and the same for each image whatever the other images' sides.
    """
    if not len(images):
        return np.zeros((0, 3, size, size), np.float32)
    return np.concatenate([network_input(image, size) for image in images])


def stack_images(images, size):
    """Images of any sizes and channels as one uint8 batch (N, side, side, 3), for display and the learner.

    Images are padded to squares; if they all have the same side they keep it (the learner
    resizes them exactly as it resizes its test images), otherwise each is resized to ``size``
    on its own by that same kernel (:func:`network_inputs`) and rounded to uint8. Give the learner
    :func:`network_inputs` instead where an image's answer must not depend on its neighbours.
    """
    sides = {max(np.shape(image)[:2]) for image in images}
    if len(sides) == 1:
        size = sides.pop()
    if not len(images):
        return np.zeros((0, size, size, 3), np.uint8)
    if len(sides) == 1:
        return np.stack([np.repeat(im, 3, -1) if im.shape[-1] == 1 else im[..., :3] for im in map(square, images)])
    return to_uint8(network_inputs(images, size))


def to_uint8(inputs):
    """Network inputs (N, 3, size, size) in [0, 1] as uint8 images (N, size, size, 3): what the network sees."""
    return np.round(np.asarray(inputs).transpose(0, 2, 3, 1) * 255.0).astype(np.uint8)


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
