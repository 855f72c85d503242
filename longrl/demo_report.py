"""demo_out/report.md and curves.png from the demo's evaluations and training logs (longrl/demo.py).

Every accuracy carries its 95% interval (Wilson, over the held-out questions); every margin between two
models carries the 95% interval of the paired difference (the same questions answered by both), so a
reader sees at once whether a gap is larger than the noise of a few hundred questions.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

from longrl.logging.plots import plot_curves, read_series

GRPO_CURVES = ["reward/overall", "reward/accuracy", "val/accuracy", "response_length/mean", "actor/kl_loss"]
SFT_CURVES = ["actor/sft_loss", "val/sft_loss"]
ROWS = [("sft", "after CoT-SFT"), ("grpo", "after GRPO (from the SFT model)"),
        ("sft_control", "control: more SFT instead of GRPO (same number of trained responses)")]
# (later, earlier) pairs whose paired margin the verdict states; the GRPO-vs-control one is the demo's claim
MARGINS = [("grpo", "sft", "GRPO vs SFT"), ("grpo", "sft_control", "GRPO vs the control"),
           ("sft_control", "sft", "control vs SFT")]
GOAL_POINTS = 10.0  # GRPO must beat the equal-compute control by this many points
PLATEAU_TOL = 0.05  # SFT has plateaued when GRPO's budget of more SFT lowers the validation loss by less than 5%
PLATEAU_POINTS = 5.0  # ... or when more SFT (the control) gains less than half the goal on held-out accuracy
Z95 = 1.959964


def wilson(correct: int, n: int) -> tuple[float, float]:
    """95% Wilson score interval of a proportion correct/n (sound at 0% and 100%, unlike p +- 1.96 se)."""
    if n <= 0:
        raise ValueError(f"wilson: n={n} questions; an interval needs at least one")
    p, z2 = correct / n, Z95 * Z95
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def paired_margin(a: dict[str, bool], b: dict[str, bool]) -> tuple[float, float, float]:
    """Accuracy of a minus accuracy of b on the questions both answered, in points, with its 95% interval
    (normal approximation of the mean per-question difference, which removes the questions' own spread)."""
    ids = sorted(set(a) & set(b))
    if not ids:
        raise ValueError("paired_margin: the two evaluations share no question")
    diffs = [float(a[i]) - float(b[i]) for i in ids]
    mean = statistics.fmean(diffs)
    half = Z95 * (statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else 0.0)
    return 100 * mean, 100 * (mean - half), 100 * (mean + half)


def plateau(metrics: Path, key: str = "val/sft_loss", tol: float = PLATEAU_TOL) -> dict | None:
    """Whether SFT stopped improving on held-out data: the relative change of `key` between its last two
    evaluations. None when the run logged fewer than two."""
    if not metrics.is_file():
        return None
    steps, values = read_series(metrics).get(key, ([], []))
    if len(values) < 2:
        return None
    change = (values[-1] - values[-2]) / abs(values[-2]) if values[-2] else 0.0
    return {"key": key, "from_step": steps[-2], "to_step": steps[-1], "before": values[-2], "after": values[-1],
            "change": change, "plateaued": change > -tol}


def _results(out: Path) -> dict[str, dict]:
    found = {}
    for name, _ in ROWS:
        file = out / f"eval_{name}" / "results.json"
        if file.is_file():
            found[name] = json.loads(file.read_text())
            found[name]["per_question"] = _per_question(out / f"eval_{name}" / "generations.jsonl")
            found[name]["near_miss_rate"] = near_miss_rate(out / f"eval_{name}" / "generations.jsonl",
                                                           out / "data" / "test.jsonl")
    return found


def _per_question(generations: Path) -> dict[str, bool]:
    """question id -> answered correctly (empty when the per-question file is missing)."""
    return {row["id"]: bool(row["correct"]) for row in _jsonl(generations)}


def _jsonl(path: Path) -> list[dict]:
    """The rows of a jsonl file; none when it does not exist."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def near_miss_rate(generations: Path, test: Path) -> float | None:
    """Share of the test questions a model answered with the teacher's near miss (the test rows' `near_miss`
    letter); None when the test rows do not name one."""
    near = {row["problem_id"]: row.get("near_miss") for row in _jsonl(test)}
    answers = _jsonl(generations)
    if not answers or not near or None in near.values():
        return None
    return sum(near.get(row["id"]) == row["prediction"] for row in answers) / len(answers)


def _curves(metrics: Path, png: Path, wanted: list[str]) -> Path | None:
    if not metrics.is_file():
        return None
    keys = [k for k in wanted if k in read_series(metrics)]
    return plot_curves(metrics, png, keys) if keys else None


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _with_interval(accuracy: float, n: int) -> str:
    lo, hi = wilson(round(accuracy * n), n)
    return f"{_pct(accuracy)} [{100 * lo:.1f}, {100 * hi:.1f}]"


def results_table(results: dict[str, dict]) -> list[str]:
    """Markdown rows: the most-common-answer baseline, then one row per evaluated model, accuracy with its
    95% interval, and how often it answered the teacher's near miss."""
    categories = sorted({c for r in results.values() for c in r["accuracy_by_category"]})
    head = ["model", "accuracy [95% interval]", "format", "answered", "near miss", *categories]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    first = next(iter(results.values()))
    lines.append(f"| always answer {first['baseline_most_common_answer']!r} (baseline) | "
                 f"{_with_interval(first['baseline_accuracy'], first['num_scored'])} | | | |" + " |" * len(categories))
    for name, title in ROWS:
        if name in results:
            r = results[name]
            near = r.get("near_miss_rate")
            cells = [title, _with_interval(r["accuracy"], r["num_scored"]), _pct(r["format_accuracy"]),
                     _pct(r["answer_rate"]), "" if near is None else _pct(near),
                     *(_pct(r["accuracy_by_category"].get(c, 0.0)) for c in categories)]
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def margins(results: dict[str, dict]) -> dict[str, tuple[float, float, float]]:
    """'grpo-sft' etc. -> (points, low, high) for each MARGINS pair both of whose evaluations exist."""
    out = {}
    for a, b, _ in MARGINS:
        if {a, b} <= set(results):
            if results[a]["per_question"] and results[b]["per_question"]:
                out[f"{a}-{b}"] = paired_margin(results[a]["per_question"], results[b]["per_question"])
            else:  # no per-question file: the difference of the totals, without an interval
                d = 100 * (results[a]["accuracy"] - results[b]["accuracy"])
                out[f"{a}-{b}"] = (d, math.nan, math.nan)
    return out


def verdict(results: dict[str, dict], sft_plateau: dict | None = None, control_plateau: dict | None = None) -> list[str]:
    """The acceptance numbers in words: margins with intervals, the goals, categories, the plateau checks.

    `sft_plateau`: SFT's validation loss between its last two evaluations (still inside its learning-rate
    schedule, so shown, not judged); `control_plateau`: the control's, before its first and after its last step,
    i.e. what GRPO's budget of more SFT does to the held-out loss. SFT has plateaued when that budget lowers
    the held-out loss by less than PLATEAU_TOL or raises held-out accuracy by less than PLATEAU_POINTS."""
    lines = []
    if "sft" in results:
        sft = results["sft"]
        lines.append(f"- SFT vs always {sft['baseline_most_common_answer']!r}: "
                     f"{100 * (sft['accuracy'] - sft['baseline_accuracy']):+.1f} points")
    found = margins(results)
    for a, b, words in MARGINS:
        if f"{a}-{b}" in found:
            d, lo, hi = found[f"{a}-{b}"]
            interval = "" if math.isnan(lo) else f" [95% interval {lo:+.1f}, {hi:+.1f}]"
            lines.append(f"- {words}: {d:+.1f} points{interval} on {results[a]['num_scored']} held-out questions")
    if "grpo-sft_control" in found:
        d = found["grpo-sft_control"][0]
        lines.append(f"- goal, GRPO >= control + {GOAL_POINTS:.0f} points: "
                     f"{'met' if d >= GOAL_POINTS else 'NOT met'} ({d:+.1f})")
    if {"grpo", "sft"} <= set(results):
        below = [f"{c} ({_pct(results['grpo']['accuracy_by_category'].get(c, 0.0))} < {_pct(v)})"
                 for c, v in sorted(results["sft"]["accuracy_by_category"].items())
                 if results["grpo"]["accuracy_by_category"].get(c, 0.0) < v]
        lines.append("- goal, no category below its SFT value: " + ("met" if not below else "NOT met: " + ", ".join(below)))
    if sft_plateau is not None:
        p = sft_plateau
        lines.append(f"- SFT's own held-out loss: {p['key']} went {p['before']:.4f} -> {p['after']:.4f} "
                     f"({100 * p['change']:+.1f}%) between its last two evaluations (steps {p['from_step']} to "
                     f"{p['to_step']}, the learning rate decaying): "
                     + ("flat" if p["plateaued"] else f"still falling by more than {100 * PLATEAU_TOL:.0f}%"))
    checks = []
    if control_plateau is not None:
        p = control_plateau
        checks.append(p["plateaued"])
        lines.append(f"- SFT plateau check on held-out loss: more SFT (the control, {p['to_step'] - p['from_step']} "
                     f"steps) moved {p['key']} {p['before']:.4f} -> {p['after']:.4f} ({100 * p['change']:+.1f}%): "
                     + (f"plateaued (it fell by less than {100 * PLATEAU_TOL:.0f}%)" if p["plateaued"]
                        else f"NOT plateaued (it fell by {100 * PLATEAU_TOL:.0f}% or more)"))
    if "sft_control-sft" in found:
        d = found["sft_control-sft"][0]
        checks.append(d < PLATEAU_POINTS)
        lines.append(f"- SFT plateau check on held-out accuracy: more SFT (the control) moved it {d:+.1f} points: "
                     + (f"plateaued (less than +{PLATEAU_POINTS:.0f})" if d < PLATEAU_POINTS
                        else f"NOT plateaued (+{PLATEAU_POINTS:.0f} or more)"))
    if checks:
        lines.append("- goal, SFT at its plateau on held-out loss or accuracy before GRPO: "
                     + ("met" if any(checks) else "NOT met"))
    return lines


EXPLANATION = (
    "What the rows are: *after CoT-SFT* is the model trained to imitate the teacher's chain of thought; "
    "*after GRPO* continues from it with rewards that check only the final answer; the *control* continues "
    "the same SFT model with more SFT, for as many trained responses as GRPO used, and is evaluated the same "
    "way. Why the control matters: GRPO also trains longer than SFT did, so a gain over SFT alone could be "
    "nothing but more training; only a gain over the control is what the reward adds. The teacher concludes "
    "with a near miss on most training rows, so imitation, however long, learns the near miss: the plateau "
    "check and the control show that more SFT does not close the gap, and the GRPO row shows the reward does. "
    "*near miss* is the share of questions answered with the teacher's mistake rather than the truth."
)


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
              "neighbouring shape, one shape too many) on most of the training rows, as chain-of-thought "
              "written by an unverified model does. SFT imitates it, mistakes included; GRPO trains on the "
              "same questions with a reward that checks only the final answer (no reasoning text is trained "
              "on). Test accuracy is greedy, on the held-out test split (`eval/eval.py`, per-question outputs "
              "in `eval_*/generations.jsonl`).", ""]
    lines += [EXPLANATION, ""]
    if results:
        lines += results_table(results) + [""] + verdict(results, plateau(out / "sft" / "metrics.jsonl"),
                                                          plateau(out / "sft_control" / "metrics.jsonl")) + [""]
    if grpo_png:
        lines += ["## GRPO curves (reward, validation accuracy, response length, KL per step)", "",
                  f"![GRPO curves]({grpo_png.name})", ""]
    if sft_png:
        lines += ["## SFT loss (train and held-out validation)", "", f"![SFT loss]({sft_png.name})", ""]
    if timings:
        lines += ["## Time per stage (seconds)", "", "| stage | seconds |", "|---|---|"]
        lines += [f"| {k} | {v:.0f} |" for k, v in timings.items()] + [""]
    report = out / "report.md"
    report.write_text("\n".join(lines))
    return report


def seeds_summary(runs: dict[int, Path]) -> list[str]:
    """Markdown table over seeds: each model's accuracy and each margin, per seed, then mean and spread
    (sample standard deviation, and min..max)."""
    per_seed = {seed: _results(out) for seed, out in runs.items()}
    columns = [name for name, _ in ROWS] + [f"{a}-{b}" for a, b, _ in MARGINS]
    titles = [f"{name} accuracy" for name, _ in ROWS] + [words + " (points)" for _, _, words in MARGINS]
    values: dict[str, list[float]] = {c: [] for c in columns}
    lines = ["| seed | " + " | ".join(titles) + " |", "|" + "---|" * (len(columns) + 1)]
    for seed, results in per_seed.items():
        found = margins(results)
        row = []
        for c in columns:
            v = 100 * results[c]["accuracy"] if c in results else found.get(c, (math.nan,))[0]
            values[c].append(v)
            row.append(f"{v:.1f}")
        lines.append(f"| {seed} | " + " | ".join(row) + " |")
    for label, stat in (("mean", statistics.fmean), ("std", statistics.stdev if len(runs) > 1 else lambda v: 0.0),
                        ("min..max", None)):
        cells = [f"{min(v):.1f}..{max(v):.1f}" if stat is None else f"{stat(v):.1f}" for v in values.values()]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines
