"""Qwen2.5-Omni adapter: vLLM's interleaved audio/video layout and M-RoPE positions, checked against vLLM's own
functions; the tiny thinker; log-probs of vLLM-sampled tokens for audio+video prompts."""

from __future__ import annotations

import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from longrl.models.qwen2_5_omni import expand_omni_tokens, interleaved_video_tokens, omni_mrope_positions
from longrl.models.vision_cache import MediaInput

IDS = {"image": 90, "video": 91, "audio": 92, "audio_bos": 93, "audio_eos": 94, "vision_bos": 95, "vision_eos": 96}


def _video(grid: tuple[int, int, int], sgt: float, audio_tokens: int = 0) -> MediaInput:
    return MediaInput("v.mp4", grid, sgt, grid[0] * grid[1] * grid[2] // 4, audio_tokens=audio_tokens)


def _image(grid: tuple[int, int, int]) -> MediaInput:
    return MediaInput("i.png", grid, 1.0, grid[1] * grid[2] // 4, modality="image")


def _feature_lengths(audio_tokens: int) -> int:
    """A mel-frame count that gives `audio_tokens` (4 frames per token)."""
    return 4 * audio_tokens - 1


def _vllm_thinker():
    from longrl.vllm_plugin import register

    register()  # vLLM's Omni module imports a torchvision module of transformers
    from vllm.model_executor.models import qwen2_5_omni_thinker

    return qwen2_5_omni_thinker


def _vllm_fake(cls, tokens_per_second: float = 25, seconds_per_chunk: float = 2):
    config = SimpleNamespace(vision_config=SimpleNamespace(spatial_merge_size=2, tokens_per_second=tokens_per_second),
                             seconds_per_chunk=seconds_per_chunk, audio_token_index=IDS["audio"],
                             video_token_index=IDS["video"], audio_start_token_id=IDS["audio_bos"],
                             audio_end_token_id=IDS["audio_eos"])
    fake = SimpleNamespace(config=config)
    for name in ("iter_mm_features", "_get_audio_for_video_mapping", "_compute_audio_token_count",
                 "_compute_interleaved_positions"):
        setattr(fake, name, getattr(cls, name).__get__(fake))
    return fake


def _tensor(value, dtype=None) -> SimpleNamespace:
    return SimpleNamespace(data=torch.tensor(value, dtype=dtype))


def test_layout_and_positions_equal_vllms_own_functions_on_random_mixes():
    """vLLM's prompt update for a video with audio, and its M-RoPE positions over text, images, videos with and
    without audio, equal ours on 200 random prompts (second_per_grid 0.5 .. 2 s, audio shorter and longer than
    the video)."""
    vllm_omni = _vllm_thinker()
    cls = vllm_omni.Qwen2_5OmniThinkerForConditionalGeneration
    rand = random.Random(0)
    for trial in range(200):
        tps = rand.choice([25, 2])
        fake = _vllm_fake(cls, tokens_per_second=tps)
        items = []
        for _ in range(rand.randint(1, 3)):
            kind = rand.random()
            grid = (rand.randint(1, 6), 2 * rand.randint(1, 3), 2 * rand.randint(1, 3))
            sgt = float(np.float32(rand.choice([0.5, 1.0, 2.0, 1 / 3, 0.8])))
            if kind < 0.2:
                items.append(_image((1, grid[1], grid[2])))
            elif kind < 0.4:
                items.append(_video(grid, sgt))
            else:
                items.append(_video(grid, sgt, audio_tokens=rand.randint(1, 120)))
        prompt, features = [1] * rand.randint(0, 3), []
        for m in items:
            prompt += [IDS["vision_bos"], IDS[m.modality], IDS["vision_eos"]] + [2] * rand.randint(0, 3)
        expanded = expand_omni_tokens(prompt, IDS, items, 2, tps, 2)
        cursor = 0
        for m in items:
            if m.audio_tokens:
                vllm_layout = vllm_omni.Qwen2_5OmniThinkerMultiModalProcessor.omni_get_updates_use_audio_in_video(
                    fake.config, m.audio_tokens, torch.tensor(m.grid_thw), 1.0)
                assert interleaved_video_tokens(m, IDS, 2, tps, 2) == vllm_layout, trial
                offset = expanded.index(IDS["audio_bos"], cursor)
                features.append(SimpleNamespace(modality="video", mm_position=SimpleNamespace(offset=offset), data={
                    "video_grid_thw": _tensor(m.grid_thw), "second_per_grid_ts": _tensor(m.second_per_grid_ts, torch.float32),
                    "use_audio_in_video": _tensor(True)}))
                features.append(SimpleNamespace(modality="audio", mm_position=SimpleNamespace(offset=offset), data={
                    "audio_feature_lengths": _tensor(_feature_lengths(m.audio_tokens))}))
            else:
                offset = expanded.index(IDS[m.modality], cursor)
                key = "image_grid_thw" if m.modality == "image" else "video_grid_thw"
                data = {key: _tensor(m.grid_thw)}
                if m.modality == "video":
                    data["second_per_grid_ts"] = _tensor(m.second_per_grid_ts, torch.float32)
                features.append(SimpleNamespace(modality=m.modality, mm_position=SimpleNamespace(offset=offset),
                                                data=data))
            cursor = offset + m.expanded_tokens
        assert len(expanded) == len(prompt) + sum(m.expanded_tokens - 1 for m in items)
        expected, _ = cls.get_mrope_input_positions(fake, expanded, features)
        assert torch.equal(omni_mrope_positions(expanded, IDS, items, 2, tps, 2), expected.long()), trial


def test_the_audio_token_count_is_the_towers():
    from longrl.models.qwen2_5_omni import audio_token_count

    assert [audio_token_count(_feature_lengths(n)) for n in (1, 25, 51)] == [1, 25, 51]
    assert audio_token_count(200) == 50  # 2 s of 100 mel frames per second: 25 tokens per second
