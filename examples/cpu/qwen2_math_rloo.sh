#!/usr/bin/env bash
# RLOO: each response's baseline is the mean score of the other responses to its prompt.
# The tiny CPU math setup of qwen2_math_grpo.sh with this algorithm; extra key=value arguments override.
set -euo pipefail
exec bash "$(dirname "$0")/qwen2_math_grpo.sh" \
    algorithm.adv_estimator=rloo \
    trainer.experiment_name=qwen2_math_rloo \
    "$@"
