"""The VILA adapter: expansion with per-frame newlines, cached embeddings vs pixels, vLLM prompt-embeds parity."""

from __future__ import annotations

import os
import sys
from functools import partial
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from longrl.data.synthetic_video import write_mp4
from longrl.models.adapter import adapter_of, tokenizer_dir
from longrl.models.qwen2_5_vl import MEDIA_INPUTS
from longrl.models.tiny_vila import build_vila
from longrl.models.vila_adapter import VILAAdapter, expand
from longrl.models.vision_cache import VideoSettings, VisionCache, media_refs
from longrl.protocol import Batch
from longrl.workers.actor import response_log_probs

FRAMES = 4


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from transformers import AutoTokenizer

    d = tmp_path_factory.mktemp("vila")
    root = build_vila(d / "model", "mlp_downsample_2x2_fix", "remote", num_video_frames=FRAMES)
    adapter = VILAAdapter()
    config = adapter.load_config(root)
    model = adapter.load(root, torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(tokenizer_dir(root))
    rng = np.random.default_rng(0)
    write_mp4(d / "clip.mp4", rng.integers(0, 256, (12, 56, 56, 3), dtype=np.uint8), 8.0)
    Image.fromarray(rng.integers(0, 256, (30, 50, 3), dtype=np.uint8)).save(d / "scene.png")

    def prompt(kind: str) -> list[int]:
        messages = [{"role": "user", "content": [{"type": kind}, {"type": "text", "text": "How many shapes?"}]}]
        rendered = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return tok(rendered, add_special_tokens=False).input_ids

    cache = VisionCache(VideoSettings.for_model(root, config.vision_config, FRAMES, 0, 0))
    return SimpleNamespace(root=root, adapter=adapter, config=config, model=model, tok=tok, cache=cache,
                           refs={"video": [str(d / "clip.mp4")], "image": [str(d / "scene.png")]},
                           prompts={k: prompt(k) for k in ("image", "video")})


def _batch(tiny, responses: torch.Tensor, mask: torch.Tensor, kinds: list[str], mode: str = "embeds") -> Batch:
    batch = Batch({"responses": responses, "response_mask": mask},
                  {"prompt_ids": [tiny.prompts[k] for k in kinds],
                   "images": [tiny.refs["image"] if k == "image" else [] for k in kinds],
                   "videos": [tiny.refs["video"] if k == "video" else [] for k in kinds]})
    rows = tiny.cache.row_inputs(media_refs(batch), mode, "actor", lambda item: tiny.adapter.encode(tiny.model, item))
    return batch.union(Batch(objects={MEDIA_INPUTS: rows}))


def test_both_forms_map_to_the_vila_adapter_and_the_tokenizer_lives_in_llm(tiny, tmp_path):
    dev = build_vila(tmp_path / "dev", "mlp_downsample_3x3_fix", "dev")
    assert isinstance(adapter_of(tiny.root), VILAAdapter) and isinstance(adapter_of(dev), VILAAdapter)
    assert tokenizer_dir(tiny.root) == str(tiny.root / "llm")
    assert VILAAdapter().load_config(dev).vision_config.square_frames.tokens == 4  # 56/14 = 4x4 -> 6x6 -> 2x2


def test_a_video_expands_to_its_frames_each_followed_by_the_newline(tiny):
    cfg = tiny.config
    video = tiny.cache.video(tiny.refs["video"][0])
    assert video.grid_thw == (FRAMES, 3, 3) and video.num_tokens == FRAMES * 4 and video.separator_tokens == FRAMES
    V, NL = cfg.video_token_id, cfg.newline_id
    assert expand([7, V, 8], cfg, [video]) == [7] + ([V] * 4 + [NL]) * FRAMES + [8]
    image = tiny.cache.image(tiny.refs["image"][0])
    assert image.pixel_values.shape == (1, 3, 42, 42) and image.expanded_tokens == 5


def test_model_inputs_report_the_expanded_prompt_length_and_take_cached_embeddings(tiny):
    responses = torch.tensor([[5, 6, 7], [8, 9, 10]])
    batch = _batch(tiny, responses, torch.ones_like(responses), ["video", "image"])
    inputs, prompt_lens = tiny.adapter.model_inputs(tiny.model, batch, 0, torch.device("cpu"))
    # each prompt: its placeholder becomes frames x (4 tokens + newline): video 4 x 5 = 20, image 5
    assert prompt_lens.tolist() == [len(tiny.prompts["video"]) + 19, len(tiny.prompts["image"]) + 4]
    assert inputs["media_embeds"].shape == (FRAMES * 4 + 4, 128)


def test_log_probs_from_cached_embeddings_equal_those_from_pixels(tiny):
    responses = torch.tensor([[5, 6, 7], [8, 9, 10]])
    mask = torch.ones_like(responses)
    cached = response_log_probs(tiny.model, tiny.adapter, _batch(tiny, responses, mask, ["video", "image"]), 0, 1.0, 2)
    pixels = response_log_probs(tiny.model, tiny.adapter, _batch(tiny, responses, mask, ["video", "image"], "pixels"),
                                0, 1.0, 2)
    assert (cached - pixels).abs().max() < 1e-5


def test_a_media_id_sampled_into_a_response_stays_text(tiny):
    cfg = tiny.config
    V, I = cfg.video_token_id, cfg.image_token_id
    responses = torch.tensor([[5, V, 7], [I, 9, 10]])
    mask = torch.ones_like(responses)
    batch = _batch(tiny, responses, mask, ["video", "image"])
    inputs, prompt_lens = tiny.adapter.model_inputs(tiny.model, batch, 0, torch.device("cpu"))
    assert inputs["media_embeds"].shape == (FRAMES * 4 + 4, 128)  # the prompts' media only
    # by hand: the prompt's placeholders take the media, the response's ids their plain (text) embeddings
    ids = inputs["input_ids"]
    embeds = tiny.model.get_input_embeddings()(ids)
    slots = torch.zeros_like(ids, dtype=torch.bool)
    for row, n in enumerate(prompt_lens.tolist()):
        slots[row, :n] = (ids[row, :n] == V) | (ids[row, :n] == I)
    embeds = embeds.masked_scatter(slots[..., None], inputs["media_embeds"])
    logits = tiny.model.llm(inputs_embeds=embeds, attention_mask=inputs["attention_mask"],
                            position_ids=inputs["position_ids"]).logits
    expected = torch.stack([torch.log_softmax(logits[row, n - 1:n + 2], -1).gather(-1, responses[row, :, None])[:, 0]
                            for row, n in enumerate(prompt_lens.tolist())])
    got = response_log_probs(tiny.model, tiny.adapter, batch, 0, 1.0, 2)
    assert (got - expected).abs().max() < 1e-5


@pytest.mark.e2e
def test_actor_log_probs_equal_vllms_for_image_and_video_prompts_before_and_after_an_embedding_update(tiny):
    """vLLM on llm/ fed prompt embeddings mixed with token ids samples tokens whose log-probs the actor
    reproduces; after an update of the embedding table is synced, both still agree, and the rollout sees the
    new table (the old model's log-probs of the new samples differ)."""
    from longrl.config import RolloutConfig
    from longrl.workers.rollout import SamplingSpec
    from longrl.workers.rollout.vllm import VLLMRollout

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTHONPATH", os.environ.get("PYTHONPATH", ""))
        patch.setattr(sys, "path", list(sys.path))
        engine = VLLMRollout(tiny.adapter.rollout_model_path(tiny.root), RolloutConfig(dtype="fp32", seed=0),
                             max_model_len=512, inline=partial(tiny.adapter.inline_prompt, tiny.config))
    spec = SamplingSpec(n=3, temperature=1.0, top_p=1.0, top_k=-1, max_tokens=8, ignore_eos=True)
    kinds = ["image", "video"]
    model = tiny.model

    def sample_and_compare(step: int, seed: int) -> tuple[Batch, torch.Tensor]:
        prompts = Batch(objects={"prompt_ids": [tiny.prompts[k] for k in kinds],
                                 "images": [tiny.refs["image"], []], "videos": [[], tiny.refs["video"]]})
        media = tiny.cache.row_inputs(media_refs(prompts), "embeds", "actor",
                                      lambda item: tiny.adapter.encode(model, item))
        groups = engine.generate(list(prompts["prompt_ids"]), spec, seed, media=media)
        samples = [s for g in groups for s in g]
        responses = torch.tensor([s.token_ids for s in samples])
        vllm_lp = torch.tensor([s.log_probs for s in samples])
        batch = _batch(tiny, responses, torch.ones_like(responses), [k for k in kinds for _ in range(3)])
        ours = response_log_probs(model, tiny.adapter, batch, 0, 1.0, 6)
        diff = (ours - vllm_lp).abs().max().item()
        print(f"step {step}: max |actor - vLLM| log-prob = {diff:.2e}")
        assert diff < 1e-3, step
        return batch, vllm_lp

    sample_and_compare(0, seed=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():  # an "update" that moves the embedding table only (tied: the head moves with it)
        model.get_input_embeddings().weight.add_(0.5 * torch.randn_like(model.get_input_embeddings().weight))
    engine.load_weights(tiny.adapter.rollout_weights(model.state_dict().items()))
    tiny.cache.clear()
    batch, vllm_lp = sample_and_compare(1, seed=2)
    model.load_state_dict(before)
    old = response_log_probs(model, tiny.adapter, batch, 0, 1.0, 6)
    assert (old - vllm_lp).abs().max() > 1e-2  # vLLM sampled with the new table, not the initial one


def test_max_frames_vllm_sub_samples_the_cached_frames_uniformly(tiny):
    from longrl.models.vila_adapter import fewer_frames

    [[video]] = tiny.cache.row_inputs([[("video", tiny.refs["video"][0])]], "embeds", "actor",
                                      lambda item: tiny.adapter.encode(tiny.model, item))
    cut = fewer_frames(video, 2)  # frames at linspace(0, 3, 2) = 0 and 3
    per_frame = video.embeds.reshape(FRAMES, 4, -1)
    assert torch.equal(cut.embeds.reshape(2, 4, -1), per_frame[[0, 3]])
    assert (cut.grid_thw[0], cut.num_tokens, cut.separator_tokens) == (2, 8, 2)
    request = tiny.adapter.inline_prompt(tiny.config, tiny.prompts["video"], [video], max_frames=2)
    assert len(request["prompt_token_ids"]) == len(tiny.prompts["video"]) - 1 + 2 * 5
    assert int((~request["prompt_is_token_ids"]).sum()) == 8  # the media rows; newlines and text are token ids


def _vila_args(tiny, tmp_path, *extra: str) -> list[str]:
    from tests.test_config import valid_args

    return valid_args(tmp_path) + [f"worker.actor.model.model_path={tiny.root}", *extra]


def test_tokens_per_frame_is_checked_against_the_projector_naming_both_numbers(tiny, tmp_path):
    from longrl.config import load_config
    from longrl.trainer.preflight import vila_problems

    assert vila_problems(load_config(_vila_args(tiny, tmp_path, "worker.rollout.tokens_per_frame=5",
                                                "data.vila_model=true", "worker.vila_model=true"))) == []
    [problem] = vila_problems(load_config(_vila_args(tiny, tmp_path / "b", "worker.rollout.tokens_per_frame=257")))
    assert "worker.rollout.tokens_per_frame=257" in problem and "makes 5 tokens per frame (4 from its projector" in problem


def test_vila_switches_and_keys_must_agree_with_the_checkpoint(tiny, tiny_qwen2, tmp_path):
    from longrl.config import load_config
    from longrl.trainer.preflight import vila_problems

    problems = vila_problems(load_config(_vila_args(tiny, tmp_path, "data.vila_model=false",
                                                    "worker.rollout.cache_video_embeds=false")))
    assert any(p.startswith("data.vila_model=false but") and "which is a VILA model" in p for p in problems)
    assert any("cache_video_embeds=false" in p for p in problems)
    text = load_config(_vila_args(tiny, tmp_path / "t", f"worker.actor.model.model_path={tiny_qwen2}",
                                  "worker.vila_model=true", "worker.rollout.max_frames_vllm=8"))
    problems = vila_problems(text)
    assert any(p.startswith("worker.vila_model=true but") and "not a VILA model" in p for p in problems)
    assert any(p.startswith("worker.rollout.max_frames_vllm=8 applies to VILA models only") for p in problems)
