"""Training curves from a run's metrics.jsonl, one subplot per metric.

CLI: `python3 -m longrl.logging.plots runs/x/metrics.jsonl --out curves.png [--keys reward/overall ...]`
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

logger = logging.getLogger(__name__)

DEFAULT_KEYS = ["reward/overall", "val/accuracy", "response_length/mean", "actor/kl_loss"]


def read_series(metrics_jsonl: Path) -> dict[str, tuple[list[int], list[float]]]:
    """key -> (steps, values), in file order, for every key the file has."""
    series: dict[str, tuple[list[int], list[float]]] = {}
    for line in Path(metrics_jsonl).read_text().splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        step = row.pop("step")
        for key, value in row.items():
            steps, values = series.setdefault(key, ([], []))
            steps.append(step)
            values.append(value)
    return series


def plot_curves(metrics_jsonl: Path, out_png: Path, keys: list[str] | None = None) -> Path:
    """Write a PNG with one subplot per key; default keys are those of DEFAULT_KEYS the file has."""
    import matplotlib

    matplotlib.use("Agg")  # no display on training nodes
    import matplotlib.pyplot as plt

    series = read_series(Path(metrics_jsonl))
    if keys is None:
        keys = [key for key in DEFAULT_KEYS if key in series]
        if not keys:
            raise ValueError(f"{metrics_jsonl}: none of the default keys {DEFAULT_KEYS} is logged; "
                             f"pass keys from {sorted(series)}")
    missing = [key for key in keys if key not in series]
    if missing:
        raise KeyError(f"{metrics_jsonl}: keys {missing} are not logged; choose from {sorted(series)}")

    fig, axes = plt.subplots(len(keys), 1, figsize=(6, 2.5 * len(keys)), squeeze=False, sharex=True)
    for ax, key in zip(axes[:, 0], keys):
        steps, values = series[key]
        ax.plot(steps, values, marker="." if len(steps) < 50 else None)
        ax.set_title(key)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("step")
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Plot training curves from a metrics.jsonl.")
    parser.add_argument("metrics_jsonl", type=Path)
    parser.add_argument("--out", type=Path, default=Path("curves.png"), help="PNG to write")
    parser.add_argument("--keys", nargs="+", default=None, help=f"metrics to plot (default: {DEFAULT_KEYS})")
    args = parser.parse_args(argv)
    path = plot_curves(args.metrics_jsonl, args.out, args.keys)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
