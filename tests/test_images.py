"""tinyloop.images: every pixel format loads to float32 (3, H, W) in [0, 1]; bad files fail
with a message naming the file and the fix."""
import numpy as np
import pytest
from PIL import Image

from tinyloop.images import ImageError, image_info, inspect_image, load_image


def _save(tmp_path, name, im, **kw):
    path = tmp_path / name
    im.save(path, **kw)
    return path


def test_grayscale_8bit_replicated_to_three_channels(tmp_path):
    a = np.arange(12 * 10, dtype=np.uint8).reshape(10, 12)
    path = _save(tmp_path, "g.png", Image.fromarray(a, "L"))
    x = load_image(path)
    assert x.dtype == np.float32 and x.shape == (3, 10, 12)
    assert np.allclose(x[0], a / 255.0) and np.array_equal(x[0], x[2])
    assert image_info(path) == (12, 10, 1)


def test_16bit_scaled_by_full_range_not_stretched(tmp_path):
    a = np.full((4, 5), 1000, dtype=np.uint16)
    a[0, 0] = 65535
    path = _save(tmp_path, "d16.png", Image.fromarray(a))
    assert inspect_image(path).mode.startswith("I")
    x = load_image(path)
    assert x.shape == (3, 4, 5)
    assert x[0, 0, 0] == pytest.approx(1.0)
    assert x[1, 2, 2] == pytest.approx(1000 / 65535, rel=1e-5)
    assert image_info(path)[2] == 1


def test_32bit_integer_mode_i_is_clipped(tmp_path):
    a = np.array([[0, 65535, 200000]], dtype=np.int32)
    im = Image.fromarray(a, "I")
    path = _save(tmp_path, "i32.tif", im)
    x = load_image(path)
    assert x.min() == 0.0 and x.max() == 1.0 and x[0, 0, 1] == pytest.approx(1.0)


def test_rgba_drops_alpha_and_palette_converts(tmp_path):
    rgba = Image.new("RGBA", (6, 4), (255, 0, 0, 10))
    x = load_image(_save(tmp_path, "a.png", rgba))
    assert x.shape == (3, 4, 6) and np.allclose(x[:, 0, 0], [1, 0, 0])
    assert image_info(tmp_path / "a.png") == (6, 4, 3)
    pal = Image.new("RGB", (3, 3), (0, 255, 0)).convert("P")
    y = load_image(_save(tmp_path, "p.png", pal))
    assert np.allclose(y[:, 1, 1], [0, 1, 0])


def test_exif_orientation_is_applied(tmp_path):
    a = np.zeros((10, 20, 3), dtype=np.uint8)  # H=10, W=20 stored
    a[0, 0] = 255                                # a white pixel at the stored top-left
    im = Image.fromarray(a)
    exif = im.getexif()
    exif[0x0112] = 6                             # "rotate 90 CW to display"
    path = _save(tmp_path, "rot.jpg", im, exif=exif, quality=100)
    assert image_info(path)[:2] == (10, 20)      # displayed: W=10, H=20
    x = load_image(path)
    assert x.shape == (3, 20, 10)
    assert x[0, 0, -1] > 0.8                     # the pixel moved to the top-right corner


def test_exif_capture_time_is_read(tmp_path):
    im = Image.new("L", (4, 4))
    exif = im.getexif()
    exif[0x0132] = "2021:01:16 10:20:30"
    path = _save(tmp_path, "t.jpg", im, exif=exif)
    assert inspect_image(path).capture_time == "2021-01-16T10:20:30"


def test_truncated_jpeg_fails_with_file_and_fix(tmp_path):
    path = _save(tmp_path, "full.jpg", Image.effect_noise((64, 64), 50).convert("L"))
    data = path.read_bytes()
    bad = tmp_path / "cut.jpg"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match=r"cut\.jpg: image is truncated.*copy the file again"):
        image_info(bad)
    with pytest.raises(ImageError, match="truncated"):
        load_image(bad)
    assert image_info(bad, decode=False) == (64, 64, 1)  # header-only check is cheaper


def test_corrupt_and_missing_files(tmp_path):
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"this is not an image")
    with pytest.raises(ImageError, match=r"junk\.png: not a readable image.*re-export"):
        image_info(junk)
    with pytest.raises(ImageError, match=r"nope\.jpg: image file not found"):
        load_image(tmp_path / "nope.jpg")


def test_corrupt_file_is_an_image_error_even_after_ultralytics_patched_pillow(tmp_path,
                                                                           monkeypatch):
    from PIL import Image
    monkeypatch.setattr(Image, "open", Image.open)   # restored after the test
    from ultralytics.utils import patches            # importing it patches Image.open
    monkeypatch.setattr(Image, "open", patches.image_open)  # (again, if imported before)
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"\xff\xd8 not a jpeg")
    with pytest.raises(ImageError, match="not a readable image"):
        image_info(junk)
