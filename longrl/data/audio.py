"""Audio input for omni models: a video's own audio track (or an audio file) decoded with PyAV to 16 kHz mono.

Why PyAV: librosa, soundfile, torchaudio and soxr are not installed (and vLLM's own resampler is torchaudio), so
the waveform must reach both vLLM and the trainer already at 16 kHz mono. `av.AudioResampler` converts any
sample rate and channel layout (stereo is averaged to mono) in one pass.

Bad input and what happens to it (each names the file):
  * no audio track: data.missing_audio=skip makes it an AudioError (the prompt is skipped and counted),
    data.missing_audio=silence gives silence as long as the video (counted in audio/silenced);
  * a corrupt audio stream, or a track with no samples: AudioError (skipped and counted, or an error with
    data.strict_media=true);
  * longer than data.audio_max_length seconds: cut to that length (counted in audio/truncated);
  * another sample rate or more channels: converted (counted in audio/resampled, audio/downmixed).
"""

from __future__ import annotations

import dataclasses
import logging
import os

import numpy as np

from longrl.data.media import MediaError, check_media_file

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
MEL_FRAMES_PER_SECOND = 100  # the Whisper feature extractor's hop: 160 samples at 16 kHz
"""What Qwen2.5-Omni's feature extractor (Whisper) and vLLM expect."""
MIN_SECONDS = 0.05
"""Shorter audio gives the audio tower no output token (vLLM raises "too short to be represented")."""
MISSING_AUDIO = ("skip", "silence")


class AudioError(MediaError):
    """Audio that cannot be used: names the file and the reason."""

    kind = "audio"

    @property
    def path(self) -> str:
        return self.name


class NoAudioTrack(AudioError):
    """The file has no audio stream (a silent video)."""


@dataclasses.dataclass(frozen=True, eq=False)
class AudioClip:
    """Decoded audio: float32 [N] mono samples at SAMPLE_RATE, and what was done to get them.

    source_rate / source_channels: the track as stored; truncated: cut at the length limit;
    silent: made up because the file has no audio track (data.missing_audio=silence).
    """

    samples: np.ndarray
    path: str
    source_rate: int = SAMPLE_RATE
    source_channels: int = 1
    truncated: bool = False
    silent: bool = False

    @property
    def seconds(self) -> float:
        return len(self.samples) / SAMPLE_RATE

    def events(self) -> list[str]:
        """What converting it took, as counter names (audio/<event>)."""
        happened = {"resampled": self.source_rate != SAMPLE_RATE, "downmixed": self.source_channels > 1,
                    "truncated": self.truncated, "silenced": self.silent}
        return [name for name, yes in happened.items() if yes]


def audio_token_count(feature_length: int) -> int:
    """Language-model tokens that Qwen2.5-Omni's audio tower makes of `feature_length` mel frames (100 per second;
    two stride-2 stages: about 25 tokens per second)."""
    return ((feature_length - 1) // 2 + 1 - 2) // 2 + 1


def decode_audio(path: str | os.PathLike, max_seconds: float | None = None) -> AudioClip:
    """The first audio track of `path` as 16 kHz mono float32, cut to `max_seconds` (None: whole).

    Raises NoAudioTrack when there is none, AudioError when the file or the stream cannot be decoded
    or holds (almost) no samples.
    """
    import av

    path = str(path)
    check_media_file(path, AudioError, "data.video_dir")
    limit = None if max_seconds is None else int(round(max_seconds * SAMPLE_RATE))
    chunks: list[np.ndarray] = []
    kept = 0
    try:
        with av.open(path) as container:
            if not container.streams.audio:
                raise NoAudioTrack(path, "has no audio track")
            stream = container.streams.audio[0]
            rate, channels = int(stream.rate or 0), int(stream.channels or 0)
            resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)

            def keep(frames: list) -> None:
                nonlocal kept
                for frame in frames:
                    chunks.append(frame.to_ndarray().reshape(-1))
                    kept += chunks[-1].shape[0]

            for frame in container.decode(stream):
                keep(resampler.resample(frame))
                if limit is not None and kept > limit:
                    break
            else:
                keep(resampler.resample(None))  # the resampler's buffered tail
    except AudioError:
        raise
    except (av.error.FFmpegError, ValueError, OSError) as exc:  # PyAV's errors: a corrupt file or stream
        raise AudioError(path, f"corrupt or unsupported audio stream: {exc}") from exc
    samples = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    truncated = limit is not None and samples.shape[0] > limit
    samples = samples[:limit] if truncated else samples
    if samples.shape[0] < MIN_SECONDS * SAMPLE_RATE:
        raise AudioError(path, f"the audio track holds {samples.shape[0] / SAMPLE_RATE:.3f} s of samples, less than "
                               f"{MIN_SECONDS} s: truncated or empty")
    return AudioClip(samples, path, rate, channels, truncated)


def silence_for(path: str | os.PathLike, max_seconds: float | None = None) -> AudioClip:
    """Silence as long as the media file `path` (cut to `max_seconds`): the audio of a video without a track."""
    import av

    try:
        with av.open(str(path)) as container:
            seconds = (container.duration or 0) / av.time_base
    except (av.error.FFmpegError, ValueError, OSError) as exc:
        raise AudioError(path, f"cannot read its duration for silence: {exc}") from exc
    seconds = min(seconds, max_seconds) if max_seconds is not None else seconds
    if seconds < MIN_SECONDS:
        raise AudioError(path, f"has no audio track and lasts {seconds:.3f} s: too short for silence")
    return AudioClip(np.zeros(int(round(seconds * SAMPLE_RATE)), np.float32), str(path), silent=True)


def load_audio_or_none(path: str | os.PathLike, max_seconds: float | None = None, *, missing: str = "skip",
                       strict: bool = False) -> AudioClip | None:
    """decode_audio with the data settings: a file without audio gives silence when `missing`="silence"; any
    other unusable audio is logged (naming the file) and gives None, or raises when `strict`."""
    if missing not in MISSING_AUDIO:
        raise ValueError(f"data.missing_audio={missing!r}: must be one of {MISSING_AUDIO}")
    try:
        try:
            return decode_audio(path, max_seconds)
        except NoAudioTrack:
            if missing == "silence":
                return silence_for(path, max_seconds)
            raise
    except AudioError as exc:
        if strict:
            raise type(exc)(exc.path, f"{exc.reason} (data.strict_media=true)") from None
        hint = " (data.missing_audio=silence uses silence instead)" if isinstance(exc, NoAudioTrack) else ""
        logger.warning("skipping %s%s", exc, hint)
        return None
