"""Multi-node runs: the trainer attaches to a running Ray cluster, spreads its ranks over the nodes, fails
fast when the cluster is too small; the SLURM launch scripts build that cluster from srun's environment.

The e2e tests start two real Ray nodes on this machine (`ray start --head` and `ray start --address`,
each with its own custom resource, ports and temp dir) and stop exactly the processes they started.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from _ray_local import RAY, free_ports, node_args, processes_mentioning, ray_env, stop_processes, wait_for_port
from longrl.controller.worker_group import capacity_shortfall

REPO = Path(__file__).resolve().parents[2]
FAKE_SRUN = Path(__file__).with_name("fake_srun.py")


# ---- the capacity check (pure) ---------------------------------------------------------------
def node(ip: str, alive: bool = True, **resources: float) -> dict:
    return {"NodeID": ip.replace(".", "") * 4, "NodeManagerAddress": ip, "Alive": alive, "Resources": resources}


def test_capacity_is_enough_when_each_bundle_has_its_own_node():
    nodes = [node("10.0.0.1", CPU=8, GPU=8), node("10.0.0.2", CPU=8, GPU=8)]
    assert capacity_shortfall(nodes, 2, {"CPU": 8, "GPU": 8}) is None


def test_capacity_shortfall_names_the_missing_nodes_and_the_fix():
    nodes = [node("10.0.0.1", CPU=1), node("10.0.0.2", CPU=1)]
    message = capacity_shortfall(nodes, 4, {"CPU": 1.0})
    # 4 nodes wanted, 2 alive and both large enough: 2 missing
    assert "missing 2 node(s) with {'CPU': 1.0}" in message
    assert "2 alive node(s), 2 of them large enough" in message
    assert "trainer.nnodes=4" in message and "ray start --address" in message


def test_capacity_shortfall_names_nodes_that_are_too_small():
    nodes = [node("10.0.0.1", CPU=16, GPU=8), node("10.0.0.2", CPU=16, GPU=4)]
    message = capacity_shortfall(nodes, 2, {"CPU": 8.0, "GPU": 8.0})
    assert "missing 1 node(s)" in message
    assert "10.0.0.2" in message and "'GPU': 4" in message and "10.0.0.1" not in message.split("too small")[1]


def test_dead_nodes_do_not_count():
    nodes = [node("10.0.0.1", CPU=1), node("10.0.0.2", alive=False, CPU=1)]
    assert "missing 1 node(s)" in capacity_shortfall(nodes, 2, {"CPU": 1.0})


# ---- launch scripts without a cluster (a fake srun records its arguments) -------------------
@pytest.fixture
def fake_srun_path(tmp_path: Path) -> str:
    """PATH with `srun` = tests/scripts/fake_srun.py, then the venv."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE_SRUN}" "$@"\n')
    (bin_dir / "srun").chmod(0o755)
    return f"{bin_dir}:{ray_env()['PATH']}"


def recorded_srun(script: list[str], tmp_path: Path, path: str, **env: str) -> list[str]:
    record = tmp_path / "srun_args.json"
    run_env = {**os.environ, "PATH": path, "FAKE_SRUN_RECORD": str(record), "LOG_DIR": str(tmp_path / "logs"), **env}
    for key in ("ACCOUNT", "PARTITION", "SRUN_ARGS", "CPUS_PER_NODE", "SLURM_NNODES", "SLURM_JOB_NUM_NODES"):
        if key not in env:
            run_env.pop(key, None)
    result = subprocess.run(["bash", *script], cwd=REPO, env=run_env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return json.loads(record.read_text())


def test_srun_launcher_takes_slurm_settings_from_the_environment(tmp_path, fake_srun_path):
    args = recorded_srun(["scripts/srun_multi_nodes.sh", "examples/cpu/qwen2_math_grpo.sh", "2", "trainer.max_steps=1"],
                         tmp_path, fake_srun_path, ACCOUNT="acc", PARTITION="batch", GPUS_PER_NODE="4",
                         TIME_LIMIT="01:00:00", SRUN_ARGS="--qos=high --exclusive")
    assert args[:5] == ["--nodes=2", "--ntasks-per-node=1", "--time=01:00:00", "--job-name=qwen2_math_grpo",
                        f"--output={tmp_path}/logs/qwen2_math_grpo-%j-node%n.log"]
    assert {"--gpus-per-node=4", "--account=acc", "--partition=batch", "--qos=high", "--exclusive"} <= set(args)
    assert args[-4:] == ["bash", "scripts/train_multi_nodes.sh", "examples/cpu/qwen2_math_grpo.sh", "trainer.max_steps=1"]
    assert (tmp_path / "logs").is_dir()


def test_srun_launcher_leaves_unset_site_settings_to_slurm(tmp_path, fake_srun_path):
    args = recorded_srun(["scripts/srun_multi_nodes.sh", "examples/cpu/qwen2_math_grpo.sh", "3"],
                         tmp_path, fake_srun_path)
    assert "--nodes=3" in args and "--gpus-per-node=8" in args and "--time=04:00:00" in args
    assert not [a for a in args if a.startswith(("--account", "--partition", "--cpus-per-task"))]


def test_srun_launcher_refuses_a_bad_node_count(tmp_path, fake_srun_path):
    result = subprocess.run(["bash", "scripts/srun_multi_nodes.sh", "examples/cpu/qwen2_math_grpo.sh", "two"],
                            cwd=REPO, env={**os.environ, "PATH": fake_srun_path}, capture_output=True, text=True)
    assert result.returncode == 2
    assert "NNODES=two must be a positive integer" in result.stderr


def test_sbatch_template_runs_train_multi_nodes_on_every_node(tmp_path, fake_srun_path):
    args = recorded_srun(["scripts/sbatch_multi_nodes.sbatch", "examples/cpu/qwen2_math_grpo.sh", "trainer.max_steps=1"],
                         tmp_path, fake_srun_path, SLURM_JOB_NUM_NODES="3", SLURM_SUBMIT_DIR=str(REPO))
    assert "--nodes=3" in args and "--ntasks-per-node=1" in args
    assert args[-4:] == ["bash", "scripts/train_multi_nodes.sh", "examples/cpu/qwen2_math_grpo.sh", "trainer.max_steps=1"]


def test_train_multi_nodes_outside_srun_says_what_is_missing():
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    result = subprocess.run(["bash", "scripts/train_multi_nodes.sh", "examples/cpu/qwen2_math_grpo.sh"], cwd=REPO,
                            env=env, capture_output=True, text=True)
    assert result.returncode != 0
    assert "SLURM_NODEID is unset: run this under srun" in result.stderr


def test_train_multi_nodes_without_scontrol_asks_for_head_addr(tmp_path):
    bin_dir = tmp_path / "bin"  # the tools the script needs, and no scontrol even where SLURM is installed
    bin_dir.mkdir()
    for tool in ("realpath", "dirname", "date", "head", "getent", "awk", "timeout", "sleep"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    env = {**{k: v for k, v in os.environ.items() if k != "HEAD_ADDR"}, "SLURM_NODEID": "1", "SLURM_NNODES": "2",
           "SLURM_JOB_NODELIST": "gpu[01-02]", "PATH": str(bin_dir)}
    result = subprocess.run([shutil.which("bash"), "scripts/train_multi_nodes.sh", "examples/cpu/qwen2_math_grpo.sh"],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert "scontrol is not on PATH; set HEAD_ADDR" in result.stderr


# ---- a real two-node Ray cluster on this machine ----------------------------------------------
@pytest.fixture(scope="module")
def two_node_cluster() -> Iterator[dict]:
    """A Ray head and a second node, one CPU slot each, told apart by custom resources."""
    temp_dir = Path(tempfile.mkdtemp(prefix="lrt", dir="/tmp"))  # short: unix socket paths are capped at 107 bytes
    port = free_ports(1)[0]
    env = ray_env()
    procs = []
    try:
        head = [RAY, "start", "--head", "--block", f"--port={port}",
                *node_args(temp_dir, 1, '{"longrl_test_head": 1}', head=True)]
        procs.append(subprocess.Popen(head, env=env, cwd=REPO, stdout=open(temp_dir / "head.log", "w"),
                                      stderr=subprocess.STDOUT))
        wait_for_port(port, 60)
        worker = [RAY, "start", "--block", f"--address=127.0.0.1:{port}",
                  *node_args(temp_dir, 1, '{"longrl_test_worker": 1}', head=False)]
        procs.append(subprocess.Popen(worker, env=env, cwd=REPO, stdout=open(temp_dir / "worker.log", "w"),
                                      stderr=subprocess.STDOUT))
        deadline = time.monotonic() + 60
        while "Ray runtime started" not in (temp_dir / "worker.log").read_text():
            assert procs[1].poll() is None, (temp_dir / "worker.log").read_text()
            assert time.monotonic() < deadline, "the second Ray node did not start within 60 s"
            time.sleep(0.5)
        yield {"address": f"127.0.0.1:{port}", "env": env, "temp_dir": temp_dir}
    finally:
        stop_processes([p.pid for p in procs], temp_dir)
        for p in procs:
            p.wait(timeout=30)
        subprocess.run(["rm", "-rf", str(temp_dir)], check=False)


# Runs the driver in its own process: ray.init there cannot clash with a Ray session of another test.
DRIVER = """
import json, sys
import ray
from longrl.config import load_config
from longrl.trainer.ray_trainer import RayTrainer

trainer = RayTrainer(load_config(sys.argv[1:]))
try:
    trainer.fit()
    nodes = {key: n["NodeID"] for n in ray.nodes() if n["Alive"] for key in n["Resources"] if key.startswith("longrl_test_")}
finally:
    trainer.shutdown()
print("RESULT " + json.dumps({"workers": trainer.worker_info, "nodes": nodes, "steps": trainer.step_count}))
"""


def cpu_math_args(tiny_qwen2: Path, math_data: dict[str, Path], out: Path) -> list[str]:
    return ["config=configs/cpu_math.yaml", f"worker.actor.model.model_path={tiny_qwen2}",
            f"data.train_files={math_data['train']}", "data.val_files=", f"trainer.save_checkpoint_path={out}",
            "trainer.save_freq=-1", "trainer.max_steps=2", "trainer.logger=[file]"]


@pytest.mark.e2e
def test_two_grpo_steps_spread_one_rank_per_ray_node(two_node_cluster, tiny_qwen2, math_data, tmp_path):
    args = [*cpu_math_args(tiny_qwen2, math_data, tmp_path / "run"), "trainer.nnodes=2", "trainer.n_gpus_per_node=1",
            f"trainer.ray_address={two_node_cluster['address']}"]
    result = subprocess.run([sys.executable, "-c", DRIVER, *args], cwd=REPO, env=two_node_cluster["env"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    out = json.loads(result.stdout.split("RESULT ", 1)[1].splitlines()[0])
    assert out["steps"] == 2
    assert [w["rank"] for w in out["workers"]] == [0, 1]
    placed = {w["node_id"] for w in out["workers"]}
    assert placed == {out["nodes"]["longrl_test_head"], out["nodes"]["longrl_test_worker"]}  # one rank on each node
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 2


@pytest.mark.e2e
def test_asking_for_more_nodes_than_the_cluster_has_fails_fast_naming_what_is_missing(
        two_node_cluster, tiny_qwen2, math_data, tmp_path):
    args = [*cpu_math_args(tiny_qwen2, math_data, tmp_path / "run"), "trainer.nnodes=4", "trainer.n_gpus_per_node=1",
            f"trainer.ray_address={two_node_cluster['address']}"]
    start = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "longrl.trainer.main", *args], cwd=REPO,
                            env=two_node_cluster["env"], capture_output=True, text=True, timeout=120)
    elapsed = time.monotonic() - start
    assert result.returncode != 0
    assert elapsed < 60, f"took {elapsed:.0f} s"
    # 4 nodes of one CPU slot wanted; the cluster has 2 such nodes
    assert "the Ray cluster is missing 2 node(s) with {'CPU': 1.0} each" in result.stderr
    assert "2 alive node(s), 2 of them large enough" in result.stderr


@pytest.mark.e2e
def test_train_multi_nodes_under_srun_trains_on_two_nodes_and_cleans_up(
        tiny_qwen2, math_data, tmp_path, fake_srun_path):
    temp_dir = Path(tempfile.mkdtemp(prefix="lrs", dir="/tmp"))
    logs = tmp_path / "logs"
    env = ray_env({
        "PATH": fake_srun_path, "LOG_DIR": str(logs), "GPUS_PER_NODE": "0", "HEAD_ADDR": "127.0.0.1",
        "RAY_PORT": str(free_ports(1)[0]), "HEAD_POLL_S": "1", "NODE_WAIT_TIMEOUT_S": "90",
        "MODEL_PATH": str(tiny_qwen2), "DATA_DIR": str(math_data["train"].parent),
        # what differs between two real nodes: here, ports and resources on one machine
        "FAKE_SRUN_NODE0_RAY_START_ARGS": " ".join(node_args(temp_dir, 1, '{"longrl_test_head":1}', head=True)),
        "FAKE_SRUN_NODE1_RAY_START_ARGS": " ".join(node_args(temp_dir, 1, '{"longrl_test_worker":1}', head=False)),
    })
    command = ["bash", "scripts/srun_multi_nodes.sh", "examples/cpu/qwen2_math_grpo.sh", "2",
               "trainer.n_gpus_per_node=1", "trainer.max_steps=1", "trainer.save_freq=-1", "data.val_files=",
               f"trainer.save_checkpoint_path={tmp_path / 'run'}", "trainer.logger=[file]"]
    srun = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = srun.communicate(timeout=300)
        head_log = (logs / "qwen2_math_grpo-4242-node0.log").read_text()
        other_log = (logs / "qwen2_math_grpo-4242-node1.log").read_text()
        assert srun.returncode == 0, output + head_log[-4000:] + other_log[-2000:]
        assert "all 2 nodes are up" in head_log
        assert head_log.count("  node ") == 2  # the two Ray nodes the head saw before training
        assert '"nnodes": 2' in head_log  # the effective config printed by the trainer
        assert "training finished with exit status 0" in head_log
        assert "the head is gone" in other_log
        assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 1
        time.sleep(2)
        assert processes_mentioning(str(temp_dir)) == []  # both nodes stopped their Ray processes themselves
    finally:
        stop_processes([srun.pid], temp_dir)
        srun.wait(timeout=30)
        subprocess.run(["rm", "-rf", str(temp_dir)], check=False)


@pytest.mark.e2e
def test_cancelling_the_job_stops_training_and_ray_on_every_node(tmp_path, fake_srun_path):
    temp_dir = Path(tempfile.mkdtemp(prefix="lrc", dir="/tmp"))
    train = tmp_path / "train.sh"  # stands in for a long training run
    # its sleeper names temp_dir on its command line, so the check below sees it if it outlives the job
    train.write_text(f'#!/usr/bin/env bash\necho "training $*"\n"{sys.executable}" -c "import time; time.sleep(300)" {temp_dir}\n')
    logs = tmp_path / "logs"
    env = ray_env({
        "PATH": fake_srun_path, "LOG_DIR": str(logs), "GPUS_PER_NODE": "0", "HEAD_ADDR": "127.0.0.1",
        "RAY_PORT": str(free_ports(1)[0]), "HEAD_POLL_S": "1", "NODE_WAIT_TIMEOUT_S": "90",
        "FAKE_SRUN_NODE0_RAY_START_ARGS": " ".join(node_args(temp_dir, 1, '{"longrl_test_head":1}', head=True)),
        "FAKE_SRUN_NODE1_RAY_START_ARGS": " ".join(node_args(temp_dir, 1, '{"longrl_test_worker":1}', head=False)),
    })
    srun = subprocess.Popen(["bash", "scripts/srun_multi_nodes.sh", str(train), "2"], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    head_log = logs / "train-4242-node0.log"
    try:
        deadline = time.monotonic() + 120
        while "training trainer.nnodes=2" not in (head_log.read_text() if head_log.exists() else ""):
            assert srun.poll() is None and time.monotonic() < deadline, head_log.read_text()
            time.sleep(0.5)
        srun.terminate()  # what scancel does: SIGTERM to every task
        start = time.monotonic()
        assert srun.wait(timeout=60) != 0
        time.sleep(2)
        assert processes_mentioning(str(temp_dir)) == [], f"left running {time.monotonic() - start:.0f} s after SIGTERM"
    finally:
        stop_processes([srun.pid], temp_dir)
        srun.wait(timeout=30)
        subprocess.run(["rm", "-rf", str(temp_dir)], check=False)
