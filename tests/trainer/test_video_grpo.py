"""The video and image paths end to end: tiny Qwen2.5-VL, synthetic 64-frame videos and CLEVR-style PNG
scenes (one or two images a question), 2 Ray workers, FSDP, vLLM.

One trainer (one worker group) serves every test of this module: starting it costs ~30 s.
The vision tower trains here (freeze_vision_tower=false), the harder case for the VisionCache:
the reference encodes with its own tower, the update recomputes the tower with gradients, and
after an update every cached embedding is stale.
"""

from __future__ import annotations

import json
import math

import pytest
import ray
import torch

from longrl.config import load_config
from longrl.data.dataset import rows_to_batch
from longrl.models.qwen2_5_vl import MEDIA_INPUTS, Qwen2_5_VLAdapter
from longrl.models.vision_cache import VideoSettings, VisionCache
from longrl.protocol import Batch
from longrl.workers.rollout import SamplingSpec

pytestmark = pytest.mark.e2e

GREEDY = SamplingSpec(n=1, temperature=0.0, top_p=1.0, top_k=-1, max_tokens=12)
SAMPLED = SamplingSpec(n=4, temperature=1.0, top_p=1.0, top_k=-1, max_tokens=16)


@pytest.fixture(scope="module")
def trainer(tmp_path_factory):
    from longrl.data.synthetic_video import generate_split
    from longrl.models.tiny_vl import build_qwen2_5_vl
    from longrl.trainer.ray_trainer import RayTrainer

    root = tmp_path_factory.mktemp("video_grpo")
    model_dir = build_qwen2_5_vl(root / "model")
    train = generate_split(root / "data", "train", 7, frames=64)
    # an 8th row whose video is a zero-byte file: skipped, counted, and the run goes on
    (root / "data/videos/broken.mp4").write_bytes(b"")
    row = json.loads(train.read_text().splitlines()[0])
    # rows 8-11: image questions (three of one scene, one of two scenes), written beside the videos
    from longrl.data.synthetic_image import generate_split as image_split

    images = [json.loads(line) for line in image_split(root / "data", "val", 3).read_text().splitlines()]
    images += [json.loads(line) for line in image_split(root / "data", "test", 1, categories=("more",))
               .read_text().splitlines()]
    with open(train, "a") as f:
        f.write(json.dumps({**row, "problem_id": "train-broken", "videos": ["videos/broken.mp4"]}) + "\n")
        for image_row in images:
            f.write(json.dumps({**image_row, "videos": []}) + "\n")
    cfg = load_config(["config=configs/cpu_video.yaml", f"worker.actor.model.model_path={model_dir}",
                       "worker.rollout.limit_images=2",
                       f"data.train_files={train}", "data.val_files=", "worker.actor.model.freeze_vision_tower=false",
                       "worker.actor.optim.lr=0.05", "trainer.max_steps=3", "trainer.worker_timeout_s=300",
                       "worker.rollout.max_model_len=1024",  # the 56x56 prompts fit (~300 tokens), big.mp4 not
                       f"trainer.save_checkpoint_path={root / 'run'}", "data.shuffle=false"])
    t = RayTrainer(cfg)
    t.start_workers()
    yield t
    t.shutdown()
    ray.shutdown()


def prompts(trainer, rows: list[int], step: int) -> Batch:
    batch = rows_to_batch([trainer.train_set[i] for i in rows])
    batch.meta["step"] = step  # a training step: the worker keeps its videos until the update
    return batch


def local_cache(trainer) -> VisionCache:
    from transformers import AutoConfig

    cfg = trainer.cfg
    hf = AutoConfig.from_pretrained(cfg.worker.actor.model.model_path)
    return VisionCache(VideoSettings.for_model(cfg.worker.actor.model.model_path, hf.vision_config,
                                               cfg.worker.rollout.num_video_frames, cfg.data.min_pixels,
                                               cfg.data.max_pixels))


def summed_stats(trainer) -> dict[str, float]:
    totals: dict[str, float] = {}
    for stats in trainer.workers.video_stats():
        for key, value in stats.items():
            totals[key] = totals.get(key, 0.0) + value
    return totals


def test_actor_log_probs_match_vllms_and_each_video_is_encoded_once_per_tower(trainer):
    batch = prompts(trainer, [0, 1, 2, 3], step=101)
    video = local_cache(trainer).video(batch["videos"][0][0])
    # 64 frames at 8 fps -> 0.25 s per grid step x 2 tokens/s: time positions up to 31 * 0.5 = 15, far beyond the
    # 2x2 merged spatial grid of a 56x56 frame: the case where transformers' and vLLM's positions differ
    assert video.grid_thw == (32, 4, 4) and video.second_per_grid_ts == 0.25
    summed_stats(trainer)  # start counting here
    rollout = trainer.workers.generate(batch, SAMPLED)
    rollout = rollout.union(trainer.workers.log_probs(rollout)).union(trainer.workers.ref_log_probs(rollout))
    mask = rollout["response_mask"].bool()
    diff = (rollout["old_log_probs"] - rollout["rollout_log_probs"])[mask].abs().max()
    assert diff < 1e-3, f"trainer vs vLLM log-prob max abs diff {diff}"
    # the reference has not moved yet: its log-probs (own tower, own embeddings) equal the actor's
    assert (rollout["ref_log_probs"] - rollout["old_log_probs"])[mask].abs().max() < 1e-4
    rollout["advantages"] = torch.randn(rollout["response_mask"].shape) * rollout["response_mask"]
    trainer.workers.update_actor(rollout)
    stats = summed_stats(trainer)
    # 4 videos: encoded once by the actor's tower (rollout) and once by the reference's; of the 4 + 16 + 16 rows
    # asking for embeddings (rollout prompts, old and ref log-probs) the other 36 - 8 = 28 were cache hits
    assert (stats["video/decoded"], stats["video/encoded"], stats["video/embed_hits"]) == (4.0, 8.0, 28.0)


def hf_greedy(model, prompt_ids: list[int], videos: list, max_tokens: int) -> list[int]:
    """transformers' greedy continuation, with the positions vLLM uses."""
    adapter, out = Qwen2_5_VLAdapter(), []
    eos = model.generation_config.eos_token_id
    for _ in range(max_tokens):
        response = torch.tensor([out], dtype=torch.long).reshape(1, len(out))
        batch = Batch({"responses": response, "response_mask": torch.ones_like(response)},
                      {"prompt_ids": [prompt_ids], MEDIA_INPUTS: [videos]})
        inputs, _ = adapter.model_inputs(model, batch, 0, torch.device("cpu"))
        with torch.no_grad():
            out.append(int(model(**inputs).logits[0, -1].argmax()))
        if out[-1] == eos:
            break
    return out


def test_after_an_update_the_rollout_sees_the_new_tower_and_equals_transformers_greedy(trainer):
    from transformers import Qwen2_5_VLForConditionalGeneration

    batch = prompts(trainer, [0, 1], step=102)
    before = trainer.workers.generate(batch, GREEDY)
    rollout = trainer.workers.generate(batch, SAMPLED)
    rollout = rollout.union(trainer.workers.log_probs(rollout)).union(trainer.workers.ref_log_probs(rollout))
    # push every sampled token down hard: lr 0.05 moves the tower and the language model
    rollout["advantages"] = -torch.ones_like(rollout["old_log_probs"]) * rollout["response_mask"]
    trainer.workers.update_actor(rollout)
    after = trainer.workers.generate(batch, GREEDY)
    weights = trainer.workers.full_weights()[0]
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(trainer.cfg.worker.actor.model.model_path)
    old_tower = {k: v.clone() for k, v in model.model.visual.state_dict().items()}
    model.load_state_dict(weights)
    model.eval()
    assert any(not torch.equal(v, model.model.visual.state_dict()[k]) for k, v in old_tower.items())
    cache = local_cache(trainer)
    lengths = after["response_mask"].sum(-1).tolist()
    for i, (prompt_ids, paths) in enumerate(zip(batch["prompt_ids"], batch["videos"])):
        [videos] = cache.row_inputs([paths], "pixels")
        assert after["responses"][i, : lengths[i]].tolist() == hf_greedy(model, list(prompt_ids), videos,
                                                                         GREEDY.max_tokens)
    # the greedy tokens of a random tiny model may survive one update (a repeated token); their log-probs do not
    assert not torch.equal(before["responses"], after["responses"]) or not torch.allclose(
        before["rollout_log_probs"], after["rollout_log_probs"]), "rollout still sees the old weights"


def test_a_prompt_with_a_broken_video_gets_empty_responses_while_the_rest_trains(trainer):
    # rank 0 gets row 0, rank 1 only the broken row: rank 1 encodes padding videos to keep FSDP in step
    batch = prompts(trainer, [0, 7], step=103)
    summed_stats(trainer)
    rollout = trainer.workers.generate(batch, SAMPLED)
    assert rollout["video_skipped"].tolist() == [False] * 4 + [True] * 4
    assert rollout["response_mask"][:4].sum() > 0 and rollout["response_mask"][4:].sum() == 0
    video_pad = trainer.tokenizer.convert_tokens_to_ids("<|video_pad|>")
    assert list(rollout["videos"][4]) == [] and video_pad not in list(rollout["prompt_ids"][4])
    rollout = rollout.union(trainer.workers.log_probs(rollout)).union(trainer.workers.ref_log_probs(rollout))
    rollout["advantages"] = torch.randn(rollout["response_mask"].shape) * rollout["response_mask"]
    metrics = trainer.workers.update_actor(rollout)
    assert all(math.isfinite(m["actor/pg_loss"]) for m in metrics)
    assert summed_stats(trainer)["video/skipped"] == 1.0


def test_a_prompt_too_long_once_its_video_tokens_are_counted_is_skipped(trainer, tmp_path):
    import numpy as np

    from longrl.data.synthetic_video import write_mp4

    # 224x224 frames: 16x16 patches -> 8x8 = 64 merged tokens per 2 frames, x 32 = 2048 video tokens: within
    # data.max_prompt_length=512 (video tokens come on top, as in Long-RL), but over worker.rollout.max_model_len
    big = tmp_path / "big.mp4"
    write_mp4(big, np.zeros((64, 224, 224, 3), np.uint8))
    batch = prompts(trainer, [0, 1], step=104)
    batch["videos"] = [batch["videos"][0], [str(big)]]
    summed_stats(trainer)
    rollout = trainer.workers.generate(batch, SAMPLED)
    assert summed_stats(trainer)["video/overlong"] == 1.0
    assert rollout["video_skipped"].tolist() == [False] * 4 + [True] * 4
    assert rollout["response_mask"][4:].sum() == 0 and rollout["response_mask"][:4].sum() > 0


def test_actor_log_probs_match_vllms_for_image_prompts_and_each_image_is_encoded_once(trainer):
    batch = prompts(trainer, [8, 9, 10, 11], step=105)  # three one-image prompts and a two-image one
    assert [len(i) for i in batch["images"]] == [1, 1, 1, 2]
    summed_stats(trainer)
    rollout = trainer.workers.generate(batch, SAMPLED)
    rollout = rollout.union(trainer.workers.log_probs(rollout)).union(trainer.workers.ref_log_probs(rollout))
    mask = rollout["response_mask"].bool()
    assert mask.sum() > 0
    diff = (rollout["old_log_probs"] - rollout["rollout_log_probs"])[mask].abs().max()
    assert diff < 1e-3, f"trainer vs vLLM log-prob max abs diff {diff}"
    rollout["advantages"] = torch.randn(rollout["response_mask"].shape) * rollout["response_mask"]
    trainer.workers.update_actor(rollout)
    stats = summed_stats(trainer)
    # 5 images, encoded by the actor's and the reference's tower: 10; the 5 + 20 + 20 image uses of the rollout,
    # old and ref log-probs minus those 10 are hits
    assert (stats["image/decoded"], stats["image/encoded"], stats["image/embed_hits"]) == (5.0, 10.0, 35.0)


def test_a_prompt_with_a_broken_image_gets_empty_responses_and_is_counted(trainer, tmp_path):
    batch = prompts(trainer, [8, 9], step=106)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n")  # a PNG signature and nothing else
    batch["images"] = [batch["images"][0], [str(tmp_path / "broken.png")]]
    summed_stats(trainer)
    rollout = trainer.workers.generate(batch, SAMPLED)
    assert rollout["video_skipped"].tolist() == [False] * 4 + [True] * 4
    image_pad = trainer.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert list(rollout["images"][4]) == [] and image_pad not in list(rollout["prompt_ids"][4])
    assert rollout["response_mask"][4:].sum() == 0 and summed_stats(trainer)["image/skipped"] == 1.0


def test_grpo_runs_three_steps_on_videos_and_images_and_a_resume_repeats_the_image_step_exactly(trainer):
    skipped = 0.0
    for step in (1, 2, 3):
        trainer.step_count = step
        metrics = trainer.step(step)
        # every step encodes its own media (the cache lives one step); step 3 draws the image rows
        assert metrics["image/encoded" if step == 3 else "video/encoded"] > 0
        skipped += metrics.get("video/skipped", 0.0)  # the driver reduces every rank's video/* counters
        assert all(math.isfinite(metrics[k]) for k in ("actor/pg_loss", "actor/kl_loss", "actor/grad_norm"))
        assert metrics["response_length/max"] > 0
        if step == 2:
            trainer.save()
    assert skipped == 1.0  # the broken row was drawn once (12 rows, 4 per step, no shuffle) and skipped
    straight = trainer.workers.full_weights()[0]
    # resume from step 2 in the same workers and run step 3 (the image prompts) again: the checkpoint must hold
    # everything the step depends on (weights, optimizer, scheduler, RNGs, data position), the engine must get
    # the restored weights and the vision cache nothing stale, or the weights differ from the straight run's
    trainer.fresh_start()
    trainer.resume(trainer.checkpoints.latest())
    assert trainer.step_count == 2
    again = trainer.step(3)
    assert again["image/encoded"] == metrics["image/encoded"] and again["reward/overall"] == metrics["reward/overall"]
    resumed = trainer.workers.full_weights()[0]
    assert resumed.keys() == straight.keys()
    worst = max((resumed[k] - straight[k]).abs().max().item() for k in straight)
    assert worst < 1e-6, f"step 3 after resuming from step 2 differs from step 3 straight by {worst}"
