"""The tiny Qwen2.5-VL builder: token ids, chat template, configs, loading in transformers and vLLM."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest
import torch

from longrl.data.video import VideoFrames, preprocess_video, video_metadata
from longrl.models.tiny_vl import VISION_TOKENS, build_qwen2_5_vl


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_qwen2_5_vl(tmp_path_factory.mktemp("tiny_vl"))


def _video(t: int = 8, fps: float = 8.0) -> VideoFrames:
    frames = np.random.default_rng(t).integers(0, 256, (t, 56, 56, 3), dtype=np.uint8)
    return VideoFrames(frames, np.arange(t) / fps, fps, t, "random.mp4")


def test_vision_token_ids_in_the_config_are_the_tokenizers(model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    cfg = json.loads((model_dir / "config.json").read_text())
    ids = dict(zip(VISION_TOKENS, tok.convert_tokens_to_ids(VISION_TOKENS)))
    assert cfg["vision_start_token_id"] == ids["<|vision_start|>"]
    assert cfg["vision_end_token_id"] == ids["<|vision_end|>"]
    assert (cfg["image_token_id"], cfg["video_token_id"]) == (ids["<|image_pad|>"], ids["<|video_pad|>"])
    # each special token is a single id, never split by the BPE
    assert tok("<|vision_start|><|video_pad|><|vision_end|>").input_ids == [
        ids["<|vision_start|>"], ids["<|video_pad|>"], ids["<|vision_end|>"]]
    assert cfg["text_config"]["vocab_size"] == len(tok)


def test_chat_template_renders_a_video_part_as_one_placeholder(model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "How many shapes?"}]}]
    assert tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == (
        "<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>How many shapes?<|im_end|>\n"
        "<|im_start|>assistant\n")
    text_only = [{"role": "user", "content": "hi"}]
    assert tok.apply_chat_template(text_only, tokenize=False) == "<|im_start|>user\nhi<|im_end|>\n"


def test_configs_describe_a_tiny_vision_tower_with_2x2_merge_and_temporal_patch_2(model_dir):
    cfg = json.loads((model_dir / "config.json").read_text())["vision_config"]
    assert (cfg["depth"], cfg["spatial_merge_size"], cfg["temporal_patch_size"], cfg["patch_size"]) == (2, 2, 2, 14)
    video_cfg = json.loads((model_dir / "video_preprocessor_config.json").read_text())
    assert video_cfg["video_processor_type"] == "Qwen2VLVideoProcessor" and video_cfg["do_sample_frames"] is False
    # 28*28*4 = 3136 and 28*28*64 = 50176 pixels: 1 to 16 merged tokens per frame pair
    assert video_cfg["size"] == {"shortest_edge": 3136, "longest_edge": 50176}


def test_hf_model_encodes_a_video_into_one_embedding_per_merged_patch(model_dir):
    from transformers import Qwen2_5_VLForConditionalGeneration

    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(model_dir).eval()
    inputs = preprocess_video(_video(4), 3136, 50176)
    with torch.no_grad():
        emb = model.model.get_video_features(inputs["pixel_values_videos"], inputs["video_grid_thw"]).pooler_output
    # grid (4/2, 56/14, 56/14) = (2, 4, 4): 32 patches / (2*2 merge) = 8 embeddings of text width 128
    assert [e.shape for e in emb] == [(8, 128)]


def test_the_same_seed_builds_the_same_weights(model_dir, tmp_path):
    from safetensors.torch import load_file

    again = load_file(build_qwen2_5_vl(tmp_path / "again") / "model.safetensors")
    first = load_file(model_dir / "model.safetensors")
    assert sorted(again) == sorted(first)
    assert all(torch.equal(again[k], first[k]) for k in first)


@pytest.mark.e2e
def test_vllm_generates_from_cached_video_embeddings_like_hf(model_dir, monkeypatch):
    """vLLM (in process) fed HF vision-tower embeddings, or the frames, gives HF's next-token log-probs."""
    from longrl.vllm_plugin import register
    from longrl.vllm_plugin.discovery import ensure_discoverable

    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
    monkeypatch.setenv("PYTHONPATH", os.environ.get("PYTHONPATH", ""))  # restored after the test
    monkeypatch.setattr(sys, "path", list(sys.path))
    ensure_discoverable()  # vLLM's model-inspection subprocess must load the plugin too
    register()
    from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration
    from vllm import LLM, SamplingParams

    hf = Qwen2_5_VLForConditionalGeneration.from_pretrained(model_dir).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    # 8 frames at 8 fps: second_per_grid_ts = 2/8 = 0.25 s, time positions 0, 0.5, 1, 1.5 -> the
    # temporal span does not exceed the 2x2 spatial one, where HF's and vLLM's M-RoPE agree.
    video = _video(8)
    inputs = preprocess_video(video, 3136, 50176)
    pv, grid, sgt = inputs["pixel_values_videos"], inputs["video_grid_thw"], inputs["second_per_grid_ts"]
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "Count."}]}]
    prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    n_video = int(grid.prod()) // 4  # (4, 4, 4) grid / 2x2 merge = 16 tokens
    ids = tok(prompt.replace("<|video_pad|>", "<|video_pad|>" * n_video), return_tensors="pt").input_ids
    with torch.no_grad():
        emb = torch.cat(hf.model.get_video_features(pv, grid).pooler_output)
        logits = hf(input_ids=ids, mm_token_type_ids=(ids == hf.config.video_token_id).int() * 2,
                    pixel_values_videos=pv, video_grid_thw=grid, second_per_grid_ts=sgt).logits
    ref = torch.log_softmax(logits[0, -1].float(), -1)

    llm = LLM(model=str(model_dir), dtype="float32", max_model_len=512, enforce_eager=True, seed=0,
              enable_mm_embeds=True, limit_mm_per_prompt={"image": 0, "video": 1})
    embeds = {"video_embeds": emb, "video_grid_thw": grid, "second_per_grid_ts": sgt}
    frames = (video.frames, video_metadata(video))  # the same video through vLLM's processor (ours)
    outs = llm.generate([{"prompt": prompt, "multi_modal_data": {"video": v}} for v in (embeds, frames)],
                        SamplingParams(temperature=0.0, max_tokens=1, logprobs=5), use_tqdm=False)
    for out in outs:
        assert out.prompt_token_ids == ids[0].tolist()  # the single placeholder expanded to 16 video tokens
        assert out.outputs[0].token_ids[0] == int(ref.argmax())
        for token_id, lp in out.outputs[0].logprobs[0].items():
            assert lp.logprob == pytest.approx(float(ref[token_id]), abs=1e-3)
    del llm
