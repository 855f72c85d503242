"""Everything checked on the driver before Ray starts: load the config, resolve hub ids, validate it against
the model's own config.json. `python3 -m longrl.config` runs exactly this and stops."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from longrl.algorithms import ADVANTAGES, KL_PENALTIES
from longrl.config import Config, ConfigError, load_config, to_dict
from longrl.diffusion.pipelines import PIPELINES, pipeline_class
from longrl.trainer.kinds import WORKER_KINDS, kind_name
from longrl.validation import validate


def resolve_pretrained(name: str, key: str) -> str:
    """A local model directory for `name`: itself when it is one, else the Hugging Face hub snapshot of the id
    `name` (downloaded once, on the driver, into the HF cache). Raises ConfigError naming `key` and the id."""
    if not name or Path(name).is_dir():
        return name
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return snapshot_download(repo_id=name)
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError, ValueError) as e:
        raise ConfigError(f"{key}={name!r} is not a local directory and could not be fetched from the Hugging Face "
                          f"hub ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'no detail'}); check the "
                          f"id and the network, or point it at a model directory on disk") from None


def with_local_models(cfg: Config) -> Config:
    """`cfg` with every model/tokenizer path that is a hub id replaced by its local snapshot (a new Config)."""
    def local(model: object, prefix: str) -> object:
        return dataclasses.replace(
            model, model_path=resolve_pretrained(model.model_path, f"{prefix}.model_path"),
            tokenizer_path=model.tokenizer_path and resolve_pretrained(model.tokenizer_path, f"{prefix}.tokenizer_path"))

    w = cfg.worker
    worker = dataclasses.replace(
        w, actor=dataclasses.replace(w.actor, model=local(w.actor.model, "worker.actor.model")),
        critic=dataclasses.replace(w.critic, model=local(w.critic.model, "worker.critic.model")))
    return dataclasses.replace(cfg, worker=worker)


def text_config(model_path: str) -> tuple[dict, bool]:
    """The (text) model's config.json entries of a local model directory, and whether it has a vision tower;
    empty if it cannot be read (validate names a missing directory itself)."""
    try:
        with open(f"{model_path}/config.json") as f:
            hf = json.load(f)
    except OSError:
        return {}, False
    hf = hf.get("thinker_config", hf)  # an omni checkpoint: the thinker is what trains
    if "llm_cfg" in hf:  # VILA: the language model's config is nested whole
        return hf["llm_cfg"], True
    return hf.get("text_config", hf), "vision_config" in hf


def model_heads(model_path: str) -> tuple[int, int] | None:
    """(num_attention_heads, num_key_value_heads) of a model; KV heads default to the heads (no GQA)."""
    hf, _ = text_config(model_path)
    if "num_attention_heads" not in hf:
        return None
    return hf["num_attention_heads"], hf.get("num_key_value_heads") or hf["num_attention_heads"]


def model_max_positions(model_path: str) -> int | None:
    """The position limit that prompt + response tokens must respect; None where it cannot be read, or for
    vision-language models, where M-RoPE gives a video far fewer positions than it has tokens."""
    hf, is_multimodal = text_config(model_path)
    return None if is_multimodal else hf.get("max_position_embeddings")


# Model families of Long-RL/EasyR1 scripts that longrl does not have yet, by model_type, with the feature.
NOT_YET_BUILT_MODELS = {
    "qwen3_vl_moe": "Qwen3-VL MoE models",
    "glm4v": "GLM-4.1V models",
}


def adapter_problem(model_path: str) -> str | None:
    """Why no model adapter can serve `model_path` (its config.json's model_type), or None when one can."""
    from longrl.models.adapter import ADAPTERS

    key = f"worker.actor.model.model_path={model_path!r}"
    pipeline = pipeline_class(model_path)
    if pipeline is not None:
        return None if pipeline in PIPELINES else (f"{key} is a diffusers {pipeline}, which has no adapter; "
                                                   f"supported: {sorted(PIPELINES)}")
    try:
        with open(f"{model_path}/config.json") as f:
            model_type = json.load(f).get("model_type")
    except OSError:
        return None  # validate names a missing directory itself
    if model_type in ADAPTERS:
        return None
    if model_type in NOT_YET_BUILT_MODELS:
        return (f"{key}: model_type {model_type!r} belongs to {NOT_YET_BUILT_MODELS[model_type]}, which longrl does "
                f"not implement yet; supported: {sorted(ADAPTERS)}")
    return f"{key}: model_type {model_type!r} (config.json) has no adapter; supported: {sorted(ADAPTERS)}"


def omni_problem(cfg: Config) -> str | None:
    """Why data.is_omni / worker.is_omni disagree with the checkpoint (Long-RL's switches are checks here: the
    model_type decides), or None."""
    from longrl.models.adapter import ADAPTERS

    path = cfg.worker.actor.model.model_path
    try:
        with open(f"{path}/config.json") as f:
            model_type = json.load(f).get("model_type")
    except OSError:
        return None
    hears = model_type in ADAPTERS and ADAPTERS[model_type].hears_audio
    for key, value in (("data.is_omni", cfg.data.is_omni), ("worker.is_omni", cfg.worker.is_omni)):
        if value is not None and value != hears:
            return (f"{key}={str(value).lower()} but worker.actor.model.model_path={path!r} has model_type "
                    f"{model_type!r}, which is {'' if hears else 'not '}an omni model; drop the key (the checkpoint "
                    f"decides) or point model_path at the intended model")
    return None


def vila_problems(cfg: Config) -> list[str]:
    """Long-RL's VILA keys checked against the checkpoint: data.vila_model / worker.vila_model must agree with its
    model_type, worker.rollout.tokens_per_frame with what its projector makes; max_frames_vllm is refused for
    other models, and VILA's rollout needs the cached embeddings (vLLM runs its language model alone)."""
    from longrl.models.vila import VILA_MODEL_TYPES, VILAError, tokens_per_frame

    path, rollout = cfg.worker.actor.model.model_path, cfg.worker.rollout
    try:
        with open(f"{path}/config.json") as f:
            model_type = json.load(f).get("model_type")
    except OSError:
        return []
    is_vila = model_type in VILA_MODEL_TYPES
    where = f"worker.actor.model.model_path={path!r} has model_type {model_type!r}"
    problems = [f"{key}={str(value).lower()} but {where}, which is {'' if is_vila else 'not '}a VILA model; drop the "
                f"key (the checkpoint decides) or point model_path at the intended model"
                for key, value in (("data.vila_model", cfg.data.vila_model), ("worker.vila_model", cfg.worker.vila_model))
                if value is not None and value != is_vila]
    if not is_vila:
        if rollout.max_frames_vllm is not None:
            problems.append(f"worker.rollout.max_frames_vllm={rollout.max_frames_vllm} applies to VILA models only, "
                            f"and {where}; drop it")
        return problems
    try:
        made = tokens_per_frame(path)
    except (OSError, VILAError, KeyError) as exc:
        return problems + [f"{path}: not a usable VILA checkpoint: {exc}"]
    if rollout.tokens_per_frame is not None and rollout.tokens_per_frame != made:
        problems.append(f"worker.rollout.tokens_per_frame={rollout.tokens_per_frame} but the checkpoint at {path!r} "
                        f"makes {made} tokens per frame ({made - 1} from its projector + the newline); set it to "
                        f"{made} or drop it")
    if rollout.max_frames_vllm is not None and rollout.max_frames_vllm < 1:
        problems.append(f"worker.rollout.max_frames_vllm={rollout.max_frames_vllm} must be >= 1 (null: all frames)")
    if not rollout.cache_video_embeds:
        problems.append("worker.rollout.cache_video_embeds=false: a VILA model's rollout takes its media as cached "
                        "embeddings (vLLM runs the language model alone); set it to true")
    if rollout.name != "vllm":
        problems.append(f"worker.rollout.name={rollout.name!r}: VILA models roll out with vllm (prompt embeddings)")
    return problems


def diffusion_problems(cfg: Config) -> list[str]:
    """What a diffusion run (a diffusers pipeline as model_path) cannot do with this config: sizes the VAE and the
    transformer's patches do not divide, frame counts the video VAE cannot take, and loop features with no
    diffusion counterpart. (Each sample's log-prob and update passes reach the worker that sampled it and holds its
    latents because the dispatch places a step's samples alike in every pass, Dispatch.SPLIT_SAMPLES.)"""
    path, a = cfg.worker.actor.model.model_path, cfg.algorithm
    if pipeline_class(path) not in PIPELINES:
        problems = []
        if not a.disable_kl and a.kl_penalty in KL_PENALTIES and KL_PENALTIES.requires(a.kl_penalty).step_means:
            problems.append(f"algorithm.kl_penalty={a.kl_penalty!r} reads the denoising steps of a diffusion model, "
                            f"but worker.actor.model.model_path={path!r} is not a diffusers pipeline; use low_var_kl")
        return problems
    rollout, actor = cfg.worker.rollout, cfg.worker.actor
    problems = PIPELINES[pipeline_class(path)]().size_problems(path, rollout)
    if rollout.num_steps < 2:
        problems.append(f"worker.rollout.num_steps={rollout.num_steps}: Flow-GRPO needs at least 2 denoising steps")
    if rollout.sde_window_size is not None and not 1 <= rollout.sde_window_size < rollout.num_steps:
        problems.append(f"worker.rollout.sde_window_size={rollout.sde_window_size} must be in [1, num_steps="
                        f"{rollout.num_steps}); null trains the whole trajectory")
    if rollout.noise_level <= 0:
        problems.append(f"worker.rollout.noise_level={rollout.noise_level} must be > 0: without noise the SDE steps "
                        f"have no density to train")
    if actor.ulysses_size != 1:
        problems.append(f"worker.actor.ulysses_size={actor.ulysses_size}: diffusion transformers are not sequence-"
                        f"parallel here; set it to 1")
    if a.online_filtering:
        problems.append("algorithm.online_filtering=true: a diffusion sample's latents stay on the rank that sampled "
                        "it, but the groups kept from several rounds would be placed anew; set it to false")
    if ADVANTAGES.requires(a.adv_estimator).critic or ADVANTAGES.requires(a.adv_estimator).greedy_baseline:
        problems.append(f"algorithm.adv_estimator={a.adv_estimator!r} needs a critic or a greedy rollout, which "
                        f"diffusion models do not have; use grpo (Flow-GRPO), rloo or reinforce_plus_plus")
    return problems


def checked_config(args: list[str]) -> Config:
    """Load `args`, resolve hub ids to local directories, validate against the model; raises one ConfigError
    listing every problem."""
    cfg = with_local_models(load_config(args))
    path = cfg.worker.actor.model.model_path
    extra = [p for p in (adapter_problem(path), omni_problem(cfg)) if p] + diffusion_problems(cfg) + vila_problems(cfg)
    try:
        validate(cfg, model_max_positions=model_max_positions(path), model_heads=model_heads(path),
                 rollout_unit=WORKER_KINDS[kind_name(path)].rollout_unit)
    except ConfigError as e:
        raise ConfigError("\n  - ".join([str(e), *extra])) from None
    if extra:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(extra))
    return cfg


def main(argv: list[str] | None = None) -> int:
    """`python3 -m longrl.config config=... key=value ...`: print the effective config and exit 0, or every
    problem and exit 2. Starts no Ray and no worker."""
    try:
        cfg = checked_config(sys.argv[1:] if argv is None else argv)
    except (ConfigError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(to_dict(cfg), indent=2))
    return 0
