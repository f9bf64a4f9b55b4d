"""Single uploaded images (rerelrp.data.images): what is read, and why a bad upload is refused."""
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rerelrp.data.geometry import square
from rerelrp.data.images import encode_png, read_image, sniff, stack_images
from rerelrp.errors import DataError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "dicom" / "single"
PYDICOM_FILES = Path(__import__("pydicom").__file__).parent / "data" / "test_files"


def _save(array, fmt, **kw):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **kw)
    return buffer.getvalue()


def test_png_gray_rgb_rgba_and_16_bit():
    gray = np.arange(100, dtype=np.uint8).reshape(10, 10)
    out = read_image(_save(gray, "PNG"), "g.png")
    assert out.shape == (10, 10, 1) and np.array_equal(out[..., 0], gray)
    rgb = np.random.default_rng(0).integers(0, 255, (12, 9, 3), dtype=np.uint8)
    assert np.array_equal(read_image(_save(rgb, "PNG"), "c.png"), rgb)
    rgba = np.concatenate([rgb, np.full((12, 9, 1), 128, np.uint8)], axis=-1)
    assert np.array_equal(read_image(_save(rgba, "PNG"), "a.png"), rgb)  # alpha dropped
    deep = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000)
    out = read_image(_save(deep, "PNG"), "d.png")
    assert out.dtype == np.uint8 and out.min() == 0 and out.max() == 255
    gray_as_rgb = np.repeat(gray[..., None], 3, axis=-1)
    assert read_image(_save(gray_as_rgb, "PNG"), "x.png").shape == (10, 10, 1)


def test_jpeg():
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[..., 0] = 200
    out = read_image(_save(rgb, "JPEG"), "x.jpg")
    assert out.shape == (16, 16, 3) and abs(int(out[..., 0].mean()) - 200) < 5


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "empty"),
        (b"hello, this is text and not an image at all", "not a PNG, JPEG or DICOM"),
        (b"PK\x03\x04" + b"\x00" * 40, "zip archive"),
        (b"\x93NUMPY" + b"\x00" * 40, "NumPy"),
    ],
)
def test_not_an_image(data, reason):
    with pytest.raises(DataError, match=reason) as info:
        read_image(data, "bad.bin")
    assert info.value.path == "bad.bin"


def test_truncated_png_and_jpeg_are_corrupt():
    png = _save(np.zeros((32, 32), np.uint8), "PNG")
    with pytest.raises(DataError, match="corrupt or truncated PNG"):
        read_image(png[: len(png) // 2], "half.png")
    jpg = _save(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8), "JPEG")
    with pytest.raises(DataError, match="corrupt or truncated JPEG"):
        read_image(jpg[:200], "half.jpg")


def test_animated_png_is_refused_as_3d():
    frames = [Image.fromarray(np.full((8, 8), v, np.uint8)) for v in (0, 128, 255)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="PNG", save_all=True, append_images=frames[1:])
    with pytest.raises(DataError, match="3 frames"):
        read_image(buffer.getvalue(), "stack.png")


def test_tiny_image_is_refused():
    with pytest.raises(DataError, match="too small"):
        read_image(_save(np.zeros((2, 2), np.uint8), "PNG"), "dot.png")


def test_dicom_single_image_through_the_loader_pipeline():
    data = (PYDICOM_FILES / "CT_small.dcm").read_bytes()
    assert sniff(data) == "dicom"
    out = read_image(data, "CT_small.dcm", dicom_size=32)
    assert out.shape == (32, 32, 1) and out.dtype == np.uint8 and out.max() > out.min()


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data/dicom is not present")
def test_dicom_monochrome1_is_inverted():
    import pydicom

    data = (SHARED / "dwv_gdcm-CR-MONO1-10-chest.dcm").read_bytes()
    out = read_image(data, "chest.dcm", dicom_size=64)
    assert out.shape == (64, 64, 1)
    stored = pydicom.dcmread(io.BytesIO(data)).pixel_array.astype(np.float32)  # 440 x 440: no padding
    stored = np.asarray(Image.fromarray(stored).resize((64, 64), Image.Resampling.BILINEAR))
    assert np.corrcoef(out[..., 0].ravel().astype(float), stored.ravel())[0, 1] < -0.9  # bright where stored is low

    # the same pixels declared MONOCHROME2 come out as the exact negative (at full size: no resampling)
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.PhotometricInterpretation = "MONOCHROME2"
    buffer = io.BytesIO()
    ds.save_as(buffer)
    mono1 = read_image(data, "chest.dcm", dicom_size=440)
    mono2 = read_image(buffer.getvalue(), "chest2.dcm", dicom_size=440)
    assert mono1.std() > 30
    np.testing.assert_array_equal(mono1, 255 - mono2)


def test_dicom_without_preamble_is_recognised_by_content():
    import pydicom

    raw = pydicom.dcmread(PYDICOM_FILES / "CT_small.dcm")
    del raw.file_meta
    raw.preamble = None
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, raw, enforce_file_format=False, implicit_vr=True, little_endian=True)  # no preamble, no meta
    data = buffer.getvalue()
    assert data[128:132] != b"DICM" and sniff(data) == "dicom"
    np.testing.assert_array_equal(read_image(data, "raw", dicom_size=32),
                                  read_image((PYDICOM_FILES / "CT_small.dcm").read_bytes(), "ct", dicom_size=32))
    assert sniff(b"\x30\x00" + bytes(200)) is None  # group 0x0030 cannot start a data set


@pytest.mark.parametrize(
    "name, reason",
    [
        ("SC_rgb_rle_2frame.dcm", "multi-frame"),
        ("rtplan.dcm", "not an image"),
        ("MR_truncated.dcm", "corrupt|truncated|unreadable"),
    ],
)
def test_bad_dicom_uploads(name, reason):
    path = PYDICOM_FILES / name
    if not path.exists():
        pytest.skip(f"pydicom test file {name} is not installed")
    with pytest.raises(DataError, match=reason):
        read_image(path.read_bytes(), name)


def test_square_and_stack():
    wide = np.full((10, 20, 1), 255, np.uint8)
    sq = square(wide, 20)
    assert sq.shape == (20, 20, 1)
    assert sq[0, 10, 0] == 0 and sq[10, 10, 0] == 255  # padded, not cropped
    batch = stack_images([wide, np.zeros((5, 5, 3), np.uint8)], 16)
    assert batch.shape == (2, 16, 16, 3) and batch.dtype == np.uint8
    assert stack_images([], 8).shape == (0, 8, 8, 3)
    assert square(wide).shape == (20, 20, 1)  # padded only
    same = stack_images([np.zeros((8, 8, 1), np.uint8), np.ones((8, 8, 3), np.uint8)], 28)
    assert same.shape == (2, 8, 8, 3)  # one common side: kept, the learner resizes as for its test images
    assert np.array_equal(same[1], np.ones((8, 8, 3), np.uint8))


def test_encode_png_round_trip():
    image = np.random.default_rng(2).integers(0, 255, (9, 7, 1), dtype=np.uint8)
    assert np.array_equal(read_image(encode_png(image), "r.png"), image)
