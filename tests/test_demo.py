"""The demo's own parts (longrl/demo.py, longrl/demo_report.py); its stages are the CLIs tested elsewhere."""

from __future__ import annotations

import json

import torch

from longrl import demo
from longrl.demo_report import write_report


def test_the_sft_target_concludes_with_the_option_the_reasoning_names():
    row = {"options": ["A. 3", "B. red square", "C. 2", "D. blue square"],
           "reasoning": "The shapes appear in this order: the red square. So the red square appears first. "
                        "The answer is B."}
    assert demo.concluded(row) == "red square"


def test_the_colour_tower_reports_colour_per_quarter_and_nothing_for_black(tmp_path):
    from transformers import Qwen2_5_VLForConditionalGeneration

    from longrl.models.tiny_vl import build_qwen2_5_vl

    path = build_qwen2_5_vl(tmp_path / "m", hidden_size=128, num_layers=1)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(path, dtype=torch.float32)
    demo.colour_tower(model)
    # one 28x28 frame pair = 2x2 patches of 14 = one merged token; normalised pixels as the processor makes them
    mean, std = torch.tensor(demo.CLIP_MEAN), torch.tensor(demo.CLIP_STD)

    def token(rgb: tuple[float, float, float]) -> torch.Tensor:
        pixels = ((torch.tensor(rgb) - mean) / std).view(1, 3, 1, 1, 1).expand(4, 3, 2, 14, 14)
        with torch.no_grad():  # [patches in merge order, C * T * 14 * 14]
            return model.model.visual(pixels.reshape(4, -1), grid_thw=torch.tensor([[1, 2, 2]])).pooler_output
    black, red = token((0.0, 0.0, 0.0)), token((1.0, 0.0, 0.0))
    assert black.shape == (1, 128)
    torch.testing.assert_close(black, torch.zeros_like(black), atol=1e-3, rtol=0)  # float residue, RMS-normed
    # red lights the red channel's 2 frames x 4 quarters of each of the 4 patches (24 features a patch)
    lit = torch.nonzero(red[0].abs() > 0.1).flatten().tolist()
    assert lit == [p * 24 + f for p in range(4) for f in range(8)]


def test_the_report_has_the_before_after_table_the_verdict_and_the_curves(tmp_path):
    base = {"baseline_most_common_answer": "A", "baseline_accuracy": 0.25, "format_accuracy": 1.0,
            "answer_rate": 1.0, "num_scored": 200}
    for name, acc in (("sft", 0.31), ("grpo", 0.47)):
        (tmp_path / f"eval_{name}").mkdir()
        (tmp_path / f"eval_{name}" / "results.json").write_text(json.dumps(
            {**base, "accuracy": acc, "accuracy_by_category": {"count": acc}}))
    (tmp_path / "grpo").mkdir()
    (tmp_path / "grpo" / "metrics.jsonl").write_text("".join(
        json.dumps({"step": s, "reward/overall": 0.5 + s / 10, "reward/accuracy": s / 10,
                    "response_length/mean": 80.0, "actor/kl_loss": 0.01 * s}) + "\n" for s in (1, 2, 3)))
    report = write_report(tmp_path, {"sft": 300.0}).read_text()
    assert "| after CoT-SFT | 31.0% | 100.0% | 100.0% | 31.0% |" in report
    assert "| after GRPO (from the SFT model) | 47.0% |" in report
    assert "- SFT vs always 'A': +6.0 points" in report
    assert "- GRPO vs SFT: +16.0 points on 200 held-out questions" in report
    assert (tmp_path / "curves.png").stat().st_size > 0 and "![GRPO curves](curves.png)" in report
