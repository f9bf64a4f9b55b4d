"""From uint8 images to network inputs: RGB float in [0, 1], square at the network's size.

The same evaluation transform serves every relevance computation and every prediction;
augmentation (small random shifts) is used for training batches only.
"""
import numpy as np
import torch
import torch.nn.functional as F

CHUNK = 2048


def to_input(images, size):
    """(N, H, W, C) uint8 -> (N, 3, size, size) float32; gray is repeated to three channels."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    out = []
    for start in range(0, len(images), CHUNK):
        x = torch.from_numpy(np.ascontiguousarray(images[start : start + CHUNK])).permute(0, 3, 1, 2)
        x = x.float().div_(255.0)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        elif x.shape[1] == 4:
            x = x[:, :3]
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False).clamp_(0, 1)
        out.append(x.contiguous())
    if not out:
        return torch.zeros((0, 3, size, size))
    return torch.cat(out)


def random_shift(x, max_shift, generator=None):
    """Translate each image by up to ``max_shift`` pixels (zero fill): cheap augmentation for small images."""
    if max_shift <= 0:
        return x
    n, _, h, w = x.shape
    shifts = torch.randint(-max_shift, max_shift + 1, (n, 2), generator=generator).float()
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    theta[:, 0, 2] = shifts[:, 0] * 2.0 / w
    theta[:, 1, 2] = shifts[:, 1] * 2.0 / h
    grid = F.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)
