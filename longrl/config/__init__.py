"""The configuration schema: typed dataclasses whose keys match Long-RL/EasyR1.

YAML files and `a.b.c=value` overrides only override these defaults. An unknown key is an
error naming the closest valid key; `longrl.validation.validate` collects every cross-section
problem before any worker starts. Derived sizes are pure functions; nothing writes into a config.
This module imports nothing else of longrl, so every package can import it.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import types
import typing
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException


class ConfigError(ValueError):
    """A problem with the user's configuration: names the key, the value, the rule and the fix."""


# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass
class DataConfig:
    train_files: str = ""
    """Training data: a local json/jsonl/parquet file or directory, or a datasets `name@split`."""
    val_files: str = ""
    """Validation data, same forms as train_files; empty disables validation."""
    prompt_key: str = "problem"
    """Field holding the question."""
    answer_key: str = "answer"
    """Field holding the ground truth handed to the reward function."""
    image_key: str = "images"
    """Field holding the images of image prompts: a path, a list of paths, {"bytes", "path"} dicts or decoded
    images (Hugging Face image columns such as geometry3k's)."""
    video_key: str = "videos"
    """Field holding video paths, for video prompts."""
    image_dir: str | None = None
    """Directory that relative image paths are resolved against."""
    video_dir: str | None = None
    """Directory that relative video paths are resolved against."""
    video_fps: float | None = None
    """EasyR1's frame sampling: each video gets duration x video_fps frames (at least 4, at most
    worker.rollout.num_video_frames and the video's own frames, rounded down to even, as qwen_vl_utils samples);
    None = exactly worker.rollout.num_video_frames frames per video (Long-RL's rule)."""
    max_prompt_length: int = 512
    """Longest prompt in tokens after the chat template, counting image tokens; a video's tokens come on top
    (as in Long-RL), bounded with the rest by worker.rollout.max_model_len."""
    max_response_length: int = 512
    """Longest response in tokens."""
    rollout_batch_size: int = 8
    """Prompts per RL step (each is sampled worker.rollout.n times)."""
    mini_rollout_batch_size: int | None = None
    """Prompts per generation round when online filtering refills the batch; None = rollout_batch_size."""
    val_batch_size: int = -1
    """Prompts per validation generation call; -1 = the whole validation set at once."""
    format_prompt: str | None = None
    """Jinja template file applied to the question before the chat template (`{{ content }}`)."""
    override_chat_template: str | None = None
    """A chat template that replaces the tokenizer's."""
    shuffle: bool = True
    """Shuffle the training set every epoch."""
    seed: int = 1
    """Seed of the shuffle (and of synthetic data)."""
    min_pixels: int = 3136
    """Smallest image/frame area in pixels after resizing."""
    max_pixels: int = 401408
    """Largest image/frame area in pixels after resizing."""
    filter_overlong_prompts: bool = True
    """Drop prompts longer than max_prompt_length (logged); false makes them an error."""
    cache_dir: str | None = None
    """Directory for decoded-video caches; None disables the cache."""
    num_workers: int = 0
    """Parallel decoding of media (Long-RL's data-loader workers, which decode and preprocess the videos there):
    here each training worker decodes the videos and images of its prompts, on this many threads; 0 decodes them
    one after another."""
    strict: bool = False
    """A bad row stops loading at once (a jsonl line that is not UTF-8 or not a JSON object, an empty prompt, no
    answer, media that disagree with the <image>/<video> placeholders); false skips it, logged with its file and
    line and counted. Unreadable media files have their own switch (strict_media)."""
    strict_media: bool = False
    """A missing, empty, truncated or corrupt video or image is an error; false skips its prompt (logged,
    counted in video/skipped or image/skipped)."""
    is_omni: bool | None = None
    """Long-RL's switch for Qwen2.5-Omni, here a check: the checkpoint's model_type decides; true or false must
    agree with it (None: not checked)."""
    vila_model: bool | None = None
    """Long-RL's switch for VILA/NVILA/LongVILA data, here a check like is_omni: true or false must agree with the
    checkpoint's model_type (vila or llava_llama); None: not checked."""
    audio_max_length: float = 30.0
    """Omni models: a video's own audio is cut to this many seconds (and to the model's feature-extractor window).
    Long-RL's value of the same name was a prompt-token budget (10000 there is about 400 s of audio)."""
    missing_audio: Literal["skip", "silence"] = "skip"
    """Omni models: a video without an audio track is skipped (logged, counted in audio/skipped) or heard as
    silence as long as the video (counted in audio/silenced). A corrupt audio stream is always skipped (an
    error with strict_media)."""
    sft_response_template: str = "<think>{{ reasoning }}</think><answer>{{ answer }}</answer>"
    """CoT-SFT target (longrl.trainer.sft): Jinja over the row's fields; `answer` is the reference without <answer> tags."""


# ---------------------------------------------------------------------------------------------
# algorithm
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass
class AlgorithmConfig:
    adv_estimator: str = "grpo"
    """Advantage estimator, by registry name (`python3 -m longrl.algorithms` lists them)."""
    gamma: float = 1.0
    """Discount factor for token-level returns (reinforce_plus_plus, gae)."""
    lam: float = 1.0
    """GAE lambda."""
    norm_adv_by_std: bool = True
    """GRPO: divide by the group std. Dr.GRPO is false here (mean-centred only) together with
    worker.actor.loss_avg_mode=seq-mean-token-sum-norm (no per-response length normalisation)."""
    disable_kl: bool = False
    """Skip the reference model entirely (no ref forward, no KL)."""
    use_kl_loss: bool = True
    """KL to the reference as a loss term (true) or folded into the reward (false)."""
    kl_penalty: str = "low_var_kl"
    """KL estimator by registry name: kl (k1), abs, mse (k2), low_var_kl (k3), full."""
    kl_coef: float = 1.0e-2
    """Weight of the KL loss, or initial coefficient of the in-reward KL controller."""
    kl_type: Literal["fixed", "adaptive"] = "fixed"
    """In-reward KL controller."""
    kl_horizon: float = 10000.0
    """Adaptive KL controller horizon."""
    kl_target: float = 0.1
    """Adaptive KL controller target."""
    online_filtering: bool = False
    """DAPO dynamic sampling: drop groups whose mean score is outside (filter_low, filter_high)."""
    filter_key: str = "overall"
    """Which reward score the online filter reads."""
    filter_low: float = 0.01
    """Groups with mean score <= filter_low are dropped."""
    filter_high: float = 0.99
    """Groups with mean score >= filter_high are dropped."""


LossAvgMode = Literal["token", "seq", "seq-mean-token-sum-norm"]


# ---------------------------------------------------------------------------------------------
# workers
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass
class LoraConfig:
    rank: int = 0
    """LoRA rank (EasyR1's key): > 0 trains low-rank adapters (peft) instead of the model's weights; 0 = off."""
    alpha: int = 64
    """LoRA scaling numerator: an adapter's update is scaled by alpha / rank."""
    target_modules: str = "all-linear"
    """Modules that get adapters: "all-linear" (every linear layer but the output head) or comma-separated module
    names matched against the end of each module's name, e.g. "q_proj,k_proj,v_proj,o_proj"."""
    exclude_modules: str | None = None
    """A regular expression over full module names kept without adapters (peft's exclude_modules), e.g.
    ".*visual.*" for a vision-language model's vision tower; None excludes nothing."""


@dataclasses.dataclass
class ModelConfig:
    model_path: str = ""
    """Hugging Face model directory (local) to start from."""
    tokenizer_path: str | None = None
    """Tokenizer directory; None = model_path."""
    enable_gradient_checkpointing: bool = False
    """Recompute activations in backward to save memory."""
    trust_remote_code: bool = False
    """Passed to transformers."""
    freeze_vision_tower: bool = False
    """Keep the vision tower fixed (lets the update reuse cached video embeddings)."""
    lora: LoraConfig = dataclasses.field(default_factory=LoraConfig)
    """Low-rank adapters instead of full fine-tuning (the actor only)."""


@dataclasses.dataclass
class OptimConfig:
    lr: float = 1.0e-6
    """Peak learning rate."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW betas."""
    weight_decay: float = 1.0e-2
    """AdamW weight decay."""
    strategy: Literal["adamw", "adamw_bf16"] = "adamw"
    """Optimizer: adamw, or adamw_bf16 (AdamW whose moments are stored in bf16: half the optimizer memory)."""
    lr_warmup_ratio: float = 0.0
    """Fraction of training steps with linear warmup (used when lr_warmup_steps is None). The RL actor's and
    critic's schedules count RL steps, as EasyR1's (one scheduler step per update, whatever its optimizer
    steps); CoT-SFT's counts optimizer steps."""
    lr_warmup_steps: int | None = None
    """Warmup steps (RL steps for the actor and critic); overrides lr_warmup_ratio."""
    min_lr_ratio: float | None = None
    """Floor of the cosine schedule as a fraction of lr (None = 0); only with lr_scheduler_type=cosine."""
    lr_scheduler_type: Literal["constant", "cosine"] = "constant"
    """After warmup: constant lr, or cosine decay to lr*min_lr_ratio over the training steps (EasyR1's key)."""


@dataclasses.dataclass
class FSDPConfig:
    enable_full_shard: bool = True
    """Shard parameters, gradients and optimizer state across the world (FSDP2)."""
    enable_cpu_offload: bool = False
    """GPU runs: keep sharded parameters, gradients and optimizer state in CPU memory (FSDP2 CPUOffloadPolicy)."""
    enable_rank0_init: bool = False
    """Rank 0 alone reads the checkpoint; the other ranks build the model on the meta device and receive their
    shards from it by broadcast (one copy of the model in CPU memory per node instead of one per rank)."""
    torch_dtype: Literal["fp32", "bf16", "fp16"] | None = None
    """Parameter dtype while training; None = fp32 for the actor and the critic, bf16 for the reference on GPU
    (fp32 on CPU)."""
    mp_param_dtype: Literal["fp32", "bf16", "fp16"] | None = None
    """Mixed-precision compute dtype (EasyR1's key): FSDP2 casts the parameters to it for the forward and backward
    and keeps fp32 master weights and gradients. None = bf16 on GPU, no cast on CPU: CPUs without AVX512-BF16/AMX
    run bf16 matmuls far slower than fp32 (70x on this project's AVX2 machine; bench/step_profile.py measures it),
    so bf16 there is opt-in."""


@dataclasses.dataclass
class OffloadConfig:
    offload_params: bool = False
    """GPU runs: parameters live in CPU memory and stream to the GPU per layer (FSDP2 CPUOffloadPolicy)."""
    offload_optimizer: bool = False
    """GPU runs: optimizer state in CPU memory; FSDP2 offloads it with the parameters (either flag turns both on)."""


@dataclasses.dataclass
class TrainedRoleConfig:
    """What every trained model (actor, critic) is configured with."""

    global_batch_size: int = 8
    """Prompts per optimizer step, summed over all data-parallel ranks, as in EasyR1/Long-RL: an optimizer step
    takes their global_batch_size x worker.rollout.n responses (update_responses). (CoT-SFT: rows per step.)"""
    micro_batch_size_per_device_for_update: int = 4
    """Responses per forward/backward on one device (gradient accumulation fills the rest of the device's
    global_batch_size x worker.rollout.n / data-parallel size)."""
    micro_batch_size_per_device_for_experience: int = 8
    """Responses per forward when computing log-probs (actor) or values (critic)."""
    dynamic_batching: bool = True
    """Micro-batches packed to a token budget (the micro-batch size x the longest row's tokens) instead of a fixed
    count of rows, for the update, the log-prob (actor: also the reference's) or value passes; the loss weighting
    stays exact, and (actor) the driver orders the rows so the data-parallel ranks get about equal tokens. With
    worker.actor.share_prompt_prefix the actor and reference keep fixed micro-batches (a prompt's rows together)."""
    max_grad_norm: float = 1.0
    """Gradient clipping by global norm."""
    ppo_epochs: int = 1
    """Passes over the rollout batch per step."""
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    fsdp: FSDPConfig = dataclasses.field(default_factory=FSDPConfig)
    offload: OffloadConfig = dataclasses.field(default_factory=OffloadConfig)


@dataclasses.dataclass
class ActorConfig(TrainedRoleConfig):
    strategy: Literal["fsdp"] = "fsdp"
    """Training backend."""
    clip_ratio_low: float = 0.2
    """PPO lower clip: ratio >= 1 - clip_ratio_low."""
    clip_ratio_high: float = 0.3
    """PPO upper clip: ratio <= 1 + clip_ratio_high (DAPO clip-higher)."""
    clip_ratio_dual: float = 3.0
    """Dual-clip bound for negative advantages (ratio capped at this)."""
    loss_type: str = "ppo"
    """Policy loss by registry name: ppo, gspo, gspo_token, sapo, cispo."""
    loss_avg_mode: LossAvgMode = "token"
    """token: mean over all response tokens of the mini-batch; seq: mean of per-sequence means;
    seq-mean-token-sum-norm: mean over sequences of token sums / data.max_response_length (Dr.GRPO)."""
    tis_cap: float | None = None
    """Truncated importance sampling cap against the rollout engine's log-probs; None disables."""
    entropy_coef: float = 0.0
    """Entropy bonus coefficient."""
    tau_positive: float = 1.0
    """loss_type=sapo: temperature of the soft gate for tokens with advantage >= 0 (EasyR1's key and default)."""
    tau_negative: float = 1.05
    """loss_type=sapo: temperature of the soft gate for tokens with advantage < 0 (EasyR1's key and default)."""
    padding_free: bool = False
    """Pack sequences without pad tokens."""
    ulysses_size: int = 1
    """Ulysses sequence-parallel degree (ranks that split one sequence)."""
    share_prompt_prefix: bool = False
    """Old and reference log-probs run each unique prompt of a micro-batch once and its n responses against
    its KV cache (exact; long video prompts are not re-run n times); so does the update unless gradient
    checkpointing is on (its layers drop the cache). Needs ulysses_size=1 and padding_free=false."""


@dataclasses.dataclass
class RefConfig:
    fsdp: FSDPConfig = dataclasses.field(default_factory=lambda: FSDPConfig(torch_dtype=None))
    offload: OffloadConfig = dataclasses.field(default_factory=OffloadConfig)


@dataclasses.dataclass
class CriticConfig(TrainedRoleConfig):
    """The value model of PPO with GAE (algorithm.adv_estimator=gae); model_path empty = the actor's."""

    cliprange_value: float = 0.5
    """Value clipping around the old values."""
    optim: OptimConfig = dataclasses.field(default_factory=lambda: OptimConfig(lr=1.0e-5))


@dataclasses.dataclass
class RolloutConfig:
    name: Literal["vllm", "hf"] = "vllm"
    """Rollout engine: vllm (in process) or hf (transformers generate)."""
    n: int = 4
    """Responses sampled per prompt."""
    temperature: float = 1.0
    """Sampling temperature (the trainer's log-probs use the same)."""
    top_p: float = 1.0
    """Nucleus sampling."""
    top_k: int = -1
    """Top-k sampling; -1 disables."""
    seed: int = 1
    """Engine-level seed (each rank adds its rank)."""
    dtype: Literal["fp32", "bf16", "fp16"] = "bf16"
    """Rollout engine dtype."""
    gpu_memory_utilization: float = 0.6
    """vLLM GPU memory share (GPU only)."""
    kv_cache_space_gb: int = 1
    """vLLM CPU KV-cache size in whole GB (CPU only; VLLM_CPU_KVCACHE_SPACE)."""
    ignore_eos: bool = False
    """Keep generating past EOS (benchmarks)."""
    max_model_len: int | None = None
    """Longest prompt + response the engine holds (longer video prompts are skipped as overlong); None =
    data.max_prompt_length + data.max_response_length, plus for a vision-language model the video tokens of
    limit_videos videos at num_video_frames and data.max_pixels, at most the model's context."""
    trust_remote_code: bool = False
    """Let vLLM run the model directory's own code (models it does not know)."""
    disable_tqdm: bool = True
    """Hide vLLM's per-call progress bar (on by default here: every worker would print one per generate)."""
    enforce_eager: bool = True
    """Disable CUDA graphs in vLLM."""
    enable_chunked_prefill: bool = False
    """vLLM chunked prefill."""
    tensor_parallel_size: int = 1
    """vLLM tensor parallel size (1 on CPU)."""
    sync_bucket_mb: int = 512
    """Weight sync trainer -> engine: parameters are gathered one by one in the rollout dtype and streamed in
    buckets of this many MB; no full copy of the model is ever materialised."""
    max_num_batched_tokens: int = 8192
    """vLLM scheduler token budget per step."""
    max_num_seqs: int = 256
    """vLLM concurrent sequences."""
    limit_images: int = 0
    """Images per prompt (0 = text or video only)."""
    limit_videos: int = 1
    """Videos per prompt the engine accepts (vision-language models)."""
    num_video_frames: int = 16
    """Frames sampled per video; with data.video_fps set, the most frames a video gets."""
    cache_video_embeds: bool = True
    """Encode each video once per step and reuse the embeddings (VisionCache)."""
    tokens_per_frame: int | None = None
    """Language-model tokens per video frame, which sizes the engine's max_model_len as in Long-RL (prompt and
    response limits + limit_videos x num_video_frames x tokens_per_frame). VILA models: the projector's tokens +
    the newline (122 for NVILA-Lite, 257 for LongVILA-R1), checked against the checkpoint. None: from the
    model (data.max_pixels for Qwen-VL models)."""
    max_frames_vllm: int | None = None
    """VILA models: the most frames of a video the rollout engine gets (uniformly sub-sampled from the cached
    frame embeddings; the trainer keeps all num_video_frames), as Long-RL has it. None: all frames."""
    num_chunk_seq: int = 1
    """The rollout engine gets each generate call's prompts in this many chunks, so at most one chunk's prompt
    embeddings (VILA: every frame's, built on the host) exist at once. Long-RL's key bounds the host memory of
    its batch gather the same way."""
    val_override_config: dict[str, Any] = dataclasses.field(default_factory=lambda: {"temperature": 0.0, "n": 1})
    """Sampling overrides during validation."""
    num_steps: int = 10
    """Diffusion models: denoising steps per sample (Flow-GRPO samples with 10 for training)."""
    guidance_scale: float = 4.5
    """Diffusion models: classifier-free guidance scale in sampling and training; 1 = no CFG (one forward)."""
    resolution: int | None = None
    """Diffusion models: square outputs of this size in pixels; sets height and width (Long-RL's key)."""
    height: int = 512
    """Diffusion models: output height in pixels (a multiple of the VAE factor times the patch size)."""
    width: int = 512
    """Diffusion models: output width in pixels (a multiple of the VAE factor times the patch size)."""
    num_frames: int = 17
    """Video diffusion models (Wan): frames per video, of the form 4k+1 (the VAE compresses time 4x)."""
    noise_level: float = 0.7
    """Diffusion models: the SDE noise level a; the step's noise scale is a * sqrt(sigma / (1 - sigma))."""
    sde_window_size: int | None = None
    """Diffusion models: noisy (SDE) and trained steps per sample; the others are ODE steps and the group shares
    its initial noise (Flow-GRPO-Fast, MixGRPO). None = full-trajectory Flow-GRPO: every step but the last."""
    sde_window_range: tuple[int, int] | None = None
    """Diffusion models: [lo, hi), the steps where the window may start; None = anywhere it fits."""
    sde_window_schedule: Literal["random", "sliding"] = "random"
    """Diffusion models: random = a start drawn per RL step (Flow-GRPO-Fast); sliding = the start moves one step
    per RL step and wraps around (MixGRPO)."""


@dataclasses.dataclass
class RewardConfig:
    reward_type: Literal["batch", "sequential"] = "batch"
    """batch: the function scores a list of samples; sequential: one sample per call."""
    reward_function: str = "examples/reward_function/math.py:compute_score"
    """`path/to/file.py:function` returning per-sample dicts with at least `overall`."""
    reward_function_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Extra keyword arguments for the reward function."""
    skip_special_tokens: bool = True
    """Decode responses without special tokens before scoring."""
    timeout_s: float | None = 300.0
    """Seconds one call of the reward function may take (a batch, or one sample when sequential); a call that
    takes longer is an error naming the function and the sample. None waits forever."""


@dataclasses.dataclass
class WorkerConfig:
    actor: ActorConfig = dataclasses.field(default_factory=ActorConfig)
    critic: CriticConfig = dataclasses.field(default_factory=CriticConfig)
    ref: RefConfig = dataclasses.field(default_factory=RefConfig)
    rollout: RolloutConfig = dataclasses.field(default_factory=RolloutConfig)
    reward: RewardConfig = dataclasses.field(default_factory=RewardConfig)
    is_omni: bool | None = None
    """Long-RL's switch for Qwen2.5-Omni, here a check like data.is_omni."""
    vila_model: bool | None = None
    """Long-RL's switch for VILA models, here a check like data.vila_model."""


# ---------------------------------------------------------------------------------------------
# trainer
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass
class TrainerConfig:
    total_epochs: int = 1
    """Passes over the training set (max_steps wins when smaller)."""
    max_steps: int | None = None
    """Stop after this many RL steps."""
    project_name: str = "longrl"
    """Logger project."""
    experiment_name: str = "demo"
    """Logger run name."""
    logger: list[str] = dataclasses.field(default_factory=lambda: ["console", "file"])
    """Any of console, file (metrics.jsonl), wandb, tensorboard, swanlab, mlflow (the last two optional installs)."""
    nnodes: int = 1
    """Nodes in the Ray cluster used."""
    n_gpus_per_node: int = 2
    """Workers per node (GPUs, or CPU slots on CPU runs)."""
    ray_address: str | None = None
    """Attach to this running Ray cluster (or RAY_ADDRESS); None starts a local one."""
    device: Literal["auto", "cuda", "cpu"] = "auto"
    """Where the workers train: auto = cuda when the Ray cluster has GPUs (not the driver's own GPUs: a
    CPU-only head node drives GPU workers); cuda on a cluster without GPUs is an error."""
    critic_warmup: int = 0
    """Steps that update only the critic."""
    val_freq: int = -1
    """Validate every N steps; -1 disables."""
    val_before_train: bool = False
    """Validate once before the first step."""
    val_only: bool = False
    """Validate and exit."""
    val_generations_to_log: int = 0
    """Validation samples shown in the logs."""
    save_freq: int = -1
    """Checkpoint every N steps (and at the end); -1 disables."""
    save_limit: int = -1
    """Checkpoints kept; -1 keeps all."""
    save_checkpoint_path: str | None = None
    """Directory of checkpoints and metrics.jsonl; a re-run resumes from its latest checkpoint.
    None = checkpoints/<project_name>/<experiment_name>, as in EasyR1/Long-RL."""
    save_model_only: bool = False
    """Checkpoints hold the model without the optimizer state (about a third of the bytes with AdamW); a resume
    from one restarts the optimizer, so it is not exact."""
    find_last_checkpoint: bool = True
    """Resume from the latest checkpoint under save_checkpoint_path when there is one; false starts afresh."""
    load_checkpoint_path: str | None = None
    """Resume from this checkpoint (a global_step_N directory, or an experiment directory: its latest step)
    instead of the latest one under save_checkpoint_path."""
    worker_timeout_s: float = 3600.0
    """A worker call that takes longer is an error (the group is stopped) instead of a hang."""
    max_restarts: int = 0
    """When a worker dies, raises or hangs: restart the worker group from the last checkpoint up to this many
    times in one run (each logged, trainer/restarts); 0 stops the run at the first failure. A checkpoint save
    that fills the disk always stops the run: new workers would fill it again."""
    max_skipped_steps: int = 5
    """Stop the run after this many RL steps in a row whose update was skipped for a non-finite loss or
    gradient (actor/skipped_steps); 0 never stops."""
    max_try_make_batch: int = 4
    """Online filtering: generation rounds allowed to fill one batch."""


@dataclasses.dataclass
class Config:
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    algorithm: AlgorithmConfig = dataclasses.field(default_factory=AlgorithmConfig)
    worker: WorkerConfig = dataclasses.field(default_factory=WorkerConfig)
    trainer: TrainerConfig = dataclasses.field(default_factory=TrainerConfig)


# ---------------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------------
def _all_keys(cls: type, prefix: str = "") -> list[str]:
    keys = []
    for f in dataclasses.fields(cls):
        ftype = typing.get_type_hints(cls)[f.name]
        keys.append(prefix + f.name)
        if dataclasses.is_dataclass(ftype):
            keys.extend(_all_keys(ftype, prefix + f.name + "."))
    return keys


# Long-RL/EasyR1 keys of features longrl does not have yet: a ported script stops with the feature's name
# instead of a "did you mean" for a key that is not misspelt. Patterns as in fnmatch.
NOT_YET_BUILT = {
    # (a diffusion model is recognised from its directory, and guidance is set once, in worker.rollout)
    "*.diffusion": "diffusion RL (Flow-GRPO)", "worker.actor.guidance_scale": "diffusion RL (Flow-GRPO)",
    "worker.ref.guidance_scale": "diffusion RL (Flow-GRPO)", "worker.rollout.kl_reward": "diffusion RL (Flow-GRPO)",
    "worker.ref.scheduler": "diffusion RL (Flow-GRPO)", "worker.ref.ulysses_size": "diffusion RL (Flow-GRPO)",
    "*.fsdp.use_orig_params": "diffusion RL (Flow-GRPO)", "worker.actor.kl_penalty": "diffusion RL (Flow-GRPO)",
}


# Values of existing keys that name such a feature.
NOT_YET_BUILT_VALUES: dict[tuple[str, str], str] = {}


def _unknown_key_error(key: str) -> ConfigError:
    feature = next((f for pattern, f in NOT_YET_BUILT.items() if fnmatch.fnmatchcase(key, pattern)), None)
    if feature is not None:
        return ConfigError(f"config key {key!r} belongs to {feature}, which longrl does not implement yet; "
                           f"remove the key (see README, 'Porting from Long-RL/EasyR1')")
    valid = _all_keys(Config)
    leaf = key.rsplit(".", 1)[-1]
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6) or [
        k for k in valid if k.endswith("." + leaf)
    ][:1] or difflib.get_close_matches(leaf, [k.rsplit(".", 1)[-1] for k in valid], n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return ConfigError(f"unknown config key {key!r}{hint}")


def coerce(value: Any, ftype: Any, key: str) -> Any:
    """Check `value` against the annotation `ftype` and convert what is safe to convert (ConfigError naming `key`)."""
    origin, args = get_origin(ftype), get_args(ftype)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0])
    if value is None and ftype is not Any:  # never str(None): a null path once wrote into ./None
        raise ConfigError(f"{key}=null is not allowed here; give a value, or leave the key out to keep its default")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}={value!r} is not allowed; choose from {list(args)}")
        return value
    if ftype is Any:
        return value
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v.strip() for v in value.strip("[]").split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}={value!r} must be a list")
        item = args[0] if args else Any
        return origin(coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}={value!r} must be a mapping")
        return dict(value)
    if ftype is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ConfigError(f"{key}={value!r} must be true or false")
    if ftype is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise ConfigError(f"{key}={value!r} must be an integer")
        return int(value)
    if ftype is float:
        try:  # YAML reads `1e-6` (no dot) as a string
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}={value!r} must be a number") from None
    if ftype is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{key}={value!r} must be a string")
        return str(value)
    raise AssertionError(f"unsupported annotation {ftype} for {key}")


def _build(default: Any, values: dict[str, Any], prefix: str = "") -> Any:
    """`default` (a dataclass instance) with `values` applied, section by section."""
    hints = typing.get_type_hints(type(default))
    names = {f.name for f in dataclasses.fields(default)}
    updates = {}
    for name, value in values.items():
        if name not in names:
            raise _unknown_key_error(prefix + name)
        if dataclasses.is_dataclass(hints[name]):
            if not isinstance(value, dict):
                raise ConfigError(f"{prefix}{name} is a section; set its keys, e.g. {prefix}{name}.<key>=...")
            updates[name] = _build(getattr(default, name), value, f"{prefix}{name}.")
        else:
            feature = NOT_YET_BUILT_VALUES.get((prefix + name, value)) if isinstance(value, str) else None
            if feature is not None:
                raise ConfigError(f"{prefix}{name}={value!r} belongs to {feature}, which longrl does not implement "
                                  f"yet; choose another value (see README, 'Porting from Long-RL/EasyR1')")
            updates[name] = coerce(value, hints[name], prefix + name)
    return dataclasses.replace(default, **updates)


def _read_yaml(path: str) -> DictConfig:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {path!r} does not exist")
    try:
        data = OmegaConf.load(p)
    except (OmegaConfBaseException, yaml.YAMLError) as e:
        raise ConfigError(f"config file {path!r} is not valid YAML: {e}") from None
    if not isinstance(data, DictConfig):
        raise ConfigError(f"config file {path!r} must hold a mapping of sections")
    return data


def _read_override(arg: str) -> DictConfig:
    """`a.b.c=value`, parsed as OmegaConf parses a dotlist (`null`, `[a,b]`, `1e-6`, `${interpolation}`)."""
    key, text = arg.split("=", 1)
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"argument {arg!r} has an empty key; write section.key=value")
    try:
        return OmegaConf.from_dotlist([f"{key}={text}" if text else f"{key}=''"])  # `key=` means the empty string
    except OmegaConfBaseException as e:
        raise ConfigError(f"cannot parse {arg!r}: {e}") from None


def load_config(args: list[str]) -> Config:
    """Build a Config from `config=file.yaml` (any number, in order) and `a.b.c=value` overrides.

    The layers are merged by OmegaConf onto the defaults, as in EasyR1/Long-RL, so `null`, `${a.b}`
    interpolation (also of defaults) and dotlist syntax mean what they mean there. The merged tree is then
    checked against the dataclasses here rather than by OmegaConf's structured configs, which cannot express
    `Literal` choices or name the closest key of a typo.
    """
    layers = [OmegaConf.create(to_dict(Config()))]
    for arg in args:
        if "=" not in arg:
            raise ConfigError(f"argument {arg!r} is not of the form key=value (or config=path.yaml)")
        key, text = arg.split("=", 1)
        layers.append(_read_yaml(text) if key == "config" else _read_override(arg))
    try:
        tree = OmegaConf.to_container(OmegaConf.merge(*layers), resolve=True)
    except OmegaConfBaseException as e:
        where = getattr(e, "full_key", None)
        raise ConfigError(f"{where or 'config'}: {e.msg if hasattr(e, 'msg') else e}") from None
    return _build(Config(), tree)


def to_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain nested dicts (for logging and checkpoints)."""
    return dataclasses.asdict(cfg)


# ---------------------------------------------------------------------------------------------
# derived sizes (validation: longrl/validation.py)
# ---------------------------------------------------------------------------------------------
def checkpoint_dir(trainer: TrainerConfig) -> Path:
    """Where checkpoints and metrics go: trainer.save_checkpoint_path, else checkpoints/<project>/<experiment>."""
    if trainer.save_checkpoint_path is not None:
        return Path(trainer.save_checkpoint_path)
    return Path("checkpoints") / trainer.project_name / trainer.experiment_name


# trainer.logger choices and the package each needs (None: always there).
LOGGER_PACKAGES = {"console": None, "file": None, "wandb": "wandb", "tensorboard": "tensorboard",
                   "swanlab": "swanlab", "mlflow": "mlflow"}


def world_size(cfg: Config) -> int:
    """Worker processes: nnodes x n_gpus_per_node."""
    return cfg.trainer.nnodes * cfg.trainer.n_gpus_per_node


def update_responses(cfg: Config, role: TrainedRoleConfig) -> int:
    """Responses in one optimizer step of a trained role: its global_batch_size counts prompts, each with its
    worker.rollout.n responses (EasyR1's workers multiply it by n the same way)."""
    return role.global_batch_size * cfg.worker.rollout.n



def skips_old_log_probs(cfg: Config) -> bool:
    """Whether a step can do without the separate old-log-prob pass: the actor's update is on-policy (one PPO epoch
    of one mini-batch, so the policy has not moved before its only optimizer step, and the update's own forward,
    detached, gives pi_old, as TRL's GRPOTrainer does) and nothing reads pi_old before the update (the in-reward
    KL, algorithm.use_kl_loss=false, does)."""
    kl_in_reward = not cfg.algorithm.disable_kl and not cfg.algorithm.use_kl_loss
    actor = cfg.worker.actor  # global_batch_size counts prompts, as rollout_batch_size does
    return actor.ppo_epochs == 1 and cfg.data.rollout_batch_size <= actor.global_batch_size and not kl_in_reward


def dp_size(cfg: Config) -> int:
    """Data-parallel ranks: the world divided by the sequence-parallel degree."""
    return world_size(cfg) // cfg.worker.actor.ulysses_size

