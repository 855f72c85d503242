"""Image input: a row's image reference (path, {"bytes", "path"} dict or decoded image) to RGB pixels,
and Qwen2-VL preprocessing into `pixel_values` + `image_grid_thw` without torchvision.

What is converted and what is refused (why: a data set scraped from the web holds every kind of file):
  * colour modes: grayscale (L, LA, 1), palette (P), CMYK, YCbCr, RGBA and 16-bit (I;16, I) all become
    8-bit RGB; transparency is composited on white, as qwen_vl_utils does (black would darken line
    drawings such as geometry figures whose background is transparent);
  * sizes: an image smaller than one patch is scaled up and one far above data.max_pixels scaled down
    by `smart_resize` within [data.min_pixels, data.max_pixels], as transformers does;
  * refused (ImageError naming the file and the reason): a missing path, an empty or truncated file,
    bytes that are no image, an aspect ratio above 200 (smart_resize's limit).
"""

from __future__ import annotations

import hashlib
import io
from typing import Any, Union

import numpy as np
import torch

from longrl.data.media import MediaError, check_media_file
from longrl.data.video import CLIP_MEAN, CLIP_STD, frames_to_patches

ImageRef = Union[str, dict]
"""A row's image after the dataset normalised it: a path, or {"bytes": bytes, "path": str | None}."""


class ImageError(MediaError):
    """An image that cannot be used: names the file (or the embedded image) and the reason."""

    kind = "image"


def image_name(ref: ImageRef) -> str:
    """How messages and metrics name an image: its path, or `<bytes sha1:...>` for an embedded one."""
    if isinstance(ref, str):
        return ref
    data = ref.get("bytes")
    if data is None:
        return str(ref.get("path"))
    digest = hashlib.sha1(data).hexdigest()[:12]
    return f"{ref.get('path') or '<bytes>'} (embedded, sha1:{digest})"


def normalize_ref(value: Any) -> ImageRef:
    """One image as a data set row holds it -> ImageRef (a decoded PIL image is stored as PNG bytes)."""
    from PIL import Image

    if isinstance(value, str):
        return value
    if isinstance(value, Image.Image):
        buffer = io.BytesIO()
        value.save(buffer, format="PNG")
        return {"bytes": buffer.getvalue(), "path": getattr(value, "filename", None) or None}
    if isinstance(value, dict) and ("bytes" in value or "path" in value):
        if value.get("bytes") is None and not value.get("path"):
            raise ValueError(f"an image dict {sorted(value)} with neither bytes nor path")
        return {"bytes": value.get("bytes"), "path": value.get("path")}
    raise ValueError(f"an image is given as {type(value).__name__}; expected a path, a list of paths, "
                     f"a {{'bytes', 'path'}} dict or a decoded image")


def _open(ref: ImageRef):
    from PIL import Image

    if isinstance(ref, dict) and ref.get("bytes") is not None:
        if not ref["bytes"]:
            raise ImageError(image_name(ref), "the embedded image is empty (0 bytes)")
        return Image.open(io.BytesIO(ref["bytes"]))
    path = ref if isinstance(ref, str) else ref["path"]
    check_media_file(path, ImageError, "data.image_dir")
    return Image.open(path)


def to_rgb(image) -> np.ndarray:
    """A PIL image of any mode as uint8 [H, W, 3] RGB (see the module docstring for the rules)."""
    from PIL import Image

    if image.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit grayscale: scale to 8 bits, do not clip
        values = np.asarray(image, dtype=np.float64)
        gray = np.clip(np.round(values / 257.0), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=-1)
    if image.mode == "F":
        gray = np.clip(np.round(np.asarray(image, dtype=np.float64)), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=-1)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
    return np.asarray(image.convert("RGB"))


def load_image(ref: ImageRef) -> np.ndarray:
    """The image as uint8 [H, W, 3] RGB; ImageError for a missing, empty, truncated or unreadable one."""
    from PIL import Image, UnidentifiedImageError

    name = image_name(ref)
    try:
        with _open(ref) as image:
            image.load()  # decodes now: a truncated file fails here, not later in a worker
            return to_rgb(image)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(name, "is not an image PIL can read (corrupt, or another file type)") from None
    except Image.DecompressionBombError as exc:
        raise ImageError(name, f"is too large to decode safely ({exc})") from None
    except (OSError, SyntaxError, ValueError) as exc:  # PIL's errors for truncated / damaged data
        raise ImageError(name, f"truncated or corrupt ({exc})") from None


def preprocess_image(image: np.ndarray, min_pixels: int, max_pixels: int, patch_size: int = 14,
                     merge_size: int = 2, temporal_patch_size: int = 2,
                     image_mean: tuple[float, ...] = CLIP_MEAN,
                     image_std: tuple[float, ...] = CLIP_STD) -> dict[str, torch.Tensor]:
    """Qwen2(.5)-VL model inputs for one image, as transformers' Qwen2-VL image processor makes them.

    pixel_values: float32 [gh*gw, 3*tps*P*P] (the image repeated temporal_patch_size times, as a
    one-step video); image_grid_thw: int64 [1, 3] = (1, gh, gw). ImageError if smart_resize refuses
    the shape (aspect ratio above 200).
    """
    try:
        patches, grid = frames_to_patches(image[None], min_pixels, max_pixels, patch_size, merge_size,
                                          temporal_patch_size, image_mean, image_std)
    except ValueError as exc:
        raise ImageError(f"of {image.shape[1]}x{image.shape[0]} pixels", str(exc)) from None
    return {"pixel_values": torch.from_numpy(patches), "image_grid_thw": torch.tensor([grid], dtype=torch.long)}
