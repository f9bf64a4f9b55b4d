"""From uint8 images to network inputs: RGB float in [0, 1], square at the network's size.

Images stay uint8 until a batch is drawn (:class:`ImageSource`), so a task costs its own bytes
in memory, not four to twelve times as much as float RGB at the network's size. The same
evaluation transform serves every relevance computation and every prediction; augmentation
(small random shifts) is used for training batches only.
"""
import numpy as np
import torch
import torch.nn.functional as F

CHUNK = 2048


def _convert(x, size):
    """uint8 tensor (N, H, W, C) -> float (N, 3, size, size), on x's device.

    Float input is taken as network input already (``images.network_inputs`` resizes images of
    different sides one by one with this same function) and passed through unchanged."""
    if x.is_floating_point():
        if x.dim() != 4 or tuple(x.shape[1:]) != (3, size, size):
            raise ValueError(f"float network inputs must be (N, 3, {size}, {size}), not {tuple(x.shape)}")
        return x.float().contiguous()
    x = x.permute(0, 3, 1, 2).float().div_(255.0)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    elif x.shape[1] == 4:
        x = x[:, :3]
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False).clamp_(0, 1)
    return x.contiguous()


def to_input(images, size):
    """(N, H, W, C) uint8 (numpy or torch) -> (N, 3, size, size) float32; gray is repeated to three channels.

    (N, 3, size, size) float input is returned as it is (see :func:`_convert`)."""
    if isinstance(images, torch.Tensor):
        parts = [images[start : start + CHUNK] for start in range(0, len(images), CHUNK)]
    else:
        images = np.asarray(images)
        if images.ndim == 3:
            images = images[..., None]
        parts = [torch.from_numpy(np.ascontiguousarray(images[start : start + CHUNK]))
                 for start in range(0, len(images), CHUNK)]
    if not parts:
        return torch.zeros((0, 3, size, size))
    return torch.cat([_convert(p, size) for p in parts])


class LazyInputs:
    """uint8 images (N, H, W, C) that become network inputs only when indexed.

    ``x[a:b]`` or ``x[index]`` (numpy or torch indices) gives float (k, 3, size, size), converted
    exactly as :func:`to_input` would (each image on its own), so code written for a float tensor
    reads batches of it while only the uint8 images stay in memory: 2,048 recogniser images at
    128 px are 0.4 GB as float, 34 MB as 64-px uint8.
    """

    def __init__(self, images, size):
        images = np.asarray(images)
        self.images = images[..., None] if images.ndim == 3 else images
        self.size = size

    def __len__(self):
        return len(self.images)

    def __getitem__(self, key):
        if isinstance(key, torch.Tensor):
            key = key.cpu().numpy()
        return to_input(self.images[key], self.size)

    def batches(self, size=256):
        """Float inputs, ``size`` images at a time (256 at 128 px are 50 MB as float)."""
        for start in range(0, len(self), size):
            yield self[start : start + size]

    @classmethod
    def cat(cls, parts):
        """One lazy set of several (same image shape and size)."""
        return cls(np.concatenate([p.images for p in parts]), parts[0].size)


class ImageSource:
    """Images of one or more arrays (each uint8 (N, H, W, C), shapes may differ) drawn as float batches.

    Global index i runs over the arrays in order. Arrays are kept as uint8 on ``device`` (the
    CPU by default) and converted batch by batch, so memory scales with the data, not with the
    network's input size.
    """

    def __init__(self, arrays, size, device="cpu"):
        self.size = size
        self.parts = [torch.from_numpy(np.ascontiguousarray(a)).to(device) for a in arrays]
        self.parts = [p[..., None] if p.dim() == 3 else p for p in self.parts]
        self.starts = np.cumsum([0] + [len(p) for p in self.parts])

    def __len__(self):
        return int(self.starts[-1])

    def batch(self, index):
        """Float inputs (len(index), 3, size, size) for the global indices ``index`` (a LongTensor)."""
        if len(self.parts) == 1:
            part = self.parts[0]
            return _convert(part[index.to(part.device)], self.size)
        index = index.cpu()
        which = torch.as_tensor(np.searchsorted(self.starts, index.numpy(), side="right") - 1)
        out = None
        for k, part in enumerate(self.parts):
            rows = torch.nonzero(which == k).flatten()
            if len(rows) == 0:
                continue
            converted = _convert(part[(index[rows] - int(self.starts[k])).to(part.device)], self.size)
            if out is None:
                out = converted.new_empty((len(index),) + tuple(converted.shape[1:]))
            out[rows.to(out.device)] = converted
        return out


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
