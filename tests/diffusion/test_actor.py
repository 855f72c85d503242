"""Flow-GRPO on one rank with a tiny SD3: the log-prob the trainer recomputes for each stored step equals the
sampler's (fp32, < 1e-5), with and without CFG and with LoRA, so the PPO ratio is 1 at the first update."""

import dataclasses

import pytest
import torch

from longrl.algorithms import AdvantageInputs, compute_advantages
from longrl.config import Config, LoraConfig
from longrl.controller.dispatch import ROW_INDEX
from longrl.diffusion.actor import DiffusionActor, adapters_off, frozen_copy
from longrl.diffusion.pipelines import adapter_for
from longrl.models.lora import lora_config
from longrl.protocol import Batch
from longrl.workers.actor import build_optimizer

PROMPTS = ["a photo of a red cat on a table", "a photo of a blue dog on a beach"]


def make_actor(path, guidance: float, window: int | None = None, lora: LoraConfig | None = None) -> DiffusionActor:
    cfg = Config()
    rollout = dataclasses.replace(cfg.worker.rollout, num_steps=4, height=32, width=32, guidance_scale=guidance,
                                  sde_window_size=window)
    actor_cfg = dataclasses.replace(cfg.worker.actor, global_batch_size=4, micro_batch_size_per_device_for_update=2,
                                    micro_batch_size_per_device_for_experience=3, clip_ratio_low=1e-4,
                                    clip_ratio_high=1e-4)
    adapter = adapter_for(str(path))
    pipe = adapter.load(str(path), torch.device("cpu"))
    if lora is None:
        ref = frozen_copy(type(pipe.transformer).from_pretrained(str(path), subfolder="transformer").requires_grad_(False))
    else:  # as the worker does it
        pipe.transformer.requires_grad_(False).add_adapter(lora_config(lora))
        ref = adapters_off(pipe.transformer)
    optimizer, scheduler = build_optimizer(pipe.transformer, dataclasses.replace(actor_cfg.optim, lr=1e-3), 10)
    algo = dataclasses.replace(cfg.algorithm, kl_penalty="flow_grpo", kl_coef=0.04)
    return DiffusionActor(pipe, adapter, pipe.transformer, rollout, actor_cfg, algo, 16, optimizer, scheduler, ref)


@pytest.mark.parametrize(("guidance", "lora"), [(4.5, None), (1.0, None), (4.5, LoraConfig(rank=4, alpha=8))],
                         ids=["cfg", "no_cfg", "cfg_lora"])
def test_recomputed_log_probs_equal_the_samplers_and_the_first_update_has_ratio_one(tiny_sd3, guidance, lora):
    actor = make_actor(tiny_sd3, guidance, lora=lora)
    keys = [f"{i}/{j}" for i in range(2) for j in range(2)]
    pixels, sampled = actor.sample([p for p in PROMPTS for _ in range(2)], keys, keys, window=[0, 1, 2], seed="0")
    assert pixels.shape == (4, 3, 32, 32) and pixels.dtype == torch.uint8
    assert sampled.shape == (4, 3) and torch.isfinite(sampled).all()
    batch = Batch({"response_mask": torch.ones(4, 3, dtype=torch.long), ROW_INDEX: torch.arange(4)},
                  {"trajectory": keys, "uid": ["0", "0", "1", "1"]})
    recomputed = actor.log_probs(actor.transformer, batch)
    assert (recomputed - sampled).abs().max().item() < 1e-5
    ref = actor.ref_log_probs(batch)
    assert (ref - sampled).abs().max().item() < 1e-5  # the reference starts as the policy
    batch["old_log_probs"] = recomputed
    batch["advantages"], _ = compute_advantages(
        AdvantageInputs(torch.tensor([[0, 0, 1.0], [0, 0, 2.0], [0, 0, 0.5], [0, 0, 0.0]]), batch["response_mask"],
                        list(batch["uid"])), Config().algorithm)
    before = [p.detach().clone() for p in actor.transformer.parameters()]
    metrics = actor.update(batch)
    assert metrics["actor/pg_clipfrac"] == 0.0 and abs(metrics["actor/ppo_kl"]) < 1e-6  # ratio 1 at the first update
    assert metrics["actor/kl_loss"] == pytest.approx(0.0, abs=1e-10)  # policy == reference before the step
    changed = {name for (name, p), b in zip(actor.transformer.named_parameters(), before) if not torch.equal(b, p)}
    assert changed
    if lora is not None:
        assert all("lora_" in name for name in changed)  # the base stays as it was
        # the reference (adapters off) is the base model exactly, though the adapters have moved the policy
        base = type(actor.transformer).from_pretrained(str(tiny_sd3), subfolder="transformer")
        assert (actor.log_probs(actor.transformer, batch) - ref).abs().max().item() > 1e-4
        assert torch.equal(actor.ref_log_probs(batch), actor.log_probs(base, batch))


def test_a_window_shares_the_groups_initial_noise_and_stores_only_its_steps(tiny_sd3):
    actor = make_actor(tiny_sd3, 1.0, window=2)
    keys = ["a/0", "a/1"]
    pixels, log_probs = actor.sample(PROMPTS[:1] * 2, keys, ["a", "a"], window=[1, 2], seed="0")
    first, second = actor.trajectories["a/0"], actor.trajectories["a/1"]
    assert log_probs.shape == (2, 2) and first.steps.tolist() == [1, 2]
    assert torch.equal(first.latents[0], second.latents[0])  # same noise, same ODE prefix up to the window
    assert not torch.equal(first.next_latents[0], second.next_latents[0])  # they differ inside it
    with pytest.raises(KeyError, match="no stored trajectory for samples"):
        actor.log_probs(actor.transformer, Batch(objects={"trajectory": ["b/0"]}))


@pytest.mark.parametrize("guidance", [5.0, 1.0], ids=["cfg", "no_cfg"])
def test_wan_videos_of_9_frames_recompute_their_log_probs_exactly(guidance):
    # built in memory: diffusers loads a saved Wan transformer only with accelerate installed
    from longrl.diffusion.pipelines import WanAdapter
    from longrl.diffusion.tiny import wan_pipeline

    pipe = wan_pipeline()
    pipe.set_progress_bar_config(disable=True)
    cfg = Config()
    rollout = dataclasses.replace(cfg.worker.rollout, num_steps=3, height=16, width=16, num_frames=9,
                                  guidance_scale=guidance)
    actor = DiffusionActor(pipe, WanAdapter(), pipe.transformer, rollout, cfg.worker.actor, cfg.algorithm, 16)
    keys = ["v/0", "v/1"]
    frames, sampled = actor.sample(["a video of a red cat running on a beach"] * 2, keys, keys, window=[0, 1],
                                   seed="0")
    assert frames.shape == (2, 9, 3, 16, 16) and frames.dtype == torch.uint8
    recomputed = actor.log_probs(actor.transformer, Batch(objects={"trajectory": keys}))
    assert (recomputed - sampled).abs().max().item() < 1e-5


@pytest.mark.parametrize("lora", [None, LoraConfig(rank=2, alpha=4, target_modules="to_q,to_v")],
                         ids=["full", "lora"])
def test_a_trained_checkpoint_merges_into_a_pipeline_directory_that_loads_and_samples(tiny_sd3, tmp_path, lora):
    from diffusers import DiffusionPipeline

    from longrl.checkpoint.merger import merge, save_diffusion_base
    from longrl.checkpoint.sharded import save_train_state

    actor = make_actor(tiny_sd3, 1.0, lora=lora)
    with torch.no_grad():
        for p in actor.transformer.parameters():
            if p.requires_grad:
                p.add_(0.01)  # stands in for training: the merged weights must be these, not the base's
    save_train_state(tmp_path / "actor", actor.transformer, actor.optimizer, actor.lr_scheduler,
                     trainable_only=lora is not None)
    save_diffusion_base(tmp_path / "actor", str(tiny_sd3),
                        actor.transformer.peft_config["default"] if lora is not None else None)
    target = merge(tmp_path / "actor", tmp_path / "merged")
    if lora is not None:  # what the merge must equal: the adapters fused into the base
        actor.transformer.fuse_lora()
        actor.transformer.unload_lora()
    pipe = DiffusionPipeline.from_pretrained(str(target))
    trained = actor.transformer.state_dict()
    assert pipe.transformer.state_dict().keys() == trained.keys()
    for name, merged in pipe.transformer.state_dict().items():
        assert torch.allclose(merged, trained[name], atol=1e-6, rtol=0), name
    images = pipe(prompt="a photo of a red cat", height=32, width=32, num_inference_steps=2, guidance_scale=1.0,
                  max_sequence_length=16, output_type="pt").images
    assert images.shape == (1, 3, 32, 32)
