#!/usr/bin/env bash
# Flow-GRPO on Wan2.1-T2V-1.3B, one 8-GPU node (80 GB each): 17-frame 256x256 videos, 8 sampling steps,
# CFG 5, 4 videos per prompt, the JPEG reward averaged over frames (swap in your own video reward).
#
#   MODEL_PATH=/models/Wan2.1-T2V-1.3B-Diffusers TRAIN_FILES=prompts.txt bash examples/new_supports/wan_video_grpo.sh [key=value ...]
#
# MODEL_PATH (environment): a local diffusers WanPipeline directory. TRAIN_FILES: a .txt or .jsonl prompt file.
# Optional environment: REWARD, WINDOW, N_GPUS_PER_NODE, PYTHON as in sd3_image_grpo.sh.
# Needs `pip install longrl[diffusion]` (diffusers and accelerate). CPU twin: examples/cpu/wan_tiny_grpo.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${MODEL_PATH:?set MODEL_PATH to a local Wan2.1-T2V-1.3B-Diffusers directory}"
: "${TRAIN_FILES:?set TRAIN_FILES to a prompt file (.txt or .jsonl)}"
PYTHON=${PYTHON:-python3}
N_GPUS_PER_NODE=${N_GPUS_PER_NODE:-8}
window=()
if [[ -n ${WINDOW:-} ]]; then window=(worker.rollout.sde_window_size="$WINDOW" "worker.rollout.sde_window_range=[0,4]"); fi

exec "$PYTHON" -m longrl.trainer.main \
    config=configs/config.yaml \
    data.train_files="$TRAIN_FILES" \
    data.prompt_key=prompt \
    data.max_prompt_length=226 \
    data.rollout_batch_size="$N_GPUS_PER_NODE" \
    algorithm.kl_penalty=flow_grpo \
    algorithm.kl_coef=0.01 \
    worker.actor.model.model_path="$MODEL_PATH" \
    worker.actor.model.enable_gradient_checkpointing=true \
    worker.actor.global_batch_size="$N_GPUS_PER_NODE" \
    worker.actor.micro_batch_size_per_device_for_update=1 \
    worker.actor.micro_batch_size_per_device_for_experience=2 \
    worker.actor.clip_ratio_low=1e-4 \
    worker.actor.clip_ratio_high=1e-4 \
    worker.actor.optim.lr=1e-5 \
    worker.rollout.n=4 \
    worker.rollout.num_steps=8 \
    worker.rollout.guidance_scale=5.0 \
    worker.rollout.height=256 \
    worker.rollout.width=256 \
    worker.rollout.num_frames=17 \
    worker.reward.reward_function="${REWARD:-examples/reward_function/jpeg.py:compressibility}" \
    trainer.experiment_name=wan2_1_t2v_1_3b_flow_grpo \
    trainer.n_gpus_per_node="$N_GPUS_PER_NODE" \
    trainer.save_freq=50 \
    "${window[@]}" "$@"
