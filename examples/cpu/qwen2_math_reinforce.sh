#!/usr/bin/env bash
# REINFORCE++ (arXiv:2501.03262): token-level discounted returns whitened over the batch, KL folded into the reward.
# The tiny CPU math setup of qwen2_math_grpo.sh with this algorithm; extra key=value arguments override.
set -euo pipefail
exec bash "$(dirname "$0")/qwen2_math_grpo.sh" \
    algorithm.adv_estimator=reinforce_plus_plus \
    algorithm.use_kl_loss=false \
    algorithm.kl_penalty=kl \
    algorithm.gamma=1.0 \
    trainer.experiment_name=qwen2_math_reinforce \
    "$@"
