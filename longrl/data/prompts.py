"""Prompt files for diffusion models: `.txt` (one prompt a line) or `.jsonl` (an object a line, the prompt under
data.prompt_key; the other fields travel as the row's `metadata` to the reward function).

A bad line (not a JSON object, no prompt, an empty prompt) is named by file and line: an error with data.strict,
else skipped, logged and counted.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from longrl.config import ConfigError, DataConfig
from longrl.data.dataset import _read_jsonl

logger = logging.getLogger(__name__)


def load_prompts(files: str, data: DataConfig, key: str = "data.train_files") -> list[dict[str, Any]]:
    """Rows {"prompt", "metadata", "row"} of a prompt file or of every .txt/.jsonl file in a directory."""
    path = Path(files)
    if not path.exists():
        raise FileNotFoundError(f"{key}={files!r} does not exist; give a .txt or .jsonl prompt file or a directory")
    paths = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.suffix in (".txt", ".jsonl"))
    rows, problems = [], []
    for file in paths:
        if file.suffix == ".txt":
            entries = [(n, {data.prompt_key: line.rstrip("\n")}) for n, line in
                       enumerate(file.read_text(encoding="utf-8").splitlines(), start=1)]
        elif file.suffix == ".jsonl":
            objects, lines, bad = _read_jsonl(file, key, data.strict)
            entries, problems = list(zip(lines, objects)), problems + bad
        else:
            raise ConfigError(f"{key}={files!r}: unsupported prompt file type {file.suffix!r}; use .txt or .jsonl")
        for number, entry in entries:
            prompt = entry.get(data.prompt_key)
            if not isinstance(prompt, str) or not prompt.strip():
                problem = (f"line {number} of {file}: {'an empty prompt' if isinstance(prompt, str) else 'no prompt'} "
                           f"(data.prompt_key={data.prompt_key!r})")
                if data.strict:
                    raise ConfigError(f"{key}: {problem}; fix the line, or set data.strict=false to skip such lines")
                problems.append(problem)
                continue
            metadata = {k: v for k, v in entry.items() if k != data.prompt_key}
            rows.append({"prompt": prompt, "metadata": metadata, "row": len(rows)})
    for problem in problems:
        logger.warning("%s: skipping %s", key, problem)
    if not rows:
        raise ConfigError(f"{key}={files!r} holds no usable prompt" + (f" ({problems[0]})" if problems else ""))
    return rows
