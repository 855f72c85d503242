"""Resident memory and open file descriptors of the driver and of every worker process, logged each step.

A leak in a days-long run (vLLM engine memory across weight reloads, a media cache, a file left open per
step) shows as a rising perf/rss_mb_* or perf/open_fds_* line long before the OOM killer or the FD limit stops
the run. Each process measures itself, so no outside tool has to find Ray's worker processes.
"""

from __future__ import annotations

import psutil


def process_stats() -> dict[str, float]:
    """This process's resident memory (bytes) and open file descriptors."""
    proc = psutil.Process()
    return {"rss_bytes": float(proc.memory_info().rss), "open_fds": float(proc.num_fds())}


def process_metrics(driver: dict[str, float], per_rank: list[dict[str, float]]) -> dict[str, float]:
    """perf/rss_mb_driver, perf/open_fds_driver and perf/rss_mb_rank<r>, perf/open_fds_rank<r> for each rank:
    per rank, not reduced, because a leak is often one rank's (rank 0 saves the HF files, logs, validates)."""
    out = {}
    for name, stats in (("driver", driver), *((f"rank{r}", s) for r, s in enumerate(per_rank))):
        out[f"perf/rss_mb_{name}"] = stats["rss_bytes"] / 2 ** 20
        out[f"perf/open_fds_{name}"] = stats["open_fds"]
    return out
