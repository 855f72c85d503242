"""Synthetic audio-visual data: the answers are right, and the mp4 files really hold the beeps, the pitch and the
squares the questions ask about (read back with the project's own decoders)."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np

from longrl.data.audio import SAMPLE_RATE, decode_audio
from longrl.data.synthetic_av import CATEGORIES, generate_split, solve
from longrl.data.synthetic_video import COLORS
from longrl.data.video import decode_video


def _beeps_and_pitch(samples: np.ndarray) -> tuple[int, float]:
    usable = samples[: len(samples) // 160 * 160]
    loud = np.abs(usable).reshape(-1, 160).max(1) > 0.1  # 10 ms windows
    onsets = int(loud[0]) + int(np.sum(loud[1:] & ~loud[:-1]))
    spectrum = np.abs(np.fft.rfft(samples))
    return onsets, float(np.argmax(spectrum)) * SAMPLE_RATE / len(samples)


def test_rows_are_balanced_solved_and_the_files_hold_what_is_asked(tmp_path):
    jsonl = generate_split(tmp_path, "train", 8)
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert Counter(r["category"] for r in rows) == {c: 2 for c in CATEGORIES}
    for row in rows:
        letter = row["answer"][len("<answer>"):-len("</answer>")]
        assert row["options"]["ABCD".index(letter)].endswith(" " + solve(row["category"], row["schedule"]))
        assert len(set(row["options"])) == 4
        path = str(tmp_path / row["videos"][0])
        clip = decode_audio(path)
        beeps, pitch = _beeps_and_pitch(clip.samples)
        assert beeps == len(row["schedule"]["beeps"]), row["problem_id"]
        assert abs(pitch - row["schedule"]["pitch"]) < 10, row["problem_id"]
        frames = decode_video(path).frames
        first = frames[0, 28, 28].astype(int)
        assert np.abs(first - np.array(COLORS[row["schedule"]["colors"][0]])).max() < 40
    assert {decode_audio(str(tmp_path / r["videos"][0])).source_channels for r in rows} == {1, 2}
