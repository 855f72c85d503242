#!/usr/bin/env bash
# DAPO (arXiv:2503.14476): clip-higher, token-mean loss, no KL, dynamic sampling, overlong shaping.
# The tiny CPU math setup of qwen2_math_grpo.sh with this algorithm; extra key=value arguments override.
set -euo pipefail
exec bash "$(dirname "$0")/qwen2_math_grpo.sh" \
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
