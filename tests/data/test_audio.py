"""Audio decode (longrl.data.audio) on real mp4 files written by PyAV: 16 kHz mono, limits and bad input."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from longrl.data.audio import SAMPLE_RATE, AudioError, NoAudioTrack, decode_audio, load_audio_or_none
from longrl.data.synthetic_video import write_mp4

FRAMES = np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)  # 2 s at 8 fps


def tone(hz: float, seconds: float, rate: int, channels: int = 1, other_hz: float | None = None) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    waves = [np.sin(2 * np.pi * hz * t)] + ([np.sin(2 * np.pi * (other_hz or hz) * t)] if channels == 2 else [])
    return (0.5 * np.stack(waves)).astype(np.float32)


def peak_hz(samples: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(samples))
    return float(np.argmax(spectrum)) * SAMPLE_RATE / len(samples)


def write_corrupt_audio(path, seconds: float = 2.0) -> None:
    """An mp4 whose AAC packets are random bytes: the container opens, the audio stream does not decode."""
    import av

    rng = np.random.default_rng(1)
    with av.open(str(path), "w") as container:
        track = container.add_stream("aac", rate=16000)
        track.layout = "mono"
        samples = tone(440, seconds, 16000)
        for start in range(0, samples.shape[1], 1024):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[:, start:start + 1024]), format="fltp",
                                               layout="mono")
            frame.sample_rate, frame.pts = 16000, start
            for packet in track.encode(frame):
                garbage = av.Packet(rng.integers(0, 256, packet.size, dtype=np.uint8).tobytes())
                garbage.pts, garbage.dts, garbage.time_base, garbage.stream = (packet.pts, packet.dts,
                                                                               packet.time_base, packet.stream)
                container.mux(garbage)


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    d = tmp_path_factory.mktemp("audio")
    files = {
        "mono16k": (tone(440, 2.0, 16000), 16000),
        "stereo44k": (tone(440, 2.0, 44100, channels=2, other_hz=440), 44100),
        "long": (tone(880, 5.0, 22050), 22050),
    }
    paths = {}
    for name, (audio, rate) in files.items():
        paths[name] = str(d / f"{name}.mp4")
        frames = FRAMES if name != "long" else np.repeat(FRAMES, 3, axis=0)[:40]
        write_mp4(paths[name], frames, 8.0, audio=audio, sample_rate=rate)
    paths["silent_video"] = str(d / "silent.mp4")
    write_mp4(paths["silent_video"], FRAMES, 8.0)
    paths["corrupt"] = str(d / "corrupt.mp4")
    write_corrupt_audio(paths["corrupt"])
    return paths


def test_a_16khz_mono_track_decodes_to_its_tone_unchanged(media):
    clip = decode_audio(media["mono16k"])
    assert clip.samples.dtype == np.float32 and clip.samples.ndim == 1
    assert 1.95 < clip.seconds < 2.1  # AAC adds a frame of priming/padding
    assert abs(peak_hz(clip.samples) - 440) < 2
    assert clip.events() == []


def test_stereo_44khz_is_resampled_to_16khz_mono_and_counted(media):
    clip = decode_audio(media["stereo44k"])
    assert 1.95 < clip.seconds < 2.1 and abs(peak_hz(clip.samples) - 440) < 2
    assert (clip.source_rate, clip.source_channels) == (44100, 2)
    assert clip.events() == ["resampled", "downmixed"]


def test_audio_longer_than_the_limit_is_cut_to_it(media):
    whole = decode_audio(media["long"])
    cut = decode_audio(media["long"], max_seconds=1.5)
    assert whole.seconds > 4.9 and not whole.truncated
    assert cut.samples.shape == (int(1.5 * SAMPLE_RATE),) and cut.truncated
    assert "truncated" in cut.events()
    np.testing.assert_allclose(cut.samples[:8000], whole.samples[:8000], atol=1e-6)  # the start, not resampled anew


def test_a_video_without_audio_is_skipped_or_silence_by_choice(media, caplog):
    with pytest.raises(NoAudioTrack, match="silent.mp4.*no audio track"):
        decode_audio(media["silent_video"])
    with caplog.at_level(logging.WARNING):
        assert load_audio_or_none(media["silent_video"], 10.0, missing="skip") is None
    assert "silent.mp4" in caplog.text and "data.missing_audio=silence" in caplog.text
    silence = load_audio_or_none(media["silent_video"], 10.0, missing="silence")
    assert silence.silent and not silence.samples.any() and 1.9 < silence.seconds < 2.1
    assert silence.events() == ["silenced"]
    assert load_audio_or_none(media["silent_video"], 1.0, missing="silence").seconds == 1.0
    with pytest.raises(NoAudioTrack, match="strict_media"):
        load_audio_or_none(media["silent_video"], 10.0, missing="skip", strict=True)


def test_a_corrupt_audio_stream_is_a_named_error_skipped_unless_strict(media, caplog):
    with pytest.raises(AudioError, match="corrupt.mp4.*corrupt or unsupported audio stream"):
        decode_audio(media["corrupt"])
    with caplog.at_level(logging.WARNING):
        assert load_audio_or_none(media["corrupt"], missing="silence") is None  # silence only stands in for no track
    assert "corrupt.mp4" in caplog.text
    with pytest.raises(AudioError, match="strict_media"):
        load_audio_or_none(media["corrupt"], strict=True)


def test_a_missing_file_and_a_bad_choice_are_named(tmp_path):
    with pytest.raises(AudioError, match="nothere.mp4: file not found"):
        decode_audio(tmp_path / "nothere.mp4")
    with pytest.raises(ValueError, match="data.missing_audio='loud'"):
        load_audio_or_none(tmp_path / "x.mp4", missing="loud")
