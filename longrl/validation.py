"""`validate(cfg)`: every impossible combination of a Config, in one error, before any worker starts.

It lives apart from the schema (`longrl.config`) because it reads what the selected algorithms
declare they need (`longrl.algorithms.requirements.Requires`, next to each registered function):
the schema imports nothing of longrl, and the algorithms import the schema.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from longrl.algorithms import ADVANTAGES, KL_PENALTIES, POLICY_LOSSES, Requires
from longrl.config import LOGGER_PACKAGES, Config, ConfigError, TrainedRoleConfig, update_responses, world_size
from longrl.models.lora import lora_problems
from longrl.workers.rollout.base import SamplingSpec


def validate(cfg: Config, model_max_positions: int | None = None,
             model_heads: tuple[int, int] | None = None, rollout_unit: str = "prompt") -> None:
    """Raise one ConfigError listing every impossible combination.

    model_max_positions, model_heads (num_attention_heads, num_key_value_heads): read from the model's
    config.json by the caller when it can (the text config of a vision-language model). rollout_unit: what the
    model's worker kind splits over the data-parallel ranks (trainer.kinds.WorkerKind.rollout_unit): 'prompt', whose
    counts must divide by the ranks, or 'sample', placed one by one (Dispatch.SPLIT_SAMPLES), which need not.
    """
    problems = [*_path_problems(cfg), *lora_problems(cfg.worker.actor.model.lora), *_parallel_problems(cfg, model_heads),
                *_batch_problems(cfg, rollout_unit), *_algorithm_problems(cfg), *_unimplemented_keys(cfg), *_rollout_problems(cfg)]
    data, t = cfg.data, cfg.trainer
    if model_max_positions is not None and data.max_prompt_length + data.max_response_length > model_max_positions:
        problems.append(f"data.max_prompt_length + data.max_response_length = "
                        f"{data.max_prompt_length + data.max_response_length} exceeds the model's limit "
                        f"max_position_embeddings={model_max_positions}; lower one of them")
    for key, value in (("trainer.max_restarts", t.max_restarts), ("trainer.max_skipped_steps", t.max_skipped_steps),
                       ("data.num_workers", data.num_workers)):
        if value < 0:
            problems.append(f"{key}={value} must be >= 0 (0 turns it off)")
    if cfg.worker.reward.timeout_s is not None and cfg.worker.reward.timeout_s <= 0:
        problems.append(f"worker.reward.timeout_s={cfg.worker.reward.timeout_s} must be > 0 seconds, or null to wait "
                        f"forever")
    problems += _logger_problems(t.logger)
    for role, optim in (("actor", cfg.worker.actor.optim), ("critic", cfg.worker.critic.optim)):
        if optim.min_lr_ratio is not None and optim.lr_scheduler_type == "constant":
            problems.append(f"worker.{role}.optim.min_lr_ratio={optim.min_lr_ratio} has no effect with "
                            f"lr_scheduler_type=constant; set worker.{role}.optim.lr_scheduler_type=cosine to decay "
                            f"to it, or min_lr_ratio=null")
    if problems:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(problems))


def _logger_problems(loggers: list[str]) -> list[str]:
    """Unknown trainer.logger entries, and optional ones whose package is missing (named before any worker)."""
    problems = []
    unknown = set(loggers) - set(LOGGER_PACKAGES)
    if unknown:
        problems.append(f"trainer.logger has unknown entries {sorted(unknown)}; choose from {sorted(LOGGER_PACKAGES)}")
    for name in sorted(set(loggers) & set(LOGGER_PACKAGES)):
        package = LOGGER_PACKAGES[name]
        if package and importlib.util.find_spec(package) is None:
            problems.append(f"trainer.logger includes {name!r} but the {package} package is not installed; "
                            f"`pip install {package}`, or remove {name!r} from trainer.logger")
    return problems


def _path_problems(cfg: Config) -> list[str]:
    problems = []
    model = cfg.worker.actor.model
    if not model.model_path:
        problems.append("worker.actor.model.model_path is empty; set it to a local Hugging Face model directory")
    elif not Path(model.model_path).is_dir():
        problems.append(f"worker.actor.model.model_path={model.model_path!r} is not a local directory; nothing is "
                        f"downloaded at run time, so point it at a Hugging Face model directory on disk")
    if not cfg.data.train_files:
        problems.append("data.train_files is empty; set it to a json/jsonl/parquet file or name@split")
    return problems


def _parallel_problems(cfg: Config, model_heads: tuple[int, int] | None) -> list[str]:
    problems = []
    actor, t = cfg.worker.actor, cfg.trainer
    world = world_size(cfg)
    if actor.ulysses_size < 1 or world % actor.ulysses_size:
        problems.append(f"worker.actor.ulysses_size={actor.ulysses_size} must divide the world size "
                        f"{world} (trainer.nnodes={t.nnodes} x trainer.n_gpus_per_node={t.n_gpus_per_node})")
    if model_heads is not None and actor.ulysses_size >= 1:
        from longrl.models.ulysses_attention import kv_repeat_factor  # imports transformers: only when asked

        try:  # KV heads fewer than ulysses_size are repeated; the query heads themselves must split evenly
            kv_repeat_factor(*model_heads, actor.ulysses_size)
        except ConfigError as e:
            problems.append(str(e))
    if actor.share_prompt_prefix and (actor.ulysses_size > 1 or actor.padding_free):
        problems.append(f"worker.actor.share_prompt_prefix=true runs whole padded sequences only, but "
                        f"worker.actor.ulysses_size={actor.ulysses_size} and worker.actor.padding_free="
                        f"{str(actor.padding_free).lower()}; set ulysses_size=1 and padding_free=false, "
                        f"or share_prompt_prefix=false")
    return problems


def _dp(cfg: Config) -> int:
    return max(1, world_size(cfg) // max(cfg.worker.actor.ulysses_size, 1))


def _batch_problems(cfg: Config, rollout_unit: str) -> list[str]:
    problems = []
    data = cfg.data
    dp = _dp(cfg)
    if rollout_unit not in ("prompt", "sample"):
        raise ValueError(f"rollout_unit={rollout_unit!r}: a worker kind splits 'prompt's or 'sample's over the ranks")
    per_prompt = rollout_unit == "prompt"  # else samples: any count, the last ranks' shares padded (and masked)
    for key in ("rollout_batch_size", "mini_rollout_batch_size"):
        prompts = getattr(data, key)
        if per_prompt and prompts is not None and prompts % dp:
            problems.append(f"data.{key}={prompts} must be divisible by the data-parallel size {dp}; "
                            f"use a multiple of {dp}")
    if data.mini_rollout_batch_size is not None and not cfg.algorithm.online_filtering:
        problems.append(f"data.mini_rollout_batch_size={data.mini_rollout_batch_size} sets the prompts of one online-"
                        f"filtering round, but algorithm.online_filtering=false: every step samples "
                        f"data.rollout_batch_size prompts at once; unset it (null) or turn online filtering on")
    for prefix, role in _trained_roles(cfg).items():
        problems += _role_batch_problems(cfg, prefix, role, dp if per_prompt else None)
    return problems


def _trained_roles(cfg: Config) -> dict[str, TrainedRoleConfig]:
    """The trained roles by config prefix: the actor, and the critic when the estimator declares it reads one."""
    roles: dict[str, TrainedRoleConfig] = {"worker.actor": cfg.worker.actor}
    estimator = cfg.algorithm.adv_estimator
    if estimator in ADVANTAGES and ADVANTAGES.requires(estimator).critic:
        roles["worker.critic"] = cfg.worker.critic
    return roles


def _role_batch_problems(cfg: Config, prefix: str, role: TrainedRoleConfig, dp: int | None) -> list[str]:
    """A trained role's mini-batches must tile the step's prompts and, with `dp` (prompts split over the ranks),
    split over the data-parallel ranks (global_batch_size counts prompts; an optimizer step takes their
    worker.rollout.n responses each). dp None: samples placed one by one, so an optimizer step's samples need not
    divide by the ranks, and a rank's share of one is micro-batched by at most the micro-batch size."""
    problems = []
    prompts, n = cfg.data.rollout_batch_size, cfg.worker.rollout.n
    gbs, micro = role.global_batch_size, role.micro_batch_size_per_device_for_update
    responses = update_responses(cfg, role)
    if gbs < 1 or gbs > prompts or prompts % gbs:
        problems.append(f"{prefix}.global_batch_size={gbs} (prompts per optimizer step) must divide the prompts "
                        f"per step data.rollout_batch_size={prompts}")
    elif dp is None:
        if micro < 1:
            problems.append(f"{prefix}.micro_batch_size_per_device_for_update={micro} must be at least 1")
    elif responses % dp:
        problems.append(f"{prefix}.global_batch_size x worker.rollout.n = {gbs} x {n} = {responses} responses per "
                        f"optimizer step must be divisible by the data-parallel size {dp}")
    elif micro < 1 or (responses // dp) % micro:
        problems.append(f"{prefix}.micro_batch_size_per_device_for_update={micro} must divide the per-device "
                        f"mini-batch global_batch_size x worker.rollout.n / dp = {responses // dp} responses")
    if role.micro_batch_size_per_device_for_experience < 1:
        problems.append(f"{prefix}.micro_batch_size_per_device_for_experience="
                        f"{role.micro_batch_size_per_device_for_experience} must be at least 1")
    return problems


def _algorithm_problems(cfg: Config) -> list[str]:
    """Unknown names, and what the selected estimator, policy loss and KL estimator declared they need."""
    problems = []
    a, actor, rollout = cfg.algorithm, cfg.worker.actor, cfg.worker.rollout
    selected = [("algorithm.adv_estimator", a.adv_estimator, ADVANTAGES),
                ("worker.actor.loss_type", actor.loss_type, POLICY_LOSSES),
                ("algorithm.kl_penalty", a.kl_penalty, KL_PENALTIES)]
    for key, name, registry in selected:
        if name not in registry:
            problems.append(f"{key}={name!r} is unknown; choose from {sorted(registry)}")
            continue
        needs: Requires = registry.requires(name)
        what = f"{key}={name!r}"
        if needs.groups and rollout.n < 2:
            problems.append(f"worker.rollout.n={rollout.n}: {name} compares responses within a group and "
                            f"needs at least 2 samples per prompt; set worker.rollout.n>=2")
        if needs.loss_avg_mode is not None and actor.loss_avg_mode != needs.loss_avg_mode:
            problems.append(f"{what} is exact only with worker.actor.loss_avg_mode={needs.loss_avg_mode!r}, not "
                            f"{actor.loss_avg_mode!r} ({needs.why}); set worker.actor.loss_avg_mode={needs.loss_avg_mode}")
        if needs.max_clip_ratio is not None and max(actor.clip_ratio_low, actor.clip_ratio_high) > needs.max_clip_ratio:
            problems.append(f"{what} needs clip ratios <= {needs.max_clip_ratio}, but worker.actor.clip_ratio_low="
                            f"{actor.clip_ratio_low} and clip_ratio_high={actor.clip_ratio_high} ({needs.why}); set "
                            f"both at most {needs.max_clip_ratio}")
        if needs.greedy_baseline and a.online_filtering:
            problems.append(f"{what} needs the score of a greedy response per prompt, which the trainer runs only "
                            f"without online filtering; set algorithm.online_filtering=false or choose another estimator")
        if needs.step_means and not a.disable_kl and not a.use_kl_loss:
            problems.append(f"{what} compares the step means of the policy and the reference at the update: it works "
                            f"as a KL loss only; set algorithm.use_kl_loss=true")
        if needs.whole_distribution and not a.disable_kl and (not a.use_kl_loss or actor.ulysses_size > 1):
            problems.append(f"{what} (exact KL over the vocabulary) works as a KL loss on whole "
                            f"sequences only: it needs both models' full distributions at the update "
                            f"(algorithm.use_kl_loss={a.use_kl_loss}, worker.actor.ulysses_size={actor.ulysses_size}); "
                            f"set use_kl_loss=true and ulysses_size=1, or use kl_penalty=low_var_kl")
    return problems


def _unimplemented_keys(cfg: Config) -> list[str]:
    """Keys the schema takes (EasyR1 names) whose behaviour longrl does not have: refused, not ignored."""
    problems = []
    actor, critic = cfg.worker.actor, cfg.worker.critic
    roles = _trained_roles(cfg)
    if "worker.critic" in roles:
        actor_tokenizer = actor.model.tokenizer_path or actor.model.model_path
        if critic.model.tokenizer_path is not None and critic.model.tokenizer_path != actor_tokenizer:
            problems.append(f"worker.critic.model.tokenizer_path={critic.model.tokenizer_path!r}: the critic scores "
                            f"the actor's token ids, so it uses the actor's tokenizer ({actor_tokenizer!r}); "
                            f"leave worker.critic.model.tokenizer_path unset (null)")
        if critic.model.freeze_vision_tower:
            problems.append("worker.critic.model.freeze_vision_tower=true: the critic is a text model (a token "
                            "classification head) with no vision tower to freeze; set it to false")
    if critic.model.lora.rank != 0:
        problems.append(f"worker.critic.model.lora.rank={critic.model.lora.rank}: LoRA trains the actor only; the "
                        f"critic trains its whole value model; set worker.critic.model.lora.rank=0")
    return problems


def _rollout_problems(cfg: Config) -> list[str]:
    problems = []
    rollout, actor = cfg.worker.rollout, cfg.worker.actor
    try:
        SamplingSpec.for_validation(rollout, cfg.data.max_response_length)
    except ConfigError as e:
        problems.append(str(e))
    if actor.tis_cap is not None and (rollout.top_p < 1 or rollout.top_k > 0):
        problems.append(f"worker.actor.tis_cap={actor.tis_cap} weighs each token by pi_old / pi_rollout, but with "
                        f"worker.rollout.top_p={rollout.top_p} / top_k={rollout.top_k} the two are different "
                        f"distributions: the engine's log-probs are renormalised over the kept tokens, the "
                        f"trainer's are the full softmax at the temperature, so the weight would be biased; "
                        f"set top_p=1.0 and top_k=-1, or tis_cap=null")
    if rollout.num_chunk_seq < 1:
        problems.append(f"worker.rollout.num_chunk_seq={rollout.num_chunk_seq} must be >= 1 (1: one call)")
    return problems
