"""Every script in examples/cpu/ runs to completion with its default arguments (one RL step each, in one test).

The scripts that tests/trainer/test_algorithms_e2e.py already runs (with the session's tiny model) are listed
in COVERED_THERE; the others run here one after another, as a user runs them from a clean clone: each builds
its own tiny model and data under assets/ when they are missing. Only the step count, validation and
checkpointing are overridden, to keep the run short.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ONE_STEP = ["trainer.max_steps=1", "trainer.save_freq=-1", "trainer.val_freq=-1", "trainer.val_before_train=false",
            "trainer.worker_timeout_s=600"]
COVERED_THERE = {"qwen2_math_reinforce", "qwen2_math_rloo", "qwen2_math_remax", "qwen2_math_gspo",
                 "qwen2_math_drgrpo", "qwen2_math_ppo",
                 "qwen2_math_sft",  # the first stage of qwen2_math_sft_then_grpo, run whole below
                 # every algorithm script there execs it, and so does qwen2_math_dapo below; its config
                 # (configs/cpu_math.yaml) runs with its defaults in qwen2_math_sft_then_grpo's GRPO stage
                 "qwen2_math_grpo",
                 "qwen2_5_omni_grpo",  # tests/trainer/test_omni_grpo.py
                 "qwen2_math_lora_grpo",  # tests/trainer/test_lora_e2e.py
                 "sd3_tiny_grpo", "wan_tiny_grpo"}  # tests/diffusion/test_grpo_e2e.py
# qwen2_math_dapo starts from qwen2_math_sft_then_grpo's SFT model (it would train the same one itself)
RUN_HERE = ["qwen2_math_sft_then_grpo", "qwen2_math_dapo", "qwen2_5_vl_image_grpo",
            "qwen2_5_vl_video_grpo", "vila_video_grpo"]


def test_every_cpu_example_is_run_by_a_test():
    scripts = {p.stem for p in (REPO / "examples/cpu").glob("*.sh")}
    assert scripts == COVERED_THERE | set(RUN_HERE)


@pytest.mark.e2e
def test_every_cpu_example_runs_one_step_with_its_default_arguments(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "EVAL_LIMIT": "2"}
    for name in ("MODEL_PATH", "DATA_DIR", "VIDEO_PATH", "SFT_ARGS", "SFT_MODEL"):
        env.pop(name, None)
    sft_then_grpo = tmp_path / "qwen2_math_sft_then_grpo"
    script_env = {"qwen2_math_sft_then_grpo": {"OUT": str(sft_then_grpo)},
                  "qwen2_math_dapo": {"SFT_MODEL": str(sft_then_grpo / "model")}}
    seconds = {}
    for script in RUN_HERE:
        if script == "qwen2_math_sft_then_grpo":  # it merges and evaluates the GRPO run's last checkpoint
            overrides, metrics = ONE_STEP[:1] + ONE_STEP[2:], sft_then_grpo / "grpo" / "metrics.jsonl"
        else:
            run_dir = tmp_path / script
            overrides, metrics = [*ONE_STEP, f"trainer.save_checkpoint_path={run_dir}"], run_dir / "metrics.jsonl"
        start = time.monotonic()
        proc = subprocess.run(["bash", f"examples/cpu/{script}.sh", *overrides], cwd=REPO,
                              env={**env, **script_env.get(script, {})}, capture_output=True, text=True,
                              timeout=1500)
        seconds[script] = round(time.monotonic() - start)
        assert proc.returncode == 0, f"{script}:\n{proc.stdout[-2000:]}\n{proc.stderr[-5000:]}"
        steps = [json.loads(line).get("step") for line in metrics.read_text().splitlines()]
        assert 1 in steps, f"{script}: no step 1 in {metrics}"
        if script == "qwen2_math_sft_then_grpo":
            check_sft_then_grpo(sft_then_grpo, proc.stdout)
        if script == "qwen2_math_dapo":  # the SFT model answers some questions right: groups differ
            line = json.loads(metrics.read_text().splitlines()[0])
            assert line["rollout/kept_groups"] >= 8, line
    print("seconds per script:", seconds)


def check_sft_then_grpo(out: Path, stdout: str) -> None:
    """SFT ran its epochs with validation, was merged, and GRPO started from the merged model; both evaluated."""
    sft_lines = [json.loads(line) for line in (out / "sft" / "metrics.jsonl").read_text().splitlines()]
    last = sft_lines[-1]["step"]
    assert [line["step"] for line in sft_lines] == list(range(1, last + 1)) and "val/sft_loss" in sft_lines[-1]
    sft_model = out / "sft" / f"global_step_{last}" / "actor" / "huggingface"
    assert (sft_model / "model.safetensors").is_file() and (out / "model").resolve() == sft_model.resolve()
    rl_config = json.loads(stdout[stdout.rindex("effective config:") + len("effective config:"):]
                           .split("\n}\n", 1)[0] + "\n}")
    assert rl_config["worker"]["actor"]["model"]["model_path"] == str(sft_model)
    for stage in ("eval_sft", "eval_grpo"):
        assert json.loads((out / stage / "results.json").read_text())["num_scored"] == 2
