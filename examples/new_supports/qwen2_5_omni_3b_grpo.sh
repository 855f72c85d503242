#!/usr/bin/env bash
# GRPO on LongVideo-Reason with Qwen2.5-Omni-3B (the thinker trains; talker and token2wav are never loaded),
# hearing each video's own audio: one 8-GPU node. As Long-RL's script: no Ulysses, no padding-free packing,
# Long-RL's examples/config.yaml (configs/long_rl.yaml) for the rest.
#
#   bash examples/new_supports/qwen2_5_omni_3b_grpo.sh VIDEO_PATH [key=value ...]
#
# VIDEO_PATH (first argument, or environment): the directory that the dataset's video paths are relative to.
# MODEL_PATH [Qwen/Qwen2.5-Omni-3B]: a local model directory or a hub id (downloaded once, on the driver,
#   before the workers start).
# Optional environment, defaults in brackets:
#   TRAIN_FILES / VAL_FILES [LongVideo-Reason/longvideo-reason@train / @validation]
#   NUM_VIDEO_FRAMES [32]   TOKENS_PER_FRAME [60]   ULYSSES_SIZE [1]   AUDIO_SECONDS [300]   N_GPUS_PER_NODE [8]
#   NNODES [1]: set by scripts/train_multi_nodes.sh (trainer.nnodes)
#   PYTHON [python3]   DRY_RUN=1: print the effective config and exit
# Extra key=value arguments override any key (see configs/config.yaml).
set -euo pipefail
cd "$(dirname "$0")/../.."
if [[ $# -gt 0 && $1 != *=* ]]; then VIDEO_PATH=$1; shift; fi
: "${VIDEO_PATH:?set VIDEO_PATH (first argument or environment) to the directory holding the videos}"
MODEL_PATH=${MODEL_PATH:-Qwen/Qwen2.5-Omni-3B}
PYTHON=${PYTHON:-python3}
NNODES=${NNODES:-1}
N_GPUS_PER_NODE=${N_GPUS_PER_NODE:-8}
ULYSSES_SIZE=${ULYSSES_SIZE:-1}
NUM_VIDEO_FRAMES=${NUM_VIDEO_FRAMES:-32}
TOKENS_PER_FRAME=${TOKENS_PER_FRAME:-60}
EXPERIMENT_NAME=${EXPERIMENT_NAME:-qwen2_5_omni_3b_grpo}
AUDIO_SECONDS=${AUDIO_SECONDS:-300}

# Qwen2.5-VL turns each 28x28 pixel block of a pair of frames into one token, so a frame of
# max_pixels costs max_pixels / 784 / 2 tokens: cap frames at TOKENS_PER_FRAME tokens each.
max_pixels=$((TOKENS_PER_FRAME * 2 * 28 * 28))
# the audio adds 25 tokens per second (cut at AUDIO_SECONDS)
video_tokens=$((NUM_VIDEO_FRAMES * TOKENS_PER_FRAME + AUDIO_SECONDS * 25))

args=(
    config=configs/long_rl.yaml
    data.train_files="${TRAIN_FILES:-LongVideo-Reason/longvideo-reason@train}"
    data.val_files="${VAL_FILES:-LongVideo-Reason/longvideo-reason@validation}"
    data.video_dir="$VIDEO_PATH"
    data.format_prompt=examples/format_prompt/r1v.jinja
    data.max_pixels="$max_pixels"
    data.max_response_length=1024
    worker.actor.model.model_path="$MODEL_PATH"
    data.audio_max_length="$AUDIO_SECONDS"
    worker.actor.padding_free=false
    worker.actor.ulysses_size="$ULYSSES_SIZE"
    worker.actor.micro_batch_size_per_device_for_update=1
    worker.actor.micro_batch_size_per_device_for_experience=1
    worker.rollout.num_video_frames="$NUM_VIDEO_FRAMES"
    worker.rollout.cache_video_embeds=false
    worker.rollout.max_num_batched_tokens=$((video_tokens + 8192))
    worker.reward.reward_type=sequential
    worker.reward.reward_function=examples/reward_function/r1v.py:compute_score
    trainer.experiment_name="$EXPERIMENT_NAME"
    trainer.save_checkpoint_path="checkpoints/longrl/$EXPERIMENT_NAME"
    trainer.nnodes="$NNODES"
    trainer.n_gpus_per_node="$N_GPUS_PER_NODE"
    trainer.val_before_train=false
    trainer.val_freq=-1
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
