#!/usr/bin/env bash
# Train on NNODES SLURM nodes with a single-node training script: srun starts
# scripts/train_multi_nodes.sh once per node, which builds the Ray cluster and runs TRAIN_SCRIPT on
# node 0 with trainer.nnodes=NNODES. Extra key=value arguments are passed on to TRAIN_SCRIPT.
#
#   bash scripts/srun_multi_nodes.sh TRAIN_SCRIPT NNODES [key=value ...]
#   bash scripts/srun_multi_nodes.sh examples/new_supports/qwen2_5_vl_3b_video_grpo.sh 2
#
# Environment (nothing site-specific is built in; unset ones are left to SLURM's defaults):
#   ACCOUNT          --account             (unset)
#   PARTITION        --partition           (unset)
#   TIME_LIMIT       --time                (default 04:00:00)
#   GPUS_PER_NODE    --gpus-per-node       (default 8; 0 requests none, for CPU-only runs)
#   CPUS_PER_NODE    --cpus-per-task       (unset)
#   JOB_NAME         --job-name            (default: the training script's name)
#   SRUN_ARGS        any other srun arguments, e.g. "--qos=high --exclusive"
#   LOG_DIR          where each node's log goes, as LOG_DIR/JOB_NAME-<jobid>-node<N>.log (default logs)
#   DRY_RUN=1        print the srun command instead of running it
# train_multi_nodes.sh reads further variables (RAY_PORT, RAY_START_ARGS, NODE_WAIT_TIMEOUT_S, ...);
# srun passes this environment on to it.
set -euo pipefail

usage="usage: bash scripts/srun_multi_nodes.sh TRAIN_SCRIPT NNODES [key=value ...]"
TRAIN_SCRIPT=${1:?$usage}
NNODES=${2:?$usage}
shift 2
[[ -f $TRAIN_SCRIPT ]] || { echo "error: training script $TRAIN_SCRIPT does not exist; $usage" >&2; exit 2; }
[[ $NNODES =~ ^[1-9][0-9]*$ ]] || { echo "error: NNODES=$NNODES must be a positive integer; $usage" >&2; exit 2; }

GPUS_PER_NODE=${GPUS_PER_NODE:-8}
TIME_LIMIT=${TIME_LIMIT:-04:00:00}
JOB_NAME=${JOB_NAME:-$(basename "$TRAIN_SCRIPT" .sh)}
LOG_DIR=${LOG_DIR:-logs}
mkdir -p "$LOG_DIR"

cmd=(srun --nodes="$NNODES" --ntasks-per-node=1 --time="$TIME_LIMIT" --job-name="$JOB_NAME"
     --output="$LOG_DIR/$JOB_NAME-%j-node%n.log")
[[ $GPUS_PER_NODE != 0 ]] && cmd+=(--gpus-per-node="$GPUS_PER_NODE")
[[ -n ${ACCOUNT:-} ]] && cmd+=(--account="$ACCOUNT")
[[ -n ${PARTITION:-} ]] && cmd+=(--partition="$PARTITION")
[[ -n ${CPUS_PER_NODE:-} ]] && cmd+=(--cpus-per-task="$CPUS_PER_NODE")
read -r -a extra <<< "${SRUN_ARGS:-}"
cmd+=("${extra[@]}" bash "$(dirname "$0")/train_multi_nodes.sh" "$TRAIN_SCRIPT" "$@")

if [[ ${DRY_RUN:-0} == 1 ]]; then
    printf '%q ' "${cmd[@]}"
    echo
    exit 0
fi
echo "logs: $LOG_DIR/$JOB_NAME-<jobid>-node<N>.log"
exec "${cmd[@]}"
