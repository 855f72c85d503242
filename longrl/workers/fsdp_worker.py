"""The colocated worker (hybrid engine): FSDP actor, frozen reference and a rollout engine in one process.

One Ray actor per slot runs this class. The driver calls its verbs through a WorkerGroup;
each verb is short, typed, and leaves the config untouched. Which of the actor and the rollout
engine is resident on the device, and when the actor's weights stream into the engine, is the
business of one component (`workers/lifecycle.py`): verbs run inside `self.engine.rollout_mode()`
or `self.engine.train_mode()`.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from functools import partial
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import (
    CPUOffloadPolicy,
    MixedPrecisionPolicy,
    fully_shard,
    register_fsdp_forward_method,
)
from torch.distributed.tensor import DTensor

from longrl.algorithms import ADVANTAGES
from longrl.config import Config, FSDPConfig, ModelConfig, OffloadConfig
from longrl.controller.dispatch import Dispatch, verb
from longrl.logging.process import process_stats
from longrl.models.adapter import (
    ADAPTERS,
    TextAdapter,
    adapter_for,
    adapter_of,
    model_type_of,
    tokenizer_dir,
)
from longrl.models.lora import (
    adapted_modules,
    adapters_disabled,
    inject_lora,
    merged_weights,
)
from longrl.models.qwen2_5_vl import MEDIA_INPUTS
from longrl.models.vision_cache import (
    Purpose,
    describe_media,
    has_media,
    max_over_ranks,
    media_mode,
    media_refs,
    overlong_reason,
    rollout_max_model_len,
    vision_cache_for,
)
from longrl.parallel.device import (
    device,
    device_type,
    init_distributed,
    param_dtype,
    torch_dtype,
)
from longrl.parallel.rank0_init import load_from_rank0
from longrl.parallel.ulysses import init_sp_groups
from longrl.protocol import Batch
from longrl.workers.actor import Actor, response_log_probs
from longrl.workers.critic import Critic, load_value_model
from longrl.workers.lifecycle import EngineLifecycle
from longrl.workers.rollout import Sample, SamplingSpec, rollout_engine

logger = logging.getLogger(__name__)


def load_sharded(adapter: TextAdapter, path: str, dtype: torch.dtype, cfg: Config, trainable: bool,
                 fsdp: FSDPConfig | None = None, offload: bool = False) -> torch.nn.Module:
    """Load a Hugging Face model and shard it with FSDP2 over the whole world (`fsdp`: the role's section,
    default worker.actor's). A trainable model gets the LoRA adapters of worker.actor.model.lora (rank > 0)."""
    fsdp = fsdp or cfg.worker.actor.fsdp
    trust = cfg.worker.actor.model.trust_remote_code
    lora = cfg.worker.actor.model.lora

    def load(empty: bool) -> torch.nn.Module:
        model = adapter.load(path, dtype, trust, empty=empty)
        return inject_lora(model, lora) if trainable and lora.rank > 0 else model

    return init_sharded(load, lambda model: shard(model, adapter, cfg, trainable, fsdp, offload), fsdp, offload)


def init_sharded(load: Callable[[bool], torch.nn.Module], shard_model: Callable[[torch.nn.Module], torch.nn.Module],
                 fsdp: FSDPConfig, offload: bool) -> torch.nn.Module:
    """`load(empty)` sharded by `shard_model` on every rank (a collective). Every rank reads the checkpoint,
    or with fsdp.enable_rank0_init rank 0 alone does and the others build the model empty on the meta device
    and receive their shards from it (parallel/rank0_init.py)."""
    if not fsdp.enable_rank0_init or dist.get_world_size() == 1:
        return shard_model(load(False).to(device()))
    source = load(False) if dist.get_rank() == 0 else None  # on the CPU: rank 0 holds one full copy
    model = shard_model(load(True))
    offloaded = "offload_policy" in fsdp_policies(fsdp, offload or fsdp.enable_cpu_offload)
    model.to_empty(device="cpu" if offloaded else device())  # FSDP2's CPU offload keeps the shards on the CPU
    load_from_rank0(model, source)
    return model


def _offloads(offload: OffloadConfig) -> bool:
    # FSDP2 offloads parameters, gradients and optimizer state together (the optimizer steps on CPU)
    return offload.offload_params or offload.offload_optimizer


def fsdp_policies(fsdp: FSDPConfig, offload: bool) -> dict[str, object]:
    """Mixed precision (fsdp.mp_param_dtype; on CPU only when set) and CPU offload (GPU only) for `fully_shard`."""
    policies: dict[str, object] = {}
    on_gpu = device_type() == "cuda"
    if on_gpu or fsdp.mp_param_dtype is not None:
        policies["mp_policy"] = MixedPrecisionPolicy(param_dtype=param_dtype(fsdp.mp_param_dtype, gpu_default="bf16"),
                                                     reduce_dtype=torch.float32)
    if on_gpu and offload:
        policies["offload_policy"] = CPUOffloadPolicy()
    return policies


def shard(model: torch.nn.Module, adapter: TextAdapter, cfg: Config, trainable: bool,
          fsdp: FSDPConfig | None = None, offload: bool = False, model_cfg: ModelConfig | None = None) -> torch.nn.Module:
    """FSDP2 over the whole world, one unit per decoder layer plus the root (`fsdp`, `model_cfg`: the role's
    sections, default worker.actor's)."""
    fsdp = fsdp or cfg.worker.actor.fsdp
    model_cfg = model_cfg or cfg.worker.actor.model
    if trainable and model_cfg.enable_gradient_checkpointing:
        model.gradient_checkpointing_enable()
    if not trainable:
        model.requires_grad_(False).eval()
    tower = adapter.vision_tower(model)
    if trainable and tower is not None and model_cfg.freeze_vision_tower:
        tower.requires_grad_(False)
    mesh = init_device_mesh(device_type(), (dist.get_world_size(),))
    kwargs = {"mesh": mesh, "reshard_after_forward": fsdp.enable_full_shard,
              **fsdp_policies(fsdp, offload or fsdp.enable_cpu_offload)}
    for layer in adapter.decoder_layers(model):
        fully_shard(layer, **kwargs)
    fully_shard(model, **kwargs)
    for method in adapter.fsdp_forward_methods:  # e.g. the vision tower, called on its own to fill the VisionCache
        register_fsdp_forward_method(model, method)
    return model


def full_tensors(model: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """Unsharded parameters one by one (a collective: every rank iterates in the same order)."""
    for name, tensor in model.state_dict().items():
        yield name, (tensor.full_tensor() if isinstance(tensor, DTensor) else tensor).detach()


def model_metadata(model_cfg: ModelConfig) -> tuple[object, int, object, TextAdapter]:
    """The tokenizer, its pad id (EOS where it has none), the Hugging Face config and the model adapter."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir(model_cfg.model_path, model_cfg.tokenizer_path))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    # a family transformers cannot read (VILA) reads its own config; any other goes through AutoConfig
    adapter = adapter_of(model_cfg.model_path) if model_type_of(model_cfg.model_path) in ADAPTERS else TextAdapter()
    hf_config = adapter.load_config(model_cfg.model_path, trust_remote_code=model_cfg.trust_remote_code)
    return tokenizer, pad_id, hf_config, adapter_for(hf_config.model_type)


def save_actor_metadata(actor_dir: Path, model_cfg: ModelConfig, hf_config: object, tokenizer: object) -> None:
    """What the merger needs beside the actor's shards (rank 0): config, tokenizer and processor files, and
    with LoRA the adapter config naming the base model (the shards then hold the adapters alone)."""
    from longrl.checkpoint.merger import save_lora_config
    from longrl.checkpoint.sharded import save_hf_metadata

    save_hf_metadata(actor_dir, hf_config, tokenizer, source_dir=model_cfg.model_path)
    if model_cfg.lora.rank > 0:
        save_lora_config(actor_dir, model_cfg.lora, model_cfg.model_path)


class HybridWorker:
    """Actor + reference + rollout engine on one rank."""

    def __init__(self, cfg: Config):
        self.cfg = cfg

    @verb(Dispatch.ALL)
    def setup(self, total_steps: int) -> dict[str, object]:
        """Join the world, load and shard the models, start the rollout engine (`total_steps`: RL steps)."""
        self.rank, self.world = init_distributed()
        # ranks [k*sp, (k+1)*sp) split each sequence of the same rows (a collective: every rank calls it)
        self.sp = init_sp_groups(self.cfg.worker.actor.ulysses_size)
        cfg = self.cfg
        model_cfg = cfg.worker.actor.model
        self.tokenizer, self.pad_id, self.hf_config, self.adapter = model_metadata(model_cfg)
        dtype = param_dtype(cfg.worker.actor.fsdp.torch_dtype, gpu_default="fp32")  # fp32 master weights
        dp = self.world // cfg.worker.actor.ulysses_size
        actor_model = load_sharded(self.adapter, model_cfg.model_path, dtype, cfg, trainable=True,
                                   offload=_offloads(cfg.worker.actor.offload))
        self.lora = model_cfg.lora if model_cfg.lora.rank > 0 else None
        self.ref = None  # with LoRA the reference is the actor with its adapters disabled: no second copy
        if not cfg.algorithm.disable_kl and self.lora is None:
            ref_dtype = param_dtype(cfg.worker.ref.fsdp.torch_dtype, gpu_default="bf16")  # frozen: bf16 on GPU
            self.ref = load_sharded(self.adapter, model_cfg.model_path, ref_dtype, cfg, trainable=False,
                                    fsdp=cfg.worker.ref.fsdp, offload=_offloads(cfg.worker.ref.offload))
        self.actor = Actor(actor_model, self.adapter, cfg.worker.actor, cfg.algorithm, self.pad_id, dp,
                           total_steps,
                           self.sp, reference=None if cfg.algorithm.disable_kl else self.reference,
                           max_response_length=cfg.data.max_response_length,
                           responses_per_prompt=cfg.worker.rollout.n)
        self.critic = None
        if ADVANTAGES.requires(cfg.algorithm.adv_estimator).critic:
            critic = cfg.worker.critic
            value_path = critic.model.model_path or model_cfg.model_path
            value_dtype = torch_dtype(critic.fsdp.torch_dtype or "fp32")
            value_model = init_sharded(
                lambda empty: load_value_model(value_path, value_dtype, critic.model.trust_remote_code, empty=empty),
                lambda model: shard(model, self.adapter, cfg, trainable=True, fsdp=critic.fsdp,
                                    offload=_offloads(critic.offload), model_cfg=critic.model),
                critic.fsdp, _offloads(critic.offload))
            self.critic = Critic(value_model, self.adapter, critic, cfg.worker.actor.loss_avg_mode, self.pad_id, dp,
                                 total_steps, self.sp, cfg.worker.actor.padding_free,
                                 max_response_length=cfg.data.max_response_length,
                                 responses_per_prompt=cfg.worker.rollout.n)
        media_config = self.adapter.media_config(self.hf_config)
        self.vision = vision_cache_for(cfg, media_config, self.adapter.hears_audio)  # None for text models
        self.max_model_len = max_len = rollout_max_model_len(cfg, media_config, self.vision)
        if self.vision is not None and cfg.worker.rollout.name != "vllm":
            raise ValueError(f"worker.rollout.name={cfg.worker.rollout.name!r} cannot take images or videos; "
                             f"set worker.rollout.name=vllm for {self.hf_config.model_type}")
        # One rank per SP group generates (its ranks hold the same rows; the driver reads that rank's result), so
        # the group does not sample the same responses sp times over; the others' engines sleep for good.
        inline = (partial(self.adapter.inline_prompt, self.hf_config, max_frames=cfg.worker.rollout.max_frames_vllm)
                  if self.adapter.inline_media else None)
        engine = rollout_engine(cfg.worker.rollout.name, self.adapter.rollout_model_path(model_cfg.model_path),
                                cfg.worker.rollout, max_len, inline=inline)
        self.engine = EngineLifecycle(engine, lambda: self.adapter.rollout_weights(self._policy_weights()),
                                      torch_dtype(cfg.worker.rollout.dtype), cfg.worker.rollout.sync_bucket_mb,
                                      generates=self.sp.rank == 0)
        lora = f"LoRA rank {self.lora.rank} on {len(adapted_modules(actor_model))} modules" if self.lora else None
        return {"rank": self.rank, "node_id": _node_id(), "model_type": self.hf_config.model_type,
                "trainable_params": self.actor.param_counts["perf/trainable_params"],
                "params": self.actor.param_counts["perf/params"], "lora": lora}

    @contextmanager
    def reference(self) -> Iterator[torch.nn.Module]:
        """The reference policy inside the block: the frozen copy, or with LoRA the actor's base model (the
        actor with its adapters disabled)."""
        if self.ref is not None:
            yield self.ref
        else:
            with adapters_disabled(self.actor.model) as model:
                yield model

    def _policy_weights(self) -> Iterator[tuple[str, torch.Tensor]]:
        """The actor's unsharded weights under the base model's names, LoRA adapters merged in (a collective)."""
        named = full_tensors(self.actor.model)
        return named if self.lora is None else merged_weights(named, self.lora.alpha / self.lora.rank)

    # ---- rollout ----------------------------------------------------------------------------
    @verb(Dispatch.SPLIT_BY_DP)
    def generate(self, prompts: Batch, spec: SamplingSpec) -> Batch:
        """`spec.n` responses per prompt: rows are prompts repeated n times, plus responses,
        response_mask and rollout_log_probs ([B*n, R]). On an SP group's other ranks: an empty Batch
        (the dispatch keeps one result per SP group)."""
        seed = zlib.crc32(f"{self.cfg.worker.rollout.seed}/{prompts.meta.get('step', 0)}/{self.rank}".encode())
        prompts, videos = self._rollout_videos(prompts)  # the SP group encodes media together, engine asleep
        with self.engine.rollout_mode() as rollout:
            if rollout is None:
                groups = None
            elif videos is None:
                groups = rollout.generate(list(prompts["prompt_ids"]), spec, seed)
            else:  # a prompt whose image or video is unusable gets n empty responses: no tokens, no loss
                keep = [i for i, v in enumerate(videos) if v is not None]
                sampled = iter(rollout.generate([prompts["prompt_ids"][i] for i in keep], spec, seed,
                                                media=[videos[i] for i in keep]) if keep else [])
                groups = [next(sampled) if v is not None else [Sample([], [])] * spec.n for v in videos]
        if videos is not None and "step" not in prompts.meta:  # validation: no later pass of this step reuses these media
            self.vision.clear()
        if groups is None:
            return Batch()
        self.engine.count("generate_calls")
        samples = [s for group in groups for s in group]
        width = max(1, max(len(s.token_ids) for s in samples))
        responses = torch.full((len(samples), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(samples), width), dtype=torch.long)
        log_probs = torch.zeros((len(samples), width), dtype=torch.float32)
        for i, s in enumerate(samples):
            responses[i, : len(s.token_ids)] = torch.tensor(s.token_ids, dtype=torch.long)
            mask[i, : len(s.token_ids)] = 1
            log_probs[i, : len(s.token_ids)] = torch.tensor(s.log_probs, dtype=torch.float32)
        out = prompts.repeat(spec.n)
        out.tensors.update(responses=responses, response_mask=mask, rollout_log_probs=log_probs)
        return out

    # ---- experience -------------------------------------------------------------------------
    @verb(Dispatch.SPLIT_BY_DP)
    def log_probs(self, batch: Batch) -> Batch:
        """The current policy's log-probs of the response tokens (`old_log_probs`, [B, R])."""
        with self.engine.train_mode():
            batch = self._with_videos(batch, "log_probs")
            return Batch({"old_log_probs": self.actor.log_probs(batch, self.cfg.worker.rollout.temperature)})

    @verb(Dispatch.SPLIT_BY_DP)
    def ref_log_probs(self, batch: Batch) -> Batch:
        """The reference model's log-probs of the response tokens (`ref_log_probs`, [B, R])."""
        assert not self.cfg.algorithm.disable_kl, "ref_log_probs called with algorithm.disable_kl=true"
        actor = self.cfg.worker.actor
        with self.engine.train_mode():
            batch = self._with_videos(batch, "log_probs", tower="ref")
            with self.reference() as ref:
                return Batch({"ref_log_probs": response_log_probs(
                    ref, self.adapter, batch, self.pad_id, self.cfg.worker.rollout.temperature,
                    actor.micro_batch_size_per_device_for_experience, self.sp, actor.padding_free,
                    actor.share_prompt_prefix, actor.dynamic_batching)})

    # ---- training ---------------------------------------------------------------------------
    @verb(Dispatch.SPLIT_BY_DP)
    def update_actor(self, batch: Batch) -> dict[str, float]:
        """One RL update of the policy on this rank's part of the batch; returns actor/* metrics."""
        with self.engine.train_mode():
            metrics = self.actor.update(self._with_videos(batch, "update"), self.cfg.worker.rollout.temperature)
        self.engine.weights_changed()
        if self.vision is not None:  # the step is over (and a trained tower made its embeddings stale)
            self.vision.clear()
        return metrics

    @verb(Dispatch.SPLIT_BY_DP)
    def compute_values(self, batch: Batch) -> Batch:
        """The critic's value of the state before each response token (`values`, [B, R])."""
        assert self.critic is not None, "compute_values needs algorithm.adv_estimator=gae"
        with self.engine.train_mode():
            return Batch({"values": self.critic.values(batch)})

    @verb(Dispatch.SPLIT_BY_DP)
    def update_critic(self, batch: Batch) -> dict[str, float]:
        """One value-regression update on this rank's part of the batch; returns critic/* metrics."""
        assert self.critic is not None, "update_critic needs algorithm.adv_estimator=gae"
        with self.engine.train_mode():
            return self.critic.update(batch)

    # ---- checkpoints ------------------------------------------------------------------------
    def _trained_roles(self) -> dict[str, object]:
        return {"actor": self.actor, **({"critic": self.critic} if self.critic is not None else {})}

    @verb(Dispatch.ALL)
    def save_checkpoint(self, step_dir: str) -> None:
        """Sharded model + optimizer + scheduler + RNG of each trained role into step_dir/<role> (collective)."""
        from longrl.checkpoint.sharded import save_train_state

        for name, role in self._trained_roles().items():
            optimizer = None if self.cfg.trainer.save_model_only else role.optimizer
            save_train_state(Path(step_dir) / name, role.model, optimizer, role.lr_scheduler,
                             trainable_only=name == "actor" and self.lora is not None)
        if self.rank == 0:
            save_actor_metadata(Path(step_dir) / "actor", self.cfg.worker.actor.model, self.hf_config, self.tokenizer)
        dist.barrier()

    @verb(Dispatch.ALL)
    def load_checkpoint(self, step_dir: str) -> None:
        """Restore what save_checkpoint wrote; the rollout engine is refreshed before the next generation."""
        from longrl.checkpoint.sharded import load_train_state

        for name, role in self._trained_roles().items():
            load_train_state(Path(step_dir) / name, role.model, role.optimizer, role.lr_scheduler,
                             trainable_only=name == "actor" and self.lora is not None)
        self.engine.weights_changed()
        if self.vision is not None:
            self.vision.clear()

    @verb(Dispatch.ALL)
    def full_weights(self) -> dict[str, torch.Tensor]:
        """The actor's unsharded weights as the rollout engine gets them, LoRA merged in (collective; small
        models, tests and exports)."""
        return {name: t.cpu() for name, t in self._policy_weights()}

    @verb(Dispatch.ALL)
    def engine_stats(self) -> dict[str, float]:
        """This rank's rollout-engine counters since the last call (generate_calls, weight_syncs, weight_sync_s,
        weight_sync_bytes, sleeps)."""
        return self.engine.take_stats()

    @verb(Dispatch.ALL)
    def process_stats(self) -> dict[str, float]:
        """This worker process's resident memory and open file descriptors (logging/process.py)."""
        return process_stats()

    # ---- videos (VisionCache) ---------------------------------------------------------------
    @verb(Dispatch.ALL)
    def video_stats(self) -> dict[str, float]:
        """This rank's video/* and image/* counters since the last call (decoded, skipped, encoded, embed_hits, *_s)."""
        return self.vision.take_stats() if self.vision is not None else {}

    def _video_rows(self, batch: Batch, purpose: Purpose, tower: str = "actor") -> list:
        """Per row, its images and videos as `purpose` needs them (None: unusable), encoded once per step and tower."""
        frozen = self.cfg.worker.actor.model.freeze_vision_tower
        with self.reference() if tower == "ref" else nullcontext(self.actor.model) as model:
            return self.vision.row_inputs(
                media_refs(batch), media_mode(purpose, self.vision.cache_embeds, tower_trainable=not frozen),
                "actor" if frozen else tower,  # a frozen tower is the same in the actor and the reference
                lambda video: self.adapter.encode(model, video, self.sp), max_over_ranks)

    def _with_videos(self, batch: Batch, purpose: Purpose, tower: str = "actor") -> Batch:
        """`batch` plus the MEDIA_INPUTS column for a log-prob or update pass (unchanged for text)."""
        if self.vision is None or not has_media(batch):
            return batch
        rows = self._video_rows(batch, purpose, tower)
        bad = [i for i, row in enumerate(rows) if row is None]
        if bad:
            raise RuntimeError(f"{describe_media(batch, bad[0])} became unreadable after generation (they were read then)")
        return batch.union(Batch(objects={MEDIA_INPUTS: rows}))

    def _rollout_videos(self, prompts: Batch) -> tuple[Batch, list | None]:
        """The prompts, and per prompt its videos for the engine (None: skipped). A skipped prompt
        (unusable video, or too long once its video tokens are counted) loses its video parts, so
        later passes see a text row, and is flagged in `video_skipped`."""
        if self.vision is None or not has_media(prompts):
            return prompts, None
        rows = self._video_rows(prompts, "rollout")
        for i in (i for i, row in enumerate(rows) if row is None):
            where = f"data row {prompts['row'][i]}" if "row" in prompts else f"prompt {i}"
            logger.warning("skipping %s: its %s cannot be used (see the warning above; data.strict_media=true "
                           "makes this an error)", where, describe_media(prompts, i))
        data = self.cfg.data
        for i, (ids, row) in enumerate(zip(prompts["prompt_ids"], rows)):
            reason = row and overlong_reason(ids, row, data.max_prompt_length, self.max_model_len,
                                             data.max_response_length)
            if reason:
                message = f"the prompt with {describe_media(prompts, i)} {reason}"
                if not self.cfg.data.filter_overlong_prompts:
                    raise ValueError(f"{message}; raise the limit, lower worker.rollout.num_video_frames or "
                                     f"data.max_pixels, or set data.filter_overlong_prompts=true to skip such prompts")
                logger.warning("skipping: %s", message)
                self.vision.count("overlong")
                rows[i] = None
        skipped = [row is None for row in rows]
        prompts = prompts.index(range(len(prompts)))  # a copy: the caller's batch stays as it was
        prompts["prompt_ids"] = [self.adapter.strip_media(self.hf_config, ids) if skip else ids
                                 for ids, skip in zip(prompts["prompt_ids"], skipped)]
        for column in ("images", "videos"):
            if column in prompts:
                prompts[column] = [[] if skip else refs for refs, skip in zip(prompts[column], skipped)]
        prompts["video_skipped"] = torch.tensor(skipped)
        return prompts, rows


def _node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()
