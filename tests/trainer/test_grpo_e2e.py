"""The CPU math example end to end: 2 Ray workers, FSDP actor, vLLM rollouts, checkpoints, exact resume after
kill -9 of the driver and of a worker."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
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


@pytest.fixture(scope="module")
def resumed_run(tiny_qwen2, math_data, tmp_path_factory):
    """Faults inflicted on real processes, then the checks that nothing was lost or duplicated:
    1. max_steps=5, the driver kill -9'd the moment the step-4 checkpoint save starts (global_step_4.tmp
       appears: mid-save, or just after its commit on a fast disk);
    2. the same command with max_steps=6 and trainer.max_restarts=1 resumes from the newest committed
       checkpoint; once global_step_5 is committed one worker is kill -9'd (during step 6), the driver
       restarts the worker group from global_step_5 and finishes.
    """
    out = tmp_path_factory.mktemp("runs") / "resumed"
    first = Run(tiny_qwen2, math_data, out, "first", "trainer.max_steps=5")
    first.wait_for(lambda: (out / "global_step_4.tmp").exists() or (out / "global_step_4").exists(),
                   "step-4 save")
    driver = first.driver()
    descendants = driver.children(recursive=True)
    driver.send_signal(signal.SIGKILL)
    first.finish(expect_rc=137)
    from longrl.checkpoint import CheckpointManager

    committed = int(CheckpointManager(out).latest().name.rsplit("_", 1)[1])
    # Ray's head processes share the driver's fate, and the workers (models, vLLM engines) the head's. Ray's two
    # per-node agents (ray::DashboardAgent, ray::RuntimeEnvAgent; no model memory) exit on their own a minute or
    # two later, after their last report to the dead GCS times out; they are not waited for here.
    agents = {p for p in descendants if _name(p) in ("ray::DashboardAgent", "ray::RuntimeEnvAgent")}
    orphans = all_gone([p for p in descendants if p not in agents], within_s=30)
    assert not orphans, [p.cmdline() for p in orphans]

    second = Run(tiny_qwen2, math_data, out, "second", "trainer.max_steps=6", "trainer.max_restarts=1")
    second.wait_for(lambda: "pid" in second.stderr and (out / "global_step_5" / "trainer_state.json").exists(),
                    "committed step 5")
    rank, pid = re.search(r"worker rank (1) on Ray node .*, pid (\d+)", second.stderr).groups()
    os.kill(int(pid), signal.SIGKILL)
    killed_at = time.monotonic()
    second.wait_for(lambda: "restart 1 of trainer.max_restarts=1" in second.stderr, "restart")
    noticed_after_s = time.monotonic() - killed_at
    return out, first, second.finish(), {"committed": committed, "rank": rank, "pid": pid,
                                         "noticed_after_s": noticed_after_s}


def test_metrics_and_generations_of_every_step(resumed_run):
    out, first, _, _ = resumed_run
    assert "effective config" in first.stdout_path.read_text()
    steps = metric_lines(out)
    required = {"step", "reward/overall", "response_length/mean", "actor/pg_loss", "actor/kl_loss",
                "actor/grad_norm", "actor/entropy", "actor/lr", "actor/skipped_steps", "trainer/restarts",
                "timing_s/gen", "timing_s/old", "timing_s/update", "timing_s/step", "rollout/log_prob_diff_mean",
                "rollout/log_prob_diff_max", "rollout/kl_to_old", "timing_s/weight_sync", "perf/weight_sync_mb"}
    assert all(required <= set(line) for line in steps)  # timing_s/old: 2 mini-batches keep the old-log-prob pass
    # the engine (bf16) and the trainer (fp32) score the same weights: close, not equal
    assert all(0 <= line["rollout/log_prob_diff_mean"] <= line["rollout/log_prob_diff_max"] < 5 for line in steps)
    # every rollout after the first streamed the previous update, or after a resume or a restart the restored
    # checkpoint, into the engine (workers/lifecycle.py); the first ran on the weights the engine loaded from disk
    assert [line["perf/weight_sync_mb"] > 0 for line in steps] == [False, True, True, True, True, True]
    # validation runs every 5 steps and on the last; two of its generations are logged each time
    assert {"val/overall", "val/accuracy", "val/response_length"} <= set(steps[-1])
    generations = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    assert [g["step"] for g in generations] == [5, 5, 6, 6] and "What is" in generations[0]["prompt"]


def test_a_driver_killed_mid_save_resumes_from_the_newest_committed_checkpoint(resumed_run):
    out, _, second, fault = resumed_run
    assert fault["committed"] in (3, 4)  # the kill landed in step 4's save (3) or just after its commit (4)
    assert f"resumed from {out}/global_step_{fault['committed']} at step {fault['committed']}" in second
    # each step once, none missing, whatever the kill interrupted
    assert [line["step"] for line in metric_lines(out)] == [1, 2, 3, 4, 5, 6]
    assert sorted(p.name for p in out.glob("global_step_*")) == ["global_step_5", "global_step_6"]
    assert (out / "latest_checkpointed_iteration.txt").read_text().strip() == "6"


def test_a_killed_worker_is_named_and_the_group_restarts_from_the_last_checkpoint(resumed_run):
    out, _, second, fault = resumed_run
    assert re.search(rf"worker rank {fault['rank']} \(node [\d.]+ \w{{8}}, pid {fault['pid']}\) died "
                     rf"\(its process exited\) while running \w+", second), second[-5000:]
    assert fault["noticed_after_s"] < 60  # far inside trainer.worker_timeout_s=300: a death is not waited out
    assert f"resumed from {out}/global_step_5 at step 5" in second.split("restart 1 of")[1]
    lines = metric_lines(out)
    assert [line["trainer/restarts"] for line in lines] == [0, 0, 0, 0, 0, 1]


def test_resume_is_exact(resumed_run, tiny_qwen2, math_data, tmp_path):
    """Killed driver + resume (step 5) and killed worker + restart (step 6) give the weights of 6 steps straight."""
    out, _, _, _ = resumed_run
    straight = tmp_path / "straight"
    run_example(tiny_qwen2, math_data, straight, "trainer.max_steps=6")
    for step in (5, 6):
        a = load_model_weights(out / f"global_step_{step}" / "actor" / "model_optim")
        b = load_model_weights(straight / f"global_step_{step}" / "actor" / "model_optim")
        assert a.keys() == b.keys()
        worst = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
        assert worst < 1e-5, f"step {step} after the faults differs from {step} steps straight by {worst}"
    # the weights did move between steps 5 and 6
    assert max((a[k].float() - load_model_weights(straight / "global_step_5" / "actor" / "model_optim")[k].float())
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
