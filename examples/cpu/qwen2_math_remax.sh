#!/usr/bin/env bash
# ReMax (arXiv:2310.10505): the baseline is the score of one extra greedy response per prompt.
# The tiny CPU math setup of qwen2_math_grpo.sh with this algorithm; extra key=value arguments override.
set -euo pipefail
exec bash "$(dirname "$0")/qwen2_math_grpo.sh" \
    algorithm.adv_estimator=remax \
    trainer.experiment_name=qwen2_math_remax \
    "$@"
