"""The command lines of Long-RL's and EasyR1's example scripts, as data for the compatibility suite.

Each record is the argv that one script passes to `python3 -m verl.trainer.main`, with the script's own
shell variables expanded to their defaults and its quoting removed (what the program receives), except:
  {model}      the model path (MODEL_PATH, a hub id or $1 in the scripts),
  {train}/{val} the training/validation data (hub `name@split` ids or $1 in the scripts),
  {video_dir}  the video directory (VIDEO_PATH=$1/$2 in the scripts).
`config` is the file the script names with `config=`; its content is in CONFIGS under (project, file).

Sources (read through the public code index; NVlabs/Long-RL itself is not indexed, so its scripts come from
forks that carry them unchanged; EasyR1's from hiyouga/EasyR1 where indexed, else from a fork's copy):
  Long-RL  phc2017002/Long_RL_Modified @ ccf0439856edb0ee0a503905bd416d4b5ad0dfcd: examples/new_supports/*.sh,
           examples/qwen3_4b_math_grpo.sh, examples/config_diffusion.yaml, examples/config_video_diffusion.yaml
           Khadgar123/Long-RL: examples/config.yaml @ 01f684b0d8521f86a125253e49cd1474f6cb65a0,
           examples/qwen2_5_vl_3b_geo3k_grpo.sh @ 6b525f7723ad20588d168f34a54325881f12dc5c
           The other examples/*.sh of Long-RL are EasyR1's, inherited at the fork; their Long-RL copies are
           not indexed, so those records reuse EasyR1's argv (source says so) with Long-RL's config.yaml.
  EasyR1   hiyouga/EasyR1 (commit per record), else uuuaaaaa/tool_rl @ 250b8da67c275265abcbbe347440822a0acf63a5
           (unmodified copies of EasyR1's scripts) and qiuuuuu622/EasyR1-async for qwen3_vl_4b.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Script:
    project: str  # "long-rl" | "easyr1": whose examples/config.yaml `config=examples/config.yaml` means
    source: str  # repo@commit:path the argv was read from
    family: str  # qwen2 | qwen2_5 | qwen3 | qwen2_5_vl | qwen3_vl | vila | qwen2_5_omni | diffusion | other
    model_type: str  # the Hugging Face model_type (or diffusers pipeline) of the model the script trains
    config: str  # the file named by `config=`
    argv: tuple[str, ...]  # everything after `config=...`, in the script's order
    note: str = ""

    @property
    def name(self) -> str:
        return f"{self.project}/{self.source.rsplit(':', 1)[1].removeprefix('examples/').removesuffix('.sh')}"


PHC = "phc2017002/Long_RL_Modified@ccf0439856edb0ee0a503905bd416d4b5ad0dfcd"
KHADGAR = "Khadgar123/Long-RL"
HIYOUGA = "hiyouga/EasyR1"
TOOL_RL = "uuuaaaaa/tool_rl@250b8da67c275265abcbbe347440822a0acf63a5"

# ---------------------------------------------------------------------------------------------------------------
# EasyR1's scripts (also the examples/*.sh that Long-RL inherited from EasyR1)
# ---------------------------------------------------------------------------------------------------------------
_GEO3K = ("data.train_files={train}", "data.val_files={val}")
_EASYR1_ARGV = {
    "examples/qwen2_5_7b_math_grpo.sh": (
        TOOL_RL, "qwen2_5", "qwen2",
        ("worker.actor.model.model_path={model}",)),
    "examples/qwen2_5_vl_3b_geo3k_grpo.sh": (
        f"{HIYOUGA}@4f003f7c7feb95338f005a874007c30b3bff4ee3", "qwen2_5_vl", "qwen2_5_vl",
        _GEO3K + ("worker.actor.model.model_path={model}", "trainer.experiment_name=qwen2_5_vl_3b_geo_grpo",
                  "trainer.n_gpus_per_node=2")),
    "examples/qwen2_5_vl_7b_geo3k_grpo.sh": (
        TOOL_RL, "qwen2_5_vl", "qwen2_5_vl",
        _GEO3K + ("worker.actor.model.model_path={model}", "trainer.experiment_name=qwen2_5_vl_7b_geo_grpo",
                  "trainer.n_gpus_per_node=8")),
    "examples/qwen2_5_vl_7b_geo3k_dapo.sh": (
        TOOL_RL, "qwen2_5_vl", "qwen2_5_vl",
        _GEO3K + ("data.mini_rollout_batch_size=128", "worker.actor.model.model_path={model}",
                  "worker.actor.clip_ratio_low=0.2", "worker.actor.clip_ratio_high=0.28", "algorithm.disable_kl=True",
                  "algorithm.online_filtering=True", "trainer.experiment_name=qwen2_5_vl_7b_geo_dapo",
                  "trainer.n_gpus_per_node=8")),
    "examples/qwen2_5_vl_7b_geo3k_reinforce.sh": (
        TOOL_RL, "qwen2_5_vl", "qwen2_5_vl",
        _GEO3K + ("worker.actor.model.model_path={model}", "algorithm.adv_estimator=reinforce_plus_plus",
                  "algorithm.use_kl_loss=false", "algorithm.kl_penalty=kl", "algorithm.kl_coef=1.0e-3",
                  "trainer.experiment_name=qwen2_5_vl_7b_geo_reinforce_pp", "trainer.n_gpus_per_node=8")),
    "examples/qwen2_5_vl_7b_geo3k_swanlab.sh": (
        TOOL_RL, "qwen2_5_vl", "qwen2_5_vl",
        _GEO3K + ("worker.actor.model.model_path={model}", "trainer.experiment_name=qwen2_5_vl_7b_geo_grpo",
                  "trainer.logger=[console,swanlab]",  # the script writes ['console','swanlab']; bash drops the quotes
                  "trainer.n_gpus_per_node=8")),
    "examples/qwen2_5_vl_7b_multi_image.sh": (
        TOOL_RL, "qwen2_5_vl", "qwen2_5_vl",
        _GEO3K + ("data.rollout_batch_size=256", "worker.actor.model.model_path={model}",
                  "worker.rollout.limit_images=2", "trainer.experiment_name=qwen2_5_vl_7b_multi_image",
                  "trainer.n_gpus_per_node=8")),
    "examples/qwen2_5_vl_7b_geo3k_cispo.sh": (
        f"{HIYOUGA}@f905d7dbd9d733d97514f8205088545625f1e647", "qwen2_5_vl", "qwen2_5_vl",
        _GEO3K + ("worker.actor.model.model_path={model}", "worker.actor.loss_type=cispo",
                  "trainer.experiment_name=qwen2_5_vl_7b_geo_cispo", "trainer.n_gpus_per_node=8")),
    "examples/qwen2_5_vl_32b_geo3k_grpo.sh": (
        f"{HIYOUGA}@51636b22a626840b938b1819b56030b5e93963c3", "qwen2_5_vl", "qwen2_5_vl",
        _GEO3K + ("worker.actor.model.model_path={model}", "worker.actor.fsdp.torch_dtype=bf16",
                  "worker.actor.optim.strategy=adamw_bf16", "worker.rollout.tensor_parallel_size=8",
                  "trainer.experiment_name=qwen2_5_vl_32b_geo_grpo", "trainer.n_gpus_per_node=8")),
    "examples/qwen3_4b_math_grpo.sh": (
        TOOL_RL, "qwen3", "qwen3",
        ("data.max_response_length=4096", "worker.actor.model.model_path={model}",
         "trainer.experiment_name=qwen3_4b_math_grpo")),
    "examples/qwen3_4b_math_grpo_lora.sh": (
        f"{HIYOUGA}@df9778fcce25767456af865939e1183212e04e68", "qwen3", "qwen3",
        ("data.max_response_length=2048", "worker.actor.model.model_path={model}",
         "trainer.experiment_name=qwen3_4b_math_grpo_lora", "worker.actor.model.lora.rank=64",
         "worker.actor.model.lora.alpha=64", "worker.actor.optim.lr=1e-5", "worker.rollout.tensor_parallel_size=1",
         "trainer.n_gpus_per_node=1")),
    "examples/qwen3_14b_dapo17k_dapo.sh": (
        f"{HIYOUGA}@cb66e199461d1c6bd5276590411e8857ebec3614", "qwen3", "qwen3",
        ("data.train_files={train}", "data.val_files={val}", "data.format_prompt=./examples/format_prompt/math.jinja",
         "data.max_prompt_length=2048", "data.max_response_length=20480", "data.rollout_batch_size=512",
         "data.mini_rollout_batch_size=1536", "worker.actor.micro_batch_size_per_device_for_update=1",
         "worker.actor.micro_batch_size_per_device_for_experience=8", "worker.actor.model.model_path={model}",
         "worker.actor.fsdp.torch_dtype=bf16", "worker.actor.optim.strategy=adamw_bf16",
         "worker.actor.optim.weight_decay=0.1", "worker.actor.optim.lr_warmup_steps=10",
         "worker.actor.global_batch_size=32", "worker.actor.clip_ratio_low=0.2", "worker.actor.clip_ratio_high=0.28",
         "worker.actor.clip_ratio_dual=10.0", "worker.rollout.n=16", "worker.rollout.max_num_batched_tokens=22528",
         'worker.rollout.val_override_config={"n":16,"temperature":1.0,"top_p":0.7}',
         "worker.rollout.gpu_memory_utilization=0.8",
         "worker.reward.reward_function=./examples/reward_function/dapo.py:compute_score",
         'worker.reward.reward_function_kwargs={"max_response_length":20480,"overlong_buffer_length":4096,'
         '"overlong_penalty_factor":1.0}',
         "algorithm.disable_kl=True", "algorithm.online_filtering=True", "algorithm.filter_key=accuracy_normalized",
         "algorithm.filter_low=0.01", "algorithm.filter_high=0.99", "trainer.total_epochs=10",
         "trainer.max_try_make_batch=10", "trainer.experiment_name=qwen3_14b_dapo17k_dapo",
         "trainer.n_gpus_per_node=8")),
    "examples/qwen3_vl_4b_geo3k_grpo.sh": (
        "qiuuuuu622/EasyR1-async@1a88e2b48f467ca15bfe3e1a57d89f7f5db66b6f", "qwen3_vl", "qwen3_vl",
        _GEO3K + ("worker.actor.model.model_path={model}", "trainer.experiment_name=qwen3_vl_4b_geo_grpo",
                  "trainer.n_gpus_per_node=2")),
    "examples/qwen3_vl_30b_geo3k_grpo.sh": (
        f"{HIYOUGA}@4cafc912d131f0cea60c6595ae3091f53f6ed4f7", "qwen3_vl", "qwen3_vl_moe",
        _GEO3K + ("worker.actor.model.model_path={model}", "worker.actor.fsdp.torch_dtype=bf16",
                  "worker.actor.optim.strategy=adamw_bf16", "worker.rollout.tensor_parallel_size=8",
                  "trainer.experiment_name=qwen3_vl_30b_geo_grpo", "trainer.n_gpus_per_node=8")),
    "examples/glm4.1v_9b_thinking_geo3k_grpo.sh": (
        f"{HIYOUGA}@8e353144f2219832392629c358b645b71b449144", "other", "glm4v",
        _GEO3K + ("worker.actor.model.model_path={model}", "trainer.experiment_name=glm4.1v_thinking_geo_grpo",
                  "worker.actor.padding_free=False", "trainer.n_gpus_per_node=8")),
    "examples/baselines/qwen2_5_vl_3b_clevr.sh": (
        TOOL_RL, "qwen2_5_vl", "qwen2_5_vl",
        _GEO3K + ("data.format_prompt=./examples/format_prompt/r1v.jinja", "worker.actor.model.model_path={model}",
                  "worker.rollout.tensor_parallel_size=1", "worker.reward.reward_type=sequential",
                  "worker.reward.reward_function=./examples/reward_function/r1v.py:compute_score",
                  "trainer.experiment_name=qwen2_5_vl_3b_clevr", "trainer.n_gpus_per_node=2")),
    "examples/baselines/qwen2_5_vl_3b_geoqa8k.sh": (
        TOOL_RL, "qwen2_5_vl", "qwen2_5_vl",
        _GEO3K + ("data.format_prompt=./examples/format_prompt/r1v.jinja", "worker.actor.model.model_path={model}",
                  "worker.rollout.tensor_parallel_size=1", "worker.reward.reward_type=sequential",
                  "worker.reward.reward_function=./examples/reward_function/r1v.py:compute_score",
                  "trainer.experiment_name=qwen2_5_vl_3b_geoqa8k", "trainer.n_gpus_per_node=8")),
}


EASYR1 = [
    Script("easyr1", f"{src}:{path}", family, model_type, "examples/config.yaml", argv)
    for path, (src, family, model_type, argv) in _EASYR1_ARGV.items()
]

# Long-RL's copies of these are not in the index; the scripts predate the fork and Long-RL kept examples/*.sh.
_INHERITED_BY_LONG_RL = (
    "examples/qwen2_5_7b_math_grpo.sh", "examples/qwen2_5_vl_7b_geo3k_grpo.sh",
    "examples/qwen2_5_vl_7b_geo3k_dapo.sh", "examples/qwen2_5_vl_7b_geo3k_reinforce.sh",
    "examples/qwen2_5_vl_7b_geo3k_swanlab.sh", "examples/qwen2_5_vl_7b_multi_image.sh",
    "examples/qwen2_5_vl_32b_geo3k_grpo.sh", "examples/baselines/qwen2_5_vl_3b_clevr.sh",
    "examples/baselines/qwen2_5_vl_3b_geoqa8k.sh",
)

# ---------------------------------------------------------------------------------------------------------------
# Long-RL's own scripts
# ---------------------------------------------------------------------------------------------------------------
_R1V = ("data.format_prompt=./examples/format_prompt/r1v.jinja",)
_R1V_REWARD = ("worker.reward.reward_type=sequential",
               "worker.reward.reward_function=./examples/reward_function/r1v.py:compute_score")
_LONG_VIDEO = ("data.train_files={train}", "data.val_files={val}", "data.video_dir={video_dir}")
_NO_VAL = ("trainer.val_before_train=false", "trainer.val_freq=-1")


def _vila_video(frames: int, tokens_per_frame: int, experiment: str) -> tuple[str, ...]:
    return (_LONG_VIDEO + _R1V + (
        "data.vila_model=true", f"worker.rollout.num_video_frames={frames}",
        f"worker.rollout.tokens_per_frame={tokens_per_frame}",
        f"worker.rollout.max_num_batched_tokens={frames * tokens_per_frame + 8192}",
        "worker.rollout.trust_remote_code=true") + _R1V_REWARD + (
        "worker.vila_model=true", "worker.actor.model.trust_remote_code=true", "worker.actor.ulysses_size=4",
        "worker.actor.model.model_path={model}", f"trainer.experiment_name={experiment}",
        "trainer.n_gpus_per_node=8") + _NO_VAL)


def _qwen_vl_video(extra_actor: tuple[str, ...], tail: tuple[str, ...], experiment: str,
                   data_extra: tuple[str, ...] = ()) -> tuple[str, ...]:
    return (_LONG_VIDEO + _R1V + data_extra + (
        "worker.actor.padding_free=true", "worker.actor.ulysses_size=4", "worker.actor.model.model_path={model}",
        "worker.rollout.num_video_frames=32", f"worker.rollout.max_num_batched_tokens={32 * 60 + 8192}")
        + _R1V_REWARD + extra_actor + tail + (
        f"trainer.experiment_name={experiment}", "trainer.n_gpus_per_node=8") + _NO_VAL)


_LONG_RL_ARGV = {
    "examples/new_supports/longvila_7b_video_grpo.sh": (
        "longvila", "llava_llama", "examples/config.yaml", _vila_video(256, 257, "longvila_7b_video"), ""),
    "examples/new_supports/nvila_2b_video_grpo.sh": (
        "nvila", "llava_llama", "examples/config.yaml", _vila_video(32, 122, "nvila_lite_2b_video"), ""),
    "examples/new_supports/nvila_2b_clevr_grpo.sh": (
        "nvila", "llava_llama", "examples/config.yaml",
        ("data.train_files={train}", "data.val_files={val}") + _R1V + ("data.vila_model=true",) + _R1V_REWARD + (
            "worker.vila_model=true", "worker.actor.model.trust_remote_code=true",
            "worker.actor.model.model_path={model}", "worker.rollout.trust_remote_code=true",
            "trainer.experiment_name=nvila_lite_2b_clevr", "trainer.n_gpus_per_node=8"), ""),
    "examples/new_supports/qwen2_5_3b_math_grpo.sh": (
        "qwen2_5", "qwen2", "examples/config.yaml",
        ("data.train_files={train}", "data.val_files={train}",  # the script passes $DATA_PATH for both
         "data.max_response_length=2048", "worker.actor.model.model_path={model}") + _R1V_REWARD + (
            "trainer.experiment_name=qwen2_5_3b_math_grpo", "trainer.save_freq=100"), ""),
    "examples/new_supports/qwen2_5_omni_3b_grpo.sh": (
        "qwen2_5_omni", "qwen2_5_omni", "examples/config.yaml",
        _LONG_VIDEO + ("data.is_omni=true", "data.audio_max_length=10000") + _R1V + (
            "worker.is_omni=true", "worker.actor.padding_free=false", "worker.actor.ulysses_size=1",
            "worker.actor.model.model_path={model}", "worker.rollout.tensor_parallel_size=1",
            "worker.rollout.max_model_len=20000", "worker.rollout.max_num_batched_tokens=100000") + _R1V_REWARD + (
            "trainer.experiment_name=qwen2_5_omni_3b",) + _NO_VAL + ("trainer.n_gpus_per_node=8",), ""),
    "examples/new_supports/qwen2_5_vl_3b_video_1h.sh": (
        "qwen2_5_vl", "qwen2_5_vl", "examples/config.yaml",
        _LONG_VIDEO + ("data.num_workers=1", "data.rollout_batch_size=8") + _R1V + (
            "worker.actor.padding_free=true", "worker.actor.ulysses_size=8", "worker.actor.global_batch_size=8",
            "worker.actor.micro_batch_size_per_device_for_update=1",
            "worker.actor.micro_batch_size_per_device_for_experience=1", "worker.actor.model.model_path={model}",
            "worker.rollout.num_video_frames=3600", "worker.rollout.tokens_per_frame=60",
            "worker.rollout.max_num_batched_tokens=256000", "worker.rollout.gpu_memory_utilization=0.4",
            "worker.rollout.num_chunk_seq=60") + _R1V_REWARD + (
            "trainer.experiment_name=qwen2_5_vl_3b_video_1h", "trainer.n_gpus_per_node=8", "trainer.total_epochs=1",
            "trainer.load_checkpoint_path=checkpoints/easy_r1/qwen2_5_vl_3b_video_1h", "trainer.nnodes=1") + _NO_VAL,
        "nnodes defaults to 1. The script sets num_video_frames=3600 and then num_video_frames=$1 (the video "
        "directory, a bug); 3600, the intended value, is used here."),
    "examples/new_supports/qwen2_5_vl_3b_video_grpo.sh": (
        "qwen2_5_vl", "qwen2_5_vl", "examples/config.yaml",
        _qwen_vl_video((), (), "qwen2_5_vl_3b_video_grpo"), ""),
    "examples/new_supports/qwen2_5_vl_3b_video_dapo.sh": (
        "qwen2_5_vl", "qwen2_5_vl", "examples/config.yaml",
        _qwen_vl_video(("worker.actor.clip_ratio_low=0.2", "worker.actor.clip_ratio_high=0.28"),
                       ("algorithm.disable_kl=True", "algorithm.online_filtering=True"), "qwen2_5_vl_3b_video_dapo",
                       data_extra=("data.mini_rollout_batch_size=128",)), ""),
    "examples/new_supports/qwen2_5_vl_3b_video_reinforce.sh": (
        "qwen2_5_vl", "qwen2_5_vl", "examples/config.yaml",
        _qwen_vl_video((), ("algorithm.adv_estimator=reinforce_plus_plus", "algorithm.use_kl_loss=false",
                            "algorithm.kl_penalty=kl", "algorithm.kl_coef=1.0e-3"), "qwen2_5_vl_3b_video_reinforce"),
        ""),
    "examples/new_supports/sd3_image_grpo.sh": (
        "diffusion", "sd3", "examples/config_diffusion.yaml",
        ("worker.actor.model.trust_remote_code=true", "worker.rollout.trust_remote_code=true",
         "worker.actor.model.model_path={model}", "trainer.experiment_name=image_diffusion_grpo",
         "trainer.n_gpus_per_node=8"), ""),
    "examples/new_supports/wan_video_grpo.sh": (
        "diffusion", "wan", "examples/config_video_diffusion.yaml",
        ("worker.actor.model.trust_remote_code=true", "worker.rollout.trust_remote_code=true",
         "worker.actor.model.model_path={model}", "trainer.experiment_name=video_generation_grpo",
         "trainer.n_gpus_per_node=8"), ""),
    "examples/qwen3_4b_math_grpo.sh": (
        "qwen3", "qwen3", "examples/config.yaml",
        ("data.max_response_length=4096", "worker.actor.ulysses_size=2", "data.val_batch_size=32",
         "data.rollout_batch_size=32", "worker.actor.global_batch_size=32", "worker.actor.model.model_path={model}",
         "trainer.experiment_name=qwen3_4b_math_grpo"), ""),
}

LONG_RL = [
    Script("long-rl", f"{PHC}:{path}", family, model_type, config, argv, note)
    for path, (family, model_type, config, argv, note) in _LONG_RL_ARGV.items()
] + [
    Script("long-rl", f"{KHADGAR}@6b525f7723ad20588d168f34a54325881f12dc5c:examples/qwen2_5_vl_3b_geo3k_grpo.sh",
           "qwen2_5_vl", "qwen2_5_vl", "examples/config.yaml",
           _GEO3K + ("worker.actor.model.model_path={model}", "worker.rollout.tensor_parallel_size=1",
                     "trainer.experiment_name=qwen2_5_vl_3b_geo_grpo", "trainer.n_gpus_per_node=2",
                     "trainer.logger=[console,tensorboard]"),
           "the fork added the trainer.logger line (and a TENSORBOARD_DIR export); kept as found"),
] + [
    Script("long-rl", s.source, s.family, s.model_type, s.config, s.argv,
           "EasyR1's script, which Long-RL inherited; its Long-RL copy is not indexed, so EasyR1's is used")
    for s in EASYR1 if s.source.rsplit(":", 1)[1] in _INHERITED_BY_LONG_RL
]

SCRIPTS = LONG_RL + EASYR1

# ---------------------------------------------------------------------------------------------------------------
# The config files the scripts name
# ---------------------------------------------------------------------------------------------------------------
# Khadgar123/Long-RL@01f684b's examples/config.yaml. The fork changed the logger to ["console", "tensorboard"]
# (as it did in its scripts); Long-RL's own diffusion configs, derived from this file, keep EasyR1's
# ["console", "wandb"], which is restored here.
LONG_RL_CONFIG = """\
data:
  train_files: hiyouga/math12k@train
  val_files: hiyouga/math12k@test
  prompt_key: problem
  answer_key: answer
  image_key: images
  image_dir: null
  max_prompt_length: 2048
  max_response_length: 2048
  rollout_batch_size: 512  # equivalent to verl's data.train_batch_size
  mini_rollout_batch_size: null  # equivalent to verl's data.gen_batch_size
  val_batch_size: 1024
  format_prompt: ./examples/format_prompt/math.jinja
  override_chat_template: null
  shuffle: true
  seed: 1
  min_pixels: 262144
  max_pixels: 4194304
  filter_overlong_prompts: true

algorithm:
  adv_estimator: grpo
  disable_kl: false
  use_kl_loss: true
  kl_penalty: low_var_kl
  kl_coef: 1.0e-2
  online_filtering: false  # dapo filter groups
  filter_key: overall
  filter_low: 0.01
  filter_high: 0.99

worker:
  actor:
    global_batch_size: 128  # equivalent to verl's actor.ppo_mini_batch_size
    micro_batch_size_per_device_for_update: 4  # equivalent to verl's actor.ppo_micro_batch_size_per_gpu
    micro_batch_size_per_device_for_experience: 16  # equivalent to verl's rollout.log_prob_micro_batch_size_per_gpu
    max_grad_norm: 1.0
    padding_free: true
    ulysses_size: 1
    model:
      model_path: Qwen/Qwen2.5-7B-Instruct
      enable_gradient_checkpointing: true
      trust_remote_code: false
      freeze_vision_tower: false
    optim:
      lr: 1.0e-6
      weight_decay: 1.0e-2
      strategy: adamw  # {adamw, adamw_bf16}
      lr_warmup_ratio: 0.0
    fsdp:
      enable_full_shard: true
      enable_cpu_offload: false
      enable_rank0_init: true
    offload:
      offload_params: true  # true: more CPU memory; false: more GPU memory
      offload_optimizer: true  # true: more CPU memory; false: more GPU memory

  rollout:
    n: 5
    temperature: 1.0
    top_p: 0.99
    gpu_memory_utilization: 0.6
    enforce_eager: false
    enable_chunked_prefill: false
    tensor_parallel_size: 2
    limit_images: 0
    val_override_config:
      temperature: 0.5
      n: 1

  ref:
    fsdp:
      enable_full_shard: true
      enable_cpu_offload: true  # true: more CPU memory; false: more GPU memory
      enable_rank0_init: true
    offload:
      offload_params: false

  reward:
    reward_type: batch
    reward_function: ./examples/reward_function/math.py:compute_score

trainer:
  total_epochs: 15
  max_steps: null
  project_name: easy_r1
  experiment_name: qwen2_5_7b_math_grpo
  logger: ["console", "wandb"]
  nnodes: 1
  n_gpus_per_node: 8
  max_try_make_batch: 20  # -1 means no limit
  val_freq: 5  # -1 to disable
  val_before_train: true
  val_only: false
  val_generations_to_log: 3
  save_freq: 5  # -1 to disable
  save_limit: 3  # -1 to disable
  save_model_only: false
  save_checkpoint_path: null
  load_checkpoint_path: null
"""

# Long-RL's diffusion configs differ from each other only where the video one adds keys; both from PHC.
_DIFFUSION_CONFIG = """\
data:
  train_files: {train_files}
  val_files: {val_files}
  prompt_key: {prompt_key}
  answer_key: answer
  image_key: images
  image_dir: null
  max_prompt_length: 2048
  max_response_length: 2048
  rollout_batch_size: {batch}  # equivalent to verl's data.train_batch_size
  mini_rollout_batch_size: null  # equivalent to verl's data.gen_batch_size
  val_batch_size: {batch}
  format_prompt: ./examples/format_prompt/math.jinja
  override_chat_template: null
  shuffle: true
  seed: 1
  min_pixels: 262144
  max_pixels: 4194304
  filter_overlong_prompts: false
  diffusion: true

algorithm:
  adv_estimator: grpo
  disable_kl: false
  use_kl_loss: true
  kl_penalty: flow_grpo

  kl_coef: 1.0e-2
  online_filtering: false  # dapo filter groups
  filter_key: overall
  filter_low: 0.01
  filter_high: 0.99

worker:
  actor:
    global_batch_size: 1  # equivalent to verl's actor.ppo_mini_batch_size
    micro_batch_size_per_device_for_update: 1  # equivalent to verl's actor.ppo_micro_batch_size_per_gpu
    micro_batch_size_per_device_for_experience: 1  # equivalent to verl's rollout.log_prob_micro_batch_size_per_gpu
    max_grad_norm: 1.0
    padding_free: true
    ulysses_size: 1
    diffusion: true
    kl_penalty: flow_grpo
    loss_avg_mode: seq
    guidance_scale: 4.5
    model:
      model_path: stabilityai/stable-diffusion-3.5-medium
      enable_gradient_checkpointing: true
      trust_remote_code: false
      freeze_vision_tower: false
    optim:
      lr: 1.0e-6
      weight_decay: 1.0e-2
      strategy: adamw  # {{adamw, adamw_bf16}}
      lr_warmup_ratio: 0.0
    fsdp:
      enable_full_shard: true
      enable_cpu_offload: false
      enable_rank0_init: true{orig_params}
    offload:
      offload_params: true  # true: more CPU memory; false: more GPU memory
      offload_optimizer: true  # true: more CPU memory; false: more GPU memory

  rollout:
    n: {n}
    temperature: 1.0
    top_p: 0.99
    gpu_memory_utilization: 0.6
    enforce_eager: false
    enable_chunked_prefill: false
    tensor_parallel_size: 1
    limit_images: 0
    val_override_config:
      temperature: 0.5
      n: 1
    diffusion: true
    guidance_scale: 4.5
    resolution: 768
    num_steps: {num_steps}
    kl_reward: 0.0{video_rollout}

  ref:
    ulysses_size: 1
    diffusion: true
    guidance_scale: 4.5
    scheduler: {scheduler}
    fsdp:
      enable_full_shard: true
      enable_cpu_offload: true  # true: more CPU memory; false: more GPU memory
      enable_rank0_init: true{orig_params}
    offload:
      offload_params: false

  reward:
    reward_type: batch
    reward_function: ./examples/reward_function/diffusion.py:compute_score
    diffusion: true

trainer:
  total_epochs: 15
  max_steps: null
  project_name: easy_r1
  experiment_name: {experiment}
  logger: ["console", "wandb"]
  nnodes: 1
  n_gpus_per_node: 8
  max_try_make_batch: 20  # -1 means no limit
  val_freq: -1 # -1 to disable
  val_before_train: false
  val_only: false
  val_generations_to_log: 3
  save_freq: 1  # -1 to disable
  save_limit: 3  # -1 to disable
  save_model_only: false
  save_checkpoint_path: null
  load_checkpoint_path: null
  diffusion: true
"""

_ORIG_PARAMS = "\n      use_orig_params: true"
LONG_RL_DIFFUSION_CONFIG = _DIFFUSION_CONFIG.format(
    train_files="./examples/diffusion_data/geneval/train_metadata.prompts.jsonl",
    val_files="./examples/diffusion_data/geneval/test_metadata.prompts.jsonl", prompt_key="prompt", batch=2,
    orig_params="", n=5, num_steps=10, video_rollout="", scheduler="stabilityai/stable-diffusion-3.5-medium",
    experiment="sd3_5_medium_math_grpo")
LONG_RL_VIDEO_DIFFUSION_CONFIG = _DIFFUSION_CONFIG.format(
    train_files="./examples/diffusion_data/video/data.jsonl", val_files="./examples/diffusion_data/video/val_data.jsonl",
    prompt_key="text", batch=1, orig_params=_ORIG_PARAMS, n=2, num_steps=4,
    video_rollout="\n    num_frames: 17\n    height: 256\n    width: 256", scheduler="Wan-AI/Wan2.1-T2V-1.3B-Diffusers",
    experiment="wan2_1_t2v_1.3b_grpo")

# hiyouga/EasyR1@46c6c210fddc939f81cf638f7d41d180ffdb17b7:examples/config.yaml
EASYR1_CONFIG = """\
data:
  train_files: hiyouga/math12k@train
  val_files: hiyouga/math12k@test
  prompt_key: problem
  answer_key: answer
  image_key: images
  video_key: videos
  image_dir: null
  video_fps: 2.0
  max_prompt_length: 2048
  max_response_length: 2048
  rollout_batch_size: 512  # equivalent to verl's data.train_batch_size
  mini_rollout_batch_size: null  # equivalent to verl's data.gen_batch_size
  val_batch_size: 1024
  format_prompt: ./examples/format_prompt/math.jinja
  override_chat_template: null
  shuffle: true
  seed: 1
  min_pixels: 262144
  max_pixels: 4194304
  filter_overlong_prompts: true

algorithm:
  adv_estimator: grpo # gspo
  disable_kl: false
  use_kl_loss: true
  kl_penalty: low_var_kl
  kl_coef: 1.0e-2
  online_filtering: false  # dapo filter groups
  filter_key: overall
  filter_low: 0.01
  filter_high: 0.99

worker:
  actor:
    global_batch_size: 128  # equivalent to verl's actor.ppo_mini_batch_size
    micro_batch_size_per_device_for_update: 1  # equivalent to verl's actor.ppo_micro_batch_size_per_gpu
    micro_batch_size_per_device_for_experience: 2  # equivalent to verl's rollout.log_prob_micro_batch_size_per_gpu
    max_grad_norm: 1.0
    padding_free: true
    dynamic_batching: true
    ulysses_size: 1
    model:
      model_path: Qwen/Qwen2.5-7B-Instruct
      enable_gradient_checkpointing: true
      trust_remote_code: false
      freeze_vision_tower: false
    optim:
      lr: 1.0e-6
      weight_decay: 1.0e-2
      strategy: adamw  # {adamw, adamw_bf16}
      lr_warmup_ratio: 0.0
    fsdp:
      enable_full_shard: true
      enable_cpu_offload: false
      enable_rank0_init: true
    offload:
      offload_params: true  # true: more CPU memory; false: more GPU memory
      offload_optimizer: true  # true: more CPU memory; false: more GPU memory

  rollout:
    n: 5
    temperature: 1.0
    top_p: 1.0
    limit_images: 0
    gpu_memory_utilization: 0.6
    enforce_eager: false
    enable_chunked_prefill: false
    tensor_parallel_size: 2
    disable_tqdm: false
    val_override_config:
      temperature: 0.6
      top_p: 0.95
      n: 1

  ref:
    fsdp:
      enable_full_shard: true
      enable_cpu_offload: true  # true: more CPU memory; false: more GPU memory
      enable_rank0_init: true
    offload:
      offload_params: false

  reward:
    reward_type: batch
    reward_function: ./examples/reward_function/math.py:compute_score

trainer:
  total_epochs: 15
  max_steps: null
  project_name: easy_r1
  experiment_name: qwen2_5_7b_math_grpo
  logger: ["console", "wandb"]
  nnodes: 1
  n_gpus_per_node: 8
  max_try_make_batch: 20  # -1 means no limit
  val_freq: 5  # -1 to disable
  val_before_train: true
  val_only: false
  val_generations_to_log: 3
  save_freq: 5  # -1 to disable
  save_limit: 3  # -1 to disable
  save_model_only: false
  save_checkpoint_path: null
  load_checkpoint_path: null
  find_last_checkpoint: true
"""

CONFIGS = {
    ("long-rl", "examples/config.yaml"): LONG_RL_CONFIG,
    ("long-rl", "examples/config_diffusion.yaml"): LONG_RL_DIFFUSION_CONFIG,
    ("long-rl", "examples/config_video_diffusion.yaml"): LONG_RL_VIDEO_DIFFUSION_CONFIG,
    ("easyr1", "examples/config.yaml"): EASYR1_CONFIG,
}
