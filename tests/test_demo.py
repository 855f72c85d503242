"""The demo's own parts (longrl/demo.py, longrl/demo_report.py); its stages are the CLIs tested elsewhere."""

from __future__ import annotations

import collections
import json
import math

import pytest
import torch

from longrl import demo
from longrl.demo_report import (
    paired_margin,
    plateau,
    seeds_summary,
    wilson,
    write_report,
)


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


def _eval(out, name: str, correct: list[bool], by_category: dict[str, float]) -> None:
    """An eval_<name> directory as eval/eval.py writes it: results.json and per-question generations."""
    (out / f"eval_{name}").mkdir(parents=True)
    (out / f"eval_{name}" / "results.json").write_text(json.dumps(
        {"baseline_most_common_answer": "A", "baseline_accuracy": 0.25, "format_accuracy": 1.0, "answer_rate": 1.0,
         "num_scored": len(correct), "accuracy": sum(correct) / len(correct), "accuracy_by_category": by_category}))
    (out / f"eval_{name}" / "generations.jsonl").write_text("".join(
        json.dumps({"id": f"test-{i:05d}", "correct": c, "prediction": "A" if c else "B"}) + "\n"
        for i, c in enumerate(correct)))


def _demo_out(tmp_path, sft_val_losses=(0.2, 0.1, 0.099), control_correct=70, control_val_losses=(0.04, 0.039)):
    n = 200
    _eval(tmp_path, "sft", [i < 62 for i in range(n)], {"count": 0.31, "order": 0.35})
    _eval(tmp_path, "grpo", [i < 120 for i in range(n)], {"count": 0.6, "order": 0.3})
    _eval(tmp_path, "sft_control", [i < control_correct for i in range(n)], {"count": 0.35, "order": 0.36})
    (tmp_path / "data").mkdir()  # every wrong answer above is the near miss
    (tmp_path / "data" / "test.jsonl").write_text("".join(
        json.dumps({"problem_id": f"test-{i:05d}", "answer": "<answer>A</answer>", "near_miss": "B"}) + "\n"
        for i in range(n)))
    (tmp_path / "grpo").mkdir()
    (tmp_path / "grpo" / "metrics.jsonl").write_text("".join(
        json.dumps({"step": s, "reward/overall": 0.5 + s / 10, "reward/accuracy": s / 10, "val/accuracy": s / 10,
                    "response_length/mean": 80.0, "actor/kl_loss": 0.01 * s}) + "\n" for s in (1, 2, 3)))
    (tmp_path / "sft").mkdir()
    (tmp_path / "sft" / "metrics.jsonl").write_text("".join(
        json.dumps({"step": 50 * (i + 1), "actor/sft_loss": v, "val/sft_loss": v}) + "\n"
        for i, v in enumerate(sft_val_losses)))
    (tmp_path / "sft_control").mkdir()  # the control validates before its first step and after its last
    (tmp_path / "sft_control" / "metrics.jsonl").write_text("".join(
        json.dumps({"step": s, "val/sft_loss": v}) + "\n" for s, v in zip((0, 120), control_val_losses)))
    return tmp_path


def test_the_report_has_every_row_with_its_interval_the_margins_the_goals_and_the_curves(tmp_path):
    report = write_report(_demo_out(tmp_path), {"sft": 300.0}).read_text()
    assert "| after CoT-SFT | 31.0% [25.0, 37.7] | 100.0% | 100.0% | 69.0% | 31.0% | 35.0% |" in report
    assert "| after GRPO (from the SFT model) | 60.0% [53.1, 66.5] | 100.0% | 100.0% | 40.0% |" in report
    assert ("| control: more SFT instead of GRPO (same number of trained responses) | 35.0% [28.7, 41.8] | 100.0% "
            "| 100.0% | 65.0% |") in report
    assert "| always answer 'A' (baseline) | 25.0% [19.5, 31.4] | | | |" in report
    assert "- SFT vs always 'A': +6.0 points" in report
    # paired: GRPO answers a superset of the control's questions correctly (50 more of 200)
    assert "- GRPO vs the control: +25.0 points [95% interval +19.0, +31.0] on 200 held-out questions" in report
    assert "- goal, GRPO >= control + 10 points: met (+25.0)" in report
    assert "- goal, no category below its SFT value: NOT met: order (30.0% < 35.0%)" in report
    assert ("- SFT's own held-out loss: val/sft_loss went 0.1000 -> 0.0990 (-1.0%) between its last two evaluations "
            "(steps 100 to 150, the learning rate decaying): flat") in report
    assert ("- SFT plateau check on held-out loss: more SFT (the control, 120 steps) moved val/sft_loss 0.0400 -> "
            "0.0390 (-2.5%): plateaued (it fell by less than 5%)") in report
    assert ("- SFT plateau check on held-out accuracy: more SFT (the control) moved it +4.0 points: plateaued "
            "(less than +5)") in report
    assert "- goal, SFT at its plateau on held-out loss or accuracy before GRPO: met" in report
    assert "Why the control matters" in report
    assert (tmp_path / "curves.png").stat().st_size > 0 and "![GRPO curves](curves.png)" in report


def test_the_plateau_checks_fail_while_held_out_loss_falls_or_more_sft_gains_accuracy(tmp_path):
    found = plateau(_demo_out(tmp_path, (0.2, 0.1, 0.08), control_correct=80, control_val_losses=(0.04, 0.03))
                    / "sft" / "metrics.jsonl")
    assert found["change"] == pytest.approx(-0.2) and not found["plateaued"]
    report = write_report(tmp_path, {}).read_text()
    assert "(steps 100 to 150, the learning rate decaying): still falling by more than 5%" in report
    assert "moved val/sft_loss 0.0400 -> 0.0300 (-25.0%): NOT plateaued (it fell by 5% or more)" in report
    assert "more SFT (the control) moved it +9.0 points: NOT plateaued (+5 or more)" in report
    assert "- goal, SFT at its plateau on held-out loss or accuracy before GRPO: NOT met" in report
    assert plateau(tmp_path / "missing.jsonl") is None


def test_wilson_intervals_and_paired_margins():
    lo, hi = wilson(100, 200)
    assert (round(100 * lo, 1), round(100 * hi, 1)) == (43.1, 56.9)
    assert wilson(0, 50)[0] == 0.0 and 0.0 < wilson(0, 50)[1] < 0.08
    with pytest.raises(ValueError, match="n=0"):
        wilson(0, 0)
    same = {f"q{i}": i % 2 == 0 for i in range(100)}
    assert paired_margin(same, same) == (0.0, 0.0, 0.0)  # identical answers: no margin and no doubt
    flipped = {k: not v for k, v in same.items()}  # 50% vs 50% but every answer differs: wide interval
    d, lo, hi = paired_margin(same, flipped)
    assert d == 0.0 and lo < -15 and hi > 15
    with pytest.raises(ValueError, match="share no question"):
        paired_margin({"a": True}, {"b": True})


def test_the_seed_summary_gives_each_margin_per_seed_with_mean_and_spread(tmp_path):
    for seed, grpo in ((0, 120), (1, 100)):
        out = tmp_path / f"seed_{seed}"
        _eval(out, "sft", [i < 60 for i in range(200)], {"count": 0.3})
        _eval(out, "grpo", [i < grpo for i in range(200)], {"count": grpo / 200})
        _eval(out, "sft_control", [i < 70 for i in range(200)], {"count": 0.35})
    lines = seeds_summary({0: tmp_path / "seed_0", 1: tmp_path / "seed_1"})
    assert lines[0].startswith("| seed | sft accuracy | grpo accuracy | sft_control accuracy | GRPO vs SFT (points) "
                               "| GRPO vs the control (points) | control vs SFT (points) |")
    assert lines[2] == "| 0 | 30.0 | 60.0 | 35.0 | 30.0 | 25.0 | 5.0 |"
    assert lines[3] == "| 1 | 30.0 | 50.0 | 35.0 | 20.0 | 15.0 | 5.0 |"
    assert lines[4] == "| mean | 30.0 | 55.0 | 35.0 | 25.0 | 20.0 | 5.0 |"
    assert lines[5] == f"| std | 0.0 | {math.sqrt(50):.1f} | 0.0 | {math.sqrt(50):.1f} | {math.sqrt(50):.1f} | 0.0 |"
    assert lines[6] == "| min..max | 30.0..30.0 | 50.0..60.0 | 35.0..35.0 | 20.0..30.0 | 15.0..25.0 | 5.0..5.0 |"


def test_val_is_drawn_like_test_and_is_large_enough_to_track_it(tmp_path):
    """The demo's val and test splits: the same Task and generator (always-correct reasoning, categories and
    letters balanced alike), distinct videos; only train has the teacher's near misses."""
    paths = demo.write_data(tmp_path, frames=16, size=28, n_train=15, n_val=12, n_test=12, fps=8.0, seed=3)
    rows = {split: [json.loads(line) for line in p.read_text().splitlines()] for split, p in paths.items()}
    for split in ("val", "test"):
        assert collections.Counter(r["category"] for r in rows[split]) == {c: 4 for c in demo.TASK.categories}
        assert collections.Counter(r["answer"] for r in rows[split]) == {f"<answer>{x}</answer>": 3 for x in "ABCD"}
        assert all("teacher_correct" not in r and f"<answer>{r['options']['ABCD'.index(r['answer'][8])][3:]}"
                   == f"<answer>{r['concluded']}" for r in rows[split])
    assert {r["problem"] for r in rows["val"]} != {r["problem"] for r in rows["test"]}
    assert sum(r.get("teacher_correct") is False for r in rows["train"]) == round(demo.TASK.teacher_error * 15)  # 3 of 5 a category
    # the docstring's claim: a binomial standard error of at most 5 points at 50% accuracy
    assert 100 * math.sqrt(0.25 / demo.DATA["n_val"]) <= 5.0


def test_the_teacher_is_wrong_on_most_train_rows_so_imitation_prefers_the_near_miss():
    assert demo.TASK.teacher_error > 0.5


def test_seeds_must_be_positive(capsys):
    with pytest.raises(SystemExit):
        demo.main(["--seeds", "0"])
    assert "--seeds=0: must be at least 1" in capsys.readouterr().err


def test_the_near_miss_share_needs_test_rows_that_name_the_near_miss(tmp_path):
    from longrl.demo_report import near_miss_rate

    out = _demo_out(tmp_path)
    generations = out / "eval_sft" / "generations.jsonl"
    assert near_miss_rate(generations, out / "data" / "test.jsonl") == pytest.approx(0.69)
    (out / "data" / "old.jsonl").write_text(json.dumps({"problem_id": "test-00000"}) + "\n")  # before near_miss
    assert near_miss_rate(generations, out / "data" / "old.jsonl") is None
    assert near_miss_rate(out / "missing.jsonl", out / "data" / "test.jsonl") is None


def test_the_control_trains_as_many_rows_as_grpo_at_sfts_final_lr_and_validates_before_and_after(tmp_path):
    from longrl.config import load_config

    data = {split: tmp_path / f"{split}.jsonl" for split in ("train", "val", "test")}
    rows = demo.grpo_rows()
    cfg = load_config(demo.control_args(tmp_path / "sft_model", tmp_path / "control", data, rows, seed=1))
    sft = load_config(["config=configs/sft_video_demo.yaml"]).worker.actor.optim
    assert cfg.trainer.max_steps * cfg.worker.actor.global_batch_size == rows
    assert cfg.worker.actor.optim.lr == pytest.approx(sft.lr * sft.min_lr_ratio)
    assert cfg.worker.actor.optim.lr_scheduler_type == "constant" and cfg.worker.actor.optim.lr_warmup_steps == 0
    # the held-out loss plateau check reads the control's validation at step 0 and at its last step
    assert cfg.trainer.val_before_train and cfg.trainer.val_freq == cfg.trainer.max_steps
    assert cfg.data.val_files == str(data["val"]) and cfg.data.seed == 3  # a shuffle of its own


def test_evaluation_answers_every_test_question_in_one_generate_call():
    args = demo.EVAL_ARGS
    assert args[args.index("--batch-size") + 1] == str(demo.DATA["n_test"])
