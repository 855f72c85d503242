#!/usr/bin/env bash
# GRPO on LongVideo-Reason with NVILA-Lite-2B on one 8-GPU node, Ulysses sequence parallel 4:
# Long-RL's examples/new_supports/nvila_2b_video_grpo.sh, same arguments and hyper-parameters. 32 frames of
# 122 tokens each (121 from the mlp_downsample_3x3_fix projector + the newline).
#
#   bash examples/new_supports/nvila_2b_video_grpo.sh VIDEO_PATH [key=value ...]
#
# MODEL_PATH [Efficient-Large-Model/NVILA-Lite-2B]; the other settings as in longvila_7b_video_grpo.sh
# (NUM_VIDEO_FRAMES [32], EXPERIMENT_NAME [nvila_2b_video_grpo]).
set -euo pipefail
cd "$(dirname "$0")/../.."
if [[ $# -gt 0 && $1 != *=* ]]; then VIDEO_PATH=$1; shift; fi
: "${VIDEO_PATH:?set VIDEO_PATH (first argument or environment) to the directory holding the videos}"
MODEL_PATH=${MODEL_PATH:-Efficient-Large-Model/NVILA-Lite-2B}
EXPERIMENT_NAME=${EXPERIMENT_NAME:-nvila_2b_video_grpo}
NUM_VIDEO_FRAMES=${NUM_VIDEO_FRAMES:-32}
TOKENS_PER_FRAME=122
export MODEL_PATH EXPERIMENT_NAME NUM_VIDEO_FRAMES TOKENS_PER_FRAME VIDEO_PATH
exec bash "$(dirname "$0")/vila_video_grpo_common.sh" "$@"
