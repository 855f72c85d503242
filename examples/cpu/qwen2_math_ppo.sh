#!/usr/bin/env bash
# PPO with GAE: a value model (critic) gives per-token baselines.
# The tiny CPU math setup of qwen2_math_grpo.sh with this algorithm; extra key=value arguments override.
set -euo pipefail
exec bash "$(dirname "$0")/qwen2_math_grpo.sh" \
    algorithm.adv_estimator=gae \
    algorithm.gamma=1.0 \
    algorithm.lam=0.95 \
    worker.critic.optim.lr=1e-4 \
    worker.critic.global_batch_size=4 \
    trainer.critic_warmup=0 \
    trainer.experiment_name=qwen2_math_ppo \
    "$@"
