"""The RL loop, on the driver. `RayTrainer.step` is the whole algorithm, top to bottom.

The driver owns the data, the rewards, the advantages and the logs; the worker group owns
the models. Workers know nothing about the algorithm; this file knows nothing about FSDP
or vLLM.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import ray
import torch
from tqdm import tqdm

from longrl.algorithms import (ADVANTAGES, AdvantageInputs, RolloutDrift, apply_kl_to_rewards, compute_advantages,
                               groups_to_keep, make_kl_controller)
from longrl.checkpoint.manager import CheckpointManager, CheckpointSaveError
from longrl.config import Config, checkpoint_dir, dp_size, skips_old_log_probs, to_dict, world_size
from longrl.controller.worker_group import ResourcePool, WorkerError, WorkerGroup, init_cluster
from longrl.data.dataset import PromptLoader, validation_batches
from longrl.logging import Tracker, reduce_metrics
from longrl.logging.process import process_metrics, process_stats
from longrl.models.vision_cache import reduce_video_stats
from longrl.parallel.device import DEVICE_ENV
from longrl.protocol import Batch
from longrl.rewards import resolve_reward_spec, score_responses
from longrl.trainer.faults import SkippedSteps
from longrl.trainer.kinds import worker_kind
from longrl.workers.lifecycle import reduce_engine_stats
from longrl.workers.micro_batches import balanced_order
from longrl.workers.rollout import SamplingSpec

logger = logging.getLogger(__name__)


class RayTrainer:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        # language or diffusion (from the model directory): the data rows, the worker class, the reward's inputs
        self.kind = worker_kind(cfg)
        self.train_set, self.val_set = self.kind.train_set, self.kind.val_set
        self.total_steps = cfg.trainer.max_steps or cfg.trainer.total_epochs * len(self.train_set) // cfg.data.rollout_batch_size
        self.fresh_start()
        self.needs = ADVANTAGES.requires(cfg.algorithm.adv_estimator)  # a critic to train, a greedy baseline
        self.use_critic = self.needs.critic
        self.checkpoints = CheckpointManager(checkpoint_dir(cfg.trainer), cfg.trainer.save_limit)
        # Reward functions run in Ray worker processes, whose working directory may differ from ours;
        # resolving here also reports a bad spec before any worker starts.
        reward_path, reward_fn = resolve_reward_spec(cfg.worker.reward.reward_function)
        self.reward_cfg = dataclasses.replace(cfg.worker.reward, reward_function=f"{reward_path.resolve()}:{reward_fn}")
        self.pool: ResourcePool | None = None
        self.use_gpu = False  # decided from the cluster when the first group starts
        self.workers: WorkerGroup | None = None
        self.tracker: Tracker | None = None
        self.skipped = SkippedSteps(cfg.trainer.max_skipped_steps)
        self.restarts = 0

    def fresh_start(self) -> None:
        """The driver's state of step 0: data order, KL coefficient."""
        cfg = self.cfg
        prompts_per_round = cfg.data.mini_rollout_batch_size or cfg.data.rollout_batch_size
        self.loader = PromptLoader(self.train_set, prompts_per_round, cfg.data.shuffle, cfg.data.seed)
        self.kl_ctrl = make_kl_controller(cfg.algorithm)
        self.step_count = 0

    # ---- setup / teardown -------------------------------------------------------------------
    def start_workers(self) -> None:
        cfg = self.cfg
        if self.pool is None:  # a restarted group reuses the slots of the one it replaces
            self.use_gpu = init_cluster(cfg.trainer.ray_address, cfg.trainer.device, world_size(cfg))
            self.pool = ResourcePool(cfg.trainer.nnodes, cfg.trainer.n_gpus_per_node, self.use_gpu)
        use_gpu = self.use_gpu
        threads = max(1, (os.cpu_count() or 1) // cfg.trainer.n_gpus_per_node)
        env = {DEVICE_ENV: "cuda" if use_gpu else "cpu", "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
               "VLLM_CPU_KVCACHE_SPACE": str(cfg.worker.rollout.kv_cache_space_gb), "OMP_NUM_THREADS": str(threads),
               "TOKENIZERS_PARALLELISM": "false",
               # glibc malloc maps and unmaps the KV cache at every decode step without these (DESIGN.md)
               "MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "100000000000"}
        self.workers = WorkerGroup(self.kind.worker_class(), self.pool, cfg.worker.actor.ulysses_size, env, args=(cfg,),
                                   call_timeout_s=cfg.trainer.worker_timeout_s)
        self.worker_info = self.workers.setup(self.total_steps)
        for info in self.worker_info:
            where = self.workers.placement[info["rank"]]
            logger.info("worker rank %s on Ray node %s (%s), pid %s", info["rank"], info["node_id"], where["node_ip"],
                        where["pid"])
        first = self.worker_info[0]
        if "trainable_params" in first:  # what full fine-tuning or LoRA keeps gradients and AdamW state for
            logger.info("actor: %d of %d parameters train (%.2f%%)%s", first["trainable_params"], first["params"],
                        100 * first["trainable_params"] / first["params"], f", {first['lora']}" if first["lora"] else "")

    def shutdown(self) -> None:
        if self.workers is not None:
            self.workers.shutdown()
        if self.tracker is not None:
            self.tracker.finish()

    # ---- the loop ---------------------------------------------------------------------------
    def fit(self) -> None:
        cfg = self.cfg.trainer
        self.start_workers()
        self.resume()
        self.tracker = Tracker(cfg.logger, checkpoint_dir(cfg), cfg.project_name, cfg.experiment_name,
                               to_dict(self.cfg), resume_step=self.step_count)
        if self.val_set is not None and (cfg.val_before_train or cfg.val_only) and self.step_count == 0:
            self.tracker.log(self.validate(step=0), step=0)
        if cfg.val_only:
            return
        with tqdm(total=self.total_steps, initial=self.step_count, desc="RL steps", dynamic_ncols=True) as bar:
            while self.step_count < self.total_steps:
                try:
                    metrics = self.advance()
                except (WorkerError, CheckpointSaveError) as e:
                    # a worker that died, raised or hung, also while saving; not a save that failed on the
                    # driver's side, nor a full disk, which new workers would fill again at the same step
                    worker_failed = isinstance(e, WorkerError) or isinstance(e.__cause__, WorkerError)
                    disk_full = isinstance(e, CheckpointSaveError) and e.disk_full
                    if not worker_failed or disk_full or self.restarts >= cfg.max_restarts:
                        raise
                    self.restart(e)
                else:
                    bar.set_postfix(reward=f"{metrics.get('reward/overall', float('nan')):.3f}")
                bar.n = self.step_count
                bar.refresh()

    def advance(self) -> dict[str, float]:
        """Run, validate, log and checkpoint the next step; its metrics."""
        cfg = self.cfg.trainer
        self.step_count += 1
        metrics = self.step(self.step_count)
        metrics["trainer/restarts"] = self.restarts
        last = self.step_count == self.total_steps
        if self.val_set is not None and cfg.val_freq > 0 and (self.step_count % cfg.val_freq == 0 or last):
            metrics.update(self.validate(self.step_count))
        # Logged before the checkpoint: a kill between the two re-runs the step from the previous checkpoint
        # and the resume drops the line; the other order would lose the step's line for good.
        self.tracker.log(metrics, step=self.step_count)
        self.skipped.observe(self.step_count, metrics, self.checkpoints.latest())
        if cfg.save_freq > 0 and (self.step_count % cfg.save_freq == 0 or last):
            start = time.perf_counter()
            self.save()
            logger.info("step %d checkpointed in %.1f s", self.step_count, time.perf_counter() - start)
        return metrics

    def restart(self, error: Exception) -> None:
        """A new worker group, resumed from the last checkpoint (or from the start when there is none)."""
        self.restarts += 1
        logger.warning("restart %d of trainer.max_restarts=%d: restarting the worker group from the last "
                       "checkpoint after: %s", self.restarts, self.cfg.trainer.max_restarts, error)
        self.workers.shutdown()
        self.start_workers()
        self.fresh_start()
        self.resume(self.checkpoints.latest())  # this run's newest, not the trainer.load_checkpoint_path it began at
        self.tracker.rewind(self.step_count)
        self.skipped.in_a_row = 0

    def step(self, step: int) -> dict[str, float]:
        """One RL step: generate, score, old (unless the update is on-policy) and ref log-probs, advantages, update."""
        cfg, metrics = self.cfg, {}
        start = time.perf_counter()
        with _timed(metrics, "gen"):
            batch, scores_ref = self.generate_batch(step, metrics)
        if not skips_old_log_probs(cfg):  # else the update's own forward gives pi_old and the rollout/* drift
            with _timed(metrics, "old"):
                batch = batch.union(self.workers.log_probs(batch))
            metrics.update(rollout_drift_metrics(batch))
        if self.use_critic:
            with _timed(metrics, "values"):
                batch = batch.union(self.workers.compute_values(batch))
        if not cfg.algorithm.disable_kl:
            with _timed(metrics, "ref"):
                batch = batch.union(self.workers.ref_log_probs(batch))
        if scores_ref is not None:  # (online filtering scored every round already)
            with _timed(metrics, "reward"):  # scored in a Ray task while the log-probs were computed
                batch = self.attach_scores(batch, scores_ref)
                metrics.update(reward_metrics(batch["scores"]))
        with _timed(metrics, "adv"):
            rewards = batch["token_level_scores"]
            if not cfg.algorithm.disable_kl and not cfg.algorithm.use_kl_loss:
                rewards, kl_metrics = apply_kl_to_rewards(rewards, batch["old_log_probs"], batch["ref_log_probs"],
                                                          batch["response_mask"], self.kl_ctrl, cfg.algorithm.kl_penalty)
                metrics.update(kl_metrics)
            advantages, returns = compute_advantages(
                AdvantageInputs(rewards, batch["response_mask"], list(batch["uid"]), values=batch.tensors.get("values"),
                                reward_baselines=batch.tensors.get("reward_baselines")), cfg.algorithm)
            batch["advantages"], batch["returns"] = advantages, returns
        if self.use_critic:
            with _timed(metrics, "update_critic"):
                metrics.update(reduce_metrics(self.workers.update_critic(batch)))
        if step > cfg.trainer.critic_warmup:
            with _timed(metrics, "update"):
                metrics.update(reduce_metrics(self.workers.update_actor(batch)))
        metrics["timing_s/step"] = time.perf_counter() - start
        metrics.update(batch_metrics(batch, cfg.data.max_response_length))
        metrics["perf/tokens_per_s"] = float(batch["response_mask"].sum()) / metrics["timing_s/step"]
        metrics.update(reduce_engine_stats(self.workers.engine_stats()))  # weight sync seconds and MB
        metrics.update(process_metrics(process_stats(), self.workers.process_stats()))  # RSS and FDs: leaks
        if "videos" in batch or "images" in batch:  # decoded/skipped/overlong/encoded/embed_hits counts and decode/encode seconds
            metrics.update(reduce_video_stats(self.workers.video_stats()))
        return metrics

    # ---- pieces of a step -------------------------------------------------------------------
    def generate_batch(self, step: int, metrics: dict[str, float]) -> tuple[Batch, ray.ObjectRef | None]:
        """rollout_batch_size prompts x n responses; with online filtering, only groups whose mean score is
        strictly inside (filter_low, filter_high), generating more rounds until the batch is full (DAPO)."""
        cfg = self.cfg
        spec = SamplingSpec.from_config(cfg.worker.rollout, cfg.data.max_response_length)
        if not cfg.algorithm.online_filtering:
            prompts = self.next_prompts(step, 0)
            batch = self.rollout(prompts, spec)
            if self.needs.greedy_baseline:  # ReMax: the greedy response's score
                greedy = self.rollout(prompts, dataclasses.replace(spec, n=1, temperature=0.0))
                baseline = torch.tensor([s["overall"] for s in ray.get(self.score_async(greedy))])
                batch["reward_baselines"] = baseline.repeat_interleave(spec.n)
            batch = self.balance_ranks(batch)
            return batch, self.score_async(batch)

        def scored_round(round_: int) -> Batch:
            batch = self.rollout(self.next_prompts(step, round_), spec)
            return self.attach_scores(batch, self.score_async(batch))

        batch, filter_metrics = fill_with_mixed_groups(scored_round, cfg, spec.n)
        metrics.update(filter_metrics)
        return self.balance_ranks(batch), None

    def rollout(self, prompts: Batch, spec: SamplingSpec) -> Batch:
        """`spec.n` samples of each prompt, rows prompt-major, spread over the ranks as the worker kind samples."""
        return self.workers.generate(*self.kind.rollout_rows(prompts, spec))

    def balance_ranks(self, batch: Batch) -> Batch:
        """With dynamic batching, the rows reordered so each data-parallel rank's part holds about equal tokens (the
        dispatch gives rank k the k-th contiguous part; advantages group rows by uid, not by place)."""
        costs = self.kind.row_costs(batch) if self.cfg.worker.actor.dynamic_batching else None
        return batch if costs is None else batch.index(balanced_order(costs, dp_size(self.cfg)))

    def next_prompts(self, step: int, round_: int) -> Batch:
        prompts = next(self.loader)
        prompts["uid"] = [f"{step}.{round_}.{i}" for i in range(len(prompts))]
        prompts.meta["step"] = step * 1000 + round_
        return prompts

    @property
    def tokenizer(self):
        """The language kind's tokenizer."""
        return self.kind.tokenizer

    def score_async(self, batch: Batch) -> ray.ObjectRef:
        """Start scoring the responses (texts, or decoded images and videos) in a Ray task; `attach_scores`
        collects it."""
        return ray.remote(score_responses).options(num_cpus=0).remote(
            self.reward_cfg, self.kind.reward_inputs(batch), self.cfg.data.max_response_length)

    def attach_scores(self, batch: Batch, scores_ref: ray.ObjectRef) -> Batch:
        """Per-sample score dicts -> `scores` objects, `token_level_scores` ([B, R], score on the last token)."""
        scores = ray.get(scores_ref)
        batch["scores"] = scores
        overall = torch.tensor([s["overall"] for s in scores], dtype=torch.float32)
        lengths = batch["response_mask"].sum(-1)
        token_scores = torch.zeros(batch["response_mask"].shape, dtype=torch.float32)
        # A response without tokens keeps its score at position 0 (masked), where the outcome estimators read it
        # (advantage.sequence_scores): its group's baseline must count it, though it has no token to train.
        token_scores[torch.arange(len(batch)), (lengths - 1).clamp(min=0)] = overall
        batch["token_level_scores"] = token_scores
        return batch

    def validate(self, step: int) -> dict[str, float]:
        """Responses (val_override_config: greedy by default) on the validation set, scored; val/* metrics.
        The first trainer.val_generations_to_log samples go to the loggers."""
        cfg = self.cfg
        spec = SamplingSpec.for_validation(cfg.worker.rollout, cfg.data.max_response_length)
        scores: list[dict[str, float]] = []
        lengths: list[float] = []
        samples: list[tuple[str, str, float]] = []
        for prompts in validation_batches(self.val_set, cfg.data.val_batch_size):
            prompts["uid"] = [str(i) for i in range(len(prompts))]
            batch = self.rollout(prompts, spec)
            batch_scores = ray.get(self.score_async(batch))
            scores.extend(batch_scores)
            lengths.extend(batch["response_mask"].sum(-1).tolist())
            wanted = cfg.trainer.val_generations_to_log - len(samples)
            if wanted > 0:
                texts = self.kind.describe(batch)
                samples += [(p, r, s["overall"]) for p, r, s in zip(batch[self.kind.prompt_column], texts,
                                                                    batch_scores)][:wanted]
        if samples:
            self.tracker.log_generations(samples, step)
        out = {f"val/{key.removeprefix('reward/')}": v for key, v in reward_metrics(scores).items()}
        out["val/response_length"] = float(np.mean(lengths))
        return out

    # ---- checkpoints ------------------------------------------------------------------------
    def save(self) -> None:
        """Checkpoint this step; CheckpointSaveError (the previous checkpoint stays the latest) on failure."""
        self.checkpoints.save(self.step_count, lambda staging: self.workers.save_checkpoint(str(staging)),
                              {"step": self.step_count, "loader": self.loader.state_dict(),
                               "kl_coef": self.kl_ctrl.value if self.kl_ctrl else None})

    def resume(self, path: Path | None = None) -> None:
        """Load `path`, else trainer.load_checkpoint_path (a step or an experiment directory), else the latest
        checkpoint when trainer.find_last_checkpoint; nothing if there is none."""
        if path is None:
            path = self.checkpoints.resume_point(self.cfg.trainer.load_checkpoint_path,
                                                 self.cfg.trainer.find_last_checkpoint)
        if path is None:
            return
        state = self.checkpoints.driver_state(path)
        self.workers.load_checkpoint(str(path))
        self.loader.load_state_dict(state["loader"])
        if self.kl_ctrl is not None and state.get("kl_coef") is not None:
            self.kl_ctrl.value = state["kl_coef"]
        self.step_count = state["step"]
        logger.info("resumed from %s at step %d", path, self.step_count)


def reward_metrics(scores: Sequence[dict[str, float]]) -> dict[str, float]:
    """reward/<key>: the mean of every entry of the reward function's per-sample dicts."""
    return {f"reward/{key}": float(np.mean([s[key] for s in scores])) for key in scores[0]}


def fill_with_mixed_groups(scored_round: Callable[[int], Batch], cfg: Config, n: int) -> tuple[Batch, dict[str, float]]:
    """DAPO dynamic sampling: call `scored_round(1, 2, ...)` (a scored generation round of n responses per prompt)
    until data.rollout_batch_size groups whose mean score is strictly inside (filter_low, filter_high) are kept.

    Returns the kept rows and the metrics: rollout/{gen_rounds,kept_groups,seen_groups}, and reward/* over every
    response generated this step (the policy's rewards, neither only the last round nor only the kept groups).
    """
    a = cfg.algorithm
    wanted, kept, scores, rounds, seen = cfg.data.rollout_batch_size * n, [], [], 0, 0
    while sum(len(b) for b in kept) < wanted:
        rounds += 1
        if rounds > cfg.trainer.max_try_make_batch:
            raise RuntimeError(
                f"online filtering kept {sum(len(b) for b in kept) // n} of {cfg.data.rollout_batch_size} "
                f"prompt groups after trainer.max_try_make_batch={cfg.trainer.max_try_make_batch} rounds: every "
                f"other group scored all-equal. Widen algorithm.filter_low/filter_high, raise "
                f"trainer.max_try_make_batch, or turn algorithm.online_filtering off")
        batch = scored_round(rounds)
        scores.extend(batch["scores"])
        keep = groups_to_keep(score_column(batch, a.filter_key), list(batch["uid"]), a.filter_low, a.filter_high)
        seen += len(batch) // n
        kept.append(batch.index(np.flatnonzero(keep)))
    merged = Batch.concat(kept)
    metrics = {**reward_metrics(scores), "rollout/gen_rounds": rounds, "rollout/kept_groups": len(merged) // n,
               "rollout/seen_groups": seen}
    return merged.index(range(wanted)), metrics


def score_column(batch: Batch, key: str) -> torch.Tensor:
    """One entry of every sample's reward dict: [B]."""
    missing = [i for i, s in enumerate(batch["scores"]) if key not in s]
    if missing:
        raise KeyError(f"algorithm.filter_key={key!r} is not in the reward function's output (it returns "
                       f"{sorted(batch['scores'][missing[0]])}); set filter_key to one of those")
    return torch.tensor([s[key] for s in batch["scores"]], dtype=torch.float32)


def rollout_drift_metrics(batch: Batch) -> dict[str, float]:
    """How far the engine's log-probs of the sampled tokens are from the trainer's (old_log_probs, same weights):
    rollout/log_prob_diff_{mean,max} and rollout/kl_to_old (see RolloutDrift).

    Kernels and dtypes make them nonzero; top_p < 1 or top_k > 0 adds vLLM's renormalisation over the kept tokens
    (the trainer uses the full softmax at the temperature), which is why worker.actor.tis_cap refuses truncated
    sampling.
    """
    drift = RolloutDrift()
    drift.add(batch["rollout_log_probs"], batch["old_log_probs"], batch["response_mask"])
    return drift.metrics()


def batch_metrics(batch: Batch, max_response_length: int) -> dict[str, float]:
    """response_length/*, critic/* (advantages, returns) of a finished step."""
    lengths = batch["response_mask"].sum(-1).float()
    mask = batch["response_mask"].bool()
    adv = batch["advantages"][mask]
    return {
        "response_length/mean": float(lengths.mean()), "response_length/max": float(lengths.max()),
        "response_length/min": float(lengths.min()),
        "response_length/clip_ratio": float((lengths >= max_response_length).float().mean()),
        "critic/advantage_mean": float(adv.mean()), "critic/advantage_max": float(adv.max()),
        "critic/advantage_min": float(adv.min()), "critic/return_mean": float(batch["returns"][mask].mean()),
    }


@contextmanager
def _timed(metrics: dict[str, float], name: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    metrics[f"timing_s/{name}"] = time.perf_counter() - start
