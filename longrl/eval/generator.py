"""Greedy (or sampled) answers from vLLM for evaluation, videos decoded here and handed over as frames.

The engine and the video preprocessing are the training ones (`VLLMRollout`, `VisionCache`), so
an evaluated prompt is token for token what the RL rollout sees. A video that cannot be decoded,
or a prompt that no longer fits the engine once its video tokens are counted, yields a Generation
with an error instead of stopping the run.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from longrl.config import RolloutConfig
from longrl.eval.evaluate import Generation, Question
from longrl.data.image import image_name
from longrl.models.adapter import ADAPTERS, TextAdapter
from longrl.models.vision_cache import AudioSettings, MediaInput, VideoSettings, VisionCache
from longrl.workers.rollout import SamplingSpec, rollout_engine

logger = logging.getLogger(__name__)


def pixel_bounds(model_path: str | Path) -> tuple[int, int]:
    """(min_pixels, max_pixels) of the model's video processor, else the data config defaults."""
    from longrl.config import DataConfig

    file = Path(model_path) / "video_preprocessor_config.json"
    processor = json.loads(file.read_text()) if file.is_file() else {}
    return int(processor.get("min_pixels", DataConfig.min_pixels)), int(processor.get("max_pixels", DataConfig.max_pixels))


class VLLMGenerator:
    """Callable: questions -> one Generation each (texts decoded without special tokens)."""

    def __init__(self, model_path: str, tokenizer, *, max_new_tokens: int, num_video_frames: int,
                 temperature: float = 0.0, seed: int = 0, max_model_len: int | None = None,
                 min_pixels: int | None = None, max_pixels: int | None = None, dtype: str = "bf16",
                 max_images: int = 0, audio_max_length: float = 30.0, missing_audio: str = "skip"):
        from transformers import AutoConfig

        hf_config = AutoConfig.from_pretrained(model_path)
        text_config = hf_config.get_text_config()
        self.max_model_len = max_model_len or text_config.max_position_embeddings
        self.tokenizer, self.seed = tokenizer, seed
        self.spec = SamplingSpec(n=1, temperature=temperature, top_p=1.0, top_k=-1, max_tokens=max_new_tokens)
        self.engine = rollout_engine("vllm", model_path, RolloutConfig(dtype=dtype, seed=seed, limit_images=max_images),
                                     self.max_model_len)
        self.videos: VisionCache | None = None
        adapter = ADAPTERS[hf_config.model_type]() if hf_config.model_type in ADAPTERS else TextAdapter()
        vision = getattr(adapter.media_config(hf_config), "vision_config", None)
        if vision is not None:
            low, high = pixel_bounds(model_path)
            audio = AudioSettings(audio_max_length, missing_audio, model_path) if adapter.hears_audio else None
            settings = VideoSettings.for_model(model_path, vision, num_video_frames, min_pixels or low,
                                               max_pixels or high, audio=audio)
            self.videos = VisionCache(settings, cache_embeds=False, keep_frames=True)

    def __call__(self, questions: list[Question]) -> list[Generation]:
        results: list[Generation | None] = [None] * len(questions)
        ready: list[tuple[int, list[MediaInput]]] = []
        for i, q in enumerate(questions):
            media, error = question_media(self.videos, q)
            if error is None:
                length = len(q.prompt_ids) + sum(v.expanded_tokens - 1 for v in media) + self.spec.max_tokens
                if length > self.max_model_len:
                    error = (f"prompt + image and video tokens + max new tokens = {length} exceed max_model_len="
                             f"{self.max_model_len}; lower --num-video-frames or --max-pixels, or raise "
                             f"--max-model-len")
            if error is None:
                ready.append((i, media))
            else:
                logger.warning("question %s not evaluated: %s", q.id, error)
                results[i] = Generation(None, error)
        if ready:
            prompts = [questions[i].prompt_ids for i, _ in ready]
            media = [m for _, m in ready] if self.videos is not None else None
            outputs = self.engine.generate(prompts, self.spec, self.seed, media=media) if media is not None \
                else self.engine.generate(prompts, self.spec, self.seed)
            for (i, _), samples in zip(ready, outputs):
                results[i] = Generation(self.tokenizer.decode(samples[0].token_ids, skip_special_tokens=True))
        if self.videos is not None:
            self.videos.clear()  # frames of long videos are large; every question is asked once
        return results  # type: ignore[return-value]



def question_media(cache: VisionCache | None, q: Question) -> tuple[list[MediaInput], str | None]:
    """The question's images and videos as pixels for the engine, or why they cannot be had (naming the file)."""
    refs = [("image", r) for r in q.images] + [("video", p) for p in q.videos]
    if not refs:
        return [], None
    if cache is None:
        return [], f"the question has images {q.images} / videos {q.videos} but the model has no vision tower"
    bad = [ref for ref in refs if cache.media(ref) is None]
    if bad:
        modality, ref = bad[0]
        return [], f"cannot decode {modality} {image_name(ref) if modality == 'image' else ref}"
    return cache.row_inputs([refs], "frames")[0], None
