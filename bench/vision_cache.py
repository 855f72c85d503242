"""RL step time with and without the VisionCache, side by side, for 64, 256 and 1024-frame videos.

    python bench/vision_cache.py [--frames 64 256 1024] [--repeats 1] [--n 8]    (about 8 minutes on 2 CPU cores)

Three one-rank worker groups run in the same Ray cluster, with worker.rollout.cache_video_embeds=true,
with false, and with true plus worker.actor.share_prompt_prefix=true, and take turns on the same prompt,
so all see the same machine load.
A step is what the workers do in an RL step: vLLM samples n responses, old and reference
log-probs, one actor update (frozen vision tower, as with freeze_vision_tower=true).

  with cache:     the actor's tower encodes each video once; vLLM, log-probs and the update
                  reuse the embeddings.
  without cache:  vLLM encodes the frames itself; every log-prob and update row re-encodes the
                  pixels (n rows per prompt).
  cache + prefix: as with cache, and the language model runs each prompt once per micro-batch in the
                  old/ref log-prob passes and the update; the n responses attend to its KV cache.

The model is a random-init Qwen2.5-VL scaled down in width and depth so a 1024-frame step takes
seconds on a CPU, keeping Qwen2.5-VL-3B's proportions: vision tower about a quarter of the
language model's parameters, 2x2 patch merge, temporal patch 2, window attention with the last
block global. Videos are 56x56 (4 merged tokens per 2 frames: 1024 frames = 2048 video tokens),
so attention keeps roughly the share of the language model's work it has at full size with
~32k-token prompts. The sizes are printed.

Measured here (2 shared CPU cores, load average ~10 from other jobs, medians of 2 steps):
  64 frames 1.94 s vs 2.50 s (1.29x); 256 frames 4.57 vs 7.15 (1.57x); 1024 frames 23.6 vs 35.2 (1.49x)
  (an earlier, quieter run: 1.41x, 1.51x, 1.64x). The cache removes the tower from 3n row-passes; what is
left is the language model's prefill of the n identical prompts in the log-prob passes and the update
(at 1024 frames 4.2 + 4.3 + 13.5 s of 23.6 s), which prompt-prefix sharing across the n samples cuts.
With worker.actor.share_prompt_prefix=true (same run, three columns: cache / no cache / cache + prefix):
  64 frames 1.94 / 2.48 / 1.26 s (1.28x, 1.97x); 256 frames 4.64 / 7.83 / 2.27 (1.69x, 3.45x);
  1024 frames 21.0 / 33.3 / 6.73 (1.59x, 4.95x): old 3.78 -> 0.74 s, ref 3.76 -> 0.73, update 11.8 -> 3.43.
The whole run takes about 8 minutes here.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from longrl.config import load_config  # noqa: E402
from longrl.protocol import Batch  # noqa: E402

LM = dict(hidden_size=256, num_layers=10)
VISION = dict(vision_hidden_size=128, vision_depth=6)
RESPONSE_TOKENS = 32


def build_model(out: Path) -> dict[str, int]:
    """The scaled model; returns parameter counts."""
    from transformers import AutoModelForImageTextToText

    from longrl.models.tiny_vl import build_qwen2_5_vl

    build_qwen2_5_vl(out, **LM, **VISION, max_position_embeddings=16384)
    model = AutoModelForImageTextToText.from_pretrained(out)
    vision = sum(p.numel() for p in model.model.visual.parameters())
    embed = model.model.language_model.embed_tokens.weight.numel()
    language = sum(p.numel() for p in model.model.language_model.parameters())
    return {"vision": vision, "language": language, "language_without_embeddings": language - embed}


def make_prompt(model_dir: Path, video: Path, step: int) -> Batch:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "How many shapes appear?"}]}]
    ids = tok(tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True),
              add_special_tokens=False).input_ids
    return Batch(objects={"prompt_ids": [ids], "videos": [[str(video)]]}, meta={"step": step})


def start_group(pool, model_dir: Path, cache: bool, frames: int, n: int, cache_dir: Path, share: bool = False):
    from longrl.controller.worker_group import WorkerGroup
    from longrl.workers.fsdp_worker import HybridWorker

    cfg = load_config([
        "config=configs/cpu_video.yaml", f"worker.actor.model.model_path={model_dir}",
        f"worker.rollout.cache_video_embeds={str(cache).lower()}", f"worker.rollout.num_video_frames={frames}",
        f"worker.actor.share_prompt_prefix={str(share).lower()}",
        f"worker.rollout.n={n}", "data.rollout_batch_size=1", "worker.actor.global_batch_size=1",
        f"worker.actor.micro_batch_size_per_device_for_update={n // 2}",
        f"worker.actor.micro_batch_size_per_device_for_experience={n}",
        f"data.max_prompt_length={frames * 2 + 256}", f"data.max_response_length={RESPONSE_TOKENS}",
        "worker.actor.model.freeze_vision_tower=true", f"data.cache_dir={cache_dir}", "trainer.n_gpus_per_node=1"])
    env = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_KVCACHE_SPACE": "1", "OMP_NUM_THREADS": "1",
           "TOKENIZERS_PARALLELISM": "false", "MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "100000000000"}
    group = WorkerGroup(HybridWorker, pool, 1, env, args=(cfg,), call_timeout_s=1800)
    group.setup(100)
    return group


def rl_step(group, prompt: Batch, n: int) -> dict[str, float]:
    """generate -> old -> ref -> update, with fixed-length responses and +-1 advantages; seconds per phase."""
    from longrl.workers.rollout import SamplingSpec

    spec = SamplingSpec(n=n, temperature=1.0, top_p=1.0, top_k=-1, max_tokens=RESPONSE_TOKENS, ignore_eos=True)
    times, start = {}, time.perf_counter()
    batch = group.generate(prompt, spec)
    times["gen"] = time.perf_counter() - start
    t = time.perf_counter()
    batch = batch.union(group.log_probs(batch))
    times["old"] = time.perf_counter() - t
    t = time.perf_counter()
    batch = batch.union(group.ref_log_probs(batch))
    times["ref"] = time.perf_counter() - t
    sign = torch.tensor([1.0, -1.0]).repeat(n // 2)[:, None]
    batch["advantages"] = sign * batch["response_mask"]
    t = time.perf_counter()
    group.update_actor(batch)
    times["update"] = time.perf_counter() - t
    times["step"] = time.perf_counter() - start
    times.update({k: v for k, v in group.video_stats()[0].items() if k in ("video/encoded", "video/embed_hits")})
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--repeats", type=int, default=1, help="timed steps per mode and length (after 1 warm-up)")
    parser.add_argument("--n", type=int, default=8, help="samples per prompt")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    from longrl.controller.worker_group import ResourcePool, init_ray
    from longrl.data.synthetic_video import generate_split

    work = Path(tempfile.mkdtemp(prefix="bench_vision_cache_"))
    sizes = build_model(work / "model")
    print(f"model: language {sizes['language'] / 1e6:.2f}M params ({sizes['language_without_embeddings'] / 1e6:.2f}M "
          f"without embeddings; hidden {LM['hidden_size']}, {LM['num_layers']} layers), vision tower "
          f"{sizes['vision'] / 1e6:.2f}M (hidden {VISION['vision_hidden_size']}, {VISION['vision_depth']} blocks) = "
          f"{sizes['vision'] / sizes['language_without_embeddings']:.2f} of the language model; 2x2 merge, temporal "
          f"patch 2; n={args.n}, {RESPONSE_TOKENS} response tokens, 1 prompt per step, 1 CPU thread per worker",
          flush=True)
    init_ray(None, num_cpus=6)
    modes = ("cache", "no cache", "cache+prefix")
    pools = {mode: ResourcePool(1, 1, use_gpu=False) for mode in modes}  # one slot per mode
    results = []
    for frames in args.frames:
        video = Path(generate_split(work / f"data{frames}", "train", 1, frames=frames)).parent / "videos"
        video = video / "train-00000.mp4"
        groups = {mode: start_group(pool, work / "model", mode != "no cache", frames, args.n, work / "frames",
                                    share=mode == "cache+prefix")
                  for mode, pool in pools.items()}
        times: dict[str, list[dict[str, float]]] = {mode: [] for mode in groups}
        for step in range(args.repeats + 1):
            for mode, group in groups.items():  # alternate, so both modes see the same machine load
                measured = rl_step(group, make_prompt(work / "model", video, step + 1), args.n)
                if step:  # step 0 warms up (first decode, allocator, vLLM graphs)
                    times[mode].append(measured)
        for group in groups.values():
            group.shutdown()
        row = {"frames": frames, "video_tokens": frames // 2 * 4}
        for mode, runs in times.items():
            row[mode] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        row["ratio"] = row["no cache"]["step"] / row["cache"]["step"]
        row["ratio_prefix"] = row["no cache"]["step"] / row["cache+prefix"]["step"]
        results.append(row)
        phases = " ".join(f"{k}={row['cache'][k]:.2f}/{row['no cache'][k]:.2f}/{row['cache+prefix'][k]:.2f}"
                          for k in ("gen", "old", "ref", "update"))
        print(f"{frames:5d} frames ({row['video_tokens']} video tokens): step {row['cache']['step']:.2f} s with cache, "
              f"{row['no cache']['step']:.2f} s without -> {row['ratio']:.2f}x; cache + prefix sharing "
              f"{row['cache+prefix']['step']:.2f} s -> {row['ratio_prefix']:.2f}x | cache/without/cache+prefix: "
              f"{phases} | tower calls per step {row['cache']['video/encoded']:.0f} vs 0 "
              f"(+{args.n} rows x 3 passes re-encoding)", flush=True)
    print(f"{'frames':>6} {'with cache s':>13} {'without s':>10} {'ratio':>6} {'cache+prefix s':>15} {'ratio':>6}")
    for row in results:
        with_cache, without, shared = row["cache"]["step"], row["no cache"]["step"], row["cache+prefix"]["step"]
        print(f"{row['frames']:>6} {with_cache:>13.2f} {without:>10.2f} {row['ratio']:>5.2f}x {shared:>15.2f} "
              f"{row['ratio_prefix']:>5.2f}x")
    if args.json:
        args.json.write_text(json.dumps({"sizes": sizes, "results": results}, indent=1))
    import ray

    ray.shutdown()
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
