"""uint8 RGB images composed with numpy for display: relevance heatmaps and overlays, sample montages.

Pure functions, arrays in, arrays out: the app's figures (:mod:`rerelrp.figures.plots`), the reports and
``rerelrp predict --explain`` all colour relevance the same way, on a diverging blue-white-red
map centred at zero (blue: negative evidence, red: positive evidence).
"""
from __future__ import annotations

import numpy as np

from rerelrp.data.images import resize_nearest


def as_rgb(image):
    """uint8 (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) -> uint8 (H, W, 3)."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    if image.ndim == 2:
        image = image[..., None]
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    return np.ascontiguousarray(image[..., :3])


def heatmap_rgb(heatmap, image=None, overlay=False, gamma=0.7, scale=None):
    """Relevance (H, W) as uint8 RGB (H, W, 3) on the "bwr" map, symmetric around 0.

    Values are scaled by the largest magnitude (or by ``scale``, one value shared by panels that
    are to be compared), so 0 is white, the strongest positive value pure red and the strongest
    negative pure blue. With ``overlay`` the colour is blended over the
    grayscale ``image`` (resized to the heatmap), opaque where relevance is strong and
    transparent where it is 0, so irrelevant pixels show the input unchanged.
    """
    # zennit's colour maps (imported here: zennit imports torch). Not its "bwr" ("00f,80:fff,f00"):
    # its white node sits at 128/255 instead of the middle, so 0 would come out (254, 254, 255).
    # Its "wred" and "wblue" are exact: white -> pure red (blue), linear, one per sign.
    from zennit.image import get_cmap

    h = np.nan_to_num(np.asarray(heatmap, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    if h.ndim != 2:
        raise ValueError(f"heatmap must be 2D (H, W), not {h.shape}")
    scale = np.abs(h).max() if scale is None else float(scale)
    v = np.clip(h / scale, -1, 1) if scale > 0 else np.zeros_like(h)
    pos, neg = np.clip(v, 0, 1), np.clip(-v, 0, 1)
    rgb = np.where((v >= 0)[..., None], get_cmap("wred")(pos), get_cmap("wblue")(neg))
    if overlay and image is not None:
        gray = as_rgb(image).astype(np.float64).mean(-1, keepdims=True) / 255.0
        gray = resize_nearest(gray, h.shape)
        pure = np.stack([pos > 0, np.zeros_like(pos, bool), neg > 0], axis=-1).astype(np.float64)
        alpha = (np.abs(v) ** gamma)[..., None]
        rgb = (1.0 - alpha) * np.repeat(gray, 3, axis=-1) + alpha * pure
    return np.round(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8)


def sample_grid(images, labels, n_classes, per_class=8, seed=0, pad=1):
    """A montage (rows: classes, columns: samples) as uint8 RGB, plus the row height in pixels."""
    images = np.asarray(images)
    labels = np.asarray(labels)
    h, w = images.shape[1:3]
    rng = np.random.default_rng(seed)
    grid = np.full((n_classes * (h + pad) + pad, per_class * (w + pad) + pad, 3), 255, np.uint8)
    for c in range(n_classes):
        members = np.flatnonzero(labels == c)
        if len(members) > per_class:
            members = np.sort(rng.choice(members, per_class, replace=False))
        for k, i in enumerate(members):
            top, left = pad + c * (h + pad), pad + k * (w + pad)
            grid[top : top + h, left : left + w] = as_rgb(images[i])
    return grid, h + pad

