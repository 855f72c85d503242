"""longrl/trainer/sft.py: targets from the row's fields, SFT batches, config checks, Ulysses SFT (the two-stage
run is tests/trainer/test_cpu_examples_e2e.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from longrl.config import ConfigError, load_config
from longrl.data.dataset import RLDataset, rows_to_batch
from longrl.trainer.sft import main, sft_batch, validate_sft, with_targets

REPO = Path(__file__).resolve().parents[2]
ROWS = [{"problem": "How many shapes?", "reasoning": "I count 2 shapes.", "answer": "<answer>B</answer>"},
        {"problem": "Which is first?", "reasoning": "The red one is first.", "answer": "<answer>C</answer>"}]


def items_for(tmp_path, tiny_qwen2, rows=ROWS, *overrides: str) -> tuple[list[dict], object]:
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = load_config([f"worker.actor.model.model_path={tiny_qwen2}", f"data.train_files={data}", *overrides])
    tok = AutoTokenizer.from_pretrained(tiny_qwen2)
    return with_targets(RLDataset(str(data), cfg.data, tok), cfg, tok), tok


def test_reasoning_becomes_think_and_the_bare_answer_then_eos(tmp_path, tiny_qwen2):
    items, tok = items_for(tmp_path, tiny_qwen2)
    assert [i["target_text"] for i in items] == ["<think>I count 2 shapes.</think><answer>B</answer>",
                                                 "<think>The red one is first.</think><answer>C</answer>"]
    assert items[0]["target_ids"] == tok(items[0]["target_text"], add_special_tokens=False)["input_ids"] + \
        [tok.eos_token_id]


def test_the_math_config_builds_the_reasoning_from_the_question(tmp_path, tiny_qwen2):
    template = load_config(["config=configs/sft_math.yaml"]).data.sft_response_template
    items, _ = items_for(tmp_path, tiny_qwen2, [{"problem": "What is 3 + 4?", "answer": "7"}],
                         f"data.sft_response_template={template}")
    assert items[0]["target_text"] == "<think>3 + 4 = 7</think> \\boxed{7}"


def test_a_field_missing_from_the_rows_is_named_with_the_fields_they_have(tmp_path, tiny_qwen2):
    with pytest.raises(ConfigError, match=r"row 0 cannot fill data.sft_response_template.*'reasoning'.*"
                                          r"\['answer', 'problem'\]"):
        items_for(tmp_path, tiny_qwen2, [{"problem": "What is 3 + 4?", "answer": "7"}])


def test_targets_longer_than_max_response_length_are_dropped_or_refused(tmp_path, tiny_qwen2):
    long_row = {**ROWS[1], "reasoning": "The red one is first. " * 20}
    items, _ = items_for(tmp_path, tiny_qwen2, [ROWS[0], long_row], "data.max_response_length=40")
    assert [i["row"] for i in items] == [0]
    with pytest.raises(ConfigError, match="max_response_length=40"):
        items_for(tmp_path, tiny_qwen2, [ROWS[0], long_row], "data.max_response_length=40",
                  "data.filter_overlong_prompts=false")


def test_sft_batch_right_pads_targets_and_masks_the_padding():
    rows = rows_to_batch([{"prompt_ids": [1, 2], "target_ids": [5, 6, 7], "target_text": "x"},
                          {"prompt_ids": [3], "target_ids": [8], "target_text": "y"}])
    batch = sft_batch(rows, pad_id=0)
    assert torch.equal(batch["responses"], torch.tensor([[5, 6, 7], [8, 0, 0]]))
    assert torch.equal(batch["response_mask"], torch.tensor([[1, 1, 1], [1, 0, 0]]))
    assert "target_ids" not in batch and list(batch["prompt_ids"]) == [[1, 2], [3]]


def test_validate_lists_every_problem_at_once(tiny_qwen2):
    cfg = load_config([f"worker.actor.model.model_path={tiny_qwen2}", "worker.actor.global_batch_size=3",
                       "trainer.logger=[console,nope]"])
    with pytest.raises(ConfigError) as info:
        validate_sft(cfg, model_max_positions=512)
    message = str(info.value)
    # train_files empty; 3 rows cannot split over 2 ranks; 512 + 512 > 512 positions; unknown logger
    assert "data.train_files is empty" in message and "global_batch_size=3" in message
    assert "exceeds the model's max_position_embeddings=512" in message and "'nope'" in message


def test_cli_errors_come_before_any_worker_starts(capsys, tiny_qwen2):
    assert main(["config=configs/sft_math.yaml", f"worker.actor.model.model_path={tiny_qwen2}",
                 "data.train_files=/nowhere/train.jsonl"]) == 2
    assert "/nowhere/train.jsonl" in capsys.readouterr().err


@pytest.mark.e2e
def test_ulysses_sequence_parallel_sft_takes_the_same_steps_as_data_parallel(tiny_qwen2, math_data, tmp_path):
    def losses(sp: int) -> list[float]:
        out = tmp_path / f"sp{sp}"
        proc = subprocess.run(
            [sys.executable, "-m", "longrl.trainer.sft", "config=configs/sft_math.yaml",
             f"worker.actor.model.model_path={tiny_qwen2}", f"data.train_files={math_data['train']}",
             "data.val_files=", "data.shuffle=false", "trainer.max_steps=2", "trainer.worker_timeout_s=300",
             f"worker.actor.ulysses_size={sp}", f"trainer.save_checkpoint_path={out}"],
            cwd=REPO, capture_output=True, text=True, timeout=600, env={**os.environ, "RAY_DEDUP_LOGS": "1"})
        assert proc.returncode == 0, proc.stderr[-5000:]
        lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        return [line[key] for line in lines for key in ("actor/sft_loss", "actor/grad_norm")]

    # 2 ranks: two data-parallel halves of each 32-row step, or one SP group splitting every sequence in two;
    # the token-mean loss and its gradient are the same either way
    assert losses(2) == pytest.approx(losses(1), rel=1e-5)
