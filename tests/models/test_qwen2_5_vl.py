"""Qwen2.5-VL adapter: token expansion, vLLM's M-RoPE positions, and log-probs from embeddings or pixels."""

from __future__ import annotations

import os
import random
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from longrl.data.synthetic_video import write_mp4
from longrl.models.adapter import adapter_for
from longrl.models.qwen2_5_vl import MEDIA_INPUTS, Qwen2_5_VLAdapter, expand_media_tokens, mrope_positions
from longrl.models.tiny_vl import build_qwen2_5_vl
from longrl.data.dataset import build_messages
from longrl.models.vision_cache import MediaInput, VideoSettings, VisionCache, media_refs
from longrl.protocol import Batch
from longrl.workers.actor import response_log_probs, response_logits, token_log_probs

V, I = 99, 98  # video and image placeholder ids in the hand-written examples
TOKENS = {"image": I, "video": V}


def _video(grid: tuple[int, int, int], second_per_grid_ts: float) -> MediaInput:
    return MediaInput("v.mp4", grid, second_per_grid_ts, grid[0] * grid[1] * grid[2] // 4)


def _image(grid: tuple[int, int, int]) -> MediaInput:
    return MediaInput("i.png", grid, 1.0, grid[1] * grid[2] // 4, modality="image")


# --- pure functions -------------------------------------------------------------------------
def test_expand_media_tokens_repeats_each_placeholder_by_its_items_token_count():
    # an image of grid (1, 2, 4) = 2 tokens before a video of (2, 2, 2) = 2 tokens, then a 3-token image
    media = [_image((1, 2, 4)), _video((2, 2, 2), 1.0), _image((1, 2, 6))]
    assert expand_media_tokens([1, I, 2, V, I], TOKENS, media) == [1, I, I, 2, V, V, I, I, I]


def test_text_only_positions_count_up_on_all_three_axes():
    assert mrope_positions([5, 6, 7], TOKENS, [], 2, 2).tolist() == [[0, 1, 2]] * 3


def test_text_after_a_video_resumes_after_its_largest_position_as_in_vllm():
    # grid (2, 4, 4) patches, 2x2 merge -> (t, h, w) = (2, 2, 2) tokens; 1.0 s per grid step x 2 tokens/s
    # -> time index x 2. Two text tokens first, so the video starts at position 2:
    #   t = 2 + [0,0,0,0,2,2,2,2], h = 2 + [0,0,1,1,0,0,1,1], w = 2 + [0,1,0,1,0,1,0,1]; max = 4 -> text at 5, 6.
    # (transformers 5.19 would put the text at 2 + max(2, 2) = 4, on top of the last frame's time.)
    tokens = [10, 11] + [V] * 8 + [12, 13]
    assert mrope_positions(tokens, TOKENS, [_video((2, 4, 4), 1.0)], 2, 2).tolist() == [
        [0, 1, 2, 2, 2, 2, 4, 4, 4, 4, 5, 6],
        [0, 1, 2, 2, 3, 3, 2, 2, 3, 3, 5, 6],
        [0, 1, 2, 3, 2, 3, 2, 3, 2, 3, 5, 6]]


def test_video_time_positions_are_truncated_like_vllms_integer_cast():
    # grid (4, 2, 2) -> 4 tokens of 1x1; 0.25 s per step x 2 tokens/s = 0.5: floor(0, .5, 1, 1.5) = 0, 0, 1, 1
    assert mrope_positions([V] * 4 + [7], TOKENS, [_video((4, 2, 2), 0.25)], 2, 2).tolist() == [
        [0, 0, 1, 1, 2], [0, 0, 0, 0, 2], [0, 0, 0, 0, 2]]


def test_positions_refuse_a_video_with_fewer_tokens_than_its_grid():
    with pytest.raises(ValueError, match="expected 8 consecutive video tokens"):
        mrope_positions([1] + [V] * 7 + [2], TOKENS, [_video((2, 4, 4), 1.0)], 2, 2)


def test_an_image_takes_one_time_step_and_text_resumes_after_its_largest_position():
    # grid (1, 4, 6) patches -> (1, 2, 3) tokens starting at 1: t = 1, h = 1 + [0,0,0,1,1,1], w = 1 + [0,1,2,0,1,2];
    # max = 3 -> the text after it at 4; the second image (1, 2, 2) -> 1 token at 5; text at 6
    tokens = [10] + [I] * 6 + [11, I, 12]
    assert mrope_positions(tokens, TOKENS, [_image((1, 4, 6)), _image((1, 2, 2))], 2, 2).tolist() == [
        [0, 1, 1, 1, 1, 1, 1, 4, 5, 6],
        [0, 1, 1, 1, 2, 2, 2, 4, 5, 6],
        [0, 1, 2, 3, 1, 2, 3, 4, 5, 6]]


def test_the_adapter_is_registered_for_qwen2_5_vl_and_keeps_the_tower_in_the_root_unit():
    adapter = adapter_for("qwen2_5_vl")
    assert isinstance(adapter, Qwen2_5_VLAdapter) and adapter.fsdp_forward_methods == ("get_video_features", "get_image_features")


def test_strip_media_removes_the_video_parts_of_a_prompt():
    cfg = SimpleNamespace(image_token_id=I, video_token_id=V, vision_start_token_id=96, vision_end_token_id=97)
    assert Qwen2_5_VLAdapter().strip_media(cfg, [1, 96, V, 97, 2, 96, I, 97]) == [1, 2]


# --- with the tiny model --------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration

    d = tmp_path_factory.mktemp("vl")
    model_dir = build_qwen2_5_vl(d / "model")
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    rng = np.random.default_rng(0)
    # 8 frames at 8 fps: 0.25 s per grid step x 2 tokens/s -> time positions 0, 0, 1, 1 within the 2x2
    # merged spatial grid; 32 frames at 2 fps (16 s) sampled to 8: 4 s per step -> 0, 8, 16, 24, beyond it
    for name, frames, fps in (("short", 8, 8.0), ("long", 32, 2.0)):
        write_mp4(d / f"{name}.mp4", rng.integers(0, 256, (frames, 56, 56, 3), dtype=np.uint8), fps)
    # images of 56x56 (grid 1x4x4: 4 tokens), 84x112 (1x6x8: 12) and 30x200 (smart_resize: 28x196, 1x2x14: 7)
    images = {}
    for name, (h, w) in {"square": (56, 56), "wide": (84, 112), "strip": (30, 200)}.items():
        images[name] = str(d / f"{name}.png")
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(images[name])

    def prompt(text: str, n_images: int = 0, n_videos: int = 0) -> list[int]:
        rendered = tok.apply_chat_template(build_messages(text, n_images, n_videos), tokenize=False,
                                           add_generation_prompt=True)
        return tok(rendered, add_special_tokens=False).input_ids

    cache = VisionCache(VideoSettings.for_model(model_dir, model.config.vision_config, 8, 3136, 50176),
                        keep_frames=True)
    return SimpleNamespace(dir=model_dir, model=model, tok=tok, prompt=prompt("How many shapes?", 0, 1),
                           cache=cache, videos={k: str(d / f"{k}.mp4") for k in ("short", "long")},
                           images=images, make_prompt=prompt)


def _rows(tiny, n: int = 3) -> Batch:
    """n sampled responses (random ids, one cut short) for each of the two videos."""
    g = torch.Generator().manual_seed(0)
    responses = torch.randint(0, 300, (2 * n, 6), generator=g)
    mask = torch.ones_like(responses)
    mask[1, 4:] = 0
    return Batch({"responses": responses, "response_mask": mask},
                 {"prompt_ids": [tiny.prompt] * 2 * n,
                  "videos": [[tiny.videos["short"]]] * n + [[tiny.videos["long"]]] * n})


def _with(batch: Batch, tiny, mode: str) -> Batch:
    adapter = Qwen2_5_VLAdapter()
    rows = tiny.cache.row_inputs(media_refs(batch), mode, "actor", lambda v: adapter.encode(tiny.model, v))
    return batch.union(Batch(objects={MEDIA_INPUTS: rows}))


def test_model_inputs_expand_each_video_and_report_the_expanded_prompt_length(tiny):
    batch = _with(_rows(tiny, n=1), tiny, "pixels")
    inputs, prompt_lens = Qwen2_5_VLAdapter().model_inputs(tiny.model, batch, 0, torch.device("cpu"))
    # each 8-frame 56x56 video is 16 tokens: the prompt grows by 16 - 1; sequences = prompt + 6 and + 4 tokens
    assert prompt_lens.tolist() == [len(tiny.prompt) + 15] * 2
    assert inputs["attention_mask"].sum(-1).tolist() == [len(tiny.prompt) + 15 + 6, len(tiny.prompt) + 15 + 4]
    assert (inputs["input_ids"] == tiny.model.config.video_token_id).sum().item() == 32
    assert inputs["position_ids"].shape == (3, 2, len(tiny.prompt) + 21)
    assert inputs["pixel_values_videos"].shape == (2 * 64, 1176)
    assert inputs["video_grid_thw"].tolist() == [[4, 4, 4]] * 2


def test_model_inputs_expand_images_and_a_video_in_prompt_order(tiny):
    # an image, a video, then two images: 4 + 16 + 12 + 7 tokens where 4 placeholders stood
    prompt = tiny.make_prompt("<image> and <video>: how many? <image><image>", 3, 1)
    responses = torch.tensor([[5, 6, 7]])
    batch = Batch({"responses": responses, "response_mask": torch.ones_like(responses)},
                  {"prompt_ids": [prompt], "images": [[tiny.images[k] for k in ("square", "wide", "strip")]],
                   "videos": [[tiny.videos["short"]]]})
    inputs, prompt_lens = Qwen2_5_VLAdapter().model_inputs(tiny.model, _with(batch, tiny, "pixels"), 0,
                                                           torch.device("cpu"))
    cfg = tiny.model.config
    ids = inputs["input_ids"][0].tolist()
    assert prompt_lens.tolist() == [len(prompt) + 3 + 15 + 11 + 6]
    assert ids.count(cfg.image_token_id) == 23 and ids.count(cfg.video_token_id) == 16
    first = ids.index(cfg.image_token_id)
    assert ids[first: first + 4] == [cfg.image_token_id] * 4 and ids[first + 4] == cfg.vision_end_token_id
    assert inputs["image_grid_thw"].tolist() == [[1, 4, 4], [1, 6, 8], [1, 2, 14]]
    assert inputs["pixel_values"].shape == (16 + 48 + 28, 1176) and inputs["video_grid_thw"].tolist() == [[4, 4, 4]]


def test_log_probs_with_images_from_cached_embeddings_equal_those_from_pixels(tiny):
    prompts = [tiny.make_prompt("How many?", 1), tiny.make_prompt("<image> or <image> or <image>?", 3),
               tiny.make_prompt("<image> then <video>?", 1, 1)]
    images = [[tiny.images["wide"]], [tiny.images[k] for k in ("square", "wide", "strip")], [tiny.images["strip"]]]
    responses = torch.randint(0, 300, (3, 5), generator=torch.Generator().manual_seed(1))
    batch = Batch({"responses": responses, "response_mask": torch.ones_like(responses)},
                  {"prompt_ids": prompts, "images": images, "videos": [[], [], [tiny.videos["long"]]]})
    adapter = Qwen2_5_VLAdapter()
    from_pixels = response_log_probs(tiny.model, adapter, _with(batch, tiny, "pixels"), 0, 1.0, 3)
    from_embeds = response_log_probs(tiny.model, adapter, _with(batch, tiny, "embeds"), 0, 1.0, 3)
    assert (from_pixels - from_embeds).abs().max() < 1e-4


def test_model_inputs_refuse_a_row_whose_placeholders_and_videos_differ(tiny):
    batch = _rows(tiny, n=1).union(Batch(objects={MEDIA_INPUTS: [[], []]}))
    with pytest.raises(ValueError, match="row 0: the prompt has 1 video placeholders but 0 videos"):
        Qwen2_5_VLAdapter().model_inputs(tiny.model, batch, 0, torch.device("cpu"))


def test_positions_equal_transformers_rope_index_unless_time_outruns_space(tiny):
    batch = _with(_rows(tiny, n=1), tiny, "pixels")
    inputs, _ = Qwen2_5_VLAdapter().model_inputs(tiny.model, batch, 0, torch.device("cpu"))
    ids = inputs["input_ids"]
    hf, _ = tiny.model.model.get_rope_index(
        ids, (ids == tiny.model.config.video_token_id).int() * 2, video_grid_thw=inputs["video_grid_thw"],
        second_per_grid_ts=inputs["second_per_grid_ts"], attention_mask=inputs["attention_mask"])
    mask = inputs["attention_mask"].bool()
    assert torch.equal(hf[:, 0][:, mask[0]], inputs["position_ids"][:, 0][:, mask[0]])  # short video: same
    assert not torch.equal(hf[:, 1][:, mask[1]], inputs["position_ids"][:, 1][:, mask[1]])  # long: vLLM's differ


def test_log_probs_from_cached_embeddings_equal_those_recomputed_from_pixels(tiny):
    batch = _rows(tiny)
    adapter = Qwen2_5_VLAdapter()
    from_pixels = response_log_probs(tiny.model, adapter, _with(batch, tiny, "pixels"), 0, 1.0, 4)
    from_embeds = response_log_probs(tiny.model, adapter, _with(batch, tiny, "embeds"), 0, 1.0, 4)
    assert (from_pixels - from_embeds).abs().max() < 1e-4
    assert from_pixels[1, 4:].abs().sum() == 0 and from_pixels[0].abs().sum() > 0


def test_with_a_frozen_tower_embeddings_give_the_update_the_same_gradients_as_pixels(tiny):
    model, adapter, batch = tiny.model, Qwen2_5_VLAdapter(), _rows(tiny, n=2)
    model.model.visual.requires_grad_(False)
    try:
        grads = []
        for mode in ("pixels", "embeds"):
            model.zero_grad(set_to_none=True)
            rows = _with(batch, tiny, mode)
            (token_log_probs(response_logits(model, adapter, rows, 0, 1.0), rows["responses"])
             * rows["response_mask"]).sum().backward()
            grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    finally:
        model.requires_grad_(True)
        model.zero_grad(set_to_none=True)
    assert sorted(grads[0]) == sorted(grads[1]) and not any("visual" in n for n in grads[0])
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_a_micro_batch_without_videos_still_gives_a_trainable_tower_gradients_of_zero(tiny):
    # FSDP reduce-scatters the gradients each rank has: every rank's tower must get some, even without videos
    model, adapter = tiny.model, Qwen2_5_VLAdapter()
    text = adapter.strip_media(model.config, tiny.prompt)
    batch = _rows(tiny, n=1)
    batch = Batch(batch.tensors, {"prompt_ids": [text, text], MEDIA_INPUTS: [[], []]})
    with torch.no_grad():
        plain = response_logits(model, adapter, batch, 0, 1.0)  # no grad: no padding video
    model.zero_grad(set_to_none=True)
    logits = response_logits(model, adapter, batch, 0, 1.0)
    (token_log_probs(logits, batch["responses"]) * batch["response_mask"]).sum().backward()
    tower_grads = [p.grad for p in model.model.visual.parameters()]
    model.zero_grad(set_to_none=True)
    assert all(g is not None and not g.any() for g in tower_grads)
    torch.testing.assert_close(logits.detach(), plain, rtol=0, atol=1e-5)


def test_vllm_request_checks_that_vllm_expands_videos_as_the_trainer_does():
    from longrl.workers.rollout.vllm import _check_expansion

    video = _video((2, 4, 4), 1.0)  # 8 tokens: a 3-token prompt expands to 3 - 1 + 8 = 10
    _check_expansion([1, V, 2], [video], list(range(10)))
    with pytest.raises(RuntimeError, match="data.min_pixels"):
        _check_expansion([1, V, 2], [video], list(range(12)))


# --- against vLLM ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def engine(tiny):
    """One in-process vLLM engine of the tiny model for the tests below (up to 3 images per prompt)."""
    from longrl.config import RolloutConfig
    from longrl.workers.rollout.vllm import VLLMRollout

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTHONPATH", os.environ.get("PYTHONPATH", ""))  # the plugin's discovery edits it
        patch.setattr(sys, "path", list(sys.path))
        yield VLLMRollout(str(tiny.dir), RolloutConfig(dtype="fp32", seed=0, limit_images=3), max_model_len=512)


@pytest.mark.e2e
def test_trainer_log_probs_equal_vllms_for_sampled_tokens_from_embeddings_and_from_frames(tiny, engine):
    """VLLMRollout fed cached embeddings or frames samples tokens whose log-probs the adapter reproduces,
    including a video whose time span exceeds its spatial span; and vLLM's own M-RoPE code gives our
    positions on random grids."""
    from longrl.workers.rollout import SamplingSpec

    rollout = engine
    adapter, spec = Qwen2_5_VLAdapter(), SamplingSpec(n=3, temperature=1.0, top_p=1.0, top_k=-1, max_tokens=8)
    paths = [[tiny.videos["short"]], [tiny.videos["long"]]]
    for mode in ("embeds", "frames"):
        media = tiny.cache.row_inputs(paths, mode, "actor", lambda v: adapter.encode(tiny.model, v))
        groups = rollout.generate([tiny.prompt] * 2, spec, seed=1, media=media)
        samples = [s for g in groups for s in g]
        width = max(len(s.token_ids) for s in samples)
        responses = torch.zeros((6, width), dtype=torch.long)
        mask, vllm_lp = torch.zeros_like(responses), torch.zeros((6, width))
        for i, s in enumerate(samples):
            responses[i, : len(s.token_ids)], mask[i, : len(s.token_ids)] = torch.tensor(s.token_ids), 1
            vllm_lp[i, : len(s.token_ids)] = torch.tensor(s.log_probs)
        batch = Batch({"responses": responses, "response_mask": mask},
                      {"prompt_ids": [tiny.prompt] * 6, "videos": [paths[0]] * 3 + [paths[1]] * 3})
        ours = response_log_probs(tiny.model, adapter, _with(batch, tiny, "pixels"), 0, 1.0, 6)
        assert (ours - vllm_lp)[mask.bool()].abs().max() < 1e-3, mode

    from vllm.model_executor.models.qwen2_5_vl import Qwen2_5_VLForConditionalGeneration as VllmQwen

    config = SimpleNamespace(vision_config=SimpleNamespace(spatial_merge_size=2, tokens_per_second=2))
    fake = SimpleNamespace(config=config)
    fake.iter_mm_grid_thw = lambda features: VllmQwen.iter_mm_grid_thw(fake, features)
    rand = random.Random(0)
    for _ in range(50):
        videos = [_video((rand.randint(1, 6), 2 * rand.randint(1, 4), 2 * rand.randint(1, 4)),
                         float(np.float32(rand.choice([0.25, 0.5, 1 / 3, 2.0, 0.7]))))
                  for _ in range(rand.randint(1, 3))]
        tokens, features = [1] * rand.randint(0, 3), []
        for v in videos:
            features.append(SimpleNamespace(modality="video", mm_position=SimpleNamespace(offset=len(tokens)), data={
                "video_grid_thw": SimpleNamespace(data=torch.tensor(v.grid_thw)),
                "second_per_grid_ts": SimpleNamespace(data=torch.tensor(v.second_per_grid_ts, dtype=torch.float32))}))
            tokens += [V] * v.num_tokens + [2] * rand.randint(1, 3)
        expected, _ = VllmQwen.get_mrope_input_positions(fake, tokens, features)
        assert torch.equal(mrope_positions(tokens, TOKENS, videos, 2, 2), expected.long())


@pytest.mark.e2e
def test_trainer_log_probs_equal_vllms_for_image_prompts_from_embeddings_and_from_pixels(tiny, engine):
    """One image, three images, and an image plus a video in one prompt: vLLM fed cached embeddings or
    the (resized) pixels samples tokens whose log-probs the adapter reproduces from pixels and from embeddings;
    and vLLM's own M-RoPE code gives our positions on random mixes of images and videos."""
    from longrl.workers.rollout import SamplingSpec

    rollout = engine
    adapter, spec = Qwen2_5_VLAdapter(), SamplingSpec(n=2, temperature=1.0, top_p=1.0, top_k=-1, max_tokens=8)
    prompts = [tiny.make_prompt("How many shapes?", 1), tiny.make_prompt("<image> or <image> or <image>?", 3),
               tiny.make_prompt("<image> then <video>?", 1, 1)]
    images = [[tiny.images["wide"]], [tiny.images[k] for k in ("square", "wide", "strip")], [tiny.images["strip"]]]
    videos = [[], [], [tiny.videos["long"]]]
    refs = media_refs(Batch(objects={"images": images, "videos": videos}))
    for mode in ("embeds", "frames"):
        media = tiny.cache.row_inputs(refs, mode, "actor", lambda v: adapter.encode(tiny.model, v))
        samples = [s for g in rollout.generate(prompts, spec, seed=2, media=media) for s in g]
        width = max(len(s.token_ids) for s in samples)
        responses = torch.zeros((6, width), dtype=torch.long)
        mask, vllm_lp = torch.zeros_like(responses), torch.zeros((6, width))
        for i, s in enumerate(samples):
            responses[i, : len(s.token_ids)], mask[i, : len(s.token_ids)] = torch.tensor(s.token_ids), 1
            vllm_lp[i, : len(s.token_ids)] = torch.tensor(s.log_probs)
        batch = Batch({"responses": responses, "response_mask": mask},
                      {"prompt_ids": [p for p in prompts for _ in range(2)],
                       "images": [r for r in images for _ in range(2)], "videos": [r for r in videos for _ in range(2)]})
        from_pixels = response_log_probs(tiny.model, adapter, _with(batch, tiny, "pixels"), 0, 1.0, 6)
        from_embeds = response_log_probs(tiny.model, adapter, _with(batch, tiny, "embeds"), 0, 1.0, 6)
        valid = mask.bool()
        for row in range(6):  # every prompt kind on its own: one image, three images, image + video
            assert (from_pixels - vllm_lp)[row][valid[row]].abs().max() < 1e-3, (mode, row)
        assert (from_pixels - from_embeds)[valid].abs().max() < 1e-4, mode

    from vllm.model_executor.models.qwen2_5_vl import Qwen2_5_VLForConditionalGeneration as VllmQwen

    config = SimpleNamespace(vision_config=SimpleNamespace(spatial_merge_size=2, tokens_per_second=2))
    fake = SimpleNamespace(config=config)
    fake.iter_mm_grid_thw = lambda features: VllmQwen.iter_mm_grid_thw(fake, features)
    rand = random.Random(1)
    for _ in range(50):
        items = [_image((1, 2 * rand.randint(1, 4), 2 * rand.randint(1, 4))) if rand.random() < 0.5 else
                 _video((rand.randint(1, 6), 2 * rand.randint(1, 4), 2 * rand.randint(1, 4)),
                        float(np.float32(rand.choice([0.25, 0.5, 1 / 3, 2.0, 0.7])))) for _ in range(rand.randint(1, 4))]
        tokens, features = [1] * rand.randint(0, 3), []
        for m in items:
            data = ({"image_grid_thw": SimpleNamespace(data=torch.tensor(m.grid_thw))} if m.modality == "image" else
                    {"video_grid_thw": SimpleNamespace(data=torch.tensor(m.grid_thw)),
                     "second_per_grid_ts": SimpleNamespace(data=torch.tensor(m.second_per_grid_ts, dtype=torch.float32))})
            features.append(SimpleNamespace(modality=m.modality, mm_position=SimpleNamespace(offset=len(tokens)),
                                            data=data))
            tokens += [TOKENS[m.modality]] * m.num_tokens + [2] * rand.randint(1, 3)
        expected, _ = VllmQwen.get_mrope_input_positions(fake, tokens, features)
        assert torch.equal(mrope_positions(tokens, TOKENS, items, 2, 2), expected.long())


def test_media_ids_sampled_in_a_response_are_text_as_in_vllm(tiny):
    """A response holding <|image_pad|>/<|video_pad|> ids (a barely trained model samples them; vLLM embeds a
    generated token as text) is scored with those tokens' plain embeddings, padded, packed or prefix-shared: the
    prompt's placeholders alone get the media (the model loaded by the adapter, which installs that)."""
    from longrl.models.adapter import PLACEHOLDER_IDS

    adapter = Qwen2_5_VLAdapter()
    model = adapter.load(str(tiny.dir), torch.float32).eval()
    cfg = model.config
    image, video = cfg.image_token_id, cfg.video_token_id
    prompt = tiny.make_prompt("<image> then <video>?", 1, 1)
    response = torch.tensor([[5, image, video, 7, image], [video, 6, 0, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]])
    batch = _with(Batch({"responses": response, "response_mask": mask},
                        {"prompt_ids": [prompt] * 2, "images": [[tiny.images["square"]], [tiny.images["wide"]]],
                         "videos": [[tiny.videos["short"]], [tiny.videos["long"]]]}), tiny, "pixels")
    padded = response_log_probs(model, adapter, batch, 0, 1.0, 2)
    packed = response_log_probs(model, adapter, batch, 0, 1.0, 2, padding_free=True)
    shared = response_log_probs(model, adapter, batch, 0, 1.0, 2, share_prompt_prefix=True)
    # by hand: the prompt's placeholders get the tower's outputs, every other position its token embedding
    inputs, prompt_lens = adapter.model_inputs(model, batch, 0, torch.device("cpu"))
    assert PLACEHOLDER_IDS in inputs
    with torch.no_grad():
        images = model.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"]).pooler_output
        videos = model.get_video_features(inputs["pixel_values_videos"], inputs["video_grid_thw"]).pooler_output
        for row in range(2):
            n, end = int(prompt_lens[row]), int(inputs["attention_mask"][row].sum())
            seq = inputs["input_ids"][row, :end]
            embeds = model.get_input_embeddings()(seq).clone()
            in_prompt = torch.arange(end) < n
            embeds[(seq == image) & in_prompt] = images[row]
            embeds[(seq == video) & in_prompt] = videos[row]
            hidden = model.model.language_model(inputs_embeds=embeds[None],
                                                position_ids=inputs["position_ids"][:, row: row + 1, :end])
            log_probs = torch.log_softmax(model.lm_head(hidden.last_hidden_state)[0].float(), -1)
            valid = int(mask[row].sum())
            expected = log_probs[n - 1: n - 1 + valid].gather(-1, response[row, :valid, None])[:, 0]
            for ours in (padded, packed, shared):
                assert (ours[row, :valid] - expected).abs().max() < 1e-5, row
