"""Images: every reference form to RGB, bad files converted or refused by name, preprocessing as transformers'."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from longrl.data.image import ImageError, image_name, load_image, normalize_ref, preprocess_image


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


RGB = np.array([[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [10, 20, 30]]], dtype=np.uint8)


# --- reference forms ------------------------------------------------------------------------
def test_a_path_a_bytes_dict_and_a_decoded_image_load_to_the_same_pixels(tmp_path):
    Image.fromarray(RGB).save(tmp_path / "a.png")
    refs = [str(tmp_path / "a.png"), {"bytes": _png(Image.fromarray(RGB)), "path": "a.png"},
            normalize_ref(Image.fromarray(RGB)), {"bytes": None, "path": str(tmp_path / "a.png")}]
    for ref in refs:
        assert np.array_equal(load_image(normalize_ref(ref)), RGB), ref


def test_an_embedded_image_is_named_by_its_path_and_content_digest():
    name = image_name({"bytes": b"abc", "path": "geo/1.png"})
    assert name == "geo/1.png (embedded, sha1:a9993e364706)"  # sha1("abc") = a9993e36 4706816a...


def test_an_image_given_as_a_number_is_refused_with_the_accepted_forms():
    with pytest.raises(ValueError, match="given as int; expected a path"):
        normalize_ref(3)


# --- bad images: converted ------------------------------------------------------------------
def test_grayscale_becomes_three_equal_channels(tmp_path):
    Image.fromarray(np.array([[0, 128]], dtype=np.uint8), "L").save(tmp_path / "g.png")
    assert load_image(str(tmp_path / "g.png")).tolist() == [[[0, 0, 0], [128, 128, 128]]]


def test_rgba_is_composited_on_white(tmp_path):
    # alpha 0 -> white; alpha 255 -> the colour; alpha 128 on red: 255 for R, 255 - 128*255/255 ~ 127 for G, B
    rgba = np.array([[[255, 0, 0, 0], [0, 0, 255, 255], [255, 0, 0, 128]]], dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = load_image(str(tmp_path / "a.png"))
    assert out[0, 0].tolist() == [255, 255, 255] and out[0, 1].tolist() == [0, 0, 255]
    assert out[0, 2, 0] == 255 and abs(int(out[0, 2, 1]) - 127) <= 1


def test_cmyk_becomes_rgb(tmp_path):
    # CMYK (0, 255, 255, 0) is pure red; PIL's conversion is 255 - C, 255 - M, 255 - Y when K = 0
    Image.new("CMYK", (2, 2), (0, 255, 255, 0)).save(tmp_path / "c.jpg", quality=100)
    out = load_image(str(tmp_path / "c.jpg"))
    assert out.shape == (2, 2, 3) and out[0, 0, 0] > 240 and out[0, 0, 1] < 15 and out[0, 0, 2] < 15


def test_a_16_bit_png_is_scaled_to_8_bits_not_clipped(tmp_path):
    # 65535 -> 255, 32896 = 128 * 257 -> 128, 0 -> 0 (a clip would give 255 for all three nonzero values)
    Image.fromarray(np.array([[0, 32896, 65535]], dtype=np.uint16)).save(tmp_path / "d.png")
    assert Image.open(tmp_path / "d.png").mode.startswith("I")
    assert load_image(str(tmp_path / "d.png"))[0, :, 0].tolist() == [0, 128, 255]


def test_an_image_smaller_than_one_patch_is_scaled_up_to_min_pixels():
    # 5x3 pixels, min_pixels 3136 = 56x56: smart_resize scales up to (56, 84) -> grid (1, 4, 6), 6 merged tokens
    out = preprocess_image(np.zeros((3, 5, 3), np.uint8), 3136, 50176)
    assert out["image_grid_thw"].tolist() == [[1, 4, 6]] and out["pixel_values"].shape == (24, 1176)


def test_an_image_far_above_max_pixels_is_scaled_down_within_it():
    # 2000x1000 with max_pixels 50176 (= 224x224): beta = sqrt(2e6 / 50176) ~ 6.31 -> h = floor(158.4/28)*28 = 140,
    # w = floor(316.9/28)*28 = 308 -> grid (1, 10, 22)
    out = preprocess_image(np.zeros((1000, 2000, 3), np.uint8), 3136, 50176)
    assert out["image_grid_thw"].tolist() == [[1, 10, 22]]
    assert 140 * 308 <= 50176


# --- bad images: refused --------------------------------------------------------------------
@pytest.mark.parametrize("kind, reason", [("missing", "file not found"), ("empty", "empty \\(0 bytes\\)"),
                                          ("truncated", "truncated or corrupt"), ("not_an_image", "not an image"),
                                          ("empty_bytes", "embedded image is empty")])
def test_an_unusable_image_raises_an_error_naming_it(tmp_path, kind, reason):
    png = _png(Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)))
    path = tmp_path / f"{kind}.png"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(png[: len(png) // 2])
    elif kind == "not_an_image":
        path.write_text("hello")
    ref = {"bytes": b"", "path": "x.png"} if kind == "empty_bytes" else str(path)
    with pytest.raises(ImageError, match=reason) as info:
        load_image(ref)
    assert ("x.png" if kind == "empty_bytes" else str(path)) in str(info.value)


def test_an_aspect_ratio_above_200_is_refused():
    with pytest.raises(ImageError, match="aspect ratio"):
        preprocess_image(np.zeros((1, 300, 3), np.uint8), 3136, 50176)


# --- preprocessing --------------------------------------------------------------------------
@pytest.mark.parametrize("height, width", [(50, 70), (10, 12), (300, 900), (56, 56)])
def test_preprocessing_matches_transformers_image_processor(height, width):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    image = np.random.default_rng(height).integers(0, 256, (height, width, 3), dtype=np.uint8)
    theirs = Qwen2VLImageProcessorPil(min_pixels=3136, max_pixels=50176)(images=[Image.fromarray(image)],
                                                                         return_tensors="np")
    ours = preprocess_image(image, 3136, 50176)
    assert ours["image_grid_thw"].tolist() == theirs["image_grid_thw"].tolist()
    assert np.abs(ours["pixel_values"].numpy() - theirs["pixel_values"]).max() < 1e-5
