"""Decoding, frame sampling, errors, disk cache and Qwen2-VL preprocessing of longrl.data.video."""

from __future__ import annotations

import logging
import pickle

import av
import numpy as np
import pytest
import torch

from longrl.data import video as V
from longrl.data.synthetic_video import write_mp4


def _index_video(n: int, size: int = 56) -> np.ndarray:
    """Frame i is uniformly grey with level 8*i (so the decoded level tells the frame index)."""
    return np.repeat((np.arange(n, dtype=np.uint8) * 8)[:, None, None, None], size * size * 3).reshape(n, size, size, 3)


def _frame_ids(frames: np.ndarray) -> list[int]:
    return [int(round(f.mean() / 8)) for f in frames]


@pytest.fixture
def clip(tmp_path):
    """A 10-frame 8 fps mp4 (1.25 s) whose frame i has grey level 8*i."""
    path = tmp_path / "clip.mp4"
    write_mp4(path, _index_video(10), fps=8)
    return path


# --- sampling rule --------------------------------------------------------------------------
def test_sample_indices_spreads_frames_uniformly_including_both_ends():
    # linspace(0, 9, 4) = 0, 3, 6, 9
    assert V.sample_indices(10, 8.0, num_frames=4).tolist() == [0, 3, 6, 9]


def test_sample_indices_repeats_frames_evenly_when_the_video_is_short():
    # linspace(0, 2, 4) = 0, 0.67, 1.33, 2 -> rounded 0, 1, 1, 2
    assert V.sample_indices(3, 8.0, num_frames=4).tolist() == [0, 1, 1, 2]


def test_sample_indices_rounds_an_odd_frame_count_up_to_even():
    # 5 -> 6 frames: linspace(0, 9, 6) = 0, 1.8, 3.6, 5.4, 7.2, 9 -> 0, 2, 4, 5, 7, 9
    assert V.sample_indices(10, 8.0, num_frames=5).tolist() == [0, 2, 4, 5, 7, 9]


def test_sample_indices_at_target_fps_uses_the_duration():
    # 100 frames at 25 fps = 4 s; 1 fps -> 4 frames: linspace(0, 99, 4) = 0, 33, 66, 99
    assert V.sample_indices(100, 25.0, fps=1.0).tolist() == [0, 33, 66, 99]
    # 4 s at 0.3 fps = 1.2 frames -> at least 4 (qwen_vl_utils' FPS_MIN_FRAMES): linspace(0, 99, 4)
    assert V.sample_indices(100, 25.0, fps=0.3).tolist() == [0, 33, 66, 99]


def test_fps_sampling_counts_frames_as_qwen_vl_utils_smart_nframes():
    # EasyR1 samples data.video_fps through qwen_vl_utils: n = duration x fps, in [4, min(cap, total)], floored
    # to even. 100 frames at 25 fps (4 s) at 2 fps: 8 frames; at 2.6 fps: 10.4 -> 10
    assert len(V.sample_indices(100, 25.0, fps=2.0)) == 8
    assert len(V.sample_indices(100, 25.0, fps=2.6)) == 10
    # never denser than the source: 10 frames at 8 fps asked for 30 fps -> 10 (not 38)
    assert V.sample_indices(10, 8.0, fps=30.0).tolist() == list(range(10))
    # the cap: 60 s at 25 fps at 2 fps is 120 frames; capped at 16, or at qwen_vl_utils' 768 by default
    assert len(V.sample_indices(1500, 25.0, fps=2.0, max_frames=16)) == 16
    assert len(V.sample_indices(1500, 25.0, fps=2.0, max_frames=15)) == 14  # floored to even
    assert len(V.sample_indices(100_000, 25.0, fps=2.0)) == 768
    # a 3-frame video: at most its own frames, floored to even
    assert V.sample_indices(3, 8.0, fps=2.0).tolist() == [0, 2]


def test_max_frames_needs_fps():
    with pytest.raises(ValueError, match="max_frames"):
        V.sample_indices(10, 8.0, num_frames=4, max_frames=8)


def test_sample_indices_without_a_target_takes_all_frames_rounded_to_even():
    # 3 frames -> 4: linspace(0, 2, 4) rounded = 0, 1, 1, 2
    assert V.sample_indices(3, 8.0).tolist() == [0, 1, 1, 2]


def test_num_frames_and_fps_together_are_refused():
    with pytest.raises(ValueError, match="exclusive"):
        V.sample_indices(10, 8.0, num_frames=4, fps=1.0)


# --- decoding -------------------------------------------------------------------------------
def test_decode_video_returns_the_uniformly_sampled_frames_and_their_times(clip):
    v = V.decode_video(clip, num_frames=4)
    assert v.frames.shape == (4, 56, 56, 3) and v.frames.dtype == np.uint8
    assert _frame_ids(v.frames) == [0, 3, 6, 9]
    np.testing.assert_allclose(v.timestamps, [0, 0.375, 0.75, 1.125])  # index / 8 fps
    assert (v.fps, v.total_frames, v.path) == (8.0, 10, str(clip))
    assert v.sample_fps == pytest.approx(3.2)  # 4 frames over 10 / 8 = 1.25 s


def test_decode_video_of_a_short_video_repeats_frames_to_the_asked_count(clip):
    v = V.decode_video(clip, num_frames=16)
    # linspace(0, 9, 16) = 0, .6, 1.2, 1.8, 2.4, 3, 3.6, 4.2, 4.8, 5.4, 6, 6.6, 7.2, 7.8, 8.4, 9
    assert _frame_ids(v.frames) == [0, 1, 1, 2, 2, 3, 4, 4, 5, 5, 6, 7, 7, 8, 8, 9]


def test_pyav_fallback_gives_the_same_frames_as_decord(clip, monkeypatch):
    expected = V.decode_video(clip, num_frames=6).frames

    def broken_decord(*args):
        raise RuntimeError("decord unavailable")

    monkeypatch.setattr(V, "_decode_decord", broken_decord)
    got = V.decode_video(clip, num_frames=6)
    np.testing.assert_array_equal(got.frames, expected)
    assert _frame_ids(got.frames) == [0, 2, 4, 5, 7, 9]  # linspace(0, 9, 6) rounded


def _truncated_faststart(tmp_path):
    """An mp4 whose index (moov, written first) lists 40 frames but whose data stops halfway."""
    path = tmp_path / "cut.mp4"
    with av.open(str(path), "w", options={"movflags": "faststart"}) as c:
        s = c.add_stream("mpeg4", rate=8)
        s.width, s.height, s.pix_fmt = 56, 56, "yuv420p"
        for f in np.random.default_rng(0).integers(0, 255, (40, 56, 56, 3), dtype=np.uint8):
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _audio_only(tmp_path):
    path = tmp_path / "audio.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("aac", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 8000
        for i in range(4):
            frame.pts = i * 1024
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


@pytest.mark.parametrize("case, reason", [
    ("missing", "file not found"),
    ("empty", "empty"),
    ("moov_cut", "corrupt"),
    ("data_cut", "truncated"),
    ("garbage", "corrupt"),
    ("audio_only", "no video stream"),
])
def test_unusable_videos_raise_video_error_naming_the_file(tmp_path, clip, case, reason):
    if case == "missing":
        path = tmp_path / "missing.mp4"
    elif case == "empty":
        path = tmp_path / "empty.mp4"
        path.write_bytes(b"")
    elif case == "moov_cut":  # index written last and cut off
        path = tmp_path / "moov_cut.mp4"
        path.write_bytes(clip.read_bytes()[: clip.stat().st_size // 2])
    elif case == "data_cut":
        path = _truncated_faststart(tmp_path)
    elif case == "garbage":
        path = tmp_path / "garbage.mp4"
        path.write_bytes(b"not a video" * 100)
    else:
        path = _audio_only(tmp_path)
    with pytest.raises(V.VideoError, match=reason) as err:
        V.decode_video(path, num_frames=4)
    assert err.value.path == str(path) and str(path) in str(err.value)


def test_video_error_survives_pickling_for_ray():
    err = pickle.loads(pickle.dumps(V.VideoError("/d/a.mp4", "file not found")))
    assert (err.path, err.reason, str(err)) == ("/d/a.mp4", "file not found", "video /d/a.mp4: file not found")


def test_load_video_or_none_logs_the_file_and_returns_none_unless_strict(tmp_path, caplog):
    path = tmp_path / "gone.mp4"
    with caplog.at_level(logging.WARNING, logger="longrl.data.video"):
        assert V.load_video_or_none(path, num_frames=4) is None
    assert str(path) in caplog.text and "file not found" in caplog.text
    with pytest.raises(V.VideoError):
        V.load_video_or_none(path, num_frames=4, strict=True)


# --- cache ----------------------------------------------------------------------------------
@pytest.fixture
def counted_decodes(monkeypatch):
    calls = []
    real = V._decode

    def counting(*args):
        calls.append(args)
        return real(*args)

    monkeypatch.setattr(V, "_decode", counting)
    return calls


def test_second_decode_of_the_same_file_reads_the_cache(tmp_path, clip, counted_decodes):
    first = V.decode_video(clip, num_frames=4, cache_dir=tmp_path / "cache")
    second = V.decode_video(clip, num_frames=4, cache_dir=tmp_path / "cache")
    assert len(counted_decodes) == 1
    np.testing.assert_array_equal(first.frames, second.frames)
    np.testing.assert_array_equal(first.timestamps, second.timestamps)
    assert (second.fps, second.total_frames, second.path) == (8.0, 10, str(clip))


def test_cache_key_changes_with_sampling_args_and_file_content(tmp_path, clip, counted_decodes):
    cache = tmp_path / "cache"
    V.decode_video(clip, num_frames=4, cache_dir=cache)
    V.decode_video(clip, num_frames=6, cache_dir=cache)  # other sampling: decode
    V.decode_video(clip, fps=4.0, cache_dir=cache)  # other sampling: decode
    write_mp4(clip, _index_video(12), fps=8)  # same path, new content: decode
    assert _frame_ids(V.decode_video(clip, num_frames=4, cache_dir=cache).frames) == [0, 4, 7, 11]  # linspace(0,11,4)
    assert len(counted_decodes) == 4
    copy = tmp_path / "copy.mp4"
    copy.write_bytes(clip.read_bytes())  # same content elsewhere: cached
    V.decode_video(copy, num_frames=4, cache_dir=cache)
    assert len(counted_decodes) == 4


def test_a_damaged_cache_entry_is_decoded_again(tmp_path, clip, counted_decodes):
    cache = tmp_path / "cache"
    V.decode_video(clip, num_frames=4, cache_dir=cache)
    V.cache_file(cache, clip, 4).write_bytes(b"half written")
    assert _frame_ids(V.decode_video(clip, num_frames=4, cache_dir=cache).frames) == [0, 3, 6, 9]
    assert len(counted_decodes) == 2


def test_video_metadata_describes_the_sampled_frames_so_vllm_derives_the_same_fps(clip):
    from transformers.video_utils import VideoMetadata

    v = V.decode_video(clip, num_frames=4)
    meta = V.video_metadata(v)
    assert meta["frames_indices"] == [0, 3, 6, 9] and meta["total_num_frames"] == 10 and meta["fps"] == 8.0
    assert meta["do_sample_frames"] is False
    fields = {k: x for k, x in meta.items() if k in VideoMetadata.__dataclass_fields__}
    assert VideoMetadata(**fields).sampled_fps == pytest.approx(v.sample_fps) == pytest.approx(3.2)  # 4 / 10 * 8


# --- Qwen2-VL preprocessing -----------------------------------------------------------------
def _frames(t: int, h: int, w: int) -> np.ndarray:
    return np.random.default_rng(t * 1000 + h).integers(0, 256, (t, h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("t, h, w", [(4, 56, 84), (5, 70, 90), (2, 30, 200)])
def test_preprocess_video_matches_the_transformers_pil_image_processor_frame_by_frame(t, h, w):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    min_px, max_px = 28 * 28 * 4, 28 * 28 * 16
    frames = _frames(t, h, w)
    video = V.VideoFrames(frames, np.arange(t) / 4.0, 4.0, t, "x.mp4")
    out = V.preprocess_video(video, min_px, max_px)
    gt, gh, gw = out["video_grid_thw"][0].tolist()
    assert gt == (t + 1) // 2  # an odd count repeats the last frame once
    assert out["pixel_values_videos"].dtype == torch.float32
    assert out["pixel_values_videos"].shape == (gt * gh * gw, 3 * 2 * 14 * 14)
    assert out["second_per_grid_ts"].tolist() == [pytest.approx(2 / 4.0)]  # tps / (t frames over t/4 s)

    proc = Qwen2VLImageProcessorPil(min_pixels=min_px, max_pixels=max_px)
    ours = out["pixel_values_videos"].numpy().reshape(gt, gh * gw, 3, 2, 14, 14)
    padded = np.concatenate([frames, frames[-1:].repeat(-t % 2, 0)])
    for i, frame in enumerate(padded):
        ref = proc(images=frame, return_tensors="np")
        assert ref["image_grid_thw"].tolist() == [[1, gh, gw]]
        # the image processor stores one frame duplicated over the temporal axis: (C, tps, P, P)
        ref_patches = ref["pixel_values"].reshape(gh * gw, 3, 2, 14, 14)[:, :, 0]
        np.testing.assert_allclose(ours[i // 2, :, :, i % 2], ref_patches, atol=1e-5)


def test_preprocess_video_keeps_frames_already_at_a_valid_size():
    # 56x56 is a multiple of 28 with 3136 >= min_pixels: no resize, grid (4/2, 56/14, 56/14)
    out = V.preprocess_video(V.VideoFrames(_frames(4, 56, 56), np.arange(4) / 8, 8.0, 4, "x"), 3136, 28 * 28 * 64)
    assert out["video_grid_thw"].tolist() == [[2, 4, 4]]
    assert out["second_per_grid_ts"].tolist() == [pytest.approx(0.25)]  # 2 / (4 frames over 0.5 s)


@pytest.mark.parametrize("suffix, codec", [(".webm", "libvpx-vp9"), (".mkv", "mpeg4")])
def test_webm_and_mkv_containers_decode_the_same_frames_as_mp4(tmp_path, clip, suffix, codec):
    path = tmp_path / f"clip{suffix}"
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=8)
        s.width, s.height, s.pix_fmt = 56, 56, "yuv420p"
        for f in _index_video(10):
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    # 10 frames sampled to 4: indices 0, 3, 6, 9 (both ends, uniformly), as for the mp4
    assert _frame_ids(V.decode_video(path, num_frames=4).frames) == _frame_ids(V.decode_video(clip, num_frames=4).frames) \
        == [0, 3, 6, 9]
