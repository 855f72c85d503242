#!/usr/bin/env bash
# GSPO (arXiv:2507.18071): sequence-level importance ratio, clipped, averaged per sequence.
# The tiny CPU math setup of qwen2_math_grpo.sh with this algorithm; extra key=value arguments override.
set -euo pipefail
exec bash "$(dirname "$0")/qwen2_math_grpo.sh" \
    worker.actor.loss_type=gspo \
    worker.actor.loss_avg_mode=seq \
    worker.actor.clip_ratio_low=3e-4 \
    worker.actor.clip_ratio_high=4e-4 \
    algorithm.disable_kl=true \
    algorithm.use_kl_loss=false \
    trainer.experiment_name=qwen2_math_gspo \
    "$@"
