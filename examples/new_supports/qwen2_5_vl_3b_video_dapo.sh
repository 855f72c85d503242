#!/usr/bin/env bash
# DAPO (arXiv:2503.14476) on LongVideo-Reason with Qwen2.5-VL-3B-Instruct: clip-higher, no KL, and
# dynamic sampling (groups whose responses all score the same are dropped and refilled, generating
# 16 prompts per node a round). Arguments and environment as in qwen2_5_vl_3b_video_grpo.sh.
#
#   MODEL_PATH=/models/Qwen2.5-VL-3B-Instruct bash examples/new_supports/qwen2_5_vl_3b_video_dapo.sh VIDEO_PATH [key=value ...]
set -euo pipefail
video=()  # VIDEO_PATH stays first; the user's key=value arguments come last, so they win
if [[ $# -gt 0 && $1 != *=* ]]; then video=("$1"); shift; fi
EXPERIMENT_NAME=${EXPERIMENT_NAME:-qwen2_5_vl_3b_video_dapo} exec bash "$(dirname "$0")/qwen2_5_vl_3b_video_grpo.sh" "${video[@]}" \
    algorithm.adv_estimator=dapo \
    algorithm.disable_kl=true \
    algorithm.use_kl_loss=false \
    algorithm.online_filtering=true \
    data.mini_rollout_batch_size=$((16 * ${NNODES:-1})) \
    worker.actor.clip_ratio_low=0.2 \
    worker.actor.clip_ratio_high=0.28 \
    worker.actor.loss_avg_mode=token \
    "$@"
