#!/usr/bin/env bash
# Baseline: GRPO on CLEVR counting (BUAADreamer/clevr_count_70k) with Qwen2.5-VL-3B-Instruct, one 8-GPU
# node, R1-V format and reward, as EasyR1's baseline.
#
#   MODEL_PATH=/models/Qwen2.5-VL-3B-Instruct bash examples/baselines/qwen2_5_vl_3b_clevr.sh [key=value ...]
#
# Environment as examples/qwen2_5_vl_3b_geo3k_grpo.sh; TRAIN_FILES / VAL_FILES default to
# BUAADreamer/clevr_count_70k@train / @test. A synthetic CLEVR-style set for trying it out:
#   python3 -m longrl.data.synthetic clevr --out data/clevr && TRAIN_FILES=data/clevr/train.jsonl VAL_FILES=...
set -euo pipefail
: "${MODEL_PATH:?set MODEL_PATH to a local Qwen2.5-VL-3B-Instruct directory}"
export EXPERIMENT_NAME=${EXPERIMENT_NAME:-qwen2_5_vl_3b_clevr}
export TRAIN_FILES=${TRAIN_FILES:-BUAADreamer/clevr_count_70k@train}
export VAL_FILES=${VAL_FILES:-BUAADreamer/clevr_count_70k@test}
exec bash "$(dirname "$0")/../qwen2_5_vl_3b_geo3k_grpo.sh" \
    data.format_prompt=examples/format_prompt/r1v.jinja \
    data.max_pixels=1048576 \
    worker.reward.reward_function=examples/reward_function/r1v.py:compute_score \
    "$@"
