"""VisionCache: decode and encode each video once per step, what each pass gets, bad videos skipped."""

from __future__ import annotations

import dataclasses
import json
import logging
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from longrl.config import load_config
from longrl.data.synthetic_video import write_mp4
from longrl.data.image import ImageError
from longrl.data.video import VideoError
from longrl.models.vision_cache import (DUMMY_PATH, MediaInput, VideoSettings, VisionCache, media_mode,
                                         overlong_reason, reduce_video_stats, rollout_max_model_len,
                                         vision_cache_for)

SETTINGS = VideoSettings(num_frames=8, min_pixels=3136, max_pixels=50176)


def _write(path, frames: int, height: int = 56, width: int = 56, fps: float = 8.0) -> str:
    write_mp4(path, np.random.default_rng(frames).integers(0, 256, (frames, height, width, 3), dtype=np.uint8), fps)
    return str(path)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("clips")
    return {"a": _write(d / "a.mp4", 8), "b": _write(d / "b.mp4", 16), "short": _write(d / "short.mp4", 4),
            "wide": _write(d / "wide.mp4", 8, height=44, width=60)}


class Encoder:
    """A stand-in tower: embeddings [num_tokens, 4] filled with the call number; records the calls."""

    def __init__(self):
        self.calls = []

    def __call__(self, video):
        self.calls.append(video.path)
        return torch.full((video.num_tokens, 4), float(len(self.calls)))


# --- policy ---------------------------------------------------------------------------------
@pytest.mark.parametrize("purpose, cache, trainable, expected", [
    ("rollout", True, True, "embeds"), ("log_probs", True, True, "embeds"), ("update", True, False, "embeds"),
    ("update", True, True, "pixels"),  # a trained tower needs its gradients: recompute from pixels
    ("rollout", False, False, "frames"), ("log_probs", False, False, "pixels"), ("update", False, False, "pixels"),
])
def test_media_mode_follows_the_cache_and_tower_settings(purpose, cache, trainable, expected):
    assert media_mode(purpose, cache, trainable) == expected


# --- encode once ----------------------------------------------------------------------------
def test_each_unique_video_is_encoded_once_for_all_rows_and_passes(clips):
    cache, encode = VisionCache(SETTINGS), Encoder()
    rows = [[clips["a"]]] * 4 + [[clips["b"]]] * 4  # two prompts, n=4 samples each
    first = cache.row_inputs(rows, "embeds", "actor", encode)
    again = cache.row_inputs(rows, "embeds", "actor", encode)  # e.g. old log-probs after the rollout
    assert encode.calls == [clips["a"], clips["b"]]
    assert all(row[0].embeds is first[0][0].embeds for row in first[:4] + again[:4])  # one tensor, shared
    assert torch.equal(again[4][0].embeds, torch.full((16, 4), 2.0))  # b was the 2nd call
    assert all(row[0].pixel_values is None and row[0].frames is None for row in first)
    stats = cache.take_stats()
    # 16 rows asked for embeddings, 2 were encoded: 14 hits; 2 videos decoded
    assert (stats["video/encoded"], stats["video/embed_hits"], stats["video/decoded"]) == (2.0, 14.0, 2.0)
    assert cache.take_stats() == {}  # counters restart after each read


def test_each_tower_keeps_its_own_embeddings(clips):
    cache, encode = VisionCache(SETTINGS), Encoder()
    cache.row_inputs([[clips["a"]]], "embeds", "actor", encode)
    cache.row_inputs([[clips["a"]]], "embeds", "ref", encode)
    assert encode.calls == [clips["a"], clips["a"]] and len(cache) == 2


def test_a_rank_with_fewer_videos_encodes_padding_videos_to_match_its_peers(clips):
    cache, encode = VisionCache(SETTINGS), Encoder()
    seen = []
    cache.row_inputs([[clips["a"]], [clips["a"]]], "embeds", "actor", encode,
                     peers_max=lambda k: seen.append(k) or 3)
    assert seen == [1] and encode.calls == [clips["a"], DUMMY_PATH, DUMMY_PATH]
    dummy = cache.dummy_video()
    # one merged token: a (1, 2, 2) grid of patches of 3 channels x 2 frames x 14 x 14 = 1176 values
    assert (dummy.grid_thw, dummy.num_tokens, tuple(dummy.pixel_values.shape)) == ((1, 2, 2), 1, (4, 1176))


def test_clear_forgets_videos_and_embeddings(clips):
    cache, encode = VisionCache(SETTINGS), Encoder()
    cache.row_inputs([[clips["a"]]], "embeds", "actor", encode)
    cache.clear()
    assert len(cache) == 0
    cache.row_inputs([[clips["a"]]], "embeds", "actor", encode)
    assert encode.calls == [clips["a"], clips["a"]] and cache.take_stats()["video/decoded"] == 2.0


def test_the_worker_can_count_its_own_video_events():
    cache = VisionCache(SETTINGS)
    cache.count("overlong")
    cache.count("overlong")
    assert cache.take_stats() == {"video/overlong": 2.0}


def test_without_keep_pixels_an_encoded_video_drops_its_pixels_and_is_decoded_again_if_asked(clips):
    cache, encode = VisionCache(SETTINGS, keep_pixels=False), Encoder()
    cache.row_inputs([[clips["a"]]], "embeds", "actor", encode)
    assert cache.video(clips["a"]).pixel_values is None
    rows = cache.row_inputs([[clips["a"]], [clips["a"]]], "pixels")
    assert all(row[0].pixel_values.shape == (64, 1176) for row in rows)
    assert cache.take_stats()["video/decoded"] == 2.0  # once for the embeddings, once more for the pixels


def test_reduce_video_stats_sums_counts_over_ranks_and_takes_the_slowest_ranks_seconds():
    ranks = [{"video/encoded": 2.0, "video/encode_s": 0.5}, {"video/encoded": 3.0, "video/encode_s": 0.75}, {}]
    assert reduce_video_stats(ranks) == {"video/encoded": 5.0, "video/encode_s": 0.75}


# --- what a video becomes -------------------------------------------------------------------
def test_a_video_is_sampled_to_num_frames_and_timed_by_its_sampled_fps(clips):
    cache = VisionCache(SETTINGS)
    a, b = cache.video(clips["a"]), cache.video(clips["b"])
    # 8 frames of 56x56 -> grid (8/2, 56/14, 56/14) = (4, 4, 4) patches -> 64/(2*2) = 16 tokens
    assert (a.grid_thw, a.num_tokens, tuple(a.pixel_values.shape)) == ((4, 4, 4), 16, (64, 1176))
    # a: 8 of 8 frames at 8 fps -> 8 sampled fps -> 2 frames per grid step = 0.25 s;
    # b: 8 of 16 frames (2 s) -> 4 sampled fps -> 0.5 s
    assert (a.second_per_grid_ts, b.second_per_grid_ts) == (0.25, 0.5)


def test_a_video_shorter_than_num_frames_is_sampled_up_to_num_frames(clips):
    short = VisionCache(SETTINGS).video(clips["short"])  # 4 frames, 8 asked: frames repeat evenly
    assert short.grid_thw == (4, 4, 4) and short.num_tokens == 16


def test_with_data_video_fps_the_duration_sets_the_frames_and_num_frames_caps_them(clips):
    # EasyR1's data.video_fps: a (1 s at 8 fps) at 2 fps -> 2 frames, raised to 4; b (2 s) -> 4 frames; at 6 fps
    # b would get 12 frames, capped by num_frames=8. Timing follows the frames taken.
    by_fps = VisionCache(dataclasses.replace(SETTINGS, fps=2.0))
    a, b = by_fps.video(clips["a"]), by_fps.video(clips["b"])
    assert (a.grid_thw[0], b.grid_thw[0]) == (2, 2)  # 4 frames / temporal patch 2
    assert (a.second_per_grid_ts, b.second_per_grid_ts) == (0.5, 1.0)  # 4 of 8 frames in 1 s; 4 of 16 in 2 s
    capped = VisionCache(dataclasses.replace(SETTINGS, fps=6.0)).video(clips["b"])
    assert capped.grid_thw[0] == 4  # 8 frames


def test_with_decode_workers_a_passs_new_videos_are_decoded_on_threads_with_the_same_result(clips, monkeypatch):
    import threading

    import longrl.models.vision_cache as vc

    threads, real = set(), vc.load_video_or_none

    def recording(*args, **kwargs):  # the real decoder, noting which thread ran it
        threads.add(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr(vc, "load_video_or_none", recording)
    rows = [[clips["a"]], [clips["b"], clips["short"]], [clips["a"]]]
    serial = VisionCache(SETTINGS).row_inputs(rows, "pixels")
    assert threads == {threading.current_thread().name}
    threads.clear()
    cache = VisionCache(SETTINGS, decode_workers=2)
    parallel = cache.row_inputs(rows, "pixels")
    assert len(threads) == 2 and all(name.startswith("longrl-decode") for name in threads)
    assert cache.take_stats()["video/decoded"] == 3  # each unique video once
    for want, got in zip(serial, parallel):
        for w, g in zip(want, got):
            assert (w.path, w.grid_thw) == (g.path, g.grid_thw) and torch.equal(w.pixel_values, g.pixel_values)


def test_pixels_and_frames_modes_give_what_the_engines_encode(clips):
    cache = VisionCache(SETTINGS, cache_embeds=False, keep_frames=True)
    [[pixels]] = cache.row_inputs([[clips["wide"]]], "pixels")
    [[frames]] = cache.row_inputs([[clips["wide"]]], "frames")
    # 44x60 resized within [3136, 50176] pixels to multiples of 28: round(44/28)*28 = 56, round(60/28)*28 = 56
    assert pixels.grid_thw == (4, 4, 4) and pixels.frames is None and pixels.embeds is None
    assert frames.pixel_values is None and frames.frames.frames.shape == (8, 56, 56, 3)
    assert len(cache) == 0  # nothing was encoded


# --- bad inputs -----------------------------------------------------------------------------
def _bad(kind: str, tmp_path, clips) -> str:
    path = tmp_path / f"{kind}.mp4"
    if kind == "truncated":  # an mp4 cut in half: its index (written last) is gone
        data = open(clips["b"], "rb").read()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "zero_byte":
        path.write_bytes(b"")
    return str(path)


@pytest.mark.parametrize("kind", ["truncated", "zero_byte", "missing"])
def test_an_unusable_video_skips_its_rows_with_one_warning_naming_the_file(kind, tmp_path, clips, caplog):
    cache, encode = VisionCache(SETTINGS), Encoder()
    bad = _bad(kind, tmp_path, clips)
    rows = [[clips["a"]], [bad], [bad]]
    with caplog.at_level(logging.WARNING, logger="longrl.data.video"):
        got = cache.row_inputs(rows, "embeds", "actor", encode)
        cache.row_inputs(rows, "embeds", "actor", encode)
    assert got[0][0].num_tokens == 16 and got[1] is None and got[2] is None
    assert encode.calls == [clips["a"]]
    assert [bad in r.getMessage() for r in caplog.records] == [True]  # warned once, then remembered for the step
    assert cache.take_stats()["video/skipped"] == 1.0


def test_with_strict_media_an_unusable_video_is_an_error(tmp_path, clips):
    cache = VisionCache(VideoSettings(8, 3136, 50176, strict=True))
    with pytest.raises(VideoError, match="empty"):
        cache.row_inputs([[_bad("zero_byte", tmp_path, clips)]], "pixels")


# --- images ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> dict[str, str]:
    from PIL import Image

    d = tmp_path_factory.mktemp("pictures")
    Image.new("RGB", (56, 84), (255, 0, 0)).save(d / "red.png")  # 84x56 -> grid (1, 6, 4): 6 tokens
    (d / "zero.png").write_bytes(b"")
    (d / "truncated.png").write_bytes((d / "red.png").read_bytes()[:60])  # the header, then the data cut off
    return {"red": str(d / "red.png"), "zero": str(d / "zero.png"), "missing": str(d / "missing.png"),
            "truncated": str(d / "truncated.png")}


def test_an_image_shared_by_rows_and_beside_a_video_is_encoded_once_and_counted_under_image(clips, pictures):
    cache, encode = VisionCache(SETTINGS), Encoder()
    rows = [[("image", pictures["red"]), ("video", clips["a"])]] * 2 + [[("image", pictures["red"])]]
    first = cache.row_inputs(rows, "embeds", "actor", encode)
    assert encode.calls == [pictures["red"], clips["a"]]
    image = first[0][0]
    assert (image.modality, image.grid_thw, image.num_tokens, image.embeds.shape) == ("image", (1, 6, 4), 6, (6, 4))
    assert first[2][0].embeds is image.embeds
    stats = cache.take_stats()
    # 3 image rows, 1 encoded: 2 hits; 2 video rows, 1 encoded: 1 hit
    assert {k: v for k, v in stats.items() if not k.endswith("_s")} == {
        "image/decoded": 1.0, "image/embed_hits": 2.0, "image/encoded": 1.0,
        "video/decoded": 1.0, "video/embed_hits": 1.0, "video/encoded": 1.0}


def test_an_embedded_image_and_a_file_image_of_the_same_name_are_different_items(pictures):
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (28, 28), (0, 0, 255)).save(buffer, format="PNG")
    cache = VisionCache(SETTINGS)
    embedded = cache.image({"bytes": buffer.getvalue(), "path": pictures["red"]})
    assert embedded.grid_thw == (1, 4, 4) and cache.image(pictures["red"]).grid_thw == (1, 6, 4)


@pytest.mark.parametrize("kind", ["zero", "missing", "truncated"])
def test_an_unusable_image_skips_its_rows_counted_in_image_skipped_with_a_warning_naming_it(kind, pictures, caplog):
    cache = VisionCache(SETTINGS)
    with caplog.at_level(logging.WARNING, logger="longrl.models.vision_cache"):
        got = cache.row_inputs([[("image", pictures["red"])], [("image", pictures[kind])], [("image", pictures[kind])]],
                               "pixels")
    assert got[0][0].pixel_values.shape == (24, 1176) and got[1] is None and got[2] is None
    assert cache.take_stats()["image/skipped"] == 1.0  # counted once per step, like a video
    assert [pictures[kind] in r.getMessage() and "data.strict_media=false" in r.getMessage()
            for r in caplog.records] == [True]


@pytest.mark.parametrize("kind, reason", [("zero", "file is empty"), ("missing", "file not found"),
                                          ("truncated", "truncated or corrupt")])
def test_with_strict_media_an_unusable_image_is_an_error_naming_the_file(kind, reason, pictures):
    cache = VisionCache(VideoSettings(8, 3136, 50176, strict=True))
    with pytest.raises(ImageError, match=f"{kind}.png: {reason}.*data.strict_media=true"):
        cache.row_inputs([[("image", pictures[kind])]], "pixels")


def test_frames_mode_gives_the_engine_the_image_resized_to_its_grid(pictures):
    [[image]] = VisionCache(SETTINGS, keep_frames=True).row_inputs([[("image", pictures["red"])]], "frames")
    assert image.image.shape == (84, 56, 3) and image.pixel_values is None


# --- construction ---------------------------------------------------------------------------
def _media(modality: str, tokens: int) -> MediaInput:
    return MediaInput("x", (1, 1, 1), 1.0, tokens, modality=modality)


def test_max_prompt_length_bounds_text_and_image_tokens_and_video_tokens_come_on_top():
    prompt = list(range(100))  # 100 ids, one of them each media item's placeholder
    # a 1000-token video over a 100-token prompt fits a 200-token max_prompt_length, as in Long-RL
    assert overlong_reason(prompt, [_media("video", 1000)], 200, max_model_len=2000, max_response_length=64) is None
    # an image's tokens count (EasyR1 and Long-RL both expand images inside the limit)
    assert "has 299 text and image tokens (a video counts as its placeholder), more than " \
           "data.max_prompt_length=200" in overlong_reason(prompt, [_media("image", 200)], 200)
    # the whole prompt and the response must fit the engine
    reason = overlong_reason(prompt, [_media("video", 1000)], 200, max_model_len=1000, max_response_length=64)
    assert "has 1099 tokens with its video tokens, which with data.max_response_length=64 exceed the engine's " \
           "max_model_len=1000" in reason


def test_the_engine_holds_the_prompt_and_response_limits_plus_the_video_budget_at_most_the_context(tmp_path):
    hf = SimpleNamespace(text_config=SimpleNamespace(max_position_embeddings=8192),
                         vision_config=SimpleNamespace(patch_size=14, spatial_merge_size=2, temporal_patch_size=2))
    cfg = load_config([f"worker.actor.model.model_path={tmp_path}", "data.max_prompt_length=512",
                       "data.max_response_length=32", "worker.rollout.num_video_frames=64", "data.max_pixels=50176"])
    vision = vision_cache_for(cfg, hf)
    # 64 frames = 32 temporal steps x at most 50176 / 28^2 = 64 merged tokens = 2048 video tokens
    assert vision.settings.max_video_tokens() == 2048
    assert rollout_max_model_len(cfg, hf, vision) == 512 + 32 + 2048
    assert rollout_max_model_len(cfg, SimpleNamespace(text_config=SimpleNamespace(max_position_embeddings=1000)),
                                 vision) == 1000  # never past the model's context
    assert rollout_max_model_len(cfg, SimpleNamespace(), None) == 512 + 32  # a text model
    fixed = load_config([f"worker.actor.model.model_path={tmp_path}", "worker.rollout.max_model_len=4096"])
    assert rollout_max_model_len(fixed, hf, vision_cache_for(fixed, hf)) == 4096


def test_settings_take_patching_from_the_model_and_normalisation_from_its_processor_config(tmp_path):
    (tmp_path / "video_preprocessor_config.json").write_text(json.dumps({"image_mean": [0.5] * 3,
                                                                         "image_std": [0.25] * 3}))
    vision = SimpleNamespace(patch_size=16, spatial_merge_size=2, temporal_patch_size=2)
    s = VideoSettings.for_model(tmp_path, vision, 32, 100, 200, "/c", strict=True)
    assert s == VideoSettings(32, 100, 200, 16, 2, 2, (0.5,) * 3, (0.25,) * 3, "/c", True)


def test_vision_cache_for_reads_the_config_and_is_none_for_text_models(tmp_path):
    cfg = load_config([f"worker.actor.model.model_path={tmp_path}", "worker.rollout.num_video_frames=32",
                       "worker.rollout.cache_video_embeds=false", "data.strict_media=true"])
    assert vision_cache_for(cfg, SimpleNamespace()) is None
    hf = SimpleNamespace(vision_config=SimpleNamespace(patch_size=14, spatial_merge_size=2, temporal_patch_size=2))
    cache = vision_cache_for(cfg, hf)
    assert (cache.settings.num_frames, cache.settings.strict, cache.cache_embeds, cache.keep_frames,
            cache.keep_pixels, cache.settings.fps) == (32, True, False, True, True, None)
    by_fps = load_config([f"worker.actor.model.model_path={tmp_path}", "data.video_fps=2.0", "data.num_workers=3"])
    assert (vision_cache_for(by_fps, hf).settings.fps, vision_cache_for(by_fps, hf).decode_workers) == (2.0, 3)
    # cache on and a frozen tower: nothing needs the pixels once the video is encoded
    frozen = load_config([f"worker.actor.model.model_path={tmp_path}", "worker.actor.model.freeze_vision_tower=true"])
    assert (vision_cache_for(frozen, hf).keep_frames, vision_cache_for(frozen, hf).keep_pixels) == (False, False)
