"""longrl against TRL's GRPOTrainer on the same GRPO workload, side by side in one run (issue 17).

    python3 bench/peer_trl.py [--steps 4] [--out runs/bench_peer_trl] [--only trl|longrl] [-- key=value ...]

The workload, the same on both sides: a tiny random-init Qwen2 of about 3M parameters (hidden 256, 4 layers, 8
heads of 32, 4 KV heads, MLP 768, tied embeddings, fp32), 'What is a + b?' prompts in the chat template, 64 prompts
x 8 samples x exactly 256 new tokens (EOS suppressed: vLLM's ignore_eos, transformers' min_new_tokens), temperature
1, a KL loss (k3) to a frozen reference with coefficient 0.04, one optimizer step per RL step on all 512 responses
(no old-log-prob pass on either side: the update is on-policy), micro-batches of 16, on this machine's 2 cores
(TRL: 2 torch threads in one process; longrl: 2 Ray workers of one thread each).

TRL runs in its own virtual environment (bench/.venv-trl, created on first use: the project's torch wheel, trl 1.16
and the project's transformers version) so it cannot disturb the project's pins. longrl runs through its real
trainer (`python -m longrl.trainer.main`: Ray, FSDP2, vLLM); its split is read from metrics.jsonl (timing_s/*).
Extra key=value arguments after `--` go to longrl's trainer (e.g. worker.ref.fsdp.torch_dtype=bf16), so a lever can
be measured on and off.

Prints, for each side, the median step time of steps 2..N and its split into generation / reference / update (plus
old log-probs and weight sync for longrl), and the ratio TRL / longrl (goal: >= 2).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TRL_VENV = REPO / "bench" / ".venv-trl"
TRL_VERSION = "1.16.0"
PROMPTS, SAMPLES, NEW_TOKENS, KL_COEF, MICRO = 64, 8, 256, 0.04, 16
MODEL_ARGS = ["--hidden-size", "256", "--layers", "4", "--intermediate-size", "768"]


def project_python() -> str:
    venv = REPO / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def project_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false"}


def check(cmd: list[str], **kwargs) -> str:
    done = subprocess.run(cmd, cwd=REPO, text=True, capture_output=True, **kwargs)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed (rc {done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done.stdout


def assets(out: Path) -> tuple[Path, Path]:
    """The 3M-parameter model and the arithmetic data (built with the project's own builders)."""
    model, data = out / "tiny-qwen2-3m", out / "math"
    py, env = project_python(), project_env()
    if not (model / "config.json").exists():
        check([py, "-m", "longrl.models.tiny", "qwen2", "--out", str(model), *MODEL_ARGS], env=env)
    if not (data / "train.jsonl").exists():
        check([py, "-m", "longrl.data.synthetic", "math", "--out", str(data)], env=env)
    return model, data


def trl_python() -> str:
    """bench/.venv-trl's python, created on first use beside the project's torch and transformers versions."""
    py = TRL_VENV / "bin" / "python"
    probe = [str(py), "-c", f"import trl; assert trl.__version__ == {TRL_VERSION!r}"]
    if py.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return str(py)
    versions = json.loads(check([project_python(), "-c", "import json, torch, transformers; print(json.dumps("
                                 "[torch.__version__, transformers.__version__]))"]))
    print(f"creating {TRL_VENV} (torch {versions[0]}, transformers {versions[1]}, trl {TRL_VERSION}) ...", flush=True)
    check([sys.executable, "-m", "venv", str(TRL_VENV)])
    # the same torch wheel first (pip's configured index and find-links), so trl does not pull another one
    check([str(py), "-m", "pip", "install", "-q", f"torch=={versions[0]}"])
    check([str(py), "-m", "pip", "install", "-q", f"trl=={TRL_VERSION}", f"transformers=={versions[1]}"])
    check(probe)
    return str(py)


# ---- TRL (runs inside bench/.venv-trl: `peer_trl.py --trl-child MODEL DATA STEPS`) --------------------------------
def trl_child(model_dir: str, data_dir: str, steps: int) -> None:
    """GRPOTrainer on the workload; prints one json line per step: {step, step_s, gen_s, ref_s, old_s}."""
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    torch.set_num_threads(2)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    rows = [json.loads(line) for line in open(Path(data_dir) / "train.jsonl")]
    ds = Dataset.from_dict({"prompt": [[{"role": "user", "content": r["problem"]}] for r in rows]})

    def reward(completions, **_):  # scoring costs nothing next to the step; the random model earns ~0 anyway
        return [float("\\boxed" in (c[0]["content"] if isinstance(c, list) else c)) for c in completions]

    phases = {"gen_s": 0.0, "ref_s": 0.0, "old_s": 0.0}
    marks: list[float] = []

    class StepClock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            marks.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kw):
            marks.append(time.perf_counter())
            print(json.dumps({"step": state.global_step, "step_s": marks[-1] - marks[-2], **phases}), flush=True)
            phases.update(gen_s=0.0, ref_s=0.0, old_s=0.0)

    accumulation = PROMPTS * SAMPLES // MICRO
    args = GRPOConfig(
        output_dir=str(Path(data_dir).parent / "trl_out"), per_device_train_batch_size=MICRO,
        gradient_accumulation_steps=accumulation,  # one optimizer step on all 512 responses
        steps_per_generation=accumulation, num_generations=SAMPLES, max_completion_length=NEW_TOKENS,
        generation_kwargs={"min_new_tokens": NEW_TOKENS}, temperature=1.0, top_p=1.0, beta=KL_COEF,
        num_iterations=1, mask_truncated_completions=False, max_steps=steps, learning_rate=1e-4, logging_steps=1,
        report_to="none", save_strategy="no", use_cpu=True, bf16=False, gradient_checkpointing=False, use_vllm=False,
        dataloader_num_workers=0, seed=1)
    trainer = GRPOTrainer(model=model, processing_class=tok, reward_funcs=reward, args=args, train_dataset=ds,
                          callbacks=[StepClock()])

    def timed(fn, pick):
        def wrapper(*a, **kw):
            start = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                key = pick(a, kw)
                if key:
                    phases[key] += time.perf_counter() - start
        return wrapper

    trainer._generate_single_turn = timed(trainer._generate_single_turn, lambda a, kw: "gen_s")
    # log-probs without grad: the reference's, or the policy's old ones (none here: generation and step are aligned)
    trainer._get_per_token_logps_and_entropies = timed(
        trainer._get_per_token_logps_and_entropies,
        lambda a, kw: None if torch.is_grad_enabled() else ("ref_s" if a[0] is trainer.ref_model else "old_s"))
    trainer.train()


def run_trl(model: Path, data: Path, steps: int, log: Path) -> list[dict]:
    py = trl_python()
    cmd = [py, str(Path(__file__).resolve()), "--trl-child", str(model), str(data), str(steps)]
    steps_file = log.with_suffix(".jsonl")  # each step's figures as they come: kept if the run is stopped
    with log.open("w") as err, steps_file.open("w") as out:
        rc = subprocess.run(cmd, cwd=REPO, stdout=out, stderr=err, text=True, env={
            k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    lines = [json.loads(x) for x in steps_file.read_text().splitlines() if x.startswith("{\"step\"")]
    if rc.returncode != 0 or len(lines) < steps:
        raise SystemExit(f"TRL run failed (rc {rc.returncode}); see {log}")
    return [{"step": x["step_s"], "gen": x["gen_s"], "ref": x["ref_s"], "old": x["old_s"],
             "update": x["step_s"] - x["gen_s"] - x["ref_s"] - x["old_s"]} for x in lines]


# ---- longrl ---------------------------------------------------------------------------------------------------------
def longrl_overrides(model: Path, data: Path, out: Path, steps: int) -> list[str]:
    """The workload as longrl config keys (configs/cpu_math.yaml underneath)."""
    return [
        "config=configs/cpu_math.yaml", f"data.train_files={data}/train.jsonl", f"data.val_files={data}/val.jsonl",
        "data.format_prompt=null", "data.max_prompt_length=64", f"data.max_response_length={NEW_TOKENS}",
        f"data.rollout_batch_size={PROMPTS}", f"worker.actor.model.model_path={model}",
        f"worker.actor.global_batch_size={PROMPTS}", f"worker.actor.micro_batch_size_per_device_for_update={MICRO}",
        f"worker.actor.micro_batch_size_per_device_for_experience={MICRO}", "worker.actor.optim.lr=1.0e-4",
        f"worker.rollout.n={SAMPLES}", "worker.rollout.ignore_eos=true", "worker.rollout.temperature=1.0",
        "worker.rollout.dtype=fp32", "algorithm.use_kl_loss=true", "algorithm.kl_penalty=low_var_kl",
        f"algorithm.kl_coef={KL_COEF}", f"trainer.max_steps={steps}", "trainer.save_freq=-1", "trainer.val_freq=-1",
        "trainer.val_before_train=false", "trainer.logger=[file]", f"trainer.save_checkpoint_path={out}",
        "trainer.experiment_name=bench", "trainer.n_gpus_per_node=2",
    ]


def run_longrl(model: Path, data: Path, out: Path, steps: int, extra: list[str], log: Path) -> list[dict]:
    cmd = [project_python(), "-m", "longrl.trainer.main", *longrl_overrides(model, data, out, steps), *extra]
    metrics = next(out.glob("**/metrics.jsonl"), None)
    if metrics is not None:
        metrics.unlink()  # a fresh run: max_steps from step 0, nothing to resume
    with log.open("w") as f:
        rc = subprocess.run(cmd, cwd=REPO, env=project_env(), stdout=f, stderr=subprocess.STDOUT).returncode
    metrics = next(out.glob("**/metrics.jsonl"), None)
    if rc != 0 or metrics is None:
        raise SystemExit(f"longrl run failed (rc {rc}); see {log}")
    lines = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()]
    return [{"step": x["timing_s/step"], "gen": x.get("timing_s/gen", 0.0), "old": x.get("timing_s/old", 0.0),
             "ref": x.get("timing_s/ref", 0.0), "update": x.get("timing_s/update", 0.0),
             "sync": x.get("timing_s/weight_sync", 0.0), "tokens": x.get("response_length/mean", 0.0)}
            for x in lines]


def median_split(rows: list[dict]) -> dict[str, float]:
    """Median of each figure over steps 2..N (step 1 warms caches and the engine)."""
    later = rows[1:] or rows
    return {k: statistics.median(r[k] for r in later) for k in later[0]}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--trl-child":
        trl_child(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=4, help="RL steps per side; the median is over steps 2..N")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench_peer_trl")
    parser.add_argument("--only", choices=["trl", "longrl"], default=None)
    parser.add_argument("extra", nargs="*", help="longrl key=value overrides (after --)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    print(f"load before: {os.getloadavg()[0]:.2f} (1-min average, {os.cpu_count()} cores)", flush=True)
    model, data = assets(args.out)
    results = {}
    if args.only in (None, "trl"):
        results["TRL"] = median_split(run_trl(model, data, args.steps, args.out / "trl.log"))
        print(f"TRL done ({time.monotonic() - start:.0f} s); load {os.getloadavg()[0]:.2f}", flush=True)
    if args.only in (None, "longrl"):
        rows = run_longrl(model, data, args.out / "longrl", args.steps, args.extra, args.out / "longrl.log")
        results["longrl"] = median_split(rows)
        print(f"longrl done ({time.monotonic() - start:.0f} s); load {os.getloadavg()[0]:.2f}", flush=True)
    print(f"\nGRPO step, {PROMPTS} prompts x {SAMPLES} samples x {NEW_TOKENS} tokens, 3.3M-param Qwen2 fp32, "
          f"median of steps 2..{args.steps} (seconds)" + (f"; longrl overrides {args.extra}" if args.extra else ""))
    cols = ["step", "gen", "old", "ref", "update", "sync"]
    print(f"  {'':8s}" + "".join(f"{c:>9s}" for c in cols))
    for name, r in results.items():
        print(f"  {name:8s}" + "".join(f"{r[c]:9.2f}" if c in r else f"{'-':>9s}" for c in cols))
    (args.out / "results.json").write_text(json.dumps({**results, "longrl_overrides": args.extra}, indent=1))
    if len(results) == 2:
        ratio = results["TRL"]["step"] / results["longrl"]["step"]
        print(f"\nlongrl step time / TRL's: {1 / ratio:.2f} (TRL / longrl = {ratio:.2f}x; goal >= 2x: "
              f"{'met' if ratio >= 2 else 'not met'})")
        print(f"generation: TRL / longrl = {results['TRL']['gen'] / results['longrl']['gen']:.2f}x; "
              f"reference {results['TRL']['ref'] / max(results['longrl']['ref'], 1e-9):.2f}x; "
              f"update {results['TRL']['update'] / max(results['longrl']['update'], 1e-9):.2f}x")
    print(f"load after: {os.getloadavg()[0]:.2f}; wall {time.monotonic() - start:.0f} s")


if __name__ == "__main__":
    main()
