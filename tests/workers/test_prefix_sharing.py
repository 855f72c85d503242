"""Prompt-prefix sharing gives the full-sequence path's log-probs, entropies and gradients.

Unsharded tiny models on one process (FSDP changes nothing about the arithmetic). The plain path
(`response_log_probs_and_entropy`, sp=1, padded) is the reference: log-probs agree to 1e-5 (fp32),
gradients to 1e-4 relative.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from longrl.data.synthetic_video import write_mp4
from longrl.models.adapter import TextAdapter
from longrl.models.qwen2_5_vl import MEDIA_INPUTS, Qwen2_5_VLAdapter
from longrl.models.tiny import build_qwen2
from longrl.models.tiny_vl import build_qwen2_5_vl
from longrl.models.vision_cache import VideoSettings, VisionCache
from longrl.protocol import Batch
from longrl.workers.actor import response_log_probs, response_log_probs_and_entropy
from longrl.workers.prefix_sharing import prompt_groups, shared_prefix_log_probs

TEMPERATURE = 0.8


def _mask(lengths: list[int]) -> torch.Tensor:
    return (torch.arange(max(lengths)) < torch.tensor(lengths)[:, None]).long()


def _batch(prompts: list[list[int]], lengths: list[int], seed: int = 0, **objects) -> Batch:
    g = torch.Generator().manual_seed(seed)
    mask = _mask(lengths)
    responses = torch.randint(3, 300, mask.shape, generator=g) * mask
    return Batch({"responses": responses, "response_mask": mask}, {"prompt_ids": prompts, **objects})


@pytest.fixture(scope="module")
def text(tmp_path_factory):
    from transformers import AutoModelForCausalLM

    path = build_qwen2(tmp_path_factory.mktemp("qwen2") / "model")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="sdpa")
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(3, 300, (n,), generator=g).tolist() for n in (9, 5)]
    # prompt-major like a rollout with n=3: prompt 0 three times, prompt 1 three times; responses differ in length
    batch = _batch([prompts[0]] * 3 + [prompts[1]] * 3, [6, 2, 4, 1, 6, 3])
    return SimpleNamespace(model=model.eval(), batch=batch)


def _plain(model, adapter, batch, with_entropy=True):
    return response_log_probs_and_entropy(model, adapter, batch, 0, TEMPERATURE, with_entropy=with_entropy)


def _assert_same(shared, plain, mask):
    for got, want in zip(shared, plain):
        torch.testing.assert_close(got * mask, want * mask, rtol=0, atol=1e-5)


def _assert_close_relative(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    """Each parameter's gradient within 1e-4 of the plain one, relative to its norm (elementwise rtol fails on
    near-zero entries: the plain path sums n copies of the tower's gradient, the shared one sums one)."""
    for name, grad in want.items():
        assert ((got[name] - grad).norm() / grad.norm().clamp(min=1e-12)).item() < 1e-4, name


def test_prompt_groups_collect_rows_with_the_same_prompt_and_videos_wherever_they_sit():
    batch = Batch(objects={"prompt_ids": [[1, 2], [1, 2], [3], [1, 2], [1, 2]],
                           "videos": [["a.mp4"], ["a.mp4"], [], ["b.mp4"], ["a.mp4"]]})
    # rows 0, 1, 4: same ids and video; row 3 has the same ids but another video
    assert prompt_groups(batch) == [[0, 1, 4], [2], [3]]


def test_shared_prefix_log_probs_and_entropies_equal_the_full_sequence_path_for_text(text):
    adapter = TextAdapter()
    with torch.no_grad():
        shared = shared_prefix_log_probs(text.model, adapter, text.batch, 0, TEMPERATURE, with_entropy=True)
        plain = _plain(text.model, adapter, text.batch)
    _assert_same(shared, plain, text.batch["response_mask"])
    assert shared[0].shape == (6, 6) and shared[0][0].abs().sum() > 0


def test_a_micro_batch_that_cuts_a_group_gives_the_same_log_probs(text):
    # micro-batches of 4: rows 0-3 (prompt 0 x3 + prompt 1 x1) and rows 4-5 (prompt 1 x2)
    adapter = TextAdapter()
    shared = response_log_probs(text.model, adapter, text.batch, 0, TEMPERATURE, 4, share_prompt_prefix=True)
    plain = response_log_probs(text.model, adapter, text.batch, 0, TEMPERATURE, 4)
    torch.testing.assert_close(shared, plain, rtol=0, atol=1e-5)
    assert shared[3, 1:].abs().sum() == 0  # a 1-token response: zeros past its end


def test_shared_prefix_gradients_equal_the_full_sequence_path(text):
    model, adapter, batch = text.model, TextAdapter(), text.batch
    advantages = torch.tensor([1.0, -0.5, 0.75, -1.25, 0.5, 2.0])[:, None]
    grads = []
    model.train()
    try:
        for fn in (lambda: _plain(model, adapter, batch), lambda: shared_prefix_log_probs(
                model, adapter, batch, 0, TEMPERATURE, with_entropy=True)):
            model.zero_grad(set_to_none=True)
            log_probs, entropy = fn()
            ((log_probs * advantages + 0.1 * entropy) * batch["response_mask"]).sum().backward()
            grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()
    assert sorted(grads[0]) == sorted(grads[1])
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_gradients_under_gradient_checkpointing_are_refused_naming_both_keys(text):
    text.model.gradient_checkpointing_enable()
    text.model.train()
    try:
        with pytest.raises(ValueError, match="share_prompt_prefix=true .*actor.model.enable_gradient_checkpointing=false"):
            shared_prefix_log_probs(text.model, TextAdapter(), text.batch, 0, TEMPERATURE)
    finally:
        text.model.gradient_checkpointing_disable()
        text.model.eval()


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration

    d = tmp_path_factory.mktemp("vl")
    model_dir = build_qwen2_5_vl(d / "model")
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    rng = np.random.default_rng(0)
    # "long": 32 frames at 2 fps sampled to 8 -> time positions 0, 8, 16, 24 outrun the 2x2 spatial grid
    for name, frames, fps in (("short", 8, 8.0), ("long", 32, 2.0)):
        write_mp4(d / f"{name}.mp4", rng.integers(0, 256, (frames, 56, 56, 3), dtype=np.uint8), fps)
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "How many shapes?"}]}]
    prompt = tok(tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True),
                 add_special_tokens=False).input_ids
    text_prompt = Qwen2_5_VLAdapter().strip_media(model.config, prompt)
    cache = VisionCache(VideoSettings.for_model(model_dir, model.config.vision_config, 8, 3136, 50176),
                        keep_frames=True)
    videos = [[str(d / "short.mp4")]] * 3 + [[str(d / "long.mp4")]] * 2 + [[]]
    # two videos x n responses of different lengths, and a row that lost its video (text only)
    batch = _batch([prompt] * 5 + [text_prompt], [5, 2, 4, 6, 3, 4], seed=2, videos=videos)
    return SimpleNamespace(model=model, cache=cache, batch=batch, tok=tok)


@pytest.mark.parametrize("mode", ["embeds", "pixels"])
def test_shared_prefix_log_probs_equal_the_full_sequence_path_for_video_rows(video, mode):
    adapter = Qwen2_5_VLAdapter()
    rows = video.cache.row_inputs(video.batch["videos"], mode, "actor",
                                  lambda v: adapter.encode(video.model, v))
    batch = video.batch.union(Batch(objects={MEDIA_INPUTS: rows}))
    with torch.no_grad():
        shared = shared_prefix_log_probs(video.model, adapter, batch, 0, TEMPERATURE, with_entropy=True)
        plain = _plain(video.model, adapter, batch)
    _assert_same(shared, plain, batch["response_mask"])
    assert shared[0][3].abs().sum() > 0


@pytest.mark.parametrize("mode", ["embeds", "pixels"])
def test_shared_prefix_log_probs_equal_the_full_sequence_path_for_image_rows(video, tmp_path, mode):
    from PIL import Image

    from longrl.data.dataset import build_messages
    from longrl.models.vision_cache import media_refs

    tok = video.tok
    for name, (h, w) in {"a": (56, 84), "b": (28, 56)}.items():
        Image.fromarray(np.random.default_rng(h).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(tmp_path / f"{name}.png")
    prompts = [tok(tok.apply_chat_template(build_messages(text, n, v), tokenize=False, add_generation_prompt=True),
                   add_special_tokens=False).input_ids
               for text, n, v in (("How many?", 1, 0), ("<image> or <image>?", 2, 0), ("<video> <image>", 1, 1))]
    images = [[str(tmp_path / "a.png")], [str(tmp_path / "b.png"), str(tmp_path / "a.png")], [str(tmp_path / "b.png")]]
    videos = [[], [], [video.batch["videos"][0][0]]]
    batch = _batch([prompts[i] for i in (0, 0, 1, 1, 2, 2)], [5, 2, 4, 6, 3, 4], seed=3,
                   images=[images[i] for i in (0, 0, 1, 1, 2, 2)], videos=[videos[i] for i in (0, 0, 1, 1, 2, 2)])
    adapter = Qwen2_5_VLAdapter()
    rows = video.cache.row_inputs(media_refs(batch), mode, "actor", lambda v: adapter.encode(video.model, v))
    batch = batch.union(Batch(objects={MEDIA_INPUTS: rows}))
    with torch.no_grad():
        shared = shared_prefix_log_probs(video.model, adapter, batch, 0, TEMPERATURE, with_entropy=True)
        plain = _plain(video.model, adapter, batch)
    mask = batch["response_mask"]
    for got, want in zip(shared, plain):  # entropies reach ~5: 1e-5 relative is float32 summation order
        torch.testing.assert_close(got * mask, want * mask, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("override", ["worker.actor.ulysses_size=2", "worker.actor.padding_free=true"])
def test_config_refuses_prefix_sharing_with_sequence_parallelism_or_packing_naming_both_keys(tmp_path, override):
    from longrl.config import ConfigError, load_config
    from longrl.validation import validate

    (tmp_path / "model").mkdir()
    cfg = load_config(["config=configs/config.yaml", f"worker.actor.model.model_path={tmp_path / 'model'}",
                       "data.train_files=x.jsonl", "trainer.n_gpus_per_node=2",
                       "worker.actor.share_prompt_prefix=true", override])
    with pytest.raises(ConfigError, match="share_prompt_prefix=true runs whole padded sequences only.*"
                                          "worker.actor.ulysses_size=.* and worker.actor.padding_free="):
        validate(cfg)


def test_video_rows_give_the_same_gradients_and_a_trainable_tower_without_videos_gets_zeros(video):
    adapter, model = Qwen2_5_VLAdapter(), video.model
    rows = video.cache.row_inputs(video.batch["videos"], "pixels", "actor", lambda v: adapter.encode(model, v))
    with_videos = video.batch.union(Batch(objects={MEDIA_INPUTS: rows}))
    text_only = with_videos.index([5, 5])  # no video in the micro-batch: the adapter adds a masked padding video
    for batch in (with_videos, text_only):
        grads = []
        try:
            for fn in (_plain, lambda *a: shared_prefix_log_probs(*a[:3], 0, TEMPERATURE, with_entropy=True)):
                model.zero_grad(set_to_none=True)
                log_probs, entropy = fn(model, adapter, batch)
                ((log_probs - 0.1 * entropy) * batch["response_mask"]).sum().backward()
                grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        finally:
            model.zero_grad(set_to_none=True)
        assert sorted(grads[0]) == sorted(grads[1]) and any("visual" in n for n in grads[0])
        _assert_close_relative(grads[1], grads[0])
    assert all(not g.any() for n, g in grads[1].items() if "visual" in n)  # the text-only batch's tower


def test_inside_the_updates_ulysses_block_shared_prefix_log_probs_still_equal_the_plain_ones(video):
    # the update runs its micro-batches inside `ulysses_attention` (sp = 1 here); that kernel is causal over
    # q = k positions with no mask, so a KV-cached continuation run through it attends to the wrong keys
    # (seen as actor/kl_loss 2.7 and ppo_kl 1.6 at step 1 of examples/cpu/qwen2_5_vl_video_grpo.sh)
    from longrl.models.ulysses_attention import ulysses_attention
    from longrl.workers.actor import NO_SP

    adapter = Qwen2_5_VLAdapter()
    rows = video.cache.row_inputs(video.batch["videos"], "embeds", "actor", lambda v: adapter.encode(video.model, v))
    batch = video.batch.union(Batch(objects={MEDIA_INPUTS: rows}))
    with torch.no_grad():
        plain = _plain(video.model, adapter, batch)
        with ulysses_attention(video.model, NO_SP):
            shared = shared_prefix_log_probs(video.model, adapter, batch, 0, TEMPERATURE, with_entropy=True)
    _assert_same(shared, plain, batch["response_mask"])
