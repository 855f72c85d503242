"""RLDataset (files -> rendered, tokenized prompts) and PromptLoader (seeded, resumable batches)."""

import json
import logging
from pathlib import Path

import datasets
import pytest
import torch

from longrl.config import ConfigError, DataConfig
from longrl.data.dataset import PromptLoader, RLDataset, build_messages, validation_batches
from longrl.models.tiny import build_tokenizer

ROWS = [{"problem": "What is 3 + 4?", "answer": "7"},
        {"problem": "What is 1 + 1?", "answer": "2"},
        {"problem": "What is 10 + 5?", "answer": "15"}]
CHAT_3_PLUS_4 = "<|im_start|>user\nWhat is 3 + 4?<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="session")
def tokenizer(tmp_path_factory):
    return build_tokenizer(tmp_path_factory.mktemp("tokenizer"))


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def dataset(files, tokenizer, **cfg) -> RLDataset:
    return RLDataset(str(files), DataConfig(**cfg), tokenizer)


# ---- reading files ---------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".parquet"])
def test_each_file_type_loads_the_same_rows(tmp_path, tokenizer, suffix):
    path = tmp_path / f"train{suffix}"
    if suffix == ".jsonl":
        write_jsonl(path, ROWS)
    elif suffix == ".json":
        path.write_text(json.dumps(ROWS))
    else:
        datasets.Dataset.from_list(ROWS).to_parquet(str(path))
    ds = dataset(path, tokenizer)
    assert [ds[i]["ground_truth"] for i in range(len(ds))] == ["7", "2", "15"]


def test_directory_loads_its_files_in_name_order_and_errors_name_the_file_and_row(tmp_path, tokenizer):
    write_jsonl(tmp_path / "a.jsonl", ROWS[:2])
    write_jsonl(tmp_path / "b.jsonl", [ROWS[2], {"problem": None, "answer": "0"}])
    with pytest.raises(ConfigError, match=r"line 2 of .*b.jsonl \(row 1\): empty prompt \(field 'problem', "
                                          r"data.prompt_key\); fix the row, or set data.strict=false"):
        dataset(tmp_path, tokenizer, strict=True)
    (tmp_path / "b.jsonl").unlink()
    write_jsonl(tmp_path / "b.jsonl", [ROWS[2]])
    ds = dataset(tmp_path, tokenizer)
    assert [(ds[i]["row"], ds[i]["ground_truth"]) for i in range(3)] == [(0, "7"), (1, "2"), (2, "15")]


def test_name_at_split_reads_that_split_of_a_local_directory(tmp_path, tokenizer):
    write_jsonl(tmp_path / "train.jsonl", ROWS[:2])
    write_jsonl(tmp_path / "validation.jsonl", ROWS[2:])
    assert len(dataset(f"{tmp_path}@train", tokenizer)) == 2
    assert dataset(f"{tmp_path}@validation", tokenizer)[0]["ground_truth"] == "15"


def test_missing_file_error_names_the_path_and_the_config_key(tmp_path, tokenizer):
    with pytest.raises(FileNotFoundError, match=r"data.train_files=.*nope.jsonl"):
        dataset(tmp_path / "nope.jsonl", tokenizer)
    with pytest.raises(FileNotFoundError, match=r"data.val_files='nope@test': 'nope' is not a local file or directory and could not be loaded from the Hugging Face hub"):
        RLDataset("nope@test", DataConfig(), tokenizer, config_key="data.val_files")


def test_missing_answer_column_names_the_key_the_file_and_the_columns(tmp_path, tokenizer):
    path = write_jsonl(tmp_path / "t.jsonl", [{"problem": "What is 1 + 1?", "solution": "2"}])
    with pytest.raises(ConfigError, match=r"line 1 of .*t.jsonl \(row 0\) has no field 'answer' \(data.answer_key\).*"
                                          r"\['problem', 'solution'\]"):
        dataset(path, tokenizer)
    assert dataset(path, tokenizer, answer_key="solution")[0]["ground_truth"] == "2"


# ---- bad rows: skipped and counted, or refused under data.strict ----------------------------------
BAD_LINES = [
    b'{"problem": "What is 3 + 4?", "answer": "7"}\n',
    b'{"problem": "What is 1 + 1?", "answer": \n',                        # 2: torn JSON
    b'{"problem": "What is \xff?", "answer": "1"}\n',                     # 3: not UTF-8
    b'\n',                                                               # blank: ignored
    b'["a list"]\n',                                                    # 5: not an object
    b'{"problem": "  ", "answer": "1"}\n',                               # 6: empty prompt
    b'{"problem": "What is 2 + 2?"}\n',                                  # 7: no answer
    b'{"problem": "<image> and <image>?", "answer": "1", "images": ["a.png"]}\n',  # 8: 2 placeholders, 1 image
    b'{"problem": "What is 10 + 5?", "answer": "15"}\n',
]


def test_bad_lines_and_rows_are_skipped_and_each_is_named_with_its_file_and_line(tmp_path, tokenizer):
    path = tmp_path / "t.jsonl"
    path.write_bytes(b"".join(BAD_LINES))
    ds = dataset(path, tokenizer)
    assert [ds[i]["ground_truth"] for i in range(len(ds))] == ["7", "15"]
    assert [p.split(": ", 1)[0].replace(str(path), "F") for p in ds.problems] == [
        "line 2 of F", "line 3 of F", "line 5 of F", "line 6 of F (row 1)", "line 7 of F (row 2)",
        "line 8 of F (row 3)"]
    assert "not UTF-8 (invalid start byte at byte 21)" in ds.problems[1]
    assert "a JSON list where a row must be an object" in ds.problems[2]
    assert ds.problems[3].endswith("empty prompt (field 'problem', data.prompt_key)")
    assert ds.problems[4].endswith("no answer (field 'answer', data.answer_key)")
    assert ds.problems[5].endswith("the prompt has 2 <image> and 0 <video> placeholders but the row has 1 images "
                                   "and 0 videos")


def test_under_strict_the_first_bad_line_stops_loading_naming_file_and_line(tmp_path, tokenizer):
    path = tmp_path / "t.jsonl"
    path.write_bytes(b"".join(BAD_LINES))
    with pytest.raises(ConfigError, match=r"data.train_files: line 2 of .*t.jsonl: not a JSON object .*set "
                                          r"data.strict=false to skip such lines"):
        dataset(path, tokenizer, strict=True)


def test_a_file_with_no_usable_row_says_how_many_were_unusable(tmp_path, tokenizer):
    path = tmp_path / "t.jsonl"
    path.write_bytes(b"".join(BAD_LINES[1:3]))
    with pytest.raises(ConfigError, match=r"no usable prompts in .*t.jsonl: 2 rows or lines were unusable \(first: "
                                          r"line 1 of"):
        dataset(path, tokenizer)


# ---- prompts --------------------------------------------------------------------------------
def test_item_holds_chat_prompt_its_token_ids_ground_truth_and_row(tmp_path, tokenizer):
    item = dataset(write_jsonl(tmp_path / "t.jsonl", ROWS), tokenizer)[0]
    assert item["prompt_text"] == CHAT_3_PLUS_4
    assert item["prompt_ids"] == tokenizer(CHAT_3_PLUS_4, add_special_tokens=False)["input_ids"]
    assert (item["ground_truth"], item["row"]) == ("7", 0)


def test_format_prompt_is_rendered_before_the_chat_template(tmp_path, tokenizer):
    path = write_jsonl(tmp_path / "t.jsonl", ROWS)
    template = tmp_path / "ask.jinja"
    template.write_text("Q: {{ content }} A?\n")
    assert dataset(path, tokenizer, format_prompt=str(template))[0]["prompt_text"] == \
        "<|im_start|>user\nQ: What is 3 + 4? A?<|im_end|>\n<|im_start|>assistant\n"
    math = dataset(path, tokenizer, format_prompt="examples/format_prompt/math.jinja")[0]["prompt_text"]
    # EasyR1's examples/format_prompt/math.jinja, word for word
    assert ("What is 3 + 4? You FIRST think about the reasoning process as an internal monologue and then provide "
            "the final answer. The reasoning process MUST BE enclosed within <think> </think> tags. The final answer "
            "MUST BE put in \\boxed{}.<|im_end|>") in math
    r1v = dataset(path, tokenizer, format_prompt="examples/format_prompt/r1v.jinja")[0]["prompt_text"]
    assert ("What is 3 + 4? A conversation between User and Assistant. The user asks a question, and the Assistant "
            "solves it.") in r1v and "<think> reasoning process here </think><answer> answer here </answer>" in r1v


def test_missing_format_prompt_file_names_the_key(tmp_path, tokenizer):
    with pytest.raises(FileNotFoundError, match="data.format_prompt='missing.jinja'"):
        dataset(write_jsonl(tmp_path / "t.jsonl", ROWS), tokenizer, format_prompt="missing.jinja")


def test_override_chat_template_replaces_the_tokenizers(tmp_path, tokenizer):
    ds = dataset(write_jsonl(tmp_path / "t.jsonl", ROWS), tokenizer,
                 override_chat_template="Q: {{ messages[0]['content'] }}\nA:")
    assert ds[0]["prompt_text"] == "Q: What is 3 + 4?\nA:"


def test_extra_string_fields_are_passed_on_and_other_types_are_not(tmp_path, tokenizer):
    rows = [{**r, "problem_type": "addition", "level": 1} for r in ROWS]
    item = dataset(write_jsonl(tmp_path / "t.jsonl", rows), tokenizer)[0]
    assert item["problem_type"] == "addition" and "level" not in item


def test_video_paths_are_resolved_and_each_video_becomes_one_template_part(tmp_path, tokenizer):
    rows = [{"problem": "What happens?<video>", "answer": "B", "videos": ["clip.mp4"]}]
    template = ("{% for p in messages[0]['content'] %}{% if p['type'] == 'video' %}[V]"
                "{% else %}{{ p['text'] }}{% endif %}{% endfor %}")
    item = dataset(write_jsonl(tmp_path / "t.jsonl", rows), tokenizer, video_dir="/videos",
                   override_chat_template=template)[0]
    assert item["videos"] == ["/videos/clip.mp4"]
    assert item["prompt_text"] == "What happens?[V]"


def test_relative_media_paths_default_to_the_data_files_directory(tmp_path, tokenizer):
    (tmp_path / "set").mkdir()
    rows = [{"problem": "Which?", "answer": "A", "videos": ["videos/0.mp4", "/abs/1.mp4"], "images": "i.png"}]
    path = write_jsonl(tmp_path / "set" / "train.jsonl", rows)
    template = "{{ messages[0]['content'] | map(attribute='type') | join(',') }}"
    for files in (path, f"{tmp_path / 'set'}@train"):
        item = dataset(files, tokenizer, override_chat_template=template)[0]
        assert item["videos"] == [str(tmp_path / "set" / "videos" / "0.mp4"), "/abs/1.mp4"]
        assert item["images"] == [str(tmp_path / "set" / "i.png")]
        assert item["prompt_text"] == "image,video,video,text"


def test_build_messages_puts_media_first_without_placeholders_and_checks_counts():
    assert build_messages("Which?", n_videos=1) == \
        [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "Which?"}]}]
    assert build_messages("plain") == [{"role": "user", "content": "plain"}]
    with pytest.raises(ValueError, match="1 <image> and 0 <video> placeholders but the row has 0 images and 1"):
        build_messages("<image> Which?", n_videos=1)


# ---- overlong prompts -----------------------------------------------------------------------
def long_rows() -> list[dict]:
    return [ROWS[0], {"problem": "What is 3 + 4? " * 8, "answer": "7"}, ROWS[1], {"problem": "x " * 60, "answer": "0"}]


def test_overlong_prompts_are_dropped_with_one_warning_giving_count_and_first_row(tmp_path, tokenizer, caplog):
    limit = len(tokenizer(CHAT_3_PLUS_4, add_special_tokens=False)["input_ids"])  # row 0 fits exactly
    with caplog.at_level(logging.WARNING, logger="longrl.data.dataset"):
        ds = dataset(write_jsonl(tmp_path / "t.jsonl", long_rows()), tokenizer, max_prompt_length=limit)
    assert [ds[i]["row"] for i in range(len(ds))] == [0, 2]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "dropped 2 of 4 prompts" in warnings[0] and "line 2 of" in warnings[0]


def test_overlong_prompt_is_an_error_naming_the_row_when_filtering_is_off(tmp_path, tokenizer):
    limit = len(tokenizer(CHAT_3_PLUS_4, add_special_tokens=False)["input_ids"])
    with pytest.raises(ConfigError, match=r"line 2 of .*t.jsonl \(row 1\) has \d+ prompt tokens, more than "
                                          rf"data.max_prompt_length={limit}"):
        dataset(write_jsonl(tmp_path / "t.jsonl", long_rows()), tokenizer, max_prompt_length=limit,
                filter_overlong_prompts=False)


def test_dataset_where_every_prompt_is_too_long_is_an_error(tmp_path, tokenizer):
    with pytest.raises(ConfigError, match="all 3 exceed data.max_prompt_length=4"):
        dataset(write_jsonl(tmp_path / "t.jsonl", ROWS), tokenizer, max_prompt_length=4)


# ---- PromptLoader ---------------------------------------------------------------------------
ITEMS = [{"row": i, "ground_truth": str(i)} for i in range(10)]


def rows_of(batch) -> list[int]:
    return list(batch["row"])


def test_resumed_loader_deals_the_same_next_batch_as_an_uninterrupted_one():
    straight = PromptLoader(ITEMS, batch_size=3, shuffle=True, seed=5)
    expected = [rows_of(next(straight)) for _ in range(4)]
    first = PromptLoader(ITEMS, batch_size=3, shuffle=True, seed=5)
    for _ in range(3):
        next(first)
    state = first.state_dict()
    resumed = PromptLoader(ITEMS, batch_size=3, shuffle=True, seed=5)
    resumed.load_state_dict(state)
    # 10 rows // 3 = 3 batches per epoch: the 4th batch is the first of epoch 1
    assert state == {"epoch": 0, "position": 3}
    assert rows_of(next(resumed)) == expected[3]
    assert resumed.epoch == 1


def test_each_epoch_uses_a_permutation_seeded_with_seed_plus_epoch_and_drops_the_tail():
    loader = PromptLoader(ITEMS, batch_size=4, shuffle=True, seed=7)
    assert loader.steps_per_epoch == 2  # 10 // 4
    for epoch in range(2):
        dealt = [row for _ in range(2) for row in rows_of(next(loader))]
        order = torch.randperm(10, generator=torch.Generator().manual_seed(7 + epoch)).tolist()
        assert dealt == order[:8]


def test_without_drop_last_every_row_comes_once_per_epoch_and_the_last_batch_is_short():
    loader = PromptLoader(ITEMS, batch_size=4, shuffle=False, seed=0, drop_last=False)
    assert loader.steps_per_epoch == 3  # ceil(10 / 4)
    assert [rows_of(next(loader)) for _ in range(4)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9], [0, 1, 2, 3]]


def test_batches_carry_the_item_fields_as_objects():
    batch = next(PromptLoader(ITEMS, batch_size=2, shuffle=False, seed=0))
    assert sorted(batch.keys()) == ["ground_truth", "row"] and list(batch["ground_truth"]) == ["0", "1"]


def test_batch_larger_than_the_dataset_is_an_error():
    with pytest.raises(ConfigError, match="data.rollout_batch_size=11 is larger than the dataset's 10 rows"):
        PromptLoader(ITEMS, batch_size=11, shuffle=True, seed=0)


def test_state_from_another_batch_size_is_refused():
    loader = PromptLoader(ITEMS, batch_size=5, shuffle=True, seed=0)
    with pytest.raises(ValueError, match="position=3 is outside this loader's epoch of 2 batches"):
        loader.load_state_dict({"epoch": 0, "position": 3})
    with pytest.raises(ValueError, match=r"lacks \['position'\]"):
        loader.load_state_dict({"epoch": 0})


def test_validation_batches_cover_every_row_once_in_order(tmp_path, tokenizer):
    ds = dataset(write_jsonl(tmp_path / "t.jsonl", ROWS), tokenizer)
    assert [rows_of(b) for b in validation_batches(ds, 2)] == [[0, 1], [2]]
    assert [rows_of(b) for b in validation_batches(ds, -1)] == [[0, 1, 2]]


def test_the_dapo_format_prompt_asks_for_an_answer_line():
    import jinja2

    text = jinja2.Template(open("examples/format_prompt/dapo.jinja").read()).render(content="  What is 2+3?  ")
    assert "\n\nWhat is 2+3?\n\n" in text and text.rstrip().endswith('after "Answer:".')


def test_answer_tags_in_the_answer_column_reach_the_reward_as_the_bare_answer(tmp_path, tokenizer):
    rows = [{"problem": "Which?", "answer": "<answer> B </answer>"}, {"problem": "Sum?", "answer": "\\boxed{7}"}]
    ds = dataset(write_jsonl(tmp_path / "t.jsonl", rows), tokenizer)
    assert [ds[0]["ground_truth"], ds[1]["ground_truth"]] == ["B", "\\boxed{7}"]  # only the tags go, as there


# ---- images ----------------------------------------------------------------------------------
def _png_bytes(colour: tuple[int, int, int]) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), colour).save(buffer, format="PNG")
    return buffer.getvalue()


TYPES = "{{ messages[0]['content'] | map(attribute='type') | join(',') }}"


def test_a_geometry3k_style_parquet_of_decoded_images_gives_bytes_refs_and_placeholders_in_place(tmp_path,
                                                                                                 tokenizer):
    # geometry3k stores `images` as a list of HF Image features and puts <image> in the problem text
    features = datasets.Features({"problem": datasets.Value("string"), "answer": datasets.Value("string"),
                                  "images": datasets.Sequence(datasets.Image())})
    rows = {"problem": ["<image>Find x. Compare with <image>."], "answer": ["3"],
            "images": [[{"bytes": _png_bytes((255, 0, 0)), "path": "a.png"},
                        {"bytes": _png_bytes((0, 0, 255)), "path": "b.png"}]]}
    datasets.Dataset.from_dict(rows, features=features).to_parquet(str(tmp_path / "geo.parquet"))
    item = dataset(tmp_path / "geo.parquet", tokenizer, override_chat_template=TYPES)[0]
    assert item["prompt_text"] == "image,text,image,text"
    assert [ref["path"] for ref in item["images"]] == ["a.png", "b.png"]
    assert item["images"][0]["bytes"] == _png_bytes((255, 0, 0))


def test_images_given_as_a_path_a_list_and_a_path_dict_resolve_against_image_dir(tmp_path, tokenizer):
    rows = [{"problem": "A?", "answer": "1", "images": "a.png"},
            {"problem": "B?", "answer": "2", "images": ["a.png", "/abs/b.png"]}]
    ds = dataset(write_jsonl(tmp_path / "t.jsonl", rows), tokenizer, image_dir="/imgs", override_chat_template=TYPES)
    assert ds[0]["images"] == ["/imgs/a.png"] and ds[1]["images"] == ["/imgs/a.png", "/abs/b.png"]
    assert ds[1]["prompt_text"] == "image,image,text"
    rows = [{"problem": "C?", "answer": "3", "images": [{"bytes": None, "path": "c.png"}]}]
    ds = dataset(write_jsonl(tmp_path / "d.jsonl", rows), tokenizer, image_dir="/imgs", override_chat_template=TYPES)
    assert ds[0]["images"] == [{"bytes": None, "path": "/imgs/c.png"}]


def test_an_image_and_a_video_in_one_prompt_keep_their_placeholder_order(tmp_path, tokenizer):
    rows = [{"problem": "<video> then <image>?", "answer": "A", "images": ["i.png"], "videos": ["v.mp4"]}]
    item = dataset(write_jsonl(tmp_path / "t.jsonl", rows), tokenizer, override_chat_template=TYPES)[0]
    assert item["prompt_text"] == "video,text,image,text"
    assert item["images"] == [str(tmp_path / "i.png")] and item["videos"] == [str(tmp_path / "v.mp4")]


def test_check_media_refuses_images_for_a_text_only_model_and_more_images_than_the_engine_takes(tmp_path,
                                                                                               tokenizer):
    from longrl.data.dataset import check_media

    rows = [{"problem": "A?", "answer": "1", "images": ["a.png", "b.png"]}, {"problem": "B?", "answer": "2"}]
    ds = dataset(write_jsonl(tmp_path / "t.jsonl", rows), tokenizer)
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    with pytest.raises(ConfigError, match=r"1 rows with images but .* is a text-only model .*no vision_config"):
        check_media(ds, str(tmp_path / "text"))
    (tmp_path / "vl").mkdir()
    (tmp_path / "vl" / "config.json").write_text(json.dumps({"model_type": "qwen2_5_vl", "vision_config": {}}))
    check_media(ds, str(tmp_path / "vl"), {"images": 2, "videos": 1})
    with pytest.raises(ConfigError, match="a row with 2 images but worker.rollout.limit_images=1.*limit_images=2"):
        check_media(ds, str(tmp_path / "vl"), {"images": 1, "videos": 1})
