"""The omni path end to end: tiny Qwen2.5-Omni thinker, synthetic audio-visual clips (the beeps and the pitch are
heard, the squares seen), examples/cpu/qwen2_5_omni_grpo.sh on 2 Ray workers with vLLM hearing each video's
audio; exact resume; the merged checkpoint in transformers, vLLM and eval/eval.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from longrl.checkpoint.merger import load_model_weights

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e


def run_example(model: Path, data: Path, out: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MODEL_PATH": str(model), "DATA_DIR": str(data), "PYTHON": sys.executable,
           "RAY_DEDUP_LOGS": "1"}
    cmd = ["bash", "examples/cpu/qwen2_5_omni_grpo.sh", f"trainer.save_checkpoint_path={out}", "trainer.save_freq=1",
           "trainer.save_limit=3", "trainer.worker_timeout_s=300", "trainer.max_steps=3", *overrides]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from longrl.data.synthetic_av import generate_dataset
    from longrl.models.tiny_omni import build_qwen2_5_omni

    root = tmp_path_factory.mktemp("omni_grpo")
    model = build_qwen2_5_omni(root / "model")
    data = root / "data"
    generate_dataset(data, n_train=8, n_val=4, n_test=0)
    out = root / "run"
    run_example(model, data, out)
    return model, data, out


def test_three_grpo_steps_hear_the_audio_the_rollout_heard(run):
    _, _, out = run
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [m for m in lines if "actor/pg_loss" in m]
    assert len(steps) == 3
    for m in steps:
        # the actor's old log-probs (with the audio features) against vLLM's for every sampled token
        assert m["rollout/log_prob_diff_max"] < 1e-3, m
        assert m["video/decoded"] > 0 and m.get("audio/skipped", 0) == 0
    # 12 prompts over 3 steps cover the 8 rows, half of them 44.1 kHz stereo
    assert sum(m.get("audio/resampled", 0) for m in steps) > 0 and sum(m.get("audio/downmixed", 0) for m in steps) > 0
    print({k: steps[-1][k] for k in sorted(steps[-1]) if k.startswith(("rollout/log_prob", "audio/", "reward"))})


def test_resume_is_exact_and_the_merged_checkpoint_loads_in_transformers_vllm_and_eval(run, tmp_path):
    from transformers import Qwen2_5OmniThinkerForConditionalGeneration

    model, data, out = run
    step3 = load_model_weights(out / "global_step_3" / "actor" / "model_optim")
    shutil.rmtree(out / "global_step_3")
    second = run_example(model, data, out, f"trainer.load_checkpoint_path={out}/global_step_2")  # redoes step 3
    assert f"resumed from {out}/global_step_2" in second.stderr
    again = load_model_weights(out / "global_step_3" / "actor" / "model_optim")
    assert step3.keys() == again.keys()
    worst = max((step3[k].float() - again[k].float()).abs().max().item() for k in step3)
    assert worst < 1e-5, worst

    actor = out / "global_step_3" / "actor"
    proc = subprocess.run([sys.executable, "scripts/model_merger.py", "--local_dir", str(actor)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    merged = actor / "huggingface"
    thinker, info = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(merged, dtype=torch.float32,
                                                                               output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert torch.equal(thinker.state_dict()["audio_tower.conv1.weight"], again["audio_tower.conv1.weight"])
    # eval.py starts vLLM on the merged directory and answers the audio-visual questions
    proc = subprocess.run([sys.executable, "eval/eval.py", "--model-path", str(merged), "--data-path",
                           str(data / "val.jsonl"), "--video-dir", str(data), "--output-dir", str(tmp_path / "eval"),
                           "--num-video-frames", "8", "--max-new-tokens", "8", "--dtype", "fp32",
                           "--max-model-len", "1024"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-5000:]
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    generations = [json.loads(line) for line in (tmp_path / "eval" / "generations.jsonl").read_text().splitlines()]
    assert len(generations) == 4 and all(g.get("error") is None for g in generations), generations
    print(results)
