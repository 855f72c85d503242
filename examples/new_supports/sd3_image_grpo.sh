#!/usr/bin/env bash
# Flow-GRPO on Stable Diffusion 3.5 Medium, one 8-GPU node (80 GB each): 512x512 images, 10 sampling steps,
# CFG 4.5, the flow_grpo KL (beta 0.04), PPO clip 1e-4, 24 images per prompt (flow_grpo's GenEval setting).
#
#   MODEL_PATH=/models/stable-diffusion-3.5-medium TRAIN_FILES=prompts.jsonl bash examples/new_supports/sd3_image_grpo.sh [key=value ...]
#
# MODEL_PATH (environment): a local diffusers pipeline directory (model_index.json); the trainer picks the diffusion
# worker from it. TRAIN_FILES: a .txt (one prompt a line) or .jsonl ("prompt" + metadata for the reward) file.
# Optional environment, defaults in brackets:
#   REWARD [examples/reward_function/jpeg.py:compressibility]: any `file.py:function` scoring images
#   WINDOW [unset]: e.g. WINDOW=2 for Flow-GRPO-Fast (2 noisy, trained steps starting in [0, 5))
#   N_GPUS_PER_NODE [8]   PYTHON [python3]
# Extra key=value arguments override any key (see configs/config.yaml). The CPU twin of this script is
# examples/cpu/sd3_tiny_grpo.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${MODEL_PATH:?set MODEL_PATH to a local stable-diffusion-3.5-medium diffusers directory}"
: "${TRAIN_FILES:?set TRAIN_FILES to a prompt file (.txt or .jsonl)}"
PYTHON=${PYTHON:-python3}
N_GPUS_PER_NODE=${N_GPUS_PER_NODE:-8}
window=()
if [[ -n ${WINDOW:-} ]]; then window=(worker.rollout.sde_window_size="$WINDOW" "worker.rollout.sde_window_range=[0,5]"); fi

exec "$PYTHON" -m longrl.trainer.main \
    config=configs/config.yaml \
    data.train_files="$TRAIN_FILES" \
    data.prompt_key=prompt \
    data.max_prompt_length=128 \
    data.rollout_batch_size=$((2 * N_GPUS_PER_NODE)) \
    algorithm.adv_estimator=grpo \
    algorithm.kl_penalty=flow_grpo \
    algorithm.kl_coef=0.04 \
    worker.actor.model.model_path="$MODEL_PATH" \
    worker.actor.model.enable_gradient_checkpointing=true \
    worker.actor.global_batch_size=$((N_GPUS_PER_NODE / 2)) \
    worker.actor.micro_batch_size_per_device_for_update=4 \
    worker.actor.micro_batch_size_per_device_for_experience=8 \
    worker.actor.clip_ratio_low=1e-4 \
    worker.actor.clip_ratio_high=1e-4 \
    worker.actor.optim.lr=1e-5 \
    worker.rollout.n=24 \
    worker.rollout.num_steps=10 \
    worker.rollout.guidance_scale=4.5 \
    worker.rollout.resolution=512 \
    worker.rollout.noise_level=0.7 \
    worker.reward.reward_function="${REWARD:-examples/reward_function/jpeg.py:compressibility}" \
    trainer.experiment_name=sd3_5_medium_flow_grpo \
    trainer.n_gpus_per_node="$N_GPUS_PER_NODE" \
    trainer.save_freq=50 \
    "${window[@]}" "$@"
