"""Video input: decode with uniform frame sampling, a decoded-frame disk cache, and Qwen2-VL
preprocessing into `pixel_values_videos` without torchvision.

Frame-count rule (why it differs from transformers, which raises when a video is too short):
every decode returns exactly `num_frames` frames, rounded up to a multiple of the temporal
patch size (2), picked at `linspace(0, total - 1, n).round()`. A video with fewer frames than
asked repeats frames evenly in time order (a 3-frame video asked for 4 gives frames 0, 1, 1, 2)
instead of padding with the last frame, so
  * the number of video tokens is known before decoding (prompt-length filtering, batching),
  * the first and last frames are always included ("what happens at the end" stays visible),
  * time keeps flowing evenly: the model never sees a fake frozen ending.
With `fps` (EasyR1's data.video_fps), the count follows qwen_vl_utils' smart_nframes, which EasyR1
samples with: n = duration * fps, at least 4, at most `max_frames` (qwen_vl_utils: 768) and the
video's own frame count, rounded down to even; so a video is never sampled denser than its source
there, and the token count depends on its length. With neither, all frames (rounded up to even).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import math
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from longrl.data.media import MediaError, check_media_file

logger = logging.getLogger(__name__)

# transformers.image_utils.OPENAI_CLIP_MEAN / _STD, the Qwen2-VL processor defaults; copied so
# that importing this module (done by the vLLM plugin in every process) stays cheap.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_CACHE_VERSION = 2  # bump when the cached content or the sampling rule changes


class VideoError(MediaError):
    """A video that cannot be used: names the file and the reason."""

    kind = "video"

    @property
    def path(self) -> str:
        return self.name


@dataclasses.dataclass(frozen=True, eq=False)
class VideoFrames:
    """Sampled frames of one video.

    frames: uint8 [F, H, W, 3] RGB; timestamps: float64 [F] seconds of each frame in the source;
    fps: the source frame rate; total_frames: frames in the source; path: the source file.
    """

    frames: np.ndarray
    timestamps: np.ndarray
    fps: float
    total_frames: int
    path: str

    @property
    def duration(self) -> float:
        """Length of the source video in seconds."""
        return self.total_frames / self.fps

    @property
    def sample_fps(self) -> float:
        """Sampled frames per second of source time (what Qwen2.5-VL's M-RoPE time axis uses)."""
        return len(self.frames) / self.duration


FPS_MIN_FRAMES = 4  # qwen_vl_utils.vision_process: the fewest frames fps sampling takes
FPS_MAX_FRAMES = 768  # qwen_vl_utils.vision_process: the most frames fps sampling takes (EasyR1's cap)


def _check_sampling(num_frames: int | None, fps: float | None, max_frames: int | None = None) -> None:
    if num_frames is not None and fps is not None:
        raise ValueError(f"num_frames={num_frames} and fps={fps} both set: they are exclusive; give one")
    if max_frames is not None and (fps is None or max_frames < 1):
        raise ValueError(f"max_frames={max_frames} caps fps sampling: it needs fps and must be >= 1")
    if num_frames is not None and num_frames < 1:
        raise ValueError(f"num_frames={num_frames}: must be >= 1")
    if fps is not None and fps <= 0:
        raise ValueError(f"fps={fps}: must be > 0")


def sample_indices(total_frames: int, source_fps: float, num_frames: int | None = None,
                   fps: float | None = None, frame_factor: int = 2, max_frames: int | None = None) -> np.ndarray:
    """Source frame indices to decode, int64 [n]; see the module docstring for the rule."""
    _check_sampling(num_frames, fps, max_frames)
    if fps is not None:
        cap = min(FPS_MAX_FRAMES if max_frames is None else max_frames, total_frames)
        fewest = math.ceil(FPS_MIN_FRAMES / frame_factor) * frame_factor
        wanted = min(max(total_frames / source_fps * fps, fewest), cap // frame_factor * frame_factor)
        return np.linspace(0, total_frames - 1, max(frame_factor, math.floor(wanted / frame_factor) * frame_factor)
                           ).round().astype(np.int64)
    n = num_frames if num_frames is not None else total_frames
    n = max(frame_factor, math.ceil(n / frame_factor) * frame_factor)
    return np.linspace(0, total_frames - 1, n).round().astype(np.int64)


# ---------------------------------------------------------------------------------------------
# decoding
# ---------------------------------------------------------------------------------------------
def _decode_decord(path: str, num_frames: int | None, fps: float | None, frame_factor: int,
                   max_frames: int | None) -> VideoFrames:
    from decord import VideoReader, cpu

    reader = VideoReader(path, ctx=cpu(0))
    total, source_fps = len(reader), float(reader.get_avg_fps())
    if total == 0 or source_fps <= 0:
        raise RuntimeError(f"decord reports {total} frames at {source_fps} fps")
    idx = sample_indices(total, source_fps, num_frames, fps, frame_factor, max_frames)
    frames = reader.get_batch(idx.tolist()).asnumpy()
    return VideoFrames(frames, idx / source_fps, source_fps, total, path)


def _decode_pyav(path: str, num_frames: int | None, fps: float | None, frame_factor: int,
                 max_frames: int | None) -> VideoFrames:
    import av

    with av.open(path) as container:
        if not container.streams.video:
            raise VideoError(path, "has no video stream (audio-only or not a video); remove it from the data set")
        stream = container.streams.video[0]
        source_fps = float(stream.average_rate or stream.guessed_rate or 0)
        total = stream.frames or sum(1 for p in container.demux(stream) if p.size)
        if total == 0 or source_fps <= 0:
            raise VideoError(path, f"has {total} frames at {source_fps} fps: truncated or corrupt")
        idx = sample_indices(total, source_fps, num_frames, fps, frame_factor, max_frames)
        container.seek(0)
        stream.thread_type = "AUTO"
        # Sequential decode keeps only the wanted frames (seeking per frame is slower for the
        # dense sampling used here, and exact on every codec).
        wanted: dict[int, np.ndarray | None] = {int(i): None for i in idx}
        last = int(idx[-1])
        for i, frame in enumerate(container.decode(stream)):
            if i in wanted:
                wanted[i] = frame.to_ndarray(format="rgb24")
            if i >= last:
                break
    missing = [i for i, f in wanted.items() if f is None]
    if missing:
        raise VideoError(path, f"truncated: the container lists {total} frames but frame {missing[0]} "
                               "cannot be decoded")
    return VideoFrames(np.stack([wanted[int(i)] for i in idx]), idx / source_fps, source_fps, total, path)


def _decode(path: str, num_frames: int | None, fps: float | None, frame_factor: int,
            max_frames: int | None) -> VideoFrames:
    """Decode with decord; on any decord failure fall back to PyAV; VideoError if both fail."""
    try:
        return _decode_decord(path, num_frames, fps, frame_factor, max_frames)
    except Exception as decord_error:  # decord raises its own DECORDError/RuntimeError types
        logger.debug("decord failed on %s (%s); trying PyAV", path, decord_error)
        try:
            return _decode_pyav(path, num_frames, fps, frame_factor, max_frames)
        except VideoError:
            raise
        except Exception as av_error:  # PyAV's errors (some subclass ValueError) all mean a bad file
            raise VideoError(path, f"corrupt or unsupported: decord: {decord_error}; PyAV: {av_error}") from av_error


# ---------------------------------------------------------------------------------------------
# cache
# ---------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=4096)
def _content_digest(path: str, size: int, mtime_ns: int) -> str:
    """sha256 of the file; memoized on (path, size, mtime) so a step does not re-read big files."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def cache_file(cache_dir: str | os.PathLike, path: str | os.PathLike, num_frames: int | None = None,
               fps: float | None = None, frame_factor: int = 2, max_frames: int | None = None) -> Path:
    """Where decode_video caches `path` sampled this way: keyed by content hash + sampling args."""
    st = os.stat(path)
    digest = _content_digest(os.path.realpath(path), st.st_size, st.st_mtime_ns)
    sampling = f"{num_frames}|{fps}|{max_frames}|{frame_factor}"
    key = hashlib.sha256(f"{digest}|{sampling}|v{_CACHE_VERSION}".encode()).hexdigest()
    return Path(cache_dir) / f"{key[:40]}.npz"


def _load_cached(file: Path, path: str) -> VideoFrames | None:
    try:
        with np.load(file) as z:
            return VideoFrames(z["frames"], z["timestamps"], float(z["fps"]), int(z["total_frames"]), path)
    except FileNotFoundError:
        return None
    except Exception as e:  # a half-written or damaged cache entry: decode again and overwrite it
        logger.warning("ignoring unreadable video cache %s (%s); decoding %s again", file, e, path)
        return None


def _store_cached(file: Path, video: VideoFrames) -> None:
    file.parent.mkdir(parents=True, exist_ok=True)
    # write then rename: workers sharing the cache never read a partial file
    fd, tmp = tempfile.mkstemp(dir=file.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, frames=video.frames, timestamps=video.timestamps, fps=video.fps,
                     total_frames=video.total_frames)
        os.replace(tmp, file)
    except BaseException:
        os.unlink(tmp)
        raise


# ---------------------------------------------------------------------------------------------
# public entry points
# ---------------------------------------------------------------------------------------------
def decode_video(path: str | os.PathLike, num_frames: int | None = None, fps: float | None = None, *,
                 cache_dir: str | os.PathLike | None = None, frame_factor: int = 2,
                 max_frames: int | None = None) -> VideoFrames:
    """Decode `path` sampled uniformly to `num_frames` frames (or at `fps`, at most `max_frames`: the
    module docstring's rule); frames uint8 [F, H, W, 3].

    With `cache_dir` (data.cache_dir) the sampled frames are stored there and later calls with
    the same file content and sampling arguments read them instead of decoding.
    Raises VideoError for a missing, empty, truncated or corrupt file or one without video.
    """
    path = str(path)
    _check_sampling(num_frames, fps, max_frames)  # before decoding, so a bad argument is never blamed on the file
    check_media_file(path, VideoError, "data.video_dir")
    file = cache_file(cache_dir, path, num_frames, fps, frame_factor, max_frames) if cache_dir is not None else None
    if file is not None and (cached := _load_cached(file, path)) is not None:
        return cached
    video = _decode(path, num_frames, fps, frame_factor, max_frames)
    if file is not None:
        _store_cached(file, video)
    return video


def load_video_or_none(path: str | os.PathLike, num_frames: int | None = None, fps: float | None = None, *,
                       cache_dir: str | os.PathLike | None = None, strict: bool = False,
                       frame_factor: int = 2, max_frames: int | None = None) -> VideoFrames | None:
    """decode_video, but an unusable video is logged (naming the file) and gives None unless strict."""
    try:
        return decode_video(path, num_frames, fps, cache_dir=cache_dir, frame_factor=frame_factor,
                            max_frames=max_frames)
    except VideoError as e:
        if strict:
            raise
        logger.warning("skipping %s", e)
        return None


def video_metadata(video: VideoFrames) -> dict:
    """transformers/vLLM video metadata for already-sampled frames.

    vLLM 0.32 takes a Qwen2.5-VL video as `(frames, metadata)`; with these values its processor
    does not sample again and derives the same second_per_grid_ts as preprocess_video
    (sampled fps = len(frames_indices) / total_num_frames * fps).
    """
    return {"fps": video.fps, "duration": video.duration, "total_num_frames": video.total_frames,
            "frames_indices": np.rint(video.timestamps * video.fps).astype(int).tolist(),
            "video_backend": "pyav", "do_sample_frames": False}


# ---------------------------------------------------------------------------------------------
# Qwen2-VL preprocessing
# ---------------------------------------------------------------------------------------------
def frames_to_patches(frames: np.ndarray, min_pixels: int, max_pixels: int, patch_size: int = 14,
                      merge_size: int = 2, temporal_patch_size: int = 2,
                      image_mean: tuple[float, ...] = CLIP_MEAN, image_std: tuple[float, ...] = CLIP_STD,
                      do_resize: bool = True, do_rescale: bool = True, rescale_factor: float = 1 / 255,
                      do_normalize: bool = True) -> tuple[np.ndarray, tuple[int, int, int]]:
    """uint8 [T, H, W, 3] frames -> (float32 [gt*gh*gw, 3*tps*P*P] patches, (gt, gh, gw)).

    Same steps and layout as transformers' Qwen2VLVideoProcessor: smart_resize (bicubic, PIL,
    as the image processor's PIL backend), rescale, normalize, repeat the last frame up to a
    multiple of temporal_patch_size, patchify with merge-window order (gt, gh/m, gw/m, m, m) and
    channel-major patch vectors (C, tps, P, P). With do_rescale and do_normalize both False
    the patches stay uint8: vLLM then normalizes on the device (mm_device_do_normalize).
    """
    from PIL import Image
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize  # no torchvision

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames have shape {frames.shape}; expected [T, H, W, 3] RGB")
    t, height, width = frames.shape[:3]
    h, w = height, width
    if do_resize:
        h, w = smart_resize(height, width, factor=patch_size * merge_size, min_pixels=min_pixels, max_pixels=max_pixels)
        if (h, w) != (height, width):
            frames = np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(f, np.uint8)).resize(
                (w, h), Image.BICUBIC)) for f in frames])
    x = frames.astype(np.float32) if do_rescale or do_normalize else frames
    if do_rescale:
        x = x * np.float32(rescale_factor)
    if do_normalize:
        x = (x - np.asarray(image_mean, np.float32)) / np.asarray(image_std, np.float32)
    x = x.transpose(0, 3, 1, 2)  # T C h w
    if pad := -t % temporal_patch_size:
        x = np.concatenate([x, np.repeat(x[-1:], pad, axis=0)], axis=0)
    gt, gh, gw, m, p = x.shape[0] // temporal_patch_size, h // patch_size, w // patch_size, merge_size, patch_size
    x = x.reshape(gt, temporal_patch_size, 3, gh // m, m, p, gw // m, m, p)
    x = x.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)  # gt, gh/m, gw/m, m, m, C, tps, P, P
    return np.ascontiguousarray(x.reshape(gt * gh * gw, 3 * temporal_patch_size * p * p)), (gt, gh, gw)


def preprocess_video(video: VideoFrames, min_pixels: int, max_pixels: int, patch_size: int = 14,
                     merge_size: int = 2, temporal_patch_size: int = 2,
                     image_mean: tuple[float, ...] = CLIP_MEAN,
                     image_std: tuple[float, ...] = CLIP_STD) -> dict[str, torch.Tensor]:
    """Qwen2(.5)-VL model inputs for one video.

    pixel_values_videos: float32 [gt*gh*gw, 3*tps*P*P]; video_grid_thw: int64 [1, 3];
    second_per_grid_ts: float32 [1] = temporal_patch_size / sampled fps (source seconds per
    temporal grid step, which Qwen2.5-VL's M-RoPE time axis scales by tokens_per_second).
    """
    patches, grid = frames_to_patches(video.frames, min_pixels, max_pixels, patch_size, merge_size,
                                      temporal_patch_size, image_mean, image_std)
    return {
        "pixel_values_videos": torch.from_numpy(patches),
        "video_grid_thw": torch.tensor([grid], dtype=torch.long),
        "second_per_grid_ts": torch.tensor([temporal_patch_size / video.sample_fps], dtype=torch.float32),
    }
