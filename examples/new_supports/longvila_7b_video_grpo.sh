#!/usr/bin/env bash
# GRPO on LongVideo-Reason with LongVILA-R1-7B on one 8-GPU node, Ulysses sequence parallel 4:
# Long-RL's examples/new_supports/longvila_7b_video_grpo.sh, same arguments and hyper-parameters
# (configs/long_rl.yaml is Long-RL's examples/config.yaml). 256 frames of 257 tokens each (256 from the
# mlp_downsample_2x2_fix projector + the newline); vLLM runs the checkpoint's llm/ fed prompt embeddings.
#
#   bash examples/new_supports/longvila_7b_video_grpo.sh VIDEO_PATH [key=value ...]
#
# VIDEO_PATH (first argument, or environment): the directory that the dataset's video paths are relative to.
# MODEL_PATH [Efficient-Large-Model/LongVILA-R1-7B]: a local VILA checkpoint directory (config.json, llm/,
#   vision_tower/, mm_projector/) or a hub id.
# Optional environment, defaults in brackets:
#   TRAIN_FILES / VAL_FILES [LongVideo-Reason/longvideo-reason@train / @validation]
#   NUM_VIDEO_FRAMES [256]   ULYSSES_SIZE [4]   N_GPUS_PER_NODE [8]   EXPERIMENT_NAME [longvila_7b_video_grpo]
#   NNODES [1]   PYTHON [python3]   DRY_RUN=1: print the effective config and exit
set -euo pipefail
cd "$(dirname "$0")/../.."
if [[ $# -gt 0 && $1 != *=* ]]; then VIDEO_PATH=$1; shift; fi
: "${VIDEO_PATH:?set VIDEO_PATH (first argument or environment) to the directory holding the videos}"
MODEL_PATH=${MODEL_PATH:-Efficient-Large-Model/LongVILA-R1-7B}
EXPERIMENT_NAME=${EXPERIMENT_NAME:-longvila_7b_video_grpo}
NUM_VIDEO_FRAMES=${NUM_VIDEO_FRAMES:-256}
TOKENS_PER_FRAME=257
export MODEL_PATH EXPERIMENT_NAME NUM_VIDEO_FRAMES TOKENS_PER_FRAME VIDEO_PATH
exec bash "$(dirname "$0")/vila_video_grpo_common.sh" "$@"
