"""GRPO with Ulysses sequence parallelism end to end, and the CLI's checks of ulysses_size before any worker.

The e2e part: the tiny Qwen2.5-VL on 256-frame synthetic videos (128 temporal x 2x2 merged patches = 512 video
tokens a prompt), 2 Ray workers forming ONE SP group (worker.actor.ulysses_size=2, dp=1), padding-free, FSDP,
in-process vLLM. One worker group serves the module (starting it costs ~30 s); kept lean: 2 prompts x 2
samples of at most 8 tokens a step.
"""

from __future__ import annotations

import math

import pytest
import ray

from longrl.config import load_config
from longrl.data.dataset import rows_to_batch
from longrl.trainer.main import main
from longrl.workers.rollout import SamplingSpec

FRAMES = 256
SAMPLED = SamplingSpec(n=2, temperature=1.0, top_p=1.0, top_k=-1, max_tokens=8)


@pytest.fixture(scope="module")
def trainer(tmp_path_factory):
    from longrl.validation import validate
    from longrl.data.synthetic_video import generate_split
    from longrl.models.tiny_vl import build_qwen2_5_vl
    from longrl.trainer.ray_trainer import RayTrainer

    root = tmp_path_factory.mktemp("sp_e2e")
    model_dir = build_qwen2_5_vl(root / "model")
    train = generate_split(root / "data", "train", 4, frames=FRAMES)
    cfg = load_config(["config=configs/cpu_video.yaml", f"worker.actor.model.model_path={model_dir}",
                       f"data.train_files={train}", "data.val_files=", "data.shuffle=false",
                       "data.max_prompt_length=1024", "data.max_response_length=8", "data.rollout_batch_size=2",
                       "worker.rollout.n=2", f"worker.rollout.num_video_frames={FRAMES}",
                       "worker.actor.ulysses_size=2", "worker.actor.padding_free=true",
                       "worker.actor.global_batch_size=2", "worker.actor.micro_batch_size_per_device_for_update=2",
                       "worker.actor.micro_batch_size_per_device_for_experience=4",
                       "trainer.max_steps=2", "trainer.worker_timeout_s=300",
                       f"trainer.save_checkpoint_path={root / 'run'}"])
    validate(cfg, model_heads=(4, 2))  # what the CLI checks first (tiny model: 4 heads, 2 KV heads)
    t = RayTrainer(cfg)
    t.start_workers()
    yield t
    t.shutdown()
    ray.shutdown()


@pytest.mark.e2e
def test_sp2_old_and_ref_log_probs_of_256_frame_video_prompts_match_vllms(trainer):
    from transformers import AutoConfig

    from longrl.models.vision_cache import VideoSettings, VisionCache

    batch = rows_to_batch([trainer.train_set[i] for i in (0, 1)])
    batch.meta["step"] = 101  # a training step: the worker keeps its videos until the update
    cfg = trainer.cfg
    settings = VideoSettings.for_model(cfg.worker.actor.model.model_path,
                                       AutoConfig.from_pretrained(cfg.worker.actor.model.model_path).vision_config,
                                       FRAMES, cfg.data.min_pixels, cfg.data.max_pixels)
    video = VisionCache(settings).video(batch["videos"][0][0])
    assert video.grid_thw == (128, 4, 4) and video.num_tokens == 512  # 256 frames / 2 x (4 x 4 patches) / 2x2
    rollout = trainer.workers.generate(batch, SAMPLED)
    # one rank per SP group samples; before, both ranks ran the same rollout and one result was thrown away
    assert [s.get("generate_calls", 0) for s in trainer.workers.engine_stats()] == [1, 0]
    assert not rollout["video_skipped"].any()
    rollout = rollout.union(trainer.workers.log_probs(rollout)).union(trainer.workers.ref_log_probs(rollout))
    mask = rollout["response_mask"].bool()
    assert mask.sum() > 0
    diff = (rollout["old_log_probs"] - rollout["rollout_log_probs"])[mask].abs().max()
    assert diff < 1e-3, f"trainer (sp=2, padding-free) vs vLLM log-prob max abs diff {diff}"
    assert (rollout["ref_log_probs"] - rollout["old_log_probs"])[mask].abs().max() < 1e-5  # nothing trained yet


@pytest.mark.e2e
def test_grpo_runs_two_steps_with_ulysses_size_2(trainer):
    for step in (1, 2):
        metrics = trainer.step(step)
        assert all(math.isfinite(metrics[k]) for k in ("actor/pg_loss", "actor/kl_loss", "actor/grad_norm",
                                                         "actor/entropy"))
        assert metrics["response_length/max"] > 0
        # step 2's rollout first streams step 1's update into the engine (through the lifecycle component)
        assert (metrics["perf/weight_sync_mb"] > 0) == (step == 2)


# ---- before any worker starts -----------------------------------------------------------------------------------


def test_ulysses_size_that_does_not_divide_the_world_is_refused_naming_both(capsys, tiny_qwen2, math_data):
    code = main(["config=configs/cpu_math.yaml", f"worker.actor.model.model_path={tiny_qwen2}",
                 f"data.train_files={math_data['train']}", "worker.actor.ulysses_size=3"])
    assert code == 2
    err = capsys.readouterr().err
    assert "worker.actor.ulysses_size=3 must divide the world size 2" in err
    assert "effective config" not in err  # nothing ran past validation


def test_ulysses_size_that_does_not_divide_the_heads_is_refused_naming_both(capsys, tiny_qwen2, math_data):
    # 3 ranks, ulysses_size=3: the world splits, but the tiny Qwen2's 4 attention heads do not
    code = main(["config=configs/cpu_math.yaml", f"worker.actor.model.model_path={tiny_qwen2}",
                 f"data.train_files={math_data['train']}", "trainer.n_gpus_per_node=3",
                 "worker.actor.ulysses_size=3", "data.rollout_batch_size=8", "worker.actor.global_batch_size=4"])
    assert code == 2
    err = capsys.readouterr().err
    assert "worker.actor.ulysses_size=3 must divide the model's num_attention_heads=4" in err
    assert "choose ulysses_size from [1, 2, 4]" in err and "world size" not in err
