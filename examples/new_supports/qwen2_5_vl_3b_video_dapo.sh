#!/usr/bin/env bash
# DAPO-style GRPO on LongVideo-Reason with Qwen2.5-VL-3B-Instruct, as Long-RL's script of this name:
# clip-higher (0.2 / 0.28), no KL and no reference model, and online filtering (groups whose responses all
# score alike are dropped and refilled, 128 prompts a round). Arguments and environment as in
# qwen2_5_vl_3b_video_grpo.sh.
#
#   bash examples/new_supports/qwen2_5_vl_3b_video_dapo.sh VIDEO_PATH [key=value ...]
set -euo pipefail
video=()  # VIDEO_PATH stays first; the user's key=value arguments come last, so they win
if [[ $# -gt 0 && $1 != *=* ]]; then video=("$1"); shift; fi
EXPERIMENT_NAME=${EXPERIMENT_NAME:-qwen2_5_vl_3b_video_dapo} exec bash "$(dirname "$0")/qwen2_5_vl_3b_video_grpo.sh" "${video[@]}" \
    data.mini_rollout_batch_size=128 \
    worker.actor.clip_ratio_low=0.2 \
    worker.actor.clip_ratio_high=0.28 \
    algorithm.disable_kl=true \
    algorithm.online_filtering=true \
    "$@"
