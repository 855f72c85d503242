#!/usr/bin/env bash
# GRPO on geometry3k (hiyouga/geometry3k: one diagram per problem, `<image>` in the text, images stored
# in a parquet Image column) with Qwen2.5-VL-3B-Instruct on one 8-GPU node, as EasyR1's example.
#
#   MODEL_PATH=/models/Qwen2.5-VL-3B-Instruct bash examples/qwen2_5_vl_3b_geo3k_grpo.sh [key=value ...]
#
# MODEL_PATH (environment): a local Hugging Face model directory; nothing is downloaded by the trainer.
# Optional environment, defaults in brackets:
#   TRAIN_FILES / VAL_FILES [hiyouga/geometry3k@train / @test]: a name@split, or a geometry3k-format
#     parquet/jsonl file or directory (fields problem, answer, images)
#   EXPERIMENT_NAME [qwen2_5_vl_3b_geo3k_grpo]   N_GPUS_PER_NODE [8]
#   NNODES [1]: set by scripts/train_multi_nodes.sh; the batch grows with the nodes (128 prompts per node)
#   PYTHON [python3]   DRY_RUN=1: print the effective config and exit
# Extra key=value arguments override any key (see configs/config.yaml). The CPU twin of this script
# is examples/cpu/qwen2_5_vl_image_grpo.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${MODEL_PATH:?set MODEL_PATH to a local Qwen2.5-VL-3B-Instruct directory}"
PYTHON=${PYTHON:-python3}
NNODES=${NNODES:-1}
EXPERIMENT_NAME=${EXPERIMENT_NAME:-qwen2_5_vl_3b_geo3k_grpo}
prompts=$((128 * NNODES))

args=(
    config=configs/config.yaml
    data.train_files="${TRAIN_FILES:-hiyouga/geometry3k@train}"
    data.val_files="${VAL_FILES:-hiyouga/geometry3k@test}"
    data.image_key=images
    data.format_prompt=examples/format_prompt/math.jinja
    data.max_prompt_length=2048
    data.max_response_length=2048
    data.min_pixels=262144
    data.max_pixels=4194304
    data.rollout_batch_size="$prompts"
    worker.actor.model.model_path="$MODEL_PATH"
    worker.actor.global_batch_size="$prompts"
    worker.rollout.limit_images=1
    worker.rollout.n=5
    worker.reward.reward_function=examples/reward_function/math.py:compute_score
    trainer.experiment_name="$EXPERIMENT_NAME"
    trainer.save_checkpoint_path="checkpoints/longrl/$EXPERIMENT_NAME"
    trainer.save_freq=50
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
