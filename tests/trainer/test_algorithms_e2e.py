"""Each algorithm example runs 2 RL steps on CPU (tiny Qwen2, 2 Ray workers, vLLM)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e
FAST = ["trainer.max_steps=2", "trainer.save_freq=-1", "trainer.val_freq=-1", "trainer.worker_timeout_s=300",
        "data.max_response_length=16"]


def run(script: str, tiny_qwen2: Path, math_data: dict, out: Path, *overrides: str) -> list[dict]:
    # SFT_MODEL: the DAPO example starts from it (a random model here: the tests below shape its rewards)
    env = {**os.environ, "MODEL_PATH": str(tiny_qwen2), "SFT_MODEL": str(tiny_qwen2),
           "DATA_DIR": str(math_data["train"].parent), "PYTHON": sys.executable}
    proc = subprocess.run(["bash", f"examples/cpu/{script}.sh", f"trainer.save_checkpoint_path={out}", *FAST,
                           *overrides], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-5000:]
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


# Two runs also carry settings that must reach FSDP and DCP: EasyR1's bf16-moment AdamW, saved with the
# checkpoint, and Long-RL's model-only checkpoint.
EXTRA = {"qwen2_math_rloo": ["worker.actor.optim.strategy=adamw_bf16", "trainer.save_freq=2"],
         "qwen2_math_remax": ["trainer.save_freq=2", "trainer.save_model_only=true"]}


# qwen2_math_drgrpo runs in test_exact_full_vocabulary_kl_loss_... below (one run, both tests' assertions)
@pytest.mark.parametrize("script", ["qwen2_math_reinforce", "qwen2_math_rloo", "qwen2_math_remax",
                                    "qwen2_math_gspo"])
def test_example_runs_two_steps(script, tiny_qwen2, math_data, tmp_path):
    lines = run(script, tiny_qwen2, math_data, tmp_path / script, *EXTRA.get(script, []))
    assert [line["step"] for line in lines] == [1, 2]
    assert all("actor/pg_loss" in line for line in lines)
    if script in EXTRA:
        from torch.distributed.checkpoint import FileSystemReader

        saved = FileSystemReader(str(tmp_path / script / "global_step_2" / "actor" / "model_optim")).read_metadata()
        moments = {k: m.properties.dtype for k, m in saved.state_dict_metadata.items() if "exp_avg" in k}
        if script == "qwen2_math_rloo":
            assert moments and set(moments.values()) == {torch.bfloat16}
        else:
            assert not any(key.startswith("optim.") for key in saved.state_dict_metadata)


def test_ppo_with_gae_trains_a_critic(tiny_qwen2, math_data, tmp_path):
    lines = run("qwen2_math_ppo", tiny_qwen2, math_data, tmp_path / "ppo")
    assert all({"critic/vf_loss", "critic/vf_clipfrac", "critic/grad_norm", "actor/pg_loss"} <= set(line)
               for line in lines)


def test_dapo_filters_all_equal_groups_and_generates_more_rounds(tiny_qwen2, math_data, tmp_path):
    # half the prompts (even answers) form all-equal groups: a full batch of mixed groups needs extra rounds
    lines = run("qwen2_math_dapo", tiny_qwen2, math_data, tmp_path / "dapo",
                "worker.reward.reward_function=tests/trainer/varied_reward.py:compute_score",
                "algorithm.filter_key=overall", "algorithm.filter_low=0.0", "algorithm.filter_high=1.0",
                "trainer.max_try_make_batch=8")
    for line in lines:
        assert line["rollout/kept_groups"] >= 8 and line["rollout/gen_rounds"] >= 2
        assert line["rollout/seen_groups"] == 8 * line["rollout/gen_rounds"]


def test_dapo_gives_up_with_a_clear_error_when_every_group_is_all_equal(tiny_qwen2, math_data, tmp_path):
    env = {**os.environ, "SFT_MODEL": str(tiny_qwen2), "DATA_DIR": str(math_data["train"].parent),
           "PYTHON": sys.executable}
    # a random tiny model never answers right: every dapo accuracy is -1, every group all-equal
    proc = subprocess.run(["bash", "examples/cpu/qwen2_math_dapo.sh", f"trainer.save_checkpoint_path={tmp_path}",
                           *FAST, "trainer.max_try_make_batch=2"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode != 0
    assert "trainer.max_try_make_batch=2" in proc.stderr


def test_exact_full_vocabulary_kl_loss_runs_and_is_non_negative(tiny_qwen2, math_data, tmp_path):
    # The Dr. GRPO example (it keeps GRPO's KL loss) carries the full-vocabulary KL: one run checks both, which
    # saves an RL start-up. All 8 x 4 responses in one mini-batch: the update is on-policy and takes pi_old from
    # its own forward.
    lines = run("qwen2_math_drgrpo", tiny_qwen2, math_data, tmp_path / "full_kl", "algorithm.kl_penalty=full",
                "trainer.save_freq=-1", "worker.actor.global_batch_size=8", "worker.actor.entropy_coef=0.01")
    assert [line["step"] for line in lines] == [1, 2] and all("actor/pg_loss" in line for line in lines)
    # step 1's policy equals the reference: KL 0; after one update it is positive (the random model's rewards are
    # all alike, so the advantages, mean-centred without std scaling here, are 0 and the entropy bonus is what moves
    # the policy)
    assert lines[0]["actor/kl_loss"] == pytest.approx(0.0, abs=1e-6) and lines[1]["actor/kl_loss"] > 0
    # no old-log-prob pass; the engine-vs-trainer drift comes from the update's forward (engine fp32 here: close)
    for line in lines:
        assert "timing_s/old" not in line and line["actor/ppo_kl"] == 0.0
        assert 0 <= line["rollout/log_prob_diff_mean"] <= line["rollout/log_prob_diff_max"] < 1e-3
