#!/usr/bin/env bash
# Dr.GRPO (arXiv:2503.20783): GRPO without the group-std division and without per-response length
# normalisation (each response's token sum over the constant data.max_response_length).
# The tiny CPU math setup of qwen2_math_grpo.sh with this algorithm; extra key=value arguments override.
set -euo pipefail
exec bash "$(dirname "$0")/qwen2_math_grpo.sh" \
    algorithm.norm_adv_by_std=false \
    worker.actor.loss_avg_mode=seq-mean-token-sum-norm \
    trainer.experiment_name=qwen2_math_drgrpo \
    "$@"
