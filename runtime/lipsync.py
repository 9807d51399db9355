"""Lip sync: audio (any format FFmpeg reads) -> per-frame mouth openness and a vowel-like
shape (aaa/iii/uuu/eee/ooo).

Openness follows the loudness of a short window (dB between a noise gate and the clip's
loud level), smoothed with a fast attack and slower release so the mouth snaps open on
syllables and closes softly, as speech looks. The vowel comes from two spectral centroids
that stand in for the first two formants, matched softly to each vowel's typical (F1, F2).
"""
from __future__ import annotations

import io
import itertools
import math
import threading
from dataclasses import dataclass
from pathlib import Path
from time import monotonic

import av
import numpy as np

from tha.models.errors import ThaError
from tha.models.limits import FPS_RANGE, check_audio, check_range

VOWELS = ("aaa", "iii", "uuu", "eee", "ooo")
# Typical adult formants (Hz) of a, i, u, e, o.
_FORMANTS = np.array([(800, 1200), (300, 2300), (320, 800), (500, 1900), (500, 900)], np.float64)
_FORMANT_SCALE = np.array([150.0, 400.0])
MAX_DECODE_RATE = 48000  # Hz: read_wav resamples anything above to this
AUDIO_FORMATS = "wav, mp3, ogg, opus, flac, m4a, or a video with sound"  # what errors suggest
# A live mouth older than this closes: a block comes every window (40 ms), so this is several
# missed in a row (an unplugged headset, a stopped stream), not a late one; the last level must
# not hold.
STALE_AUDIO_SECONDS = 0.3


@dataclass(frozen=True)
class LipSyncSettings:
    window: float = 0.04          # seconds of audio per analysis frame
    gate_db: float = -50.0        # below this (dBFS) the mouth is shut
    range_db: float = 24.0        # shut this far below the loud level: syllables open and close
    loud_percentile: float = 95.0  # the clip's loud level: this percentile of voiced frames
    attack: float = 0.02          # time constant of opening (s)
    release: float = 0.07         # time constant of closing (s)
    strength: float = 1.0


@dataclass(frozen=True)
class MouthTrack:
    """Per-frame openness (N,) in [0,1] and vowel weights (N,5) that sum to 1."""

    fps: float
    openness: np.ndarray
    vowels: np.ndarray

    def __len__(self) -> int:
        return len(self.openness)

    @property
    def duration(self) -> float:
        return len(self) / self.fps

    def mouth(self, index: int) -> np.ndarray:
        """The five mouth-shape pose values of frame ``index``."""
        return (self.openness[index] * self.vowels[index]).astype(np.float32)


def read_wav(source: str | Path | bytes) -> tuple[np.ndarray, int]:
    """Mono float32 samples in [-1,1] and their rate (the native one, at most MAX_DECODE_RATE)
    of the first audio track of anything FFmpeg (PyAV) reads: WAV, MP3, Ogg/Opus, FLAC, M4A, a
    video's sound (a path or its bytes). The name stays from when only WAV was read: callers
    across the project use it."""
    label = "<upload>" if isinstance(source, bytes) else str(source)
    try:
        with av.open(io.BytesIO(source) if isinstance(source, bytes) else str(source)) as container:
            if not container.streams.audio:
                raise ThaError(f"{label} has no audio track; give a speech recording ({AUDIO_FORMATS})")
            samples, rate = _decode_mono(container, container.streams.audio[0], label)
    except FileNotFoundError:
        raise ThaError(f"audio file {label} does not exist") from None
    except (av.error.FFmpegError, OSError) as err:
        reason = getattr(err, "strerror", None) or err  # PyAV's str() adds a '<none>' file name
        raise ThaError(f"{label} is not an audio file FFmpeg can read ({reason}); "
                       f"give a speech recording ({AUDIO_FORMATS})") from None
    if len(samples) == 0:
        raise ThaError(f"audio file {label} has no samples")
    return samples, rate


def _decode_mono(container: av.container.InputContainer, stream: av.AudioStream,
                 label: str) -> tuple[np.ndarray, int]:
    try:
        rate = stream.sample_rate
    except AttributeError:  # PyAV has no rate for a stream FFmpeg found no codec parameters for
        raise ThaError(f"{label}: the audio stream has no readable sample rate or format (a broken "
                       "header?); export it again as WAV, MP3 or Ogg") from None
    declared = stream.duration * stream.time_base if stream.duration else (container.duration or 0) / av.time_base
    check_audio(rate, int(declared * rate), label)  # before decoding: the header declares both
    # Planar float keeps each channel apart, so the mix below is the plain mean of the channels
    # (FFmpeg's own mono downmix weights them differently per layout). Rates above MAX_DECODE_RATE
    # are resampled down as they decode: a tiny FLAC of silence at 384 kHz would otherwise
    # take gigabytes, and neither the mouth analysis nor a muxed voice needs more.
    out_rate = min(rate, MAX_DECODE_RATE)
    planar = av.AudioResampler(format="fltp", rate=out_rate)
    chunks: list[np.ndarray] = []
    count = 0
    for frame in itertools.chain(container.decode(stream), [None]):  # None flushes the resampler
        for converted in planar.resample(frame):
            chunks.append(converted.to_ndarray().mean(axis=0, dtype=np.float32))
            count += len(chunks[-1])
        check_audio(out_rate, count, label)  # a stream need not declare its length: count as it decodes
    return (np.concatenate(chunks) if chunks else np.zeros(0, np.float32)), out_rate


def _vowel_weights(spectrum: np.ndarray, freqs: np.ndarray) -> np.ndarray:
    def centroid(low: float, high: float) -> float:
        band = (freqs >= low) & (freqs < high)
        power = spectrum[band]
        return float((freqs[band] * power).sum() / power.sum()) if power.sum() > 0 else (low + high) / 2

    formants = np.array([centroid(200, 1000), centroid(700, 3000)])
    distance = (((_FORMANTS - formants) / _FORMANT_SCALE) ** 2).sum(axis=1)
    weights = np.exp(-(distance - distance.min()))
    return weights / weights.sum()


def smooth(levels: np.ndarray, fps: float, attack: float, release: float) -> np.ndarray:
    """One-pole smoothing with separate opening and closing time constants."""
    out = np.empty_like(levels)
    value = 0.0
    up = 1 - math.exp(-1 / (fps * attack)) if attack > 0 else 1.0
    down = 1 - math.exp(-1 / (fps * release)) if release > 0 else 1.0
    for i, level in enumerate(levels):
        value += (level - value) * (up if level > value else down)
        out[i] = value
    return out


def analyse(samples: np.ndarray, rate: int, fps: float,
            settings: LipSyncSettings = LipSyncSettings()) -> MouthTrack:
    """Mouth track for ``samples`` at ``fps`` frames per second (frame i is centred on i/fps).
    Rate, length and fps are checked against tha.models.limits: the work grows with all three."""
    check_audio(rate, len(samples), "audio")
    check_range("fps", fps, FPS_RANGE)
    count = max(1, math.ceil(len(samples) / rate * fps))
    half = max(1, int(settings.window * rate / 2))
    padded = np.pad(samples, half)  # as given (float32 from read_wav): each window is widened below
    taper = np.hanning(2 * half)
    freqs = np.fft.rfftfreq(2 * half, 1 / rate)
    loudness = np.empty(count)
    vowels = np.empty((count, len(VOWELS)))
    for i in range(count):
        centre = int(round(i / fps * rate)) + half
        chunk = padded[centre - half: centre + half]
        chunk = np.pad(chunk.astype(np.float64), (0, 2 * half - len(chunk)))
        loudness[i] = 20 * math.log10(math.sqrt(float(np.mean(chunk ** 2))) + 1e-9)
        vowels[i] = _vowel_weights(np.abs(np.fft.rfft(chunk * taper)) ** 2, freqs)
    voiced = loudness[loudness > settings.gate_db]
    loud = np.percentile(voiced, settings.loud_percentile) if len(voiced) else settings.gate_db + 1
    floor = max(settings.gate_db, loud - settings.range_db)
    level = np.clip((loudness - floor) / max(loud - floor, 1e-6), 0, 1)
    openness = np.clip(smooth(level, fps, settings.attack, settings.release) * settings.strength, 0, 1)
    return MouthTrack(fps, openness.astype(np.float32), vowels.astype(np.float32))


class MicrophoneLevel:
    """Live input: the newest mouth shape from the default input device (needs ``sounddevice``);
    feed ``read()`` to ``Animator.set_mouth``, whose easing smooths it."""

    def __init__(self, settings: LipSyncSettings = LipSyncSettings(), rate: int = 16000,
                 loud_db: float = -20.0):
        # No clip to measure a loud level from: a fixed one (normal speech into a headset).
        self.settings = settings
        self.loud_db = loud_db
        self.rate = rate
        self._lock = threading.Lock()
        self._mouth = np.zeros(len(VOWELS), np.float32)
        self._heard_at: float | None = None  # monotonic time of the newest audio block
        self._stream = None

    def start(self) -> None:
        try:
            import sounddevice
        except (ImportError, OSError) as err:
            raise ThaError(f"live lip sync needs sounddevice and PortAudio ({err}); install tha's audio extra "
                           "(`pip install -e '.[audio]'` in tha's folder) and `apt-get install libportaudio2`") from None
        block = int(self.rate * self.settings.window)
        try:
            self._stream = sounddevice.InputStream(samplerate=self.rate, channels=1, blocksize=block,
                                                   callback=self._on_audio)
            self._stream.start()
        except Exception as err:  # PortAudio reports a missing device in many ways
            raise ThaError(f"cannot open the audio input ({err}); check a microphone is connected") from None

    def _on_audio(self, block: np.ndarray, frames: int, time, status) -> None:
        samples = block[:, 0].astype(np.float64)
        loudness = 20 * math.log10(math.sqrt(float(np.mean(samples ** 2))) + 1e-9)
        floor = max(self.settings.gate_db, self.loud_db - self.settings.range_db)
        level = min(max((loudness - floor) / (self.loud_db - floor), 0.0), 1.0)
        spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples)))) ** 2
        vowels = _vowel_weights(spectrum, np.fft.rfftfreq(len(samples), 1 / self.rate))
        with self._lock:
            self._mouth = (level * self.settings.strength * vowels).astype(np.float32)
            self._heard_at = monotonic()

    def read(self) -> np.ndarray:
        """The newest block's mouth; shut when no audio came for STALE_AUDIO_SECONDS (a stream
        that stopped delivers no blocks, so this covers it too)."""
        with self._lock:
            mouth, heard_at = self._mouth.copy(), self._heard_at
        if heard_at is None or monotonic() - heard_at > STALE_AUDIO_SECONDS:
            return np.zeros(len(VOWELS), np.float32)
        return mouth

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None

