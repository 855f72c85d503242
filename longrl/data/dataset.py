"""Prompt datasets: rows of local json/jsonl/parquet files turned into chat prompts, and their batches.

`RLDataset` renders every prompt (format prompt, then chat template), tokenizes it and drops
(or refuses) the ones longer than data.max_prompt_length once, at construction, so that a bad
row is reported before any worker starts. `PromptLoader` deals the rows out as `Batch`es in a
seeded order per epoch and can resume exactly from a checkpoint.
"""

from __future__ import annotations

import bisect
import json
import logging
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import datasets
import jinja2
import torch

from longrl.config import ConfigError, DataConfig
from longrl.data.image import ImageRef, normalize_ref
from longrl.protocol import Batch

logger = logging.getLogger(__name__)

BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet"}
# Keys every item has; row fields with these names are not copied as extras.
ITEM_KEYS = ("prompt_ids", "prompt_text", "ground_truth", "row", "images", "videos")
MEDIA_PLACEHOLDER = re.compile(r"(<image>|<video>)")


# ---------------------------------------------------------------------------------------------
# reading rows
# ---------------------------------------------------------------------------------------------
def _data_files(path: Path, key: str) -> list[Path]:
    if path.is_file():
        if path.suffix not in BUILDERS:
            raise ConfigError(f"{key}={str(path)!r}: unsupported file type {path.suffix!r}; "
                              f"use one of {sorted(BUILDERS)}")
        return [path]
    found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in BUILDERS)
    if not found:
        raise FileNotFoundError(f"{key}={str(path)!r}: the directory holds no {sorted(BUILDERS)} files")
    return found


def _read_jsonl(file: Path, key: str, strict: bool) -> tuple[list[dict[str, Any]], list[int], list[str]]:
    """The JSON-object lines of `file`, their line numbers, and what was wrong with the others.

    Read here rather than by `datasets`' json builder, which fails on the first bad line of a file without
    saying which."""
    rows, lines, problems = [], [], []
    with file.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw.decode("utf-8"))
                if not isinstance(row, dict):
                    raise ValueError(f"a JSON {type(row).__name__} where a row must be an object")
            except UnicodeDecodeError as exc:
                problem = f"line {number} of {file}: not UTF-8 ({exc.reason} at byte {exc.start})"
            except ValueError as exc:  # json.JSONDecodeError included
                problem = f"line {number} of {file}: not a JSON object ({exc})"
            else:
                rows.append(row)
                lines.append(number)
                continue
            if strict:
                raise ConfigError(f"{key}: {problem}; fix the line, or set data.strict=false to skip such lines")
            problems.append(problem)
    return rows, lines, problems


def _one_type(values: list) -> list:
    """A column's values as Arrow can hold them: where some rows give a list and others one value (a media
    column: `"a.png"` beside `["a.png", "b.png"]`), the single values become one-element lists."""
    if any(isinstance(v, list) for v in values) and any(v is not None and not isinstance(v, list) for v in values):
        return [v if v is None or isinstance(v, list) else [v] for v in values]
    return values


Source = tuple[int, str, "list[int] | None"]  # (first row index, file or name@split, line of each row if known)


def load_rows(files: str, key: str = "data.train_files",
              strict: bool = False) -> tuple[datasets.Dataset, list[Source], list[str]]:
    """The rows of `files`; per source, (first row index, source name, line of each row) for error messages;
    and the unreadable jsonl lines that were skipped (under `strict` the first one raises instead).

    `files` is a json/jsonl/parquet file, a directory of them (read in name order), or
    `name@split` where name is a local dataset directory or file, or a Hugging Face hub data set id.
    """
    path = Path(files).expanduser()
    if not files:
        raise ConfigError(f"{key} is empty; set it to a json/jsonl/parquet file, a directory or name@split")
    if not path.exists() and "@" in files:
        name, split = files.rsplit("@", 1)
        local = Path(name).expanduser()
        try:
            if not local.exists():  # a Hugging Face hub data set id, as in EasyR1 (`hiyouga/math12k@train`)
                rows = datasets.load_dataset(name, split=split)
            elif local.is_file():
                rows = datasets.load_dataset(BUILDERS.get(local.suffix, "json"), data_files=str(local), split=split)
            else:
                rows = datasets.load_dataset(str(local), split=split)
        except ValueError as exc:
            raise ConfigError(f"{key}={files!r}: cannot read split {split!r}: {exc}") from exc
        except (OSError, ConnectionError) as exc:  # not on disk, and the hub cannot be reached or has no such id
            raise FileNotFoundError(f"{key}={files!r}: {name!r} is not a local file or directory and could not be "
                                    f"loaded from the Hugging Face hub ({type(exc).__name__}: {exc}); check the id "
                                    f"and the network, or give a local path") from None
        return rows, [(0, files, None)], []
    if not path.exists():
        raise FileNotFoundError(f"{key}={files!r}: no such file or directory ({path.resolve()})")
    parts, sources, problems, start = [], [], [], 0
    for file in _data_files(path, key):
        lines = None
        if file.suffix == ".jsonl":
            records, lines, bad = _read_jsonl(file, key, strict)
            problems += bad
            columns = dict.fromkeys(k for record in records for k in record)  # every key of every row
            part = datasets.Dataset.from_dict({c: _one_type([record.get(c) for record in records]) for c in columns})
        else:
            part = datasets.load_dataset(BUILDERS[file.suffix], data_files=str(file), split="train")
        parts.append(part)
        sources.append((start, str(file), lines))
        start += len(part)
    try:
        return datasets.concatenate_datasets(parts), sources, problems
    except ValueError as exc:
        columns = {name: part.features for (_, name, _), part in zip(sources, parts)}
        raise ConfigError(f"{key}={files!r}: the files have different columns or types and cannot be joined: "
                          f"{columns}") from exc


ANSWER_TAGS = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def ground_truth(answer: Any) -> str:
    """The reference answer handed to reward functions: the text inside `<answer>...</answer>` when the
    answer column holds the tags (LongVideo-Reason and r1v data sets do), as Long-RL/EasyR1 pass it."""
    text = str(answer)
    match = ANSWER_TAGS.search(text)
    return match.group(1).strip() if match else text


def _media_paths(value: Any, base: Path) -> list[str]:
    """A row's image/video field (a path, a list of paths, or empty) as paths, relative ones joined to `base`."""
    if value is None:
        return []
    values = [value] if isinstance(value, str) else list(value)
    return [str(v) if Path(v).is_absolute() else str(base / v) for v in values]


def _image_refs(value: Any, base: Path) -> list[ImageRef]:
    """A row's image field (a path, a {"bytes", "path"} dict, a decoded image, a list of those, or empty) as
    ImageRefs; relative paths without bytes are joined to `base`."""
    if value is None:
        return []
    values = [value] if isinstance(value, (str, dict)) or not isinstance(value, (list, tuple)) else list(value)
    refs = []
    for v in values:
        ref = normalize_ref(v)
        if isinstance(ref, str):
            ref = _media_paths(ref, base)[0]
        elif ref["bytes"] is None:
            ref = {"bytes": None, "path": _media_paths(ref["path"], base)[0]}
        refs.append(ref)
    return refs


def _undecoded(rows: datasets.Dataset, column: str) -> datasets.Dataset:
    """`rows` with a Hugging Face Image column (or list of them) left as {"bytes", "path"} dicts: decoding
    every image of a data set up front is slow, and the workers decode the ones a step needs."""
    feature = rows.features[column]
    if isinstance(feature, datasets.Image):
        return rows.cast_column(column, datasets.Image(decode=False))
    inner = getattr(feature, "feature", None)
    if isinstance(inner, datasets.Image):
        return rows.cast_column(column, type(feature)(datasets.Image(decode=False)))
    return rows


def build_messages(content: str, n_images: int = 0, n_videos: int = 0) -> list[dict[str, Any]]:
    """One user turn; with media, a list of parts where `<image>`/`<video>` placeholders stood.

    Media without placeholders go before the text. The chat template turns each media part
    into a single placeholder token that the rollout engine expands.
    """
    if not n_images and not n_videos:
        return [{"role": "user", "content": content}]
    pieces = [p for p in MEDIA_PLACEHOLDER.split(content) if p]
    marks = [p for p in pieces if MEDIA_PLACEHOLDER.fullmatch(p)]
    if not marks:
        pieces = ["<image>"] * n_images + ["<video>"] * n_videos + pieces
    elif marks.count("<image>") != n_images or marks.count("<video>") != n_videos:
        raise ValueError(f"the prompt has {marks.count('<image>')} <image> and {marks.count('<video>')} <video> "
                         f"placeholders but the row has {n_images} images and {n_videos} videos")
    parts = [{"type": p[1:-1]} if MEDIA_PLACEHOLDER.fullmatch(p) else {"type": "text", "text": p} for p in pieces]
    return [{"role": "user", "content": parts}]


# ---------------------------------------------------------------------------------------------
# the dataset
# ---------------------------------------------------------------------------------------------
class RLDataset(torch.utils.data.Dataset):
    """Rendered, tokenized prompts with their ground truths; rows too long are dropped or refused.

    Items: {"prompt_ids": list[int], "prompt_text": str, "ground_truth": str, "row": int}, plus
    "images" (lists of paths or {"bytes", "path"} dicts) / "videos" (lists of paths) when the data has those columns, plus every other string
    column of the row under its own name (e.g. problem_type) for the reward function.
    Media parts count as one token each against data.max_prompt_length here; the expanded
    length is only known once frames are decoded.
    """

    def __init__(self, files: str, cfg: DataConfig, tokenizer: Any, processor: Any = None,
                 *, config_key: str = "data.train_files") -> None:
        self.cfg, self.tokenizer, self.processor = cfg, tokenizer, processor
        self.config_key = config_key
        self.rows, self._sources, self.problems = load_rows(files, config_key, cfg.strict)
        self._template_owner = processor if processor is not None else tokenizer
        if cfg.override_chat_template is None and getattr(self._template_owner, "chat_template", None) is None:
            raise ConfigError("the tokenizer has no chat template; set data.override_chat_template")
        self._format = self._load_format_prompt(cfg.format_prompt)
        self.items = self._build_items()

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return dict(self.items[i])

    # ---- construction -----------------------------------------------------------------------
    @staticmethod
    def _load_format_prompt(path: str | None) -> jinja2.Template | None:
        if path is None:
            return None
        file = Path(path).expanduser()
        if not file.is_file():
            raise FileNotFoundError(f"data.format_prompt={path!r}: no such jinja file ({file.resolve()})")
        return jinja2.Template(file.read_text())

    def _where(self, row: int) -> str:
        """`line L of FILE (row R)` for jsonl, else `row R of FILE`; R counted within that file."""
        k = bisect.bisect_right([start for start, _, _ in self._sources], row) - 1
        start, name, lines = self._sources[k]
        if lines is not None and row - start < len(lines):
            return f"line {lines[row - start]} of {name} (row {row - start})"
        return f"row {row - start} of {name}"

    def _source_dir(self, row: int) -> Path:
        """The directory of the file (or dataset directory) that `row` came from."""
        name = self._sources[bisect.bisect_right([start for start, _, _ in self._sources], row) - 1][1]
        source = Path(name) if Path(name).exists() else Path(name.rsplit("@", 1)[0])  # name@split
        return source if source.is_dir() else source.parent

    def _column(self, name: str, key: str) -> list[Any]:
        if name not in self.rows.column_names:
            raise ConfigError(f"{self._where(0)} has no field {name!r} ({key}); the rows have fields "
                              f"{self.rows.column_names}; set {key} to one of them")
        return self.rows[name]

    def _reject(self, row: int, reason: str) -> None:
        """A row that cannot be used: raise under data.strict, else remember it (skipped, counted, logged)."""
        problem = f"{self._where(row)}: {reason}"
        if self.cfg.strict:
            raise ConfigError(f"{problem}; fix the row, or set data.strict=false to skip such rows")
        self.problems.append(problem)

    def _render(self, content: str, n_images: int, n_videos: int) -> str:
        if self._format is not None:
            content = self._format.render(content=content)
        messages = build_messages(content, n_images, n_videos)
        return self._template_owner.apply_chat_template(messages, add_generation_prompt=True, tokenize=False,
                                                        chat_template=self.cfg.override_chat_template)

    def _nothing_usable(self, too_long: int) -> ConfigError:
        why = (f"all {too_long} exceed data.max_prompt_length={self.cfg.max_prompt_length}" if too_long else
               f"{len(self.problems)} rows or lines were unusable (first: {self.problems[0]})" if self.problems
               else "it has no rows")
        return ConfigError(f"no usable prompts in {self._sources[0][1]}: {why}")

    def _build_items(self) -> list[dict[str, Any]]:
        cfg, columns = self.cfg, self.rows.column_names
        if not len(self.rows):
            raise self._nothing_usable(0)
        prompts = self._column(cfg.prompt_key, "data.prompt_key")
        answers = self._column(cfg.answer_key, "data.answer_key")
        media = {}
        if cfg.image_key in columns:
            self.rows = _undecoded(self.rows, cfg.image_key)
        for item_key, column, base, refs in (("images", cfg.image_key, cfg.image_dir, _image_refs),
                                             ("videos", cfg.video_key, cfg.video_dir, _media_paths)):
            if column in columns:
                # Without data.image_dir/video_dir, relative paths are relative to their data file.
                try:
                    media[item_key] = [refs(v, Path(base) if base else self._source_dir(row))
                                       for row, v in enumerate(self.rows[column])]
                except ValueError as exc:
                    raise ConfigError(f"{self._where(0)}: field {column!r}: {exc}") from exc
        reserved = {cfg.prompt_key, cfg.answer_key, cfg.image_key, cfg.video_key, *ITEM_KEYS}
        extras = {name: ["" if v is None else v for v in self.rows[name]] for name, feature in self.rows.features.items()
                  if name not in reserved and getattr(feature, "dtype", None) in ("string", "large_string")}

        texts, usable = [], []
        for row, prompt in enumerate(prompts):
            if prompt is None or not str(prompt).strip():
                self._reject(row, f"empty prompt (field {cfg.prompt_key!r}, data.prompt_key)")
                continue
            if answers[row] is None:
                self._reject(row, f"no answer (field {cfg.answer_key!r}, data.answer_key)")
                continue
            n_images, n_videos = (len(media[k][row]) if k in media else 0 for k in ("images", "videos"))
            try:
                texts.append(self._render(str(prompt), n_images, n_videos))
            except ValueError as exc:  # media list and placeholders disagree
                self._reject(row, str(exc))
                continue
            usable.append(row)
        ids = self.tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
        if self.problems:
            logger.warning("%s: skipped %d unusable rows or lines (data.strict=false); first: %s", self.config_key,
                           len(self.problems), self.problems[0])

        items, too_long = [], []
        for row, text, prompt_ids in zip(usable, texts, ids):
            if len(prompt_ids) > cfg.max_prompt_length:
                if not cfg.filter_overlong_prompts:
                    raise ConfigError(f"{self._where(row)} has {len(prompt_ids)} prompt tokens, more than "
                                      f"data.max_prompt_length={cfg.max_prompt_length}; raise the limit or set "
                                      f"data.filter_overlong_prompts=true to drop such rows")
                too_long.append(row)
                continue
            item = {"prompt_ids": list(prompt_ids), "prompt_text": text, "ground_truth": ground_truth(answers[row]),
                    "row": row}
            item.update({k: v[row] for k, v in media.items()})
            item.update({k: v[row] for k, v in extras.items()})
            items.append(item)
        if too_long:
            logger.warning("dropped %d of %d prompts longer than data.max_prompt_length=%d tokens (first: %s)",
                           len(too_long), len(texts), cfg.max_prompt_length, self._where(too_long[0]))
        if not items:
            raise self._nothing_usable(len(too_long))
        return items


def check_media(dataset: RLDataset, model_path: str, limits: dict[str, int] | None = None,
                key: str = "data.train_files", media: Sequence[str] | None = None) -> None:
    """Refuse, before any worker starts, images or videos the model or the rollout engine cannot take.

    `limits`: the engine's items per prompt by column ({"images": worker.rollout.limit_images, ...});
    `media`: the kinds ("image", "video") the model's adapter takes (longrl.models.adapter.media_of).
    """
    import json

    config = Path(model_path) / "config.json"
    hf = json.loads(config.read_text()) if config.is_file() else {}
    # an omni checkpoint nests its vision_config in its thinker; VILA names it vision_tower_cfg
    vision = "vision_config" in hf.get("thinker_config", hf) or "vision_tower_cfg" in hf
    problems = []
    for column, option in (("images", "data.image_key"), ("videos", "data.video_key")):
        counts = [len(item.get(column) or ()) for item in dataset.items]
        most = max(counts, default=0)
        if not most:
            continue
        rows = sum(1 for n in counts if n)
        if config.is_file() and not vision:
            problems.append(f"{key} has {rows} rows with {column} but worker.actor.model.model_path={model_path!r} is "
                            f"a text-only model (its config.json has no vision_config): its {column} would be "
                            f"dropped; use a vision-language model, or point {option} at a field the rows lack")
        elif media is not None and column[:-1] not in media:
            problems.append(f"{key} has {rows} rows with {column} but longrl feeds the model of "
                            f"worker.actor.model.model_path={model_path!r} {' and '.join(media) or 'no'} inputs "
                            f"only; use a model that takes {column}, or point {option} at a field the rows lack")
        limit_key = f"worker.rollout.limit_{column}"
        if limits is not None and most > limits[column]:
            problems.append(f"{key} has a row with {most} {column} but {limit_key}={limits[column]}: the "
                            f"rollout engine would refuse it; set {limit_key}={most}")
    if problems:
        raise ConfigError("; ".join(problems))


# ---------------------------------------------------------------------------------------------
# batches
# ---------------------------------------------------------------------------------------------
def rows_to_batch(items: Sequence[dict[str, Any]]) -> Batch:
    """Dataset items as one Batch of per-sample objects (keys of the first item)."""
    return Batch(objects={key: [item[key] for item in items] for key in items[0]})


def validation_batches(dataset: RLDataset, batch_size: int = -1) -> list[Batch]:
    """Every row once, in order, in batches of `batch_size` (-1: one batch; data.val_batch_size)."""
    size = len(dataset) if batch_size <= 0 else batch_size
    return [rows_to_batch([dataset[i] for i in range(s, min(s + size, len(dataset)))])
            for s in range(0, len(dataset), size)]


class PromptLoader:
    """Endless batches of dataset rows; epoch e visits the rows in a permutation seeded with seed + e.

    The state is (epoch, position of the next batch in that epoch), so a resumed loader deals
    exactly the batches an uninterrupted one would have dealt.
    """

    def __init__(self, dataset: Sequence[dict[str, Any]], batch_size: int, shuffle: bool, seed: int,
                 drop_last: bool = True) -> None:
        if batch_size < 1:
            raise ConfigError(f"data.rollout_batch_size={batch_size} must be at least 1")
        n = len(dataset)
        self.steps_per_epoch = n // batch_size if drop_last else -(-n // batch_size)
        if self.steps_per_epoch == 0:
            raise ConfigError(f"data.rollout_batch_size={batch_size} is larger than the dataset's {n} rows; "
                              f"lower it or add data")
        self.dataset, self.batch_size, self.shuffle, self.seed = dataset, batch_size, shuffle, seed
        self.epoch, self.position = 0, 0
        self._order: tuple[int, list[int]] | None = None  # (epoch, permutation) cache

    def _permutation(self) -> list[int]:
        if self._order is None or self._order[0] != self.epoch:
            n = len(self.dataset)
            if self.shuffle:
                order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed + self.epoch)).tolist()
            else:
                order = list(range(n))
            self._order = (self.epoch, order)
        return self._order[1]

    def __iter__(self) -> Iterator[Batch]:
        return self

    def __next__(self) -> Batch:
        if self.position >= self.steps_per_epoch:
            self.epoch, self.position = self.epoch + 1, 0
        start = self.position * self.batch_size
        indices = self._permutation()[start:start + self.batch_size]
        self.position += 1
        return rows_to_batch([self.dataset[i] for i in indices])

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        missing = {"epoch", "position"} - set(state)
        if missing:
            raise ValueError(f"data loader state {state!r} lacks {sorted(missing)}; it is not a PromptLoader state")
        if not 0 <= state["position"] <= self.steps_per_epoch:
            raise ValueError(f"data loader state position={state['position']} is outside this loader's epoch of "
                             f"{self.steps_per_epoch} batches; the checkpoint was made with another "
                             f"data.rollout_batch_size or data set")
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
