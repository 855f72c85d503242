"""The diffusion worker kind: the verbs the RL loop calls (`generate`, `log_probs`, `ref_log_probs`,
`update_actor`, checkpoints), for a diffusers pipeline whose transformer is trained with Flow-GRPO.

One Ray actor per slot. The transformer is FSDP2-sharded over the world (one unit per block); the frozen reference
is a second sharded copy, or with LoRA (worker.actor.model.lora.rank > 0) the transformer itself with its adapters
off, and then only the adapters train and are checkpointed; text encoders and the VAE are frozen and whole on every
rank. The driver sees the same
batch columns as for a language model: `response_mask` / `rollout_log_probs` / `old_log_probs` / `ref_log_probs`
are `[B, T]` over the trained denoising steps, so advantages, the policy loss and the KL come from the same
registries. What differs: `decoded` (uint8 pixels for the reward) instead of token ids, and a `trajectory` id per
sample naming the latents that stay on this worker.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

from longrl.config import Config
from longrl.controller.dispatch import Dispatch, verb
from longrl.diffusion.actor import DiffusionActor, adapters_off, frozen_copy
from longrl.diffusion.pipelines import adapter_for
from longrl.diffusion.sde import sde_window
from longrl.logging.process import process_stats
from longrl.models.lora import lora_config
from longrl.parallel.device import device, device_type, init_distributed
from longrl.protocol import Batch
from longrl.workers.actor import build_optimizer
from longrl.workers.fsdp_worker import full_tensors
from longrl.workers.rollout import SamplingSpec

logger = logging.getLogger(__name__)


def shard_transformer(transformer: torch.nn.Module, blocks: list[torch.nn.Module], trainable: bool) -> torch.nn.Module:
    """FSDP2 over the whole world: one unit per block plus the root."""
    if not trainable:
        transformer.requires_grad_(False).eval()
    mesh = init_device_mesh(device_type(), (dist.get_world_size(),))
    for block in blocks:
        fully_shard(block, mesh=mesh)
    fully_shard(transformer, mesh=mesh)
    return transformer


class DiffusionWorker:
    """Policy transformer + reference + the pipeline's frozen parts on one rank."""

    def __init__(self, cfg: Config):
        self.cfg = cfg

    @verb(Dispatch.ALL)
    def setup(self, total_steps: int) -> dict[str, object]:
        """Join the world, load the pipeline, shard the transformer and its reference (`total_steps`: RL steps)."""
        self.rank, self.world = init_distributed()
        cfg = self.cfg
        path = cfg.worker.actor.model.model_path
        self.adapter = adapter_for(path)
        pipe = self.adapter.load(path, device())
        transformer = pipe.transformer
        if cfg.worker.actor.model.enable_gradient_checkpointing:
            transformer.enable_gradient_checkpointing()
        self.lora = lora_config(cfg.worker.actor.model.lora)
        ref = None
        if self.lora is not None:
            transformer.requires_grad_(False)
            with torch.random.fork_rng():  # lora_A's random init: the same on every rank, whose shards make one tensor
                torch.manual_seed(cfg.data.seed)
                transformer.add_adapter(self.lora)  # its parameters alone require grad
            ref = None if cfg.algorithm.disable_kl else adapters_off(transformer)
        else:
            transformer.requires_grad_(True)
            if not cfg.algorithm.disable_kl:
                copy = type(transformer).from_pretrained(path, subfolder="transformer", dtype=torch.float32).to(device())
                ref = frozen_copy(shard_transformer(copy, self.adapter.blocks(copy), trainable=False))
        shard_transformer(transformer, self.adapter.blocks(transformer), trainable=True)
        # the LR schedule counts RL steps, as the language actor's
        optimizer, lr_scheduler = build_optimizer(transformer, cfg.worker.actor.optim, total_steps)
        self.actor = DiffusionActor(pipe, self.adapter, transformer, cfg.worker.rollout, cfg.worker.actor,
                                    cfg.algorithm, cfg.data.max_prompt_length, optimizer, lr_scheduler, ref)
        return {"rank": self.rank, "node_id": _node_id(), "model_type": type(pipe).__name__}

    # ---- rollout ----------------------------------------------------------------------------
    @verb(Dispatch.SPLIT_SAMPLES)
    def generate(self, samples: Batch, spec: SamplingSpec) -> Batch:
        """One sample per row (the driver repeats each prompt n times and numbers its copies in `sample`, see
        DiffusionKind.rollout_rows; the rows need not divide by the ranks): the rows plus `decoded` pixels,
        `response_mask` and `rollout_log_probs` `[B, T]` over the trained steps, and a `trajectory` id per sample."""
        rollout = self.cfg.worker.rollout
        step = samples.meta.get("step", 0)
        # the same window on every rank (seeded by the RL step only): FSDP's collectives need the same T everywhere
        window = sde_window(rollout.num_steps, rollout.sde_window_size, rollout.sde_window_range,
                            rollout.sde_window_schedule, step // 1000, rollout.seed)
        keys = [f"{uid}/{j}" for uid, j in zip(samples["uid"], samples["sample"])]
        # Flow-GRPO-Fast: a group (one prompt uid) shares its initial noise, wherever its members are sampled
        noise_keys = list(samples["uid"]) if rollout.sde_window_size is not None else keys
        decoded, log_probs = self.actor.sample(list(samples["prompt"]), keys, noise_keys, window,
                                               seed=f"{rollout.seed}/{step}")
        if "step" not in samples.meta:  # validation: nothing trains on these samples
            for key in keys:
                self.actor.trajectories.pop(key)
        out = Batch(dict(samples.tensors), dict(samples.objects), dict(samples.meta))
        out.tensors.update(decoded=decoded.cpu(), rollout_log_probs=log_probs,
                           response_mask=torch.ones(log_probs.shape, dtype=torch.long))
        out["trajectory"] = keys
        return out

    # ---- experience -------------------------------------------------------------------------
    @verb(Dispatch.SPLIT_SAMPLES)
    def log_probs(self, batch: Batch) -> Batch:
        """The current policy's log-probs of the stored steps (`old_log_probs`, [B, T])."""
        return Batch({"old_log_probs": self.actor.log_probs(self.actor.transformer, batch)})

    @verb(Dispatch.SPLIT_SAMPLES)
    def ref_log_probs(self, batch: Batch) -> Batch:
        """The reference's log-probs of the stored steps (`ref_log_probs`, [B, T])."""
        return Batch({"ref_log_probs": self.actor.ref_log_probs(batch)})

    # ---- training ---------------------------------------------------------------------------
    @verb(Dispatch.SPLIT_SAMPLES)
    def update_actor(self, batch: Batch) -> dict[str, float]:
        """One Flow-GRPO update on this rank's samples; returns actor/* metrics. The step's trajectories go."""
        metrics = self.actor.update(batch)
        self.actor.forget()
        return metrics

    # ---- checkpoints ------------------------------------------------------------------------
    @verb(Dispatch.ALL)
    def save_checkpoint(self, step_dir: str) -> None:
        """Sharded transformer (with LoRA: its adapters alone) + optimizer + scheduler + RNG into step_dir/actor
        (collective), and the base pipeline's path (and the LoRA config), which the merger combines with the shards
        into a pipeline directory."""
        from longrl.checkpoint.merger import save_diffusion_base
        from longrl.checkpoint.sharded import save_train_state

        optimizer = None if self.cfg.trainer.save_model_only else self.actor.optimizer
        save_train_state(Path(step_dir) / "actor", self.actor.transformer, optimizer, self.actor.lr_scheduler,
                         trainable_only=self.lora is not None)
        if self.rank == 0:
            save_diffusion_base(Path(step_dir) / "actor", self.cfg.worker.actor.model.model_path,
                                self.actor.transformer.peft_config["default"] if self.lora is not None else None)
        dist.barrier()

    @verb(Dispatch.ALL)
    def load_checkpoint(self, step_dir: str) -> None:
        """Restore what save_checkpoint wrote."""
        from longrl.checkpoint.sharded import load_train_state

        load_train_state(Path(step_dir) / "actor", self.actor.transformer, self.actor.optimizer,
                         self.actor.lr_scheduler, trainable_only=self.lora is not None)

    @verb(Dispatch.ALL)
    def full_weights(self) -> dict[str, torch.Tensor]:
        """The transformer's unsharded weights, adapters included (collective; small models, tests and exports)."""
        return {name: t.cpu() for name, t in full_tensors(self.actor.transformer)}

    @verb(Dispatch.ALL)
    def engine_stats(self) -> dict[str, float]:
        """No separate rollout engine: the sampler is the trained transformer itself (nothing to sync)."""
        return {}

    @verb(Dispatch.ALL)
    def process_stats(self) -> dict[str, float]:
        """This worker process's resident memory and open file descriptors (logging/process.py)."""
        return process_stats()


def _node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()
