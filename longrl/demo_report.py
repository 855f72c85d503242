"""demo_out/report.md and curves.png from the demo's evaluations and training logs (longrl/demo.py)."""

from __future__ import annotations

import json
from pathlib import Path

from longrl.logging.plots import plot_curves, read_series

GRPO_CURVES = ["reward/overall", "reward/accuracy", "val/accuracy", "response_length/mean", "actor/kl_loss"]
SFT_CURVES = ["actor/sft_loss", "val/sft_loss"]
ROWS = [("sft", "after CoT-SFT"), ("grpo", "after GRPO (from the SFT model)"),
        ("sft_control", "control: more SFT instead of GRPO (same number of trained responses)")]


def _results(out: Path) -> dict[str, dict]:
    found = {}
    for name, _ in ROWS:
        file = out / f"eval_{name}" / "results.json"
        if file.is_file():
            found[name] = json.loads(file.read_text())
    return found


def _curves(metrics: Path, png: Path, wanted: list[str]) -> Path | None:
    if not metrics.is_file():
        return None
    keys = [k for k in wanted if k in read_series(metrics)]
    return plot_curves(metrics, png, keys) if keys else None


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def results_table(results: dict[str, dict]) -> list[str]:
    """Markdown rows: the most-common-answer baseline, then one row per evaluated model."""
    categories = sorted({c for r in results.values() for c in r["accuracy_by_category"]})
    head = ["model", "accuracy", "format", "answered", *categories]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    first = next(iter(results.values()))
    lines.append(f"| always answer {first['baseline_most_common_answer']!r} (baseline) | "
                 f"{_pct(first['baseline_accuracy'])} | | |" + " |" * len(categories))
    for name, title in ROWS:
        if name in results:
            r = results[name]
            cells = [title, _pct(r["accuracy"]), _pct(r["format_accuracy"]), _pct(r["answer_rate"]),
                     *(_pct(r["accuracy_by_category"].get(c, 0.0)) for c in categories)]
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def verdict(results: dict[str, dict]) -> list[str]:
    """The acceptance numbers in words."""
    lines = []
    if "sft" in results:
        sft = results["sft"]
        lines.append(f"- SFT vs always {sft['baseline_most_common_answer']!r}: "
                     f"{100 * (sft['accuracy'] - sft['baseline_accuracy']):+.1f} points")
    if {"sft", "grpo"} <= set(results):
        lines.append(f"- GRPO vs SFT: {100 * (results['grpo']['accuracy'] - results['sft']['accuracy']):+.1f} points "
                     f"on {results['grpo']['num_scored']} held-out questions")
    if {"sft", "sft_control"} <= set(results):
        lines.append(f"- more SFT vs SFT: {100 * (results['sft_control']['accuracy'] - results['sft']['accuracy']):+.1f} "
                     f"points (the same number of extra trained responses as GRPO)")
    return lines


def write_report(out: Path, timings: dict[str, float]) -> Path:
    """Write out/report.md (+ curves.png from GRPO, sft_curves.png from SFT); returns the report's path."""
    results = _results(out)
    grpo_png = _curves(out / "grpo" / "metrics.jsonl", out / "curves.png", GRPO_CURVES)
    sft_png = _curves(out / "sft" / "metrics.jsonl", out / "sft_curves.png", SFT_CURVES)
    lines = ["# longrl demo: CoT-SFT, then GRPO, on synthetic long-video multiple choice", ""]
    lines += ["Tiny Qwen2.5-VL (random-init language model, fixed colour-reading vision tower) on synthetic "
              "LongVideo-Reason-style videos (how many shapes appear, which appears first or last, which "
              "appears right after a given one; four options), 2 Ray workers on CPU. The SFT traces come from "
              "an imperfect teacher: it lists the shapes correctly but concludes with a near miss (a "
              "neighbouring shape, one shape too many) on half of the training rows, as chain-of-thought "
              "written by an unverified model does. SFT imitates it, mistakes included; GRPO trains on the "
              "same questions with a reward that checks only the final answer (no reasoning text is trained "
              "on). Test accuracy is greedy, on the held-out test split (`eval/eval.py`, per-question outputs "
              "in `eval_*/generations.jsonl`).", ""]
    if results:
        lines += results_table(results) + [""] + verdict(results) + [""]
    if grpo_png:
        lines += ["## GRPO curves (reward, validation accuracy, response length, KL per step)", "",
                  f"![GRPO curves]({grpo_png.name})", ""]
    if sft_png:
        lines += ["## SFT loss", "", f"![SFT loss]({sft_png.name})", ""]
    if timings:
        lines += ["## Time per stage (seconds)", "", "| stage | seconds |", "|---|---|"]
        lines += [f"| {k} | {v:.0f} |" for k, v in timings.items()] + [""]
    report = out / "report.md"
    report.write_text("\n".join(lines))
    return report
