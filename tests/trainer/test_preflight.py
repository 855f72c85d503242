"""`python3 -m longrl.config`: load, resolve, validate and print, or list every problem; no Ray."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def config_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}  # fail fast: no hub here
    return subprocess.run([sys.executable, "-m", "longrl.config", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)


def test_config_cli_prints_the_effective_config_and_exits_0(tiny_qwen2):
    proc = config_cli("config=configs/cpu_math.yaml", f"worker.actor.model.model_path={tiny_qwen2}",
                      "trainer.save_checkpoint_path=null", "worker.rollout.n=8")
    assert proc.returncode == 0, proc.stderr
    cfg = json.loads(proc.stdout)
    assert cfg["worker"]["rollout"]["n"] == 8 and cfg["trainer"]["save_checkpoint_path"] is None
    assert "ray" not in proc.stderr.lower()


def test_config_cli_lists_every_problem_and_exits_2(tiny_qwen2):
    proc = config_cli("config=configs/cpu_math.yaml", f"worker.actor.model.model_path={tiny_qwen2}",
                      "worker.rollout.n=1", "worker.actor.ulysses_size=3")
    assert proc.returncode == 2 and proc.stdout == ""
    assert "worker.rollout.n=1" in proc.stderr and "ulysses_size=3" in proc.stderr


def test_config_cli_typo_names_the_closest_key():
    proc = config_cli("worker.rollout.temprature=0.5")
    assert proc.returncode == 2 and "did you mean 'worker.rollout.temperature'" in proc.stderr


def test_a_hub_id_that_cannot_be_reached_is_named(tmp_path):
    proc = config_cli("worker.actor.model.model_path=Qwen/Qwen2.5-VL-3B-Instruct", "data.train_files=x.jsonl")
    assert proc.returncode == 2
    assert "worker.actor.model.model_path='Qwen/Qwen2.5-VL-3B-Instruct' is not a local directory and could not " \
           "be fetched from the Hugging Face hub" in proc.stderr
