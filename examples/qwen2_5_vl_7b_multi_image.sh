#!/usr/bin/env bash
# GRPO on multi-image questions (two or more images per prompt, `<image>` placeholders in the text)
# with Qwen2.5-VL-7B-Instruct on one 8-GPU node, as EasyR1's multi-image example.
#
#   MODEL_PATH=/models/Qwen2.5-VL-7B-Instruct bash examples/qwen2_5_vl_7b_multi_image.sh [key=value ...]
#
# Environment as examples/qwen2_5_vl_3b_geo3k_grpo.sh, plus MAX_IMAGES [2]: images per prompt at most.
# TRAIN_FILES / VAL_FILES default to hiyouga/journeybench-multi-image-vqa@train / @test.
set -euo pipefail
: "${MODEL_PATH:?set MODEL_PATH to a local Qwen2.5-VL-7B-Instruct directory}"
export EXPERIMENT_NAME=${EXPERIMENT_NAME:-qwen2_5_vl_7b_multi_image}
export TRAIN_FILES=${TRAIN_FILES:-hiyouga/journeybench-multi-image-vqa@train}
export VAL_FILES=${VAL_FILES:-hiyouga/journeybench-multi-image-vqa@test}
exec bash "$(dirname "$0")/qwen2_5_vl_3b_geo3k_grpo.sh" \
    worker.rollout.tensor_parallel_size=2 \
    worker.rollout.limit_images="${MAX_IMAGES:-2}" \
    data.format_prompt=examples/format_prompt/r1v.jinja \
    data.max_pixels=1048576 \
    worker.reward.reward_function=examples/reward_function/r1v.py:compute_score \
    "$@"
