#!/usr/bin/env bash
# Runs on every node of a SLURM allocation, one task per node (scripts/srun_multi_nodes.sh and
# scripts/sbatch_multi_nodes.sbatch start it with srun). Node 0 starts the Ray head, the others join
# it; once NNODES nodes are up, node 0 runs TRAIN_SCRIPT with trainer.nnodes=NNODES and RAY_ADDRESS
# set, so the trainer attaches to this cluster. The other nodes stay until the head is gone, then
# stop their Ray processes. Exit status: the training script's on node 0, 0 on the others.
#
#   srun --nodes=2 --ntasks-per-node=1 bash scripts/train_multi_nodes.sh TRAIN_SCRIPT [key=value ...]
#
# Environment (srun sets the SLURM_* ones):
#   SLURM_NODEID, SLURM_NNODES (or SLURM_JOB_NUM_NODES), SLURM_JOB_NODELIST
#   HEAD_ADDR            head address; default: the first host of SLURM_JOB_NODELIST (via scontrol)
#   RAY_PORT             head port (default 6379)
#   RAY_START_ARGS       extra `ray start` arguments for this node, e.g. "--num-cpus=16 --temp-dir=/scratch/ray"
#   NODE_WAIT_TIMEOUT_S  how long to wait for the head and for all nodes (default 600)
#   HEAD_POLL_S          how often the other nodes check that the head is still up (default 10)
#   RAY, PYTHON          the ray CLI and python to use (default: the repo's .venv if present, else PATH)
#   RAY_AUTH_MODE        default "disabled": Ray head nodes turn token auth on when ~/.ray/auth_token
#                        exists but joining nodes do not, and then cannot join; set it to "token" (with
#                        the token on every node) to use token authentication.
set -euo pipefail

usage="usage: srun ... bash scripts/train_multi_nodes.sh TRAIN_SCRIPT [key=value ...]"
TRAIN_SCRIPT=$(realpath "${1:?$usage}")
shift
[[ -f $TRAIN_SCRIPT ]] || { echo "error: training script $TRAIN_SCRIPT does not exist" >&2; exit 2; }
NODE_RANK=${SLURM_NODEID:?SLURM_NODEID is unset: run this under srun (one task per node), or set it by hand}
NNODES=${SLURM_NNODES:-${SLURM_JOB_NUM_NODES:?SLURM_NNODES is unset: run this under srun, or set it by hand}}
RAY_PORT=${RAY_PORT:-6379}
NODE_WAIT_TIMEOUT_S=${NODE_WAIT_TIMEOUT_S:-600}
HEAD_POLL_S=${HEAD_POLL_S:-10}
export RAY_AUTH_MODE=${RAY_AUTH_MODE:-disabled}
read -r -a ray_args <<< "${RAY_START_ARGS:-}"

# Ray workers inherit the cwd of `ray start`; run it where the training script runs (the repo root),
# so relative paths in a config mean the same thing on the driver and in the workers.
cd "$(dirname "$0")/.."
RAY=${RAY:-$( [[ -x .venv/bin/ray ]] && echo .venv/bin/ray || echo ray )}
PYTHON=${PYTHON:-$( [[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python3 )}

log() { echo "[train_multi_nodes node $NODE_RANK/$NNODES $(date +%H:%M:%S)] $*"; }

head_host() {
    if [[ -n ${HEAD_ADDR:-} ]]; then
        echo "$HEAD_ADDR"
    elif command -v scontrol >/dev/null; then
        scontrol show hostnames "${SLURM_JOB_NODELIST:?SLURM_JOB_NODELIST is unset}" | head -n 1
    else
        echo "error: cannot find the head node: scontrol is not on PATH; set HEAD_ADDR" >&2
        return 1
    fi
}

reachable() {  # the head's GCS port accepts connections
    timeout 5 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null
}

ray_pid=""
train_pid=""
# shellcheck disable=SC2329  # called by the EXIT trap
stop_ray() {
    if [[ -n $ray_pid ]] && kill -0 "$ray_pid" 2>/dev/null; then
        log "stopping Ray on this node"
        kill -TERM "$ray_pid"  # `ray start --block` stops the processes it started on SIGTERM
        wait "$ray_pid" || true
    fi
}
# shellcheck disable=SC2329  # called by the TERM/INT traps
on_signal() {  # scancel/Ctrl-C: stop the training first, then (EXIT trap) Ray
    if [[ -n $train_pid ]]; then
        pkill -TERM -P "$train_pid" 2>/dev/null || true
        kill -TERM "$train_pid" 2>/dev/null || true
        wait "$train_pid" || true
    fi
    exit "$1"
}
trap stop_ray EXIT
trap 'on_signal 143' TERM
trap 'on_signal 130' INT

host=$(head_host)
addr=$(getent hosts "$host" | awk '{print $1; exit}' || true)
addr=${addr:-$host}

wait_for_head() {
    local deadline=$((SECONDS + NODE_WAIT_TIMEOUT_S))
    until reachable "$addr" "$RAY_PORT"; do
        if [[ -n $ray_pid ]] && ! kill -0 "$ray_pid" 2>/dev/null; then
            echo "error: the Ray head on this node exited during start-up; see its output above" >&2
            return 1
        fi
        if ((SECONDS > deadline)); then
            echo "error: the Ray head $addr:$RAY_PORT did not answer within NODE_WAIT_TIMEOUT_S=$NODE_WAIT_TIMEOUT_S s;" \
                 "check node 0's log and that this node can reach that address, or raise NODE_WAIT_TIMEOUT_S" >&2
            return 1
        fi
        sleep 1
    done
}

wait_for_nodes() {  # until NNODES nodes are alive in the cluster, or a clear error
    "$PYTHON" - "$addr:$RAY_PORT" "$NNODES" "$NODE_WAIT_TIMEOUT_S" <<'PY'
import sys, time
import ray

address, want, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
ray.init(address=address, log_to_driver=False, logging_level="WARNING")
deadline = time.monotonic() + timeout
while True:
    alive = [n for n in ray.nodes() if n["Alive"]]
    if len(alive) >= want:
        break
    if time.monotonic() > deadline:
        sys.exit(f"error: only {len(alive)} of {want} Ray nodes joined the head at {address} within "
                 f"NODE_WAIT_TIMEOUT_S={timeout:.0f} s (joined: {[n['NodeManagerAddress'] for n in alive]}); "
                 f"check the missing nodes' logs and that they can reach {address}, or raise NODE_WAIT_TIMEOUT_S")
    time.sleep(1)
for n in alive:
    print(f"  node {n['NodeID']} at {n['NodeManagerAddress']}: {n['Resources']}")
ray.shutdown()
PY
}

if [[ $NODE_RANK == 0 ]]; then
    log "starting the Ray head on port $RAY_PORT"
    "$RAY" start --head --port="$RAY_PORT" --block --disable-usage-stats "${ray_args[@]}" &
    ray_pid=$!
    wait_for_head
    log "waiting for $NNODES nodes at $addr:$RAY_PORT"
    wait_for_nodes
    log "all $NNODES nodes are up; running $TRAIN_SCRIPT"
    export RAY_ADDRESS="$addr:$RAY_PORT" NNODES
    bash "$TRAIN_SCRIPT" "$@" trainer.nnodes="$NNODES" &  # in the background, so a signal reaches the traps at once
    train_pid=$!
    rc=0
    wait "$train_pid" || rc=$?
    train_pid=""
    log "training finished with exit status $rc"
    exit "$rc"
fi

log "waiting for the Ray head at $addr:$RAY_PORT"
wait_for_head
"$RAY" start --address="$addr:$RAY_PORT" --block --disable-usage-stats "${ray_args[@]}" &
ray_pid=$!
log "joined; staying until the head at $addr:$RAY_PORT stops"
misses=0
while kill -0 "$ray_pid" 2>/dev/null && ((misses < 3)); do  # three misses in a row: the head is gone
    sleep "$HEAD_POLL_S"
    if reachable "$addr" "$RAY_PORT"; then misses=0; else misses=$((misses + 1)); fi
done
if ((misses < 3)); then
    wait "$ray_pid" || true
    ray_pid=""
    echo "error: Ray on this node exited while the head at $addr:$RAY_PORT was still up; see its output above" >&2
    exit 1
fi
log "the head is gone"
exit 0
