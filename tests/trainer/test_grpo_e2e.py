"""The CPU math example end to end: 2 Ray workers, FSDP actor, vLLM rollouts, checkpoints, exact resume after
kill -9 of the driver and of a worker, and a disk that fills during a save."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest
import torch

from longrl.checkpoint.merger import load_model_weights

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e


def example_command(tiny_qwen2: Path, math_data: dict, out: Path, *overrides: str) -> tuple[list[str], dict]:
    env = {**os.environ, "MODEL_PATH": str(tiny_qwen2), "DATA_DIR": str(math_data["train"].parent),
           "PYTHON": sys.executable, "RAY_DEDUP_LOGS": "1"}
    cmd = ["bash", "examples/cpu/qwen2_math_grpo.sh", f"trainer.save_checkpoint_path={out}", "trainer.save_freq=1",
           "trainer.save_limit=2", "trainer.worker_timeout_s=300", "trainer.val_freq=5",
           "trainer.val_generations_to_log=2", *overrides]
    return cmd, env


def run_example(tiny_qwen2: Path, math_data: dict, out: Path, *overrides: str) -> subprocess.CompletedProcess:
    cmd, env = example_command(tiny_qwen2, math_data, out, *overrides)
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


class Run:
    """The example script in the background, its output in files, and the processes it started."""

    def __init__(self, tiny_qwen2: Path, math_data: dict, out: Path, name: str, *overrides: str) -> None:
        cmd, env = example_command(tiny_qwen2, math_data, out, *overrides)
        self.stdout_path, self.stderr_path = out.parent / f"{name}.out", out.parent / f"{name}.err"
        with self.stdout_path.open("w") as stdout, self.stderr_path.open("w") as stderr:
            self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=stdout, stderr=stderr, text=True)

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def wait_for(self, condition, what: str, timeout_s: float = 400) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            assert self.proc.poll() is None, f"the run ended before {what}:\n{self.stderr[-5000:]}"
            assert time.monotonic() < deadline, f"no {what} within {timeout_s} s:\n{self.stderr[-5000:]}"
            time.sleep(0.02)

    def driver(self) -> psutil.Process:
        (python,) = [p for p in psutil.Process(self.proc.pid).children() if "longrl.trainer.main" in p.cmdline()]
        return python

    def finish(self, expect_rc: int = 0, timeout_s: float = 600) -> str:
        assert self.proc.wait(timeout=timeout_s) == expect_rc, self.stderr[-5000:]
        return self.stderr


def all_gone(procs: list[psutil.Process], within_s: float) -> list[psutil.Process]:
    """The processes of `procs` still alive after `within_s` seconds."""
    _, alive = psutil.wait_procs(procs, timeout=within_s)
    return [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]


def _name(proc: psutil.Process) -> str | None:
    try:
        return proc.name()
    except psutil.NoSuchProcess:
        return None


def metric_lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def worker_pids(stderr: str) -> list[int]:
    """The pids of the worker group the run started last, in rank order (the driver logs each at start-up)."""
    found = dict(re.findall(r"worker rank (\d+) on Ray node .*, pid (\d+)", stderr))
    return [int(found[rank]) for rank in sorted(found, key=int)]


def verbs(pids: list[int]) -> set[str]:
    """The verbs these workers are running now, from Ray's process title (ray::HybridWorker.<verb>)."""
    running = set()
    for pid in pids:
        try:
            title = " ".join(psutil.Process(pid).cmdline())
        except psutil.Error:
            continue
        match = re.search(r"HybridWorker\.(\w+)", title)
        if match:
            running.add(match.group(1))
    return running


def committed(out: Path) -> int:
    """The newest committed step under `out` (0 if none), read without touching the directory."""
    from longrl.checkpoint import CheckpointManager

    return max(CheckpointManager(out).complete_steps(), default=0)


@contextmanager
def frozen(proc: psutil.Process):
    """The driver stopped (SIGSTOP): it writes nothing while the test looks at or copies its files."""
    proc.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        proc.send_signal(signal.SIGCONT)


@pytest.fixture(scope="module")
def small_disk(tmp_path_factory):
    """The run's checkpoint directory on a 128 MiB tmpfs that the test fills when it wants the disk full;
    a plain directory, and no disk-full fault, where mounting needs a root this user is not."""
    out = tmp_path_factory.mktemp("runs") / "resumed"
    out.mkdir()
    if os.geteuid() != 0:
        yield out, False
        return
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=128m", "tmpfs", str(out)], check=True)
    yield out, True
    subprocess.run(["umount", "--lazy", str(out)], check=True)


@pytest.fixture(scope="module")
def resumed_run(tiny_qwen2, math_data, small_disk, tmp_path_factory):
    """Faults inflicted on real processes, then the checks that nothing was lost or duplicated. The same command
    (max_steps=6, max_restarts=2) runs twice:
    1. once a checkpoint is committed, the driver is frozen (SIGSTOP) while a worker generates and again while one
       updates, and its directory copied: what a kill -9 at those moments leaves; then, in the next step's save,
       the driver is frozen once the workers' shards are written and kill -9'd before it commits them;
    2. the second run resumes from the newest committed checkpoint; once global_step_4 is committed one worker is
       kill -9'd (during step 5), the driver restarts the worker group from global_step_4 and goes on; once
       global_step_5 is committed (and step 3 pruned) the test fills the disk: step 6's save fails, the run
       stops with status 1, and no restart is tried for a full disk.
    """
    out, can_fill = small_disk
    snapshots = tmp_path_factory.mktemp("snapshots")
    first = Run(tiny_qwen2, math_data, out, "first", "trainer.max_steps=6", "trainer.max_restarts=2")
    first.wait_for(lambda: len(worker_pids(first.stderr)) == 2, "worker start-up")
    driver, pids = first.driver(), worker_pids(first.stderr)
    descendants = driver.children(recursive=True)
    at = {}
    for verb in ("generate", "update_actor"):  # the moments between checkpoints: nothing is being written
        first.wait_for(lambda verb=verb: committed(out) >= 1 and verb in verbs(pids), f"a worker in {verb}")
        with frozen(driver):
            at[verb] = committed(out) + 1
            shutil.copytree(out, snapshots / verb)
    kill_step = at["update_actor"]
    staging = out / f"global_step_{kill_step}.tmp"
    first.wait_for(staging.exists, f"step {kill_step}'s save")
    driver.send_signal(signal.SIGSTOP)  # between the staging directory and the commit, which only the driver does
    shards = [staging / "actor" / f"rank_{rank}.pt" for rank in range(2)] + [staging / "actor" / "huggingface"]
    deadline = time.monotonic() + 120
    while not (all(p.exists() for p in shards) and "save_checkpoint" not in verbs(pids)):
        assert time.monotonic() < deadline, f"the workers did not write their shards into {staging}"
        if not any(p.exists() for p in shards) and "save_checkpoint" not in verbs(pids):
            driver.send_signal(signal.SIGCONT)  # stopped before it asked the workers to save: let it ask
            time.sleep(0.01)
            driver.send_signal(signal.SIGSTOP)
        time.sleep(0.05)
    driver.send_signal(signal.SIGKILL)
    first.finish(expect_rc=137)
    left = sorted(p.name for p in staging.rglob("*"))
    # Ray's head processes share the driver's fate, and the workers (models, vLLM engines) the head's. Ray's two
    # per-node agents (ray::DashboardAgent, ray::RuntimeEnvAgent; no model memory) exit on their own a minute or
    # two later, after their last report to the dead GCS times out; they are not waited for here.
    agents = {p for p in descendants if _name(p) in ("ray::DashboardAgent", "ray::RuntimeEnvAgent")}
    orphans = all_gone([p for p in descendants if p not in agents], within_s=30)
    assert not orphans, [p.cmdline() for p in orphans]

    second = Run(tiny_qwen2, math_data, out, "second", "trainer.max_steps=6", "trainer.max_restarts=2")
    second.wait_for(lambda: len(worker_pids(second.stderr)) == 2 and committed(out) >= 4, "committed step 4")
    rank, pid = 1, worker_pids(second.stderr)[1]
    os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    second.wait_for(lambda: "restart 1 of trainer.max_restarts=2" in second.stderr, "restart")
    noticed_after_s = time.monotonic() - killed_at
    fault = {"at": at, "kill_step": kill_step, "left": left, "snapshots": snapshots, "rank": rank, "pid": pid,
             "noticed_after_s": noticed_after_s, "disk_full": can_fill}
    if can_fill:
        second.wait_for(lambda: committed(out) == 5 and not (out / "global_step_3").exists(),
                        "committed step 5 (step 3 pruned)")
        fault["restarted_pids"] = worker_pids(second.stderr.split("restart 1 of")[1])
        free = shutil.disk_usage(out).free
        fault["checkpoint_bytes"] = sum(p.stat().st_size for p in (out / "global_step_5").rglob("*") if p.is_file())
        with (out / "ballast").open("wb") as f:  # leaves room for half a checkpoint
            os.posix_fallocate(f.fileno(), 0, free - fault["checkpoint_bytes"] // 2)
        stderr = second.finish(expect_rc=1)
        (out / "ballast").unlink()
    else:
        stderr = second.finish()
    return out, first, stderr, fault


def test_metrics_and_generations_of_every_step(resumed_run):
    out, first, _, _ = resumed_run
    assert "effective config" in first.stdout_path.read_text()
    steps = metric_lines(out)
    required = {"step", "reward/overall", "response_length/mean", "actor/pg_loss", "actor/kl_loss",
                "actor/grad_norm", "actor/entropy", "actor/lr", "actor/skipped_steps", "trainer/restarts",
                "timing_s/gen", "timing_s/old", "timing_s/update", "timing_s/step", "rollout/log_prob_diff_mean",
                "rollout/log_prob_diff_max", "rollout/kl_to_old", "timing_s/weight_sync", "perf/weight_sync_mb",
                "perf/rss_mb_driver", "perf/rss_mb_rank0", "perf/rss_mb_rank1", "perf/open_fds_driver",
                "perf/open_fds_rank0", "perf/open_fds_rank1"}
    assert all(required <= set(line) for line in steps)  # timing_s/old: 2 mini-batches keep the old-log-prob pass
    # each process measured itself: a tiny model's worker holds hundreds of MB (torch, vLLM), the driver less
    assert all(100 < line["perf/rss_mb_rank1"] < 20_000 and 10 < line["perf/open_fds_rank1"] for line in steps)
    # the engine (bf16) and the trainer (fp32) score the same weights: close, not equal
    assert all(0 <= line["rollout/log_prob_diff_mean"] <= line["rollout/log_prob_diff_max"] < 5 for line in steps)
    # every rollout after the first streamed the previous update, or after a resume or a restart the restored
    # checkpoint, into the engine (workers/lifecycle.py); the first ran on the weights the engine loaded from disk
    assert [line["perf/weight_sync_mb"] > 0 for line in steps] == [False, True, True, True, True, True]
    # validation runs every 5 steps and on the last; two of its generations are logged each time
    assert {"val/overall", "val/accuracy", "val/response_length"} <= set(steps[-1])
    generations = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    assert [g["step"] for g in generations] == [5, 5, 6, 6] and "What is" in generations[0]["prompt"]


def test_a_driver_killed_in_rollout_or_update_leaves_the_newest_committed_checkpoint_and_its_metrics(resumed_run):
    """What the disk holds at those moments (the frozen driver's copies) is what the next run starts from: the
    newest committed checkpoint and the metrics of exactly the steps it holds, nothing half-written (the resumed
    run below goes on from such a state and matches an uninterrupted run)."""
    from longrl.checkpoint import CheckpointManager

    _, _, _, fault = resumed_run
    for verb, step in fault["at"].items():
        snap = fault["snapshots"] / verb
        assert CheckpointManager(snap).latest() == snap / f"global_step_{step - 1}", verb
        assert not list(snap.glob("*.tmp")), verb
        assert [line["step"] for line in metric_lines(snap)] == list(range(1, step)), verb


def test_a_driver_killed_between_the_shards_and_the_commit_resumes_from_the_newest_committed_one(resumed_run):
    out, _, second, fault = resumed_run
    step = fault["kill_step"]
    # the workers' shards were all on disk, the driver's trainer_state.json (the commit) was not
    assert {"rank_0.pt", "rank_1.pt", "huggingface", "model_optim"} <= set(fault["left"])
    assert "trainer_state.json" not in fault["left"]
    before_restart = second.split("restart 1 of")[0]
    assert f"resumed from {out}/global_step_{step - 1} at step {step - 1}" in before_restart
    assert f"removing {out}/global_step_{step}.tmp left by an interrupted save" in before_restart
    # each step once, none missing, whatever the kills interrupted
    assert [line["step"] for line in metric_lines(out)] == [1, 2, 3, 4, 5, 6]


def test_a_killed_worker_is_named_and_the_group_restarts_from_the_last_checkpoint(resumed_run):
    out, _, second, fault = resumed_run
    assert re.search(rf"worker rank {fault['rank']} \(node [\d.]+ \w{{8}}, pid {fault['pid']}\) died "
                     rf"\(its process exited\) while running \w+", second), second[-5000:]
    assert fault["noticed_after_s"] < 60  # far inside trainer.worker_timeout_s=300: a death is not waited out
    assert f"resumed from {out}/global_step_4 at step 4" in second.split("restart 1 of")[1]
    lines = metric_lines(out)
    assert [line["trainer/restarts"] for line in lines] == [0, 0, 0, 0, 1, 1]


def test_a_disk_that_fills_during_a_save_keeps_the_previous_checkpoint_and_stops_the_run(resumed_run):
    out, _, second, fault = resumed_run
    if not fault["disk_full"]:
        pytest.skip("mounting the size-limited tmpfs needs root; the disk-full fault was not inflicted")
    assert re.search(rf"error: saving step 6 into {out}/global_step_6.tmp failed \(disk full, \d+ bytes free of "
                     rf"\d+ under {out}\).*", second), second[-5000:]
    assert f"the latest checkpoint is still {out}/global_step_5; the run stops here. Free space under {out}" in second
    assert "restart 2 of" not in second  # new workers would only fill the same disk again
    assert sorted(p.name for p in out.glob("global_step_*")) == ["global_step_4", "global_step_5"]  # no .tmp left
    assert (out / "latest_checkpointed_iteration.txt").read_text().strip() == "5"
    assert [line["step"] for line in metric_lines(out)] == [1, 2, 3, 4, 5, 6]  # step 6 ran; only its save failed
    assert not all_gone([psutil.Process(p) for p in fault["restarted_pids"] if psutil.pid_exists(p)], within_s=30)
    assert fault["checkpoint_bytes"] > 1_000_000  # half a checkpoint was free: the save filled the disk midway


def test_resume_is_exact(resumed_run, tiny_qwen2, math_data, tmp_path):
    """Killed driver + resume (step 4) and killed worker + restart (step 5) give the weights of steps straight."""
    out, _, _, _ = resumed_run
    straight = tmp_path / "straight"
    run_example(tiny_qwen2, math_data, straight, "trainer.max_steps=6", "trainer.save_limit=3")
    for step in (4, 5):  # 4: through the driver's kill and resume; 5: also through the worker's kill and restart
        a = load_model_weights(out / f"global_step_{step}" / "actor" / "model_optim")
        b = load_model_weights(straight / f"global_step_{step}" / "actor" / "model_optim")
        assert a.keys() == b.keys()
        worst = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
        assert worst < 1e-5, f"step {step} after the faults differs from {step} steps straight by {worst}"
    # the weights did move between steps 4 and 5
    assert max((a[k].float() - load_model_weights(straight / "global_step_4" / "actor" / "model_optim")[k].float())
               .abs().max().item() for k in a) > 0


def test_model_merger_cli_writes_a_loadable_hf_dir(resumed_run):
    from transformers import AutoModelForCausalLM

    out, _, _, _ = resumed_run
    actor = out / "global_step_5" / "actor"
    proc = subprocess.run([sys.executable, "scripts/model_merger.py", "--local_dir", str(actor)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    model = AutoModelForCausalLM.from_pretrained(actor / "huggingface", dtype=torch.float32)
    weights = load_model_weights(actor / "model_optim")
    assert torch.equal(model.state_dict()["model.embed_tokens.weight"], weights["model.embed_tokens.weight"])
