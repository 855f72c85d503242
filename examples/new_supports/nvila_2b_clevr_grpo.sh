#!/usr/bin/env bash
# GRPO on CLEVR counting with NVILA-Lite-2B on one 8-GPU node: Long-RL's
# examples/new_supports/nvila_2b_clevr_grpo.sh, same arguments and hyper-parameters.
# NVILA-Lite tiles images dynamically (image_aspect_ratio=dynamic); longrl resizes each image to one 448x448
# tile for now (a warning says so at start), which CLEVR's 480x320 scenes lose little to.
#
#   bash examples/new_supports/nvila_2b_clevr_grpo.sh [key=value ...]
#
# Optional environment, defaults in brackets:
#   MODEL_PATH [Efficient-Large-Model/NVILA-Lite-2B]
#   TRAIN_FILES / VAL_FILES [BUAADreamer/clevr_count_70k@train / @test]
#   N_GPUS_PER_NODE [8]   EXPERIMENT_NAME [nvila_2b_clevr_grpo]   NNODES [1]   PYTHON [python3]
#   DRY_RUN=1: print the effective config and exit
set -euo pipefail
cd "$(dirname "$0")/../.."
MODEL_PATH=${MODEL_PATH:-Efficient-Large-Model/NVILA-Lite-2B}
PYTHON=${PYTHON:-python3}
args=(
    config=configs/long_rl.yaml
    data.train_files="${TRAIN_FILES:-BUAADreamer/clevr_count_70k@train}"
    data.val_files="${VAL_FILES:-BUAADreamer/clevr_count_70k@test}"
    data.format_prompt=examples/format_prompt/r1v.jinja
    data.vila_model=true
    worker.vila_model=true
    worker.actor.model.model_path="$MODEL_PATH"
    worker.reward.reward_type=sequential
    worker.reward.reward_function=examples/reward_function/r1v.py:compute_score
    trainer.experiment_name="${EXPERIMENT_NAME:-nvila_2b_clevr_grpo}"
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
