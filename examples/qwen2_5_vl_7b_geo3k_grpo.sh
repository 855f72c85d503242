#!/usr/bin/env bash
# GRPO on geometry3k with Qwen2.5-VL-7B-Instruct on one 8-GPU node: the 3B recipe
# (examples/qwen2_5_vl_3b_geo3k_grpo.sh, same environment variables) with vLLM over 2 GPUs per engine.
#
#   MODEL_PATH=/models/Qwen2.5-VL-7B-Instruct bash examples/qwen2_5_vl_7b_geo3k_grpo.sh [key=value ...]
set -euo pipefail
: "${MODEL_PATH:?set MODEL_PATH to a local Qwen2.5-VL-7B-Instruct directory}"
export EXPERIMENT_NAME=${EXPERIMENT_NAME:-qwen2_5_vl_7b_geo3k_grpo}
exec bash "$(dirname "$0")/qwen2_5_vl_3b_geo3k_grpo.sh" worker.rollout.tensor_parallel_size=2 "$@"
