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
                 "qwen2_5_omni_grpo",  # tests/trainer/test_omni_grpo.py
                 "sd3_tiny_grpo",  # tests/diffusion/test_sd3_e2e.py
                 "vila_video_grpo"}  # tests/trainer/test_vila_grpo.py (its config, with images as well)
RUN_HERE = ["qwen2_math_grpo", "qwen2_math_sft_then_grpo", "qwen2_5_vl_image_grpo", "qwen2_5_vl_video_grpo",
            "wan_tiny_grpo"]
# Scripts that do not run to completion with their default arguments yet, with why (issue #13). They are run
# with other arguments by test_algorithms_e2e.py.
NOT_YET = {"qwen2_math_dapo": "a random-init model scores every DAPO group alike, so online filtering keeps no "
                              "group; starting from qwen2_math_sft.sh's CoT-SFT model was tried and its groups "
                              "score alike too"}


def test_every_cpu_example_is_run_by_a_test_or_named_as_not_running_yet():
    scripts = {p.stem for p in (REPO / "examples/cpu").glob("*.sh")}
    assert scripts == COVERED_THERE | set(RUN_HERE) | set(NOT_YET)


@pytest.mark.e2e
def test_every_cpu_example_runs_one_step_with_its_default_arguments(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "EVAL_LIMIT": "2"}
    for name in ("MODEL_PATH", "DATA_DIR", "VIDEO_PATH", "SFT_ARGS"):
        env.pop(name, None)
    sft_then_grpo = tmp_path / "qwen2_math_sft_then_grpo"
    script_env = {"qwen2_math_sft_then_grpo": {"OUT": str(sft_then_grpo)}}
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
    print("seconds per script:", seconds)
