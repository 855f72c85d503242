"""A torchvision-free stand-in for transformers' Qwen2VLVideoProcessor (numpy + PIL).

transformers' own class is a torchvision backend; vLLM builds a Qwen2.5-VL processor even when
it is fed cached video embeddings only, so without torchvision Qwen2.5-VL does not load. This
class computes the same `pixel_values_videos` / `video_grid_thw` with
`longrl.data.video.frames_to_patches` and is registered by `longrl.vllm_plugin.register`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers.image_processing_utils import BatchFeature
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize
from transformers.video_processing_utils import VideoProcessorMixin
from transformers.video_utils import VideoMetadata

from longrl.data.video import CLIP_MEAN, CLIP_STD, frames_to_patches


def _to_thwc(video: Any) -> np.ndarray:
    """One video as uint8 [T, H, W, 3]: accepts an array/tensor (THWC or TCHW) or a list of frames."""
    if isinstance(video, (list, tuple)):
        video = np.stack([np.asarray(f.convert("RGB")) if isinstance(f, Image.Image) else np.asarray(f) for f in video])
    if isinstance(video, torch.Tensor):
        video = video.cpu().numpy()
    video = np.asarray(video)
    if video.ndim == 3:
        video = video[None]
    if video.shape[-1] != 3 and video.shape[1] == 3:  # TCHW -> THWC
        video = video.transpose(0, 2, 3, 1)
    return video


def _as_video_list(videos: Any) -> list:
    """Normalize the `videos` argument to a list of videos (a single video may come bare)."""
    if not isinstance(videos, (list, tuple)):
        return [videos]
    if videos and (isinstance(videos[0], Image.Image) or getattr(videos[0], "ndim", 0) == 3):
        return [videos]  # one video given as a list of frames
    return list(videos)


class Qwen2VLVideoProcessor(VideoProcessorMixin):
    """Same name, config keys and outputs as transformers' class; frames must be sampled already."""

    size = {"shortest_edge": 128 * 28 * 28, "longest_edge": 28 * 28 * 768}
    image_mean = list(CLIP_MEAN)
    image_std = list(CLIP_STD)
    do_resize = True
    do_rescale = True
    do_normalize = True
    do_convert_rgb = True
    rescale_factor = 1 / 255
    patch_size = 14
    temporal_patch_size = 2
    merge_size = 2
    do_sample_frames = False
    return_metadata = False
    fps = None
    model_input_names = ["pixel_values_videos", "video_grid_thw"]

    def __init__(self, **kwargs: Any):
        size = self._size(kwargs, dict(kwargs.pop("size", None) or self.size))
        kwargs.pop("min_pixels", None)
        kwargs.pop("max_pixels", None)
        super().__init__(size=size, **kwargs)

    @staticmethod
    def _size(kw: dict, size: dict) -> dict:
        """`size` with the legacy min_pixels/max_pixels keys applied (they win, as in transformers)."""
        size = dict(size)
        if kw.get("min_pixels") is not None:
            size["shortest_edge"] = kw["min_pixels"]
        if kw.get("max_pixels") is not None:
            size["longest_edge"] = kw["max_pixels"]
        return size

    def _get(self, kw: dict, key: str) -> Any:
        return kw[key] if kw.get(key) is not None else getattr(self, key)

    def get_num_of_video_patches(self, num_frames: int, height: int, width: int,
                                 videos_kwargs: dict | None = None) -> int:
        """Patches (before the 2x2 merge) of a video of this size; vLLM sizes its placeholders with it."""
        kw = videos_kwargs or {}
        p, m, tps = (self._get(kw, k) for k in ("patch_size", "merge_size", "temporal_patch_size"))
        size = self._size(kw, kw.get("size") or self.size)
        h, w = smart_resize(height, width, factor=p * m, min_pixels=size["shortest_edge"],
                            max_pixels=size["longest_edge"])
        return -(-num_frames // tps) * (h // p) * (w // p)

    def __call__(self, videos: Any, **kwargs: Any) -> BatchFeature:
        return self.preprocess(videos, **kwargs)

    def preprocess(self, videos: Any, video_metadata: Any = None, return_tensors: Any = None,
                   **kw: Any) -> BatchFeature:
        """pixel_values_videos [sum N_i, 3*tps*P*P] and video_grid_thw int64 [V, 3].

        float32, or uint8 when vLLM asks for do_rescale=False, do_normalize=False because it
        normalizes on the device (vLLM's mm_device_do_normalize, on by default for Qwen2.5-VL).
        """
        size = self._size(kw, kw.get("size") or self.size)
        videos = _as_video_list(videos)
        if video_metadata is None:
            video_metadata = [None] * len(videos)
        elif not isinstance(video_metadata, (list, tuple)):
            video_metadata = [video_metadata]
        patches, grids, metas = [], [], []
        for video, meta in zip(videos, video_metadata):
            frames = _to_thwc(video)
            x, grid = frames_to_patches(
                frames, size["shortest_edge"], size["longest_edge"], self._get(kw, "patch_size"),
                self._get(kw, "merge_size"), self._get(kw, "temporal_patch_size"),
                tuple(self._get(kw, "image_mean")), tuple(self._get(kw, "image_std")),
                do_resize=self._get(kw, "do_resize"), do_rescale=self._get(kw, "do_rescale"),
                rescale_factor=self._get(kw, "rescale_factor"), do_normalize=self._get(kw, "do_normalize"))
            patches.append(x)
            grids.append(grid)
            if meta is None:
                meta = VideoMetadata(total_num_frames=len(frames), fps=self.fps or 24,
                                     frames_indices=list(range(len(frames))))
            elif isinstance(meta, dict):
                meta = VideoMetadata(**{k: v for k, v in meta.items() if k in VideoMetadata.__dataclass_fields__})
            metas.append(meta)
        out = BatchFeature({"pixel_values_videos": np.concatenate(patches, 0),
                            "video_grid_thw": np.asarray(grids, np.int64)}, tensor_type=return_tensors)
        out["video_metadata"] = metas
        return out


class Qwen3VLVideoProcessor(Qwen2VLVideoProcessor):
    """Qwen3-VL's defaults (16-pixel patches, mean/std 0.5) on the same numpy/PIL code.

    Serves vLLM's Qwen3-VL processor, which builds a video processor even for image-only prompts;
    longrl feeds Qwen3-VL images only (videos are refused at validation, see
    longrl/models/qwen3_vl.py)."""

    size = {"shortest_edge": 128 * 32 * 32, "longest_edge": 32 * 32 * 768}
    image_mean = [0.5, 0.5, 0.5]
    image_std = [0.5, 0.5, 0.5]
    patch_size = 16
