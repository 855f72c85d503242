#!/usr/bin/env bash
# REINFORCE++ (arXiv:2501.03262) on LongVideo-Reason with Qwen2.5-VL-3B-Instruct, as Long-RL's script of
# this name: token-level returns whitened over the batch, KL to the reference folded into the reward.
# Arguments and environment as in qwen2_5_vl_3b_video_grpo.sh.
#
#   bash examples/new_supports/qwen2_5_vl_3b_video_reinforce.sh VIDEO_PATH [key=value ...]
set -euo pipefail
video=()  # VIDEO_PATH stays first; the user's key=value arguments come last, so they win
if [[ $# -gt 0 && $1 != *=* ]]; then video=("$1"); shift; fi
EXPERIMENT_NAME=${EXPERIMENT_NAME:-qwen2_5_vl_3b_video_reinforce} exec bash "$(dirname "$0")/qwen2_5_vl_3b_video_grpo.sh" "${video[@]}" \
    algorithm.adv_estimator=reinforce_plus_plus \
    algorithm.use_kl_loss=false \
    algorithm.kl_penalty=kl \
    algorithm.kl_coef=1.0e-3 \
    "$@"
