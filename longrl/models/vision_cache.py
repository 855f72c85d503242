"""VisionCache (MR-SP stage 1): each unique video or image of a step is decoded once and encoded once.

RL on long videos is dominated by the vision tower when every pass re-encodes every frame:
n rollout samples, old log-probs, reference log-probs and the update each see the same video
(Long-RL, https://arxiv.org/abs/2507.07966, section 4). A worker keeps, for the prompts of its
own rank, the preprocessed video (pixels, grid, timing) and the tower's output embeddings, and
hands every pass what it needs (`media_mode`):

  purpose     cache on (worker.rollout.cache_video_embeds)        cache off
  rollout     embeddings -> vLLM (enable_mm_embeds)               frames -> vLLM encodes
  log_probs   embeddings (the ref tower's own when it trains)     pixels, encoded per row
  update      embeddings if the tower is frozen, else pixels      pixels, encoded per row

Images take the same paths as videos (an image is a one-step video to the tower: grid (1, h, w));
their counters are image/*, the videos' video/*.

Entries live for one RL step: the worker clears the cache after the update (the tower may have
changed, and the next step brings other videos). Embeddings are kept on the CPU: vLLM takes
them from there, and a long video's embeddings would crowd the GPU between passes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal, Union

import numpy as np
import torch

from longrl.config import Config
from longrl.data.audio import MEL_FRAMES_PER_SECOND, SAMPLE_RATE, audio_token_count, load_audio_or_none
from longrl.data.image import ImageError, ImageRef, image_name, load_image, preprocess_image
from longrl.data.video import CLIP_MEAN, CLIP_STD, VideoFrames, load_video_or_none, preprocess_video

logger = logging.getLogger(__name__)

Purpose = Literal["rollout", "log_probs", "update"]
Mode = Literal["embeds", "pixels", "frames"]
Modality = Literal["image", "video"]
MediaRef = Union[str, tuple[Modality, Union[str, ImageRef]]]
"""A row's media item for row_inputs: a video path, or (modality, reference)."""
DUMMY_PATH = "<padding video>"


@dataclasses.dataclass(frozen=True)
class AudioSettings:
    """How a video's own audio becomes model inputs (omni models): length limit in seconds, what a video without
    an audio track gives (data.missing_audio: skip or silence), and the model directory whose
    preprocessor_config.json holds the feature extractor (Whisper log-mel, as vLLM runs it)."""

    max_seconds: float
    missing: str
    model_path: str


@dataclasses.dataclass(frozen=True)
class SquareFrames:
    """Models whose tower takes every image and video frame alone, resized to one square (VILA): no patch grid
    of variable size, no temporal patches. size: the tower's input side; tokens: language-model tokens the tower
    + projector make of one image or frame; separators: text tokens the model puts after each frame (VILA: the
    embedding of "\\n"), which its adapter embeds with the live table."""

    size: int
    patch_size: int
    tokens: int
    separators: int
    image_mean: tuple[float, ...]
    image_std: tuple[float, ...]

    def pixels(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 [F, H, W, 3] -> float32 [F, 3, size, size]: PIL bicubic resize, /255, (x - mean) / std (SigLIP's
        image processor)."""
        from PIL import Image

        resized = np.stack([np.asarray(Image.fromarray(f).resize((self.size, self.size), Image.BICUBIC))
                            for f in frames]).astype(np.float32) / 255.0
        normed = (resized - np.array(self.image_mean, np.float32)) / np.array(self.image_std, np.float32)
        return torch.from_numpy(normed).permute(0, 3, 1, 2).contiguous()

    def media(self, path: str, modality: Modality, frames: np.ndarray) -> MediaInput:
        """The MediaInput of an image (one frame) or a video's frames."""
        grid = self.size // self.patch_size
        n = frames.shape[0]
        return MediaInput(path, (n, grid, grid), 1.0, n * self.tokens, self.pixels(frames), modality=modality,
                          separator_tokens=n * self.separators)


@dataclasses.dataclass(frozen=True)
class VideoSettings:
    """How videos become model inputs: frame count, resize bounds, patching, normalisation, disk cache.

    num_frames: the frames of every video; with `fps` (data.video_fps), the most frames a video gets."""

    num_frames: int
    min_pixels: int
    max_pixels: int
    patch_size: int = 14
    merge_size: int = 2
    temporal_patch_size: int = 2
    image_mean: tuple[float, ...] = CLIP_MEAN
    image_std: tuple[float, ...] = CLIP_STD
    cache_dir: str | None = None
    strict: bool = False
    fps: float | None = None
    audio: AudioSettings | None = None
    """Set for omni models: each video brings its own audio track."""
    square: SquareFrames | None = None
    """Set for models that encode each image and frame alone at one square size (VILA)."""

    def max_video_tokens(self) -> int:
        """The most language-model tokens one video can take: its frames in temporal patches, each at most
        max_pixels / (patch x merge)^2 merged tokens (smart_resize keeps h x w <= max_pixels), plus, for an omni
        model, the audio tokens of its longest clip and audio_bos/audio_eos; for square frames, each frame's
        tokens and separators."""
        if self.square is not None:
            return self.num_frames * (self.square.tokens + self.square.separators)
        steps = -(-self.num_frames // self.temporal_patch_size)
        video = steps * (self.max_pixels // (self.patch_size * self.merge_size) ** 2)
        if self.audio is None:
            return video
        return video + audio_token_count(int(self.audio.max_seconds * MEL_FRAMES_PER_SECOND)) + 2

    @staticmethod
    def for_model(model_path: str | Path, vision_config: object, num_frames: int, min_pixels: int, max_pixels: int,
                  cache_dir: str | None = None, strict: bool = False, fps: float | None = None,
                  audio: AudioSettings | None = None) -> VideoSettings:
        """Patch sizes from the model's vision config, mean/std from its (video_)preprocessor_config.json.

        Qwen2-VL family processors normalise images and videos alike, so one mean/std serves both. A vision
        config with `square_frames` (VILA's) sets everything itself."""
        square = getattr(vision_config, "square_frames", None)
        if square is not None:
            return VideoSettings(num_frames, min_pixels, max_pixels, square.patch_size, 1, 1, square.image_mean,
                                 square.image_std, cache_dir, strict, fps, audio, square)
        mean, std = CLIP_MEAN, CLIP_STD
        files = [Path(model_path) / name for name in ("video_preprocessor_config.json", "preprocessor_config.json")]
        for file in (f for f in files if f.is_file()):
            processor = json.loads(file.read_text())
            mean = tuple(processor.get("image_mean", mean))
            std = tuple(processor.get("image_std", std))
            break
        return VideoSettings(num_frames, min_pixels, max_pixels, vision_config.patch_size,
                             vision_config.spatial_merge_size, vision_config.temporal_patch_size, mean, std,
                             cache_dir, strict, fps, audio)


@dataclasses.dataclass(frozen=True, eq=False)
class MediaInput:
    """One video or image ready for a model: grid (in patches), timing, and pixels, frames and/or embeddings.

    path: the file (an embedded image: its name with a content digest); grid_thw: (t, h, w) patches
    (t = 1 for an image); num_tokens = t*h*w / merge^2 language-model tokens;
    pixel_values: float32 [t*h*w, 3*tps*P*P] (square frames: [t, 3, S, S]); embeds: [num_tokens, hidden] (tower
    output); separator_tokens: text tokens inside the media block (VILA's per-frame newline); frames (video) / image (uint8 [H, W, 3]): the pixels resized to the grid, for an engine that
    encodes itself. A video of an omni model may carry its own audio: audio (float32 [N] 16 kHz mono, for
    the engine), audio_features (float32 [mel, frames], the feature extractor's valid frames, for the
    trainer) and audio_tokens (what the audio tower makes of them).
    """

    path: str
    grid_thw: tuple[int, int, int]
    second_per_grid_ts: float
    num_tokens: int
    pixel_values: torch.Tensor | None = None
    embeds: torch.Tensor | None = None
    frames: VideoFrames | None = None
    modality: Modality = "video"
    image: np.ndarray | None = None
    audio: np.ndarray | None = None
    audio_features: torch.Tensor | None = None
    audio_tokens: int = 0
    separator_tokens: int = 0
    """Text tokens the model interleaves with the tower's (VILA: a newline after each frame)."""

    @property
    def expanded_tokens(self) -> int:
        """Tokens its placeholder becomes: the tower's, plus separators, plus a video's audio tokens and
        audio_bos/audio_eos."""
        return self.num_tokens + self.separator_tokens + (self.audio_tokens + 2 if self.audio_tokens else 0)

    @property
    def key(self) -> str:
        """What the cache files it under (an image and a video may share a file name)."""
        return f"{self.modality}:{self.path}"


def media_mode(purpose: Purpose, cache_embeds: bool, tower_trainable: bool) -> Mode:
    """What a pass gets for each video (see the table in the module docstring)."""
    if not cache_embeds:
        return "frames" if purpose == "rollout" else "pixels"
    if purpose == "update" and tower_trainable:
        return "pixels"  # the update needs the tower's gradients
    return "embeds"


def vision_cache_for(cfg: Config, media_config: object, hears_audio: bool = False) -> VisionCache | None:
    """The worker's VisionCache for a vision-language model (None for a text model); `media_config`: the config
    holding `vision_config` (the adapter's `media_config`); `hears_audio`: videos bring their audio (omni)."""
    vision = getattr(media_config, "vision_config", None)
    if vision is None:
        return None
    rollout = cfg.worker.rollout
    path = cfg.worker.actor.model.model_path
    audio = AudioSettings(cfg.data.audio_max_length, cfg.data.missing_audio, path) if hears_audio else None
    settings = VideoSettings.for_model(path, vision, rollout.num_video_frames, cfg.data.min_pixels,
                                       cfg.data.max_pixels, cfg.data.cache_dir, cfg.data.strict_media,
                                       cfg.data.video_fps, audio)
    cache_embeds = rollout.cache_video_embeds
    if hears_audio and cache_embeds:
        # not built yet for videos that bring their audio: vLLM gets the frames and the waveform, the trainer pixels
        logger.warning("worker.rollout.cache_video_embeds=true is not used for omni models yet: videos and their "
                       "audio are encoded in every pass")
        cache_embeds = False
    pixels_reused = not cache_embeds or not cfg.worker.actor.model.freeze_vision_tower
    return VisionCache(settings, cache_embeds=cache_embeds, keep_frames=not cache_embeds, keep_pixels=pixels_reused,
                       decode_workers=cfg.data.num_workers)


def _item_key(item: MediaRef) -> tuple[str, Modality, str | ImageRef]:
    """(cache key, modality, reference) of a row's media item (a bare string is a video path)."""
    modality, ref = ("video", item) if isinstance(item, str) else item
    return f"{modality}:{ref if modality == 'video' else image_name(ref)}", modality, ref


def rollout_max_model_len(cfg: Config, hf_config: object, vision: VisionCache | None) -> int:
    """The rollout engine's longest prompt + response: worker.rollout.max_model_len, else the prompt and response
    limits plus, for a vision-language model, the most video tokens a prompt can carry (worker.rollout.limit_videos
    videos at num_video_frames and data.max_pixels, or of worker.rollout.tokens_per_frame each when set, as Long-RL
    adds tokens_per_frame x num_video_frames); never more than the model's context."""
    rollout, data = cfg.worker.rollout, cfg.data
    if rollout.max_model_len is not None:
        return rollout.max_model_len
    text = data.max_prompt_length + data.max_response_length
    if vision is None:
        return text
    context = getattr(getattr(hf_config, "text_config", hf_config), "max_position_embeddings", None)
    per_video = (rollout.num_video_frames * rollout.tokens_per_frame if rollout.tokens_per_frame is not None
                 else vision.settings.max_video_tokens())  # Long-RL's budget when the key is set
    budget = text + rollout.limit_videos * per_video
    return budget if context is None else min(budget, context)


def overlong_reason(prompt_ids: Sequence[int], media: Sequence[MediaInput], max_prompt_length: int,
                    max_model_len: int | None = None, max_response_length: int = 0) -> str | None:
    """Why a prompt with its decoded media is too long (None: it fits), with Long-RL's and EasyR1's meaning of
    data.max_prompt_length: it bounds the text and image tokens (EasyR1 and Long-RL both count an image's
    tokens in the prompt); a video's tokens come on top (Long-RL adds tokens_per_frame x frames to the limit),
    and the whole prompt + data.max_response_length is bounded by the engine's max_model_len."""
    images = sum(m.expanded_tokens - 1 for m in media if m.modality == "image")  # the placeholder is in prompt_ids
    videos = sum(m.expanded_tokens - 1 for m in media if m.modality == "video")  # with an omni video's audio
    if len(prompt_ids) + images > max_prompt_length:
        return (f"has {len(prompt_ids) + images} text and image tokens (a video counts as its placeholder), more "
                f"than data.max_prompt_length={max_prompt_length}")
    total = len(prompt_ids) + images + videos
    if max_model_len is not None and total + max_response_length > max_model_len:
        return (f"has {total} tokens with its video tokens, which with data.max_response_length={max_response_length}"
                f" exceed the engine's max_model_len={max_model_len} (worker.rollout.max_model_len, by default "
                f"the prompt and response limits plus the video tokens of worker.rollout.num_video_frames frames "
                f"at data.max_pixels, at most the model's context)")
    return None


def max_over_ranks(value: int) -> int:
    """The largest `value` over all ranks (a collective; `value` itself outside a process group)."""
    from longrl.parallel.collectives import all_reduce_scalar

    return int(all_reduce_scalar(value, "max"))


def _resized(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 [H, W, 3] resized (PIL bicubic, as preprocessing does) so an engine's own resize is a no-op."""
    from PIL import Image

    if image.shape[:2] == (height, width):
        return image
    return np.asarray(Image.fromarray(image).resize((width, height), Image.BICUBIC))


def _resized_frames(video: VideoFrames, height: int, width: int) -> VideoFrames:
    """The frames resized (PIL bicubic, as preprocessing does) so an engine's own resize is a no-op."""
    from PIL import Image

    if video.frames.shape[1:3] == (height, width):
        return video
    frames = np.stack([np.asarray(Image.fromarray(f).resize((width, height), Image.BICUBIC)) for f in video.frames])
    return dataclasses.replace(video, frames=frames)


class VisionCache:
    """Preprocessed videos and images and their tower embeddings, of one worker, for one RL step.

    `keep_frames`: also keep the sampled frames / resized image (the rollout engine encodes them
    when the embedding cache is off). `keep_pixels=False` drops an item's pixels once it is
    encoded, for when no pass needs them again (cache on, frozen tower): a 1024-frame 448x448
    video is 2.4 GB of float32 pixels. A pass that does ask for them decodes the item again.
    `decode_workers` (data.num_workers): threads that decode and preprocess a pass's new items in parallel
    (decord, PyAV and PIL release the GIL while they work); 0 or 1 decodes them one by one.
    """

    def __init__(self, settings: VideoSettings, cache_embeds: bool = True, keep_frames: bool = False,
                 keep_pixels: bool = True, decode_workers: int = 0):
        self.settings, self.cache_embeds, self.keep_frames = settings, cache_embeds, keep_frames
        self.keep_pixels, self.decode_workers = keep_pixels, decode_workers
        self._items: dict[str, MediaInput | None] = {}  # key -> preprocessed item (None: unusable)
        self._refs: dict[str, tuple[Modality, str | ImageRef]] = {}  # key -> what to decode it from again
        self._embeds: dict[tuple[str, str], torch.Tensor] = {}  # (tower, key) -> embeddings on the CPU
        self._stats: Counter = Counter()
        self._extractor = None  # the audio feature extractor, loaded at the first video with audio

    # ---- videos and images ------------------------------------------------------------------
    def video(self, path: str) -> MediaInput | None:
        """The decoded, preprocessed video (memoized); None, logged and counted once, if it is unusable."""
        return self.media(("video", path))

    def image(self, ref: str | ImageRef) -> MediaInput | None:
        """The decoded, preprocessed image (memoized); None, logged and counted once, if it is unusable."""
        return self.media(("image", ref))

    def media(self, item: MediaRef) -> MediaInput | None:
        """A row's media item (a video path, or (modality, ref)) preprocessed; None if unusable."""
        key, modality, ref = _item_key(item)
        if key in self._items:
            return self._items[key]
        start = time.perf_counter()
        loaded = self._load(modality, ref)
        self._keep(key, modality, ref, loaded)
        if loaded is not None:
            self._stats[f"{modality}/decode_s"] += time.perf_counter() - start
        return loaded

    def prefetch(self, items: Sequence[MediaRef]) -> None:
        """Decode and preprocess the items not held yet on `decode_workers` threads; their decode_s is the
        wall time of the whole batch (what the step waited)."""
        todo = {}
        for item in items:
            key, modality, ref = _item_key(item)
            if key not in self._items:
                todo[key] = (modality, ref)
        if self.decode_workers < 2 or len(todo) < 2:
            return  # media() decodes them one by one
        start = time.perf_counter()
        with ThreadPoolExecutor(min(self.decode_workers, len(todo)), thread_name_prefix="longrl-decode") as pool:
            loaded = list(pool.map(lambda modality_ref: self._load(*modality_ref), todo.values()))
        for (key, (modality, ref)), item in zip(todo.items(), loaded):
            self._keep(key, modality, ref, item)
        for modality in {m for m, _ in todo.values()}:
            self._stats[f"{modality}/decode_s"] += time.perf_counter() - start

    def _load(self, modality: Modality, ref: str | ImageRef) -> MediaInput | None:
        return self._load_video(ref) if modality == "video" else self._load_image(ref)

    def _keep(self, key: str, modality: Modality, ref: str | ImageRef, loaded: MediaInput | None) -> None:
        self._items[key], self._refs[key] = loaded, (modality, ref)
        self._stats[f"{modality}/skipped" if loaded is None else f"{modality}/decoded"] += 1

    def _load_video(self, path: str) -> MediaInput | None:
        s = self.settings
        by_fps = s.fps is not None  # EasyR1's rule: the duration sets the count, num_frames caps it
        frames = load_video_or_none(path, None if by_fps else s.num_frames, s.fps, cache_dir=s.cache_dir,
                                    strict=s.strict, frame_factor=s.temporal_patch_size,
                                    max_frames=s.num_frames if by_fps else None)
        if frames is None:
            return None
        if s.square is not None:
            return s.square.media(path, "video", frames.frames)
        audio: dict[str, object] = {}
        if s.audio is not None:
            # the feature extractor would cut longer audio silently (both here and in vLLM): cut it here, counted
            window = self._feature_extractor().chunk_length
            clip = load_audio_or_none(path, min(s.audio.max_seconds, window), missing=s.audio.missing,
                                      strict=s.strict)
            if clip is None:
                self._stats["audio/skipped"] += 1
                return None
            for event in clip.events():
                self._stats[f"audio/{event}"] += 1
            features = self._mel_features(clip.samples)
            audio = {"audio": clip.samples, "audio_features": features,
                     "audio_tokens": audio_token_count(features.shape[1])}
        inputs = preprocess_video(frames, s.min_pixels, s.max_pixels, s.patch_size, s.merge_size,
                                  s.temporal_patch_size, s.image_mean, s.image_std)
        grid = tuple(int(x) for x in inputs["video_grid_thw"][0])
        return MediaInput(path, grid, float(inputs["second_per_grid_ts"][0]),
                          grid[0] * grid[1] * grid[2] // s.merge_size ** 2, inputs["pixel_values_videos"],
                          frames=_resized_frames(frames, grid[1] * s.patch_size, grid[2] * s.patch_size)
                          if self.keep_frames else None, **audio)

    def _feature_extractor(self):
        """The model's Whisper feature extractor (preprocessor_config.json), loaded at the first audio."""
        if self._extractor is None:
            from transformers import WhisperFeatureExtractor

            self._extractor = WhisperFeatureExtractor.from_pretrained(self.settings.audio.model_path)
        return self._extractor

    def _mel_features(self, samples: np.ndarray) -> torch.Tensor:
        """The valid log-mel frames [mel, frames] of 16 kHz samples, computed as vLLM's processor computes them
        (padded to the extractor's window, which also cuts longer audio)."""
        out = self._feature_extractor()(samples, sampling_rate=SAMPLE_RATE, padding="max_length", return_attention_mask=True,
                              return_tensors="pt")
        return out["input_features"][0, :, : int(out["attention_mask"][0].sum())]

    def _load_image(self, ref: str | ImageRef) -> MediaInput | None:
        s = self.settings
        try:
            pixels = load_image(ref)
            if s.square is not None:
                return s.square.media(image_name(ref), "image", pixels[None])
            inputs = preprocess_image(pixels, s.min_pixels, s.max_pixels, s.patch_size, s.merge_size,
                                      s.temporal_patch_size, s.image_mean, s.image_std)
        except ImageError as exc:
            if s.strict:
                raise ImageError(image_name(ref), f"{exc.reason} (data.strict_media=true)") from None
            logger.warning("skipping image %s: %s (data.strict_media=false)", image_name(ref), exc.reason)
            return None
        grid = tuple(int(x) for x in inputs["image_grid_thw"][0])
        resized = _resized(pixels, grid[1] * s.patch_size, grid[2] * s.patch_size) if self.keep_frames else None
        return MediaInput(image_name(ref), grid, 1.0, grid[1] * grid[2] // s.merge_size ** 2,
                          inputs["pixel_values"], modality="image", image=resized)

    def dummy_video(self) -> MediaInput:
        """The smallest valid video (one merged token): encoded by ranks with fewer videos, so that every
        rank makes the same number of (collective) tower calls."""
        s = self.settings
        if s.square is not None:
            return s.square.media(DUMMY_PATH, "video", np.zeros((1, 1, 1, 3), np.uint8))
        width = 3 * s.temporal_patch_size * s.patch_size ** 2
        return MediaInput(DUMMY_PATH, (1, s.merge_size, s.merge_size), 1.0, 1,
                          torch.zeros(s.merge_size ** 2, width))

    # ---- per-pass inputs --------------------------------------------------------------------
    def row_inputs(self, rows: Sequence[Sequence[MediaRef]], mode: Mode, tower: str = "actor",
                   encode: Callable[[MediaInput], torch.Tensor] | None = None,
                   peers_max: Callable[[int], int] | None = None) -> list[list[MediaInput] | None]:
        """Per row, its media as `mode` needs them; None for a row with an unusable video or image.

        In "embeds" mode each item not yet encoded by `tower` is encoded once with `encode`
        ([num_tokens, hidden]). `peers_max(k)` returns the largest k over all ranks: a rank with
        fewer items to encode encodes a dummy video instead, because with FSDP every tower call
        is a collective that all ranks must make.
        """
        self.prefetch([ref for refs in rows for ref in refs])
        items = [[self.media(ref) for ref in refs] for refs in rows]
        usable = [None if any(v is None for v in vs) else vs for vs in items]
        if mode == "embeds":
            self._encode_missing([v for vs in usable if vs for v in vs], tower, encode, peers_max)
        return [None if vs is None else [self._as(v, mode, tower) for v in vs] for vs in usable]

    def _encode_missing(self, items: list[MediaInput], tower: str,
                        encode: Callable[[MediaInput], torch.Tensor] | None,
                        peers_max: Callable[[int], int] | None) -> None:
        missing = list({v.key: v for v in items if (tower, v.key) not in self._embeds}.values())
        calls = peers_max(len(missing)) if peers_max is not None else len(missing)
        if calls and encode is None:
            raise AssertionError("row_inputs(mode='embeds') needs an encode function")
        hits = Counter(v.modality for v in items)
        hits.subtract(v.modality for v in missing)
        for modality, n in hits.items():
            self._stats[f"{modality}/embed_hits"] += n
        for item in missing:
            start = time.perf_counter()
            embeds = encode(self._with_pixels(item)).detach().to("cpu")
            if embeds.shape[0] != item.num_tokens:
                raise AssertionError(f"{item.path}: the tower gave {embeds.shape[0]} embeddings for "
                                     f"{item.num_tokens} tokens")
            self._embeds[(tower, item.key)] = embeds
            if not self.keep_pixels:
                self._items[item.key] = dataclasses.replace(item, pixel_values=None)
            self._stats[f"{item.modality}/encoded"] += 1
            self._stats[f"{item.modality}/encode_s"] += time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(calls - len(missing)):
            encode(self.dummy_video())
        if calls > len(missing):
            self._stats["video/encode_s"] += time.perf_counter() - start  # padding videos keep ranks in step

    def _as(self, item: MediaInput, mode: Mode, tower: str) -> MediaInput:
        if mode == "embeds":
            return dataclasses.replace(item, embeds=self._embeds[(tower, item.key)], pixel_values=None, frames=None,
                                       image=None)
        if mode == "frames":
            if item.frames is None and item.image is None:
                raise AssertionError("frames mode needs VisionCache(keep_frames=True)")
            return dataclasses.replace(item, pixel_values=None)
        return dataclasses.replace(self._with_pixels(item), frames=None, image=None)

    def _with_pixels(self, item: MediaInput) -> MediaInput:
        """`item` with its pixels, decoded again if keep_pixels=False dropped them."""
        if item.pixel_values is not None:
            return item
        current = self._items.get(item.key)
        if current is None or current.pixel_values is None:
            ref = self._refs[item.key]
            self._items.pop(item.key, None)
            current = self.media(ref)
            if current is None:
                raise RuntimeError(f"{item.modality} {item.path} became unreadable during the step (it was read before)")
        return current

    # ---- lifetime and metrics ---------------------------------------------------------------
    def clear(self) -> None:
        """Forget every item and embedding (end of a step, or the weights changed)."""
        self._items.clear()
        self._refs.clear()
        self._embeds.clear()

    def __len__(self) -> int:
        """Embeddings held."""
        return len(self._embeds)

    def count(self, name: str) -> None:
        """Count an event of the worker's as a metric `name` (e.g. video/overlong: a prompt skipped as too long)."""
        self._stats[name if "/" in name else f"video/{name}"] += 1

    def take_stats(self) -> dict[str, float]:
        """video/*, image/* and audio/* counters since the last call: decoded, skipped, encoded, embed_hits, decode_s,
        encode_s; audio/skipped, resampled, downmixed, truncated, silenced."""
        stats = {k: float(v) for k, v in sorted(self._stats.items())}
        self._stats.clear()
        return stats


def reduce_video_stats(per_worker: Sequence[dict[str, float]]) -> dict[str, float]:
    """One step's video/* metrics from every rank's `video_stats()`: counts summed over ranks, seconds
    the slowest rank's (ranks work in parallel)."""
    out: dict[str, float] = {}
    for stats in per_worker:
        for key, value in stats.items():
            out[key] = max(out.get(key, 0.0), value) if key.endswith("_s") else out.get(key, 0.0) + value
    return out


MEDIA_COLUMNS = (("image", "images"), ("video", "videos"))
"""(modality, Batch object column holding each row's references)."""


def has_media(batch: object) -> bool:
    """Whether the batch carries image or video columns."""
    return any(column in batch for _, column in MEDIA_COLUMNS)


def media_refs(batch: object) -> list[list[MediaRef]]:
    """Per row, its (modality, reference) items: its images, then its videos (each in placeholder order)."""
    rows: list[list[MediaRef]] = [[] for _ in range(len(batch))]
    for modality, column in MEDIA_COLUMNS:
        if column in batch:
            for row, refs in zip(rows, batch[column]):
                row.extend((modality, ref) for ref in refs)
    return rows


def describe_media(batch: object, i: int) -> str:
    """`images [...] and videos [...]` of row i, for messages."""
    parts = [f"{column} {[image_name(r) if modality == 'image' else r for r in batch[column][i]]}"
             for modality, column in MEDIA_COLUMNS if column in batch and batch[column][i]]
    return " and ".join(parts) or "no media"
