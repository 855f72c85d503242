"""Evaluate a model on LongVideo-Reason-style questions (or any prompt/answer set) with vLLM.

    python3 eval/eval.py --model-path runs/x/global_step_50/actor/huggingface \
        --data-path assets/video@test --output-dir runs/x/eval --num-video-frames 64

Writes <output-dir>/generations.jsonl (one line per question: response, extracted answer, grade)
and results.json (accuracy overall / per problem_type / per category, format accuracy, the
always-the-most-common-answer baseline, questions that could not be evaluated). Running the same
command again continues where it stopped. See eval/README.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_FORMAT_PROMPT = REPO / "examples" / "format_prompt" / "r1v.jinja"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Evaluate a model with vLLM (greedy by default); resumable.")
    p.add_argument("--model-path", required=True, help="Hugging Face model directory (e.g. a merged checkpoint)")
    p.add_argument("--data-path", required=True, help="jsonl/json/parquet file, directory, or local name@split")
    p.add_argument("--output-dir", required=True, help="where generations.jsonl and results.json go")
    p.add_argument("--video-dir", default=None, help="directory relative video paths are resolved against "
                                                     "(default: the data file's directory)")
    p.add_argument("--num-video-frames", type=int, default=16, help="frames sampled uniformly per video")
    p.add_argument("--format-prompt", default=str(DEFAULT_FORMAT_PROMPT),
                   help="jinja template around the question, as in training ('none' for the bare question)")
    p.add_argument("--prompt-key", default="problem")
    p.add_argument("--answer-key", default="answer")
    p.add_argument("--video-key", default="videos")
    p.add_argument("--image-key", default="images")
    p.add_argument("--image-dir", default=None, help="directory relative image paths are resolved against "
                                                     "(default: the data file's directory)")
    p.add_argument("--audio-max-length", type=float, default=30.0,
                   help="omni models: seconds of each video's own audio heard (longer audio is cut)")
    p.add_argument("--missing-audio", choices=["skip", "silence"], default="skip",
                   help="omni models: a video without an audio track is not evaluated (skip) or heard as silence")
    p.add_argument("--max-new-tokens", type=int, default=512)
    p.add_argument("--max-model-len", type=int, default=None, help="default: the model's max_position_embeddings")
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default="bf16")
    p.add_argument("--min-pixels", type=int, default=None, help="default: the model's video processor setting")
    p.add_argument("--max-pixels", type=int, default=None, help="default: the model's video processor setting")
    p.add_argument("--batch-size", type=int, default=64, help="questions per generate call (and per save)")
    p.add_argument("--limit", type=int, default=None, help="only the first N questions")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # the engine runs in this process
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    args = parse_args(argv)
    from transformers import AutoTokenizer

    from longrl.config import ConfigError
    from longrl.eval.evaluate import check_settings, evaluate, format_summary, load_questions

    format_prompt = None if args.format_prompt.lower() == "none" else args.format_prompt
    settings = {k: v for k, v in vars(args).items() if k not in ("output_dir", "batch_size", "limit")}
    settings["model_path"] = str(Path(args.model_path).resolve())
    try:
        if not (Path(args.model_path) / "config.json").is_file():
            raise ConfigError(f"--model-path={args.model_path!r} has no config.json; give a Hugging Face model "
                              f"directory (merge a training checkpoint first: scripts/model_merger.py)")
        check_settings(Path(args.output_dir), settings)  # before the engine starts: a mismatch fails fast
        tokenizer = AutoTokenizer.from_pretrained(args.model_path)
        questions, skipped_rows = load_questions(args.data_path, tokenizer, video_dir=args.video_dir, format_prompt=format_prompt,
                                   prompt_key=args.prompt_key, answer_key=args.answer_key, video_key=args.video_key,
                                   image_key=args.image_key, image_dir=args.image_dir, limit=args.limit)
    except (ConfigError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from longrl.eval.generator import VLLMGenerator

    generator = VLLMGenerator(args.model_path, tokenizer, max_new_tokens=args.max_new_tokens,
                              num_video_frames=args.num_video_frames, temperature=args.temperature, seed=args.seed,
                              max_model_len=args.max_model_len, min_pixels=args.min_pixels,
                              max_pixels=args.max_pixels, dtype=args.dtype,
                              max_images=max((len(q.images) for q in questions), default=0),
                              audio_max_length=args.audio_max_length, missing_audio=args.missing_audio)
    try:
        summary = evaluate(questions, generator, args.output_dir, args.batch_size, settings, skipped_rows)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_summary(summary))
    print(json.dumps({"results": str(Path(args.output_dir) / "results.json")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
