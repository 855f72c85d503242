#!/usr/bin/env bash
# DAPO (arXiv:2503.14476): clip-higher, token-mean loss, no KL, dynamic sampling, overlong shaping.
# The tiny CPU math setup of qwen2_math_grpo.sh with this algorithm; extra key=value arguments override.
# Dynamic sampling trains only on groups whose answers differ, and a random-init model answers every question
# wrong: so DAPO starts from the CoT-SFT model of qwen2_math_sft.sh (trained first when $SFT_MODEL is missing),
# which answers some questions right and some wrong.
set -euo pipefail
cd "$(dirname "$0")/../.."
SFT_MODEL=${SFT_MODEL:-runs/qwen2_math_sft/model}
[ -f "$SFT_MODEL/config.json" ] || OUT=runs/qwen2_math_sft bash examples/cpu/qwen2_math_sft.sh
MODEL_PATH=$SFT_MODEL exec bash examples/cpu/qwen2_math_grpo.sh \
    algorithm.adv_estimator=dapo \
    algorithm.disable_kl=true \
    algorithm.use_kl_loss=false \
    algorithm.online_filtering=true \
    algorithm.filter_key=accuracy \
    algorithm.filter_low=-0.99 \
    algorithm.filter_high=0.99 \
    worker.actor.clip_ratio_low=0.2 \
    worker.actor.clip_ratio_high=0.28 \
    worker.actor.loss_avg_mode=token \
    worker.reward.reward_function=examples/reward_function/dapo.py:compute_score \
    'worker.reward.reward_function_kwargs={overlong_buffer_len: 8, overlong_penalty_factor: 1.0}' \
    trainer.experiment_name=qwen2_math_dapo \
    "$@"
