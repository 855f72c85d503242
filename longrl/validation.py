"""`validate(cfg)`: every impossible combination of a Config, in one error, before any worker starts.

It lives apart from the schema (`longrl.config`) because it reads what the selected algorithms
declare they need (`longrl.algorithms.requirements.Requires`, next to each registered function):
the schema imports nothing of longrl, and the algorithms import the schema.
"""

from __future__ import annotations

from pathlib import Path

from longrl.algorithms import ADVANTAGES, KL_PENALTIES, POLICY_LOSSES, Requires
from longrl.config import Config, ConfigError, world_size


def validate(cfg: Config, model_max_positions: int | None = None,
             model_heads: tuple[int, int] | None = None) -> None:
    """Raise one ConfigError listing every impossible combination.

    model_max_positions, model_heads (num_attention_heads, num_key_value_heads): read from the model's
    config.json by the caller when it can (the text config of a vision-language model).
    """
    problems = [*_path_problems(cfg), *_parallel_problems(cfg, model_heads), *_batch_problems(cfg),
                *_algorithm_problems(cfg)]
    data, t = cfg.data, cfg.trainer
    if model_max_positions is not None and data.max_prompt_length + data.max_response_length > model_max_positions:
        problems.append(f"data.max_prompt_length + data.max_response_length = "
                        f"{data.max_prompt_length + data.max_response_length} exceeds the model's limit "
                        f"max_position_embeddings={model_max_positions}; lower one of them")
    unknown_loggers = set(t.logger) - {"console", "file", "wandb", "tensorboard"}
    if unknown_loggers:
        problems.append(f"trainer.logger has unknown entries {sorted(unknown_loggers)}; "
                        f"choose from ['console', 'file', 'tensorboard', 'wandb']")
    if problems:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(problems))


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


def _batch_problems(cfg: Config) -> list[str]:
    problems = []
    data, actor, rollout = cfg.data, cfg.worker.actor, cfg.worker.rollout
    dp = _dp(cfg)
    prompts = data.mini_rollout_batch_size or data.rollout_batch_size
    if prompts % dp:
        problems.append(f"data.rollout_batch_size={prompts} must be divisible by the data-parallel size {dp}; "
                        f"use a multiple of {dp}")
    responses = data.rollout_batch_size * rollout.n
    if actor.global_batch_size > responses or responses % actor.global_batch_size:
        problems.append(f"worker.actor.global_batch_size={actor.global_batch_size} must divide the responses per "
                        f"step data.rollout_batch_size x worker.rollout.n = {responses}")
    if actor.global_batch_size % dp:
        problems.append(f"worker.actor.global_batch_size={actor.global_batch_size} must be divisible by the "
                        f"data-parallel size {dp}")
    elif (actor.global_batch_size // dp) % actor.micro_batch_size_per_device_for_update:
        problems.append(f"worker.actor.micro_batch_size_per_device_for_update={actor.micro_batch_size_per_device_for_update} "
                        f"must divide the per-device mini-batch global_batch_size/dp = {actor.global_batch_size // dp}")
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
        if needs.whole_distribution and not a.disable_kl and (not a.use_kl_loss or actor.ulysses_size > 1):
            problems.append(f"{what} (exact KL over the vocabulary) works as a KL loss on whole "
                            f"sequences only: it needs both models' full distributions at the update "
                            f"(algorithm.use_kl_loss={a.use_kl_loss}, worker.actor.ulysses_size={actor.ulysses_size}); "
                            f"set use_kl_loss=true and ulysses_size=1, or use kl_penalty=low_var_kl")
    return problems
