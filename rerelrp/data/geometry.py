"""Pad to a square, resize: the geometry every uploaded image and DICOM frame goes through.

Its own module because the DICOM pixel pipeline and the upload reader both need it, and the upload
reader also dispatches to the DICOM reader.
"""
from __future__ import annotations

import numpy as np


def square(image, size=None):
    """Pad to a square with 0 (centred, nothing cropped), then resize to ``size`` x ``size`` (bilinear; None: no resize).

    Returns uint8 (side, side, C): a 2D image gets a channel axis. Used for uploads and DICOM frames (a batch's
    images are resized by :func:`network_inputs` instead, with the learner's own kernel).
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
