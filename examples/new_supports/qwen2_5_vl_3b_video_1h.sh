#!/usr/bin/env bash
# Hour-long videos: GRPO on LongVideo-Reason with Qwen2.5-VL-3B-Instruct at 3,600 frames (~216k video
# tokens) on one 8-GPU node, Ulysses sequence parallel over all 8 GPUs. Arguments and environment as
# in qwen2_5_vl_3b_video_grpo.sh (NUM_VIDEO_FRAMES and ULYSSES_SIZE default to 3600 and 8 here).
#
#   MODEL_PATH=/models/Qwen2.5-VL-3B-Instruct bash examples/new_supports/qwen2_5_vl_3b_video_1h.sh VIDEO_PATH [key=value ...]
set -euo pipefail
video=()  # VIDEO_PATH stays first; the user's key=value arguments come last, so they win
if [[ $# -gt 0 && $1 != *=* ]]; then video=("$1"); shift; fi
NUM_VIDEO_FRAMES=${NUM_VIDEO_FRAMES:-3600} ULYSSES_SIZE=${ULYSSES_SIZE:-8} \
EXPERIMENT_NAME=${EXPERIMENT_NAME:-qwen2_5_vl_3b_video_1h} exec bash "$(dirname "$0")/qwen2_5_vl_3b_video_grpo.sh" "${video[@]}" \
    worker.rollout.gpu_memory_utilization=0.4 \
    "$@"
