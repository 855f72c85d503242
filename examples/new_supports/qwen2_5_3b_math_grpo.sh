#!/usr/bin/env bash
# GRPO on MATH (hiyouga/math12k) with Qwen2.5-3B-Instruct on one 8-GPU node.
#
#   MODEL_PATH=/models/Qwen2.5-3B-Instruct bash examples/new_supports/qwen2_5_3b_math_grpo.sh [key=value ...]
#
# MODEL_PATH (environment): a local Hugging Face model directory; nothing is downloaded by the trainer.
# Optional environment, defaults in brackets:
#   TRAIN_FILES / VAL_FILES [hiyouga/math12k@train / @test]   N_GPUS_PER_NODE [8]
#   NNODES [1]: set by scripts/train_multi_nodes.sh; the batch grows with the nodes (32 prompts per node)
#   PYTHON [python3]   DRY_RUN=1: print the effective config and exit
# Extra key=value arguments override any key (see configs/config.yaml). The CPU twin of this script
# is examples/cpu/qwen2_math_grpo.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${MODEL_PATH:?set MODEL_PATH to a local Qwen2.5-3B-Instruct directory}"
PYTHON=${PYTHON:-python3}
NNODES=${NNODES:-1}
prompts=$((32 * NNODES))

args=(
    config=configs/config.yaml
    data.train_files="${TRAIN_FILES:-hiyouga/math12k@train}"
    data.val_files="${VAL_FILES:-hiyouga/math12k@test}"
    data.format_prompt=examples/format_prompt/math.jinja
    data.max_response_length=2048
    data.rollout_batch_size="$prompts"
    worker.actor.model.model_path="$MODEL_PATH"
    worker.actor.global_batch_size="$prompts"
    worker.reward.reward_function=examples/reward_function/math.py:compute_score
    trainer.experiment_name=qwen2_5_3b_math_grpo
    trainer.save_checkpoint_path=checkpoints/longrl/qwen2_5_3b_math_grpo
    trainer.save_freq=100
    trainer.nnodes="$NNODES"
    trainer.n_gpus_per_node="${N_GPUS_PER_NODE:-8}"
    "$@"
)
if [[ ${DRY_RUN:-0} == 1 ]]; then
    exec "$PYTHON" -c 'import json, sys
from longrl.config import ConfigError, load_config, to_dict
try:
    print(json.dumps(to_dict(load_config(sys.argv[1:])), indent=2))
except ConfigError as e:
    sys.exit(f"error: {e}")' "${args[@]}"
fi
exec "$PYTHON" -m longrl.trainer.main "${args[@]}"
