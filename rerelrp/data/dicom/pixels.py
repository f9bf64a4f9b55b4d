"""The pixel pipeline: from a parsed DICOM data set to uint8 images of one size.

Per frame: decode (pydicom, with the pylibjpeg plugins for JPEG, JPEG-LS, JPEG 2000 and RLE; YBR is
converted to RGB) -> gray: Modality LUT (rescale slope/intercept or LUT) -> VOI LUT or window
centre/width (the first one stored, another by index, the caller's ``(center, width)``, or
``window="full"``: the data's min..max) -> 0..255 -> MONOCHROME1 inverted; colour: the palette LUT
applied, scaled by its bit depth -> padded to a square with 0 (the whole field of view is kept: pad,
not crop) and resized to ``size`` x ``size`` (:func:`rerelrp.data.geometry.square`, the one used for every
image). Enhanced multi-frame objects take rescale and window per frame from their functional groups.

The windowing itself is pydicom's (``apply_modality_lut``, ``apply_voi_lut``); what is written here
is the choice of LUT or window, the full-range fallback and the mapping of its output to 0..255.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rerelrp.data.dicom.skips import Skip, short
from rerelrp.data.geometry import square

WINDOWS = ("first", "full")
FRAME_MODES = ("all", "middle")


@dataclass
class Options:
    """The pipeline's settings, checked by ``load_dicom`` (see its docstring)."""

    size: int
    window: object  # "first", "full", a window index, or (center, width) as floats
    frames: str
    max_frames: int


def render(ds, photometric, n_frames, opts, counters):
    """The frames used of one file as uint8 images (size, size, 1) for gray or (size, size, 3) for colour."""
    ensure_transfer_syntax(ds)
    indices = frame_indices(n_frames, opts)
    raw_frames = [decode(ds, i if n_frames > 1 else None) for i in indices]
    if "MOSAIC" in [str(v).upper() for v in (ds.get("ImageType") or [])]:
        counters["mosaic"] += 1
    if photometric.startswith("MONOCHROME"):
        images = _gray_frames(ds, raw_frames, indices, opts, counters)
        if photometric == "MONOCHROME1":
            images = [255 - im for im in images]
    else:
        images = [_color_frame(ds, f, photometric) for f in raw_frames]
    return [square(im, opts.size) for im in images]


def frame_indices(n_frames, opts):
    """The frames a file gives: the middle one, or at most ``max_frames`` evenly spaced."""
    if opts.frames == "middle":
        return [n_frames // 2]
    k = min(n_frames, opts.max_frames)
    return sorted(set(np.round(np.linspace(0, n_frames - 1, k)).astype(int).tolist()))


def ensure_transfer_syntax(ds):
    """Files without meta information (read with force=True) get the syntax they were read in."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    meta = getattr(ds, "file_meta", None)
    if meta is not None and meta.get("TransferSyntaxUID"):
        return
    implicit, little = getattr(ds, "original_encoding", (None, None))
    if implicit is None:
        implicit, little = True, True
    if ds.get("PixelData") is not None and ds["PixelData"].is_undefined_length:
        raise Skip("compressed pixel data without meta information: the transfer syntax is unknown")
    uid = ImplicitVRLittleEndian if implicit else (ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
    if meta is None:
        ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = uid


def decode(ds, index):
    """Frame ``index`` (None: the only one) as stored, decoded; a failure is a Skip naming the syntax."""
    from pydicom.pixels import pixel_array

    ts = ds.file_meta.TransferSyntaxUID
    try:
        arr = pixel_array(ds, index=index)
    except (RuntimeError, NotImplementedError) as exc:
        if getattr(ts, "is_compressed", False):
            raise Skip(f"compressed pixel data ({ts.name}, {ts}) could not be decoded: {short(exc)}") from exc
        raise Skip(f"pixel data cannot be decoded: {short(exc)}") from exc
    except (ValueError, EOFError, IndexError, KeyError, AttributeError, TypeError) as exc:
        raise Skip(f"corrupt or truncated pixel data ({ts.name}): {short(exc)}") from exc
    return np.asarray(arr)


def _frame_attributes(ds, index):
    """Rescale and window of one frame of an enhanced multi-frame object (functional groups)."""
    out = {}
    for keyword in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        groups = ds.get(keyword)
        if not groups:
            continue
        position = 0 if keyword.startswith("Shared") else (index or 0)
        if position >= len(groups):
            continue
        for macro, names in (
            ("PixelValueTransformationSequence", ("RescaleSlope", "RescaleIntercept")),
            ("FrameVOILUTSequence", ("WindowCenter", "WindowWidth", "VOILUTFunction")),
        ):
            seq = groups[position].get(macro)
            if seq:
                for name in names:
                    if name in seq[0]:
                        out[name] = seq[0][name].value
    return out


def _gray_frames(ds, raw_frames, indices, opts, counters):
    """Gray frames -> Modality LUT -> VOI (see :func:`_voi`) -> uint8; a full range is shared by the file's frames."""
    from pydicom.pixels import apply_modality_lut

    values, windows = [], []
    for raw, index in zip(raw_frames, indices):
        for name, value in _frame_attributes(ds, index).items():
            setattr(ds, name, value)
        if raw.ndim == 3:  # a gray frame with a stray sample axis
            raw = raw[..., 0]
        v, window = _voi(apply_modality_lut(raw, ds), ds, opts.window, counters)
        values.append(v)
        windows.append(window)
    if any(w is None for w in windows):  # full range, shared by all frames of the file
        finite = [v[np.isfinite(v)] for v in values]
        lo = min((float(f.min()) for f in finite if f.size), default=0.0)
        hi = max((float(f.max()) for f in finite if f.size), default=0.0)
        windows = [(lo, hi) if w is None else w for w in windows]
    return [_to_uint8(v, lo, hi) for v, (lo, hi) in zip(values, windows)]


def _voi(m, ds, window, counters):
    """(values, (lo, hi) they span) after the VOI step of ``window``; (m, None) where the full range is used."""
    from pydicom.multival import MultiValue
    from pydicom.pixels import apply_voi_lut

    if window == "full":
        return m.astype(np.float64), None
    if isinstance(window, tuple):  # the caller's window, applied as a stored one; LINEAR_EXACT: centre +- width/2
        ds.WindowCenter, ds.WindowWidth = window
        ds.VOILUTFunction = "LINEAR_EXACT"
        return _windowed(m, ds, 0)
    k = 0 if window == "first" else int(window)
    lut = ds.get("VOILUTSequence")
    has_lut = bool(lut) and k < len(lut) and "LUTDescriptor" in lut[k] and "LUTData" in lut[k]
    centers = ds.get("WindowCenter")
    if centers is None or "WindowWidth" not in ds:
        n_windows = 0
    else:
        n_windows = len(centers) if isinstance(centers, (list, tuple, MultiValue)) else 1
    if has_lut:
        if not np.issubdtype(m.dtype, np.integer):
            m = np.rint(m).astype(np.int64)
        v = apply_voi_lut(m, ds, index=k, prefer_lut=True)
        descriptor = lut[k].LUTDescriptor
        first, entries = int(descriptor[1]), int(descriptor[0]) or 2**16
        domain = np.arange(first, first + entries, dtype=np.int64)
        full = apply_voi_lut(domain, ds, index=k, prefer_lut=True)  # the LUT's output range, over its whole input
        return np.asarray(v, dtype=np.float64), (float(full.min()), float(full.max()))
    if k < n_windows:
        return _windowed(m, ds, k)
    if n_windows or lut:
        counters["gray_window_fallback"] += 1
    else:
        counters["no_window"] += 1
    return m.astype(np.float64), None


def _windowed(m, ds, k):
    """Window ``k`` of ``ds`` applied by pydicom, and the output range it maps onto."""
    from pydicom.pixels import apply_voi_lut

    v = apply_voi_lut(m, ds, index=k, prefer_lut=False)
    ends = apply_voi_lut(np.array([-np.inf, np.inf]), ds, index=k, prefer_lut=False)
    return np.asarray(v, dtype=np.float64), (float(ends.min()), float(ends.max()))


def _to_uint8(values, lo, hi):
    """Map lo..hi linearly to 0..255 (clipped; NaN to 0)."""
    if not hi > lo:
        return np.zeros(values.shape, dtype=np.uint8)
    scaled = np.subtract(values, lo, dtype=np.float32)
    scaled *= np.float32(255.0 / (hi - lo))
    np.clip(scaled, 0, 255, out=scaled)
    np.rint(scaled, out=scaled)
    scaled[np.isnan(scaled)] = 0
    return scaled.astype(np.uint8)


def _color_frame(ds, frame, photometric):
    """RGB (YBR was converted by the decoder) or a palette through its LUT, scaled by its bit depth to uint8."""
    from pydicom.pixels import apply_color_lut

    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(frame, ds)
        bits = int(ds.RedPaletteColorLookupTableDescriptor[2]) if "RedPaletteColorLookupTableDescriptor" in ds else 16
        top = 2**bits - 1 if bits in (8, 16) else (255 if rgb.dtype == np.uint8 else 65535)
    else:
        rgb = frame
        bits = int(ds.get("BitsStored", 8) or 8)
        top = 2**bits - 1
    if rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise Skip(f"colour image with shape {rgb.shape}: expected rows x columns x 3")
    if rgb.dtype == np.uint8 and top == 255:
        return rgb
    return _to_uint8(rgb.astype(np.float64), 0.0, float(top))
