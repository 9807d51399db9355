"""Lip sync: audio -> per-frame mouth openness and a vowel-like shape (aaa/iii/uuu/eee/ooo).

Openness follows the loudness of a short window (dB between a noise gate and the clip's
loud level), smoothed with a fast attack and slower release so the mouth snaps open on
syllables and closes softly, as speech looks. The vowel comes from two spectral centroids
that stand in for the first two formants, matched softly to each vowel's typical (F1, F2).
"""
from __future__ import annotations

import io
import math
import threading
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tha.models.errors import ThaError
from tha.models.limits import FPS_RANGE, check_audio, check_range

VOWELS = ("aaa", "iii", "uuu", "eee", "ooo")
# Typical adult formants (Hz) of a, i, u, e, o.
_FORMANTS = np.array([(800, 1200), (300, 2300), (320, 800), (500, 1900), (500, 900)], np.float64)
_FORMANT_SCALE = np.array([150.0, 400.0])


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
    """Mono float samples in [-1,1] and the sample rate of a PCM WAV file (a path or its bytes)."""
    path = Path("<upload>") if isinstance(source, bytes) else Path(source)
    try:
        with wave.open(io.BytesIO(source) if isinstance(source, bytes) else str(path), "rb") as f:
            width, channels, rate = f.getsampwidth(), f.getnchannels(), f.getframerate()
            check_audio(rate, f.getnframes(), str(path))  # before reading: the header declares both
            raw = f.readframes(f.getnframes())
    except FileNotFoundError:
        raise ThaError(f"audio file {path} does not exist") from None
    except (wave.Error, EOFError, OSError) as err:
        raise ThaError(f"{path} is not a PCM WAV file ({err}); convert it, e.g. "
                       f"`ffmpeg -i {path.name} -ac 1 speech.wav`") from None
    if width == 1:
        samples = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128) / 128
    elif width == 2:
        samples = np.frombuffer(raw, "<i2").astype(np.float32) / 32768
    elif width == 4:
        samples = np.frombuffer(raw, "<i4").astype(np.float32) / 2147483648
    else:
        raise ThaError(f"{path}: {8 * width}-bit WAV is not supported; use 8, 16 or 32-bit PCM")
    return samples.reshape(-1, channels).mean(axis=1), rate


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
    padded = np.pad(samples.astype(np.float64), half)
    taper = np.hanning(2 * half)
    freqs = np.fft.rfftfreq(2 * half, 1 / rate)
    loudness = np.empty(count)
    vowels = np.empty((count, len(VOWELS)))
    for i in range(count):
        centre = int(round(i / fps * rate)) + half
        chunk = padded[centre - half: centre + half]
        chunk = np.pad(chunk, (0, 2 * half - len(chunk)))
        loudness[i] = 20 * math.log10(math.sqrt(float(np.mean(chunk ** 2))) + 1e-9)
        vowels[i] = _vowel_weights(np.abs(np.fft.rfft(chunk * taper)) ** 2, freqs)
    voiced = loudness[loudness > settings.gate_db]
    loud = np.percentile(voiced, settings.loud_percentile) if len(voiced) else settings.gate_db + 1
    floor = max(settings.gate_db, loud - settings.range_db)
    level = np.clip((loudness - floor) / max(loud - floor, 1e-6), 0, 1)
    openness = np.clip(smooth(level, fps, settings.attack, settings.release) * settings.strength, 0, 1)
    return MouthTrack(fps, openness.astype(np.float32), vowels.astype(np.float32))


def analyse_wav(path: str | Path, fps: float, settings: LipSyncSettings = LipSyncSettings()) -> MouthTrack:
    samples, rate = read_wav(path)
    if len(samples) == 0:
        raise ThaError(f"audio file {path} has no samples")
    return analyse(samples, rate, fps, settings)


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
        self._stream = None

    def start(self) -> None:
        try:
            import sounddevice
        except (ImportError, OSError) as err:
            raise ThaError(f"live lip sync needs sounddevice and PortAudio ({err}); "
                           "`pip install sounddevice` and `apt-get install libportaudio2`") from None
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

    def read(self) -> np.ndarray:
        with self._lock:
            return self._mouth.copy()

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None

