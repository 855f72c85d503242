"""Ulysses SP on the tiny VILA: a real 2-rank gloo world (one spawn for the module) computes the response log-probs
and gradients of a video row and an image row with sp=2 and sp=1; the video's frames are encoded in even shares."""

from __future__ import annotations

import datetime
import os
from pathlib import Path

import pytest
import torch

from longrl.models.tiny_vila import build_vila
from tests.models.test_ulysses_attention import _free_port, _summed_over_sp

WORLD = 2
FRAMES = 6  # 3 frames per rank


def _grads(model) -> dict[str, torch.Tensor]:
    """The language model's gradients (the tower gets none: the media come as cached embeddings)."""
    return {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}


def _case(model, adapter, batch, sp) -> dict[str, object]:
    from longrl.models.ulysses_attention import sp_response_log_probs, split_media

    inputs, prompt_lens = adapter.model_inputs(model, batch, 0, torch.device("cpu"))
    rows, media = split_media(inputs)
    model.zero_grad()
    log_probs, _ = sp_response_log_probs(model, rows, prompt_lens, batch["responses"].shape[1], sp, 1.0, media=media)
    (log_probs * torch.tensor([[1.5], [-0.5]])).sum().backward()
    return {"log_probs": log_probs.detach(), "grads": _grads(model), "ids": rows["input_ids"], "media": media}


def _worker(rank: int, port: int, root: str, video: str, image: str, out_dir: str) -> None:
    import torch.distributed as dist

    from longrl.models.qwen2_5_vl import MEDIA_INPUTS
    from longrl.models.vila_adapter import VILAAdapter
    from longrl.models.vision_cache import VideoSettings, VisionCache, media_refs
    from longrl.models.ulysses_attention import media_order
    from longrl.parallel.ulysses import init_sp_groups, shard_sequence
    from longrl.protocol import Batch
    from longrl.workers.actor import NO_SP

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD, timeout=datetime.timedelta(seconds=60))
    try:
        sp = init_sp_groups(2)
        adapter = VILAAdapter()
        config = adapter.load_config(root)
        model = adapter.load(root, torch.float32)
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(adapter.tokenizer_path(root))
        prompts = []
        for kind in ("video", "image"):
            messages = [{"role": "user", "content": [{"type": kind}, {"type": "text", "text": "What is 3 + 4?"}]}]
            text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            prompts.append(tok(text, add_special_tokens=False).input_ids)
        responses = torch.tensor([[5, 6, 7, 8, 9], [10, 11, 12, 0, 0]])
        mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
        batch = Batch({"responses": responses, "response_mask": mask},
                      {"prompt_ids": prompts, "videos": [[video], []], "images": [[], [image]]})
        res: dict[str, object] = {}
        for name, group in (("sp2", sp), ("sp1", NO_SP)):
            cache = VisionCache(VideoSettings.for_model(root, config.vision_config, FRAMES, 0, 0))
            rows = cache.row_inputs(media_refs(batch), "embeds", "actor",
                                    lambda item, g=group: adapter.encode(model, item, g if g.size > 1 else None))
            res[f"{name}_embeds"] = [m.embeds for m in rows[0] + rows[1]]
            case = _case(model, adapter, batch.union(Batch(objects={MEDIA_INPUTS: rows})), group)
            ids, media = case.pop("ids"), case.pop("media")
            if group.size > 1:
                case["grads"] = _summed_over_sp(case["grads"], sp.size)
                # the slices the forward cut: from the order of the batch's media tokens (both rows together)
                order = media_order(model, ids, sp, media)
                media_slots = torch.isin(shard_sequence(ids, sp, dim=-1, order=order),
                                         torch.tensor([config.video_token_id, config.image_token_id]))
                res["media_tokens_here"] = int(media_slots.sum())
                res["video_tokens_here"] = int(media_slots[0].sum())
                res["contiguous_video_tokens_here"] = int((shard_sequence(ids[:1], sp, dim=-1)
                                                           == config.video_token_id).sum())
            res[name] = case
        torch.save(res, Path(out_dir) / f"rank_{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    import numpy as np
    import torch.multiprocessing as mp
    from PIL import Image

    from longrl.data.synthetic_video import write_mp4

    d = tmp_path_factory.mktemp("vila_sp")
    root = build_vila(d / "model", "mlp_downsample_3x3_fix", "remote")
    rng = np.random.default_rng(0)
    write_mp4(d / "clip.mp4", rng.integers(0, 256, (FRAMES, 56, 56, 3), dtype=np.uint8), 8.0)
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(d / "scene.png")
    mp.spawn(_worker, args=(_free_port(), str(root), str(d / "clip.mp4"), str(d / "scene.png"), str(d)),
             nprocs=WORLD, join=True)
    return [torch.load(d / f"rank_{r}.pt") for r in range(WORLD)]


def test_frames_encoded_in_shares_equal_the_whole_video_encoded_on_one_rank(ranks):
    for res in ranks:
        for shared, whole in zip(res["sp2_embeds"], res["sp1_embeds"], strict=True):
            assert torch.equal(shared, whole)


def test_sp2_log_probs_equal_sp1(ranks):
    for res in ranks:
        print(f"sp2 vs sp1 max log-prob diff {(res['sp2']['log_probs'] - res['sp1']['log_probs']).abs().max():.2e}")
        torch.testing.assert_close(res["sp2"]["log_probs"], res["sp1"]["log_probs"], atol=1e-5, rtol=0)


def test_sp2_gradients_equal_sp1(ranks):
    for res in ranks:
        ref, got = res["sp1"]["grads"], res["sp2"]["grads"]
        assert sorted(got) == sorted(ref)
        worst = max(((got[k] - g).norm() / g.norm()).item() for k, g in ref.items() if g.norm() > 0)
        print(f"sp2 vs sp1 worst relative gradient error {worst:.2e}")
        assert worst < 1e-4, f"relative gradient error {worst:.2e}"


def test_the_ranks_hold_equal_shares_of_the_media_tokens(ranks):
    # 6 frames x 4 tokens (+ a newline each): 24 video tokens in row 0, 4 image tokens in row 1 at other positions.
    # Cut into contiguous halves, the row gives one rank far more video than the other; the media order deals
    # them evenly (each rank still holds half of the padded row)
    contiguous = [res["contiguous_video_tokens_here"] for res in ranks]
    counts = [res["video_tokens_here"] for res in ranks]
    both = [res["media_tokens_here"] for res in ranks]
    print("video tokens per rank, contiguous halves:", contiguous, "media order:", counts, "both rows:", both)
    assert sum(counts) == FRAMES * 4 and max(counts) - min(counts) <= 1
    assert sum(both) == FRAMES * 4 + 4 and max(both) - min(both) <= 1
