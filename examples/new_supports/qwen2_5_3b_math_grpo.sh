#!/usr/bin/env bash
# GRPO on a math data set with Qwen2.5-3B-Instruct on one 8-GPU node: Long-RL's
# examples/new_supports/qwen2_5_3b_math_grpo.sh, same arguments and hyper-parameters (configs/long_rl.yaml
# is Long-RL's examples/config.yaml). The seed trains and validates on the same data, as here.
#
#   bash examples/new_supports/qwen2_5_3b_math_grpo.sh DATA_PATH [key=value ...]
#
# DATA_PATH (first argument, or environment): a json/jsonl/parquet file or directory, or a hub `name@split`
#   (e.g. hiyouga/math12k@train).
# MODEL_PATH [Qwen/Qwen2.5-3B-Instruct]: a local model directory or a hub id (downloaded once, on the driver).
# Optional environment: N_GPUS_PER_NODE [8]; NNODES [1] (scripts/train_multi_nodes.sh); PYTHON [python3];
#   DRY_RUN=1: print the effective config and exit. The CPU twin of this script is examples/cpu/qwen2_math_grpo.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [[ $# -gt 0 && $1 != *=* ]]; then DATA_PATH=$1; shift; fi
: "${DATA_PATH:?set DATA_PATH (first argument or environment) to the training data, e.g. hiyouga/math12k@train}"
MODEL_PATH=${MODEL_PATH:-Qwen/Qwen2.5-3B-Instruct}
PYTHON=${PYTHON:-python3}

args=(
    config=configs/long_rl.yaml
    data.train_files="$DATA_PATH"
    data.val_files="$DATA_PATH"
    data.max_response_length=2048
    worker.actor.model.model_path="$MODEL_PATH"
    worker.reward.reward_type=sequential
    worker.reward.reward_function=examples/reward_function/r1v.py:compute_score
    trainer.experiment_name=qwen2_5_3b_math_grpo
    trainer.save_freq=100
    trainer.nnodes="${NNODES:-1}"
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
