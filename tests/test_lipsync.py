"""Lip sync on real audio: espeak-ng speech and synthesized vowels between silences, as WAV
and as the compressed files people have (mp3, ogg/opus, flac, a video's sound)."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import av
import numpy as np
import pytest

from tha.models.errors import ThaError
from tha.runtime.lipsync import VOWELS, MouthTrack, analyse, read_wav
from tha.runtime.sources.animator import MOUTH_SHAPES, Animator, AnimatorSettings
from tha.models.pose import index_of
from wav import RATE, write_wav
from cli import assert_one_line_error, tha

FPS = 25.0


def analyse_wav(path: Path) -> MouthTrack:
    """The mouth track of an audio file at FPS, read as `tha render --audio` reads it."""
    return analyse(*read_wav(path), FPS)


def vowel(formants: tuple[float, float], seconds: float, f0: float = 140.0) -> np.ndarray:
    """A voiced vowel: harmonics of f0 shaped by two formant resonances."""
    t = np.arange(int(seconds * RATE)) / RATE
    out = np.zeros_like(t)
    for k in range(1, int(3500 / f0)):
        f = k * f0
        gain = sum(1 / (1 + ((f - fc) / 90) ** 2) for fc in formants)
        out += gain * np.sin(2 * np.pi * f * t)
    return 0.3 * out / np.abs(out).max()


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE))


def frames_between(start: float, end: float) -> slice:
    return slice(int(np.ceil(start * FPS)), int(end * FPS))


def test_mouth_shut_in_silence_open_in_tones_and_vowel_shape(tmp_path):
    audio = np.concatenate([silence(0.6), vowel((800, 1200), 0.6), silence(0.6), vowel((300, 2300), 0.6),
                            silence(0.6)])
    track = analyse_wav(write_wav(tmp_path / "tones.wav", audio))
    assert len(track) == int(np.ceil(3.0 * FPS)) and track.duration == pytest.approx(3.0, abs=1 / FPS)
    quiet = np.concatenate([track.openness[frames_between(0, 0.55)], track.openness[frames_between(1.55, 1.75)]])  # release has settled
    assert quiet.max() < 0.02
    a, i = track.openness[frames_between(0.75, 1.15)], track.openness[frames_between(1.95, 2.35)]
    assert a.min() > 0.7 and i.min() > 0.7
    # The first tone reads as "aaa", the second as "iii".
    assert VOWELS[int(track.vowels[frames_between(0.75, 1.15)].mean(axis=0).argmax())] == "aaa"
    assert VOWELS[int(track.vowels[frames_between(1.95, 2.35)].mean(axis=0).argmax())] == "iii"
    # Smoothed: opening takes more than one frame but less than a syllable.
    onset = track.openness[frames_between(0.6, 0.8)]
    assert 0.05 < onset[0] < 0.95 and onset[-1] > 0.9


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng (apt-get install espeak-ng)")
def test_espeak_speech_opens_the_mouth_only_while_speaking(tmp_path):
    speech_path = tmp_path / "speech_raw.wav"
    subprocess.run(["espeak-ng", "-w", str(speech_path), "Hello there, I am a talking head."], check=True,
                   capture_output=True, timeout=60)
    speech, rate = read_wav(speech_path)
    pad = np.zeros(int(0.8 * rate))
    track = analyse(np.concatenate([pad, speech, pad]), rate, FPS)
    spoken = len(speech) / rate
    assert track.duration == pytest.approx(spoken + 1.6, abs=1 / FPS)
    assert track.openness[frames_between(0, 0.7)].max() < 0.02
    assert track.openness[frames_between(0.8 + spoken + 0.15, spoken + 1.6)].max() < 0.02
    during = track.openness[frames_between(0.8, 0.8 + spoken)]
    assert during.mean() > 0.3 and during.max() > 0.8
    # Speech is syllables: the mouth opens and closes repeatedly, not a held tone.
    from scipy.signal import find_peaks

    assert len(find_peaks(during, prominence=0.25)[0]) >= 4
    # More than one vowel shape shows up across the sentence.
    assert len(set(track.vowels[frames_between(0.8, 0.8 + spoken)].argmax(axis=1)[during > 0.4])) >= 2


def test_animator_plays_a_track_into_the_mouth_shapes(tmp_path):
    audio = np.concatenate([silence(0.4), vowel((800, 1200), 0.4), silence(0.4)])
    track = analyse(audio, RATE, FPS)
    animator = Animator(AnimatorSettings(seed=0))
    animator.speak(track, start=10.0)
    mouth = [index_of(n) for n in MOUTH_SHAPES]
    poses = np.stack([animator.read(10.0 + i / FPS) for i in range(len(track))])
    assert np.allclose(poses[:, mouth].sum(axis=1), track.openness, atol=1e-5)
    assert poses[frames_between(0.5, 0.75), index_of("mouth_aaa")].min() > 0.4


def encode(path: Path, samples: np.ndarray, codec: str, rate: int = RATE, video: bool = False) -> Path:
    """``samples`` (N,) mono or (N, 2) stereo at RATE, encoded by PyAV with ``codec`` into the
    container of ``path``'s suffix; ``video`` adds a picture track, as a screen recording has."""
    layout = "mono" if samples.ndim == 1 else "stereo"
    with av.open(str(path), "w") as out:
        picture = out.add_stream("mpeg4", rate=5) if video else None
        if picture is not None:
            picture.width = picture.height = 64
        sound = out.add_stream(codec, rate=rate, layout=layout)
        pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2").reshape(1, -1)  # s16 packed: interleaved
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout=layout)
        frame.sample_rate = RATE
        resampler = av.AudioResampler(format=sound.format.name, layout=layout, rate=rate)
        for chunk in [*resampler.resample(frame), *resampler.resample(None), None]:
            out.mux(sound.encode(chunk))
        if picture is not None:
            for index in range(10):
                image = av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="rgb24")
                image.pts = index
                out.mux(picture.encode(image))
            out.mux(picture.encode(None))
    return path


def two_vowels() -> np.ndarray:
    return np.concatenate([silence(0.6), vowel((800, 1200), 0.6), silence(0.6), vowel((300, 2300), 0.6),
                           silence(0.6)])


@pytest.mark.parametrize("name, codec, rate, video", [("speech.mp3", "libmp3lame", RATE, False),
                                                      ("speech.ogg", "libopus", 48000, False),
                                                      ("recording.mkv", "libmp3lame", RATE, True)])
def test_compressed_audio_gives_the_mouth_track_of_the_wav(tmp_path, name, codec, rate, video):
    """A lossy file moves the mouth as its WAV does: the codec changes the samples a little,
    the loudness and vowels per frame hardly. Measured: openness within 0.004 of the WAV's
    (bounds 0.01 mean, 0.05 max), vowels agreeing on 97-100% of voiced frames (bound 90%)."""
    audio = two_vowels()
    wav = analyse_wav(write_wav(tmp_path / "speech.wav", audio))
    coded = analyse_wav(encode(tmp_path / name, audio, codec, rate, video))
    assert len(coded) == len(wav)
    assert np.abs(coded.openness - wav.openness).mean() < 0.01
    assert np.abs(coded.openness - wav.openness).max() < 0.05
    voiced = wav.openness > 0.5
    agree = coded.vowels[voiced].argmax(axis=1) == wav.vowels[voiced].argmax(axis=1)
    assert agree.mean() > 0.9


def test_lossless_audio_is_the_wav_and_stereo_is_the_mean_of_its_channels(tmp_path):
    audio = two_vowels()
    samples, rate = read_wav(write_wav(tmp_path / "speech.wav", audio))
    flac, flac_rate = read_wav(encode(tmp_path / "speech.flac", audio, "flac"))
    assert rate == flac_rate == RATE and flac.dtype == np.float32
    assert np.array_equal(flac, samples)
    stereo, _ = read_wav(encode(tmp_path / "stereo.flac", np.stack([audio, -audio / 2], axis=1), "flac").read_bytes())
    assert np.allclose(stereo, samples / 4, atol=1 / 32768)


def silent_flac(path: Path, rate: int, seconds: int) -> Path:
    """Silence compresses to almost nothing: 599 s at 384 kHz is a ~110 KB FLAC."""
    with av.open(str(path), "w") as out:
        sound = out.add_stream("flac", rate=rate, layout="mono")
        second = np.zeros((1, rate), np.int16)
        for index in range(seconds):
            frame = av.AudioFrame.from_ndarray(second, format="s16", layout="mono")
            frame.sample_rate, frame.pts = rate, index * rate
            out.mux(sound.encode(frame))
        out.mux(sound.encode(None))
    return path


def test_high_rate_audio_is_read_at_48khz_with_the_same_mouth_track(tmp_path):
    """Audio above 48 kHz is resampled while it decodes. An upload of 110 KB (silence at the
    highest rate the limits allow, just under the length limit) once made 230 M float
    samples, 5.3 GB to read and analyse as /api/tha/speak does; now its numpy arrays peak at 231 MB
    (tracemalloc), bound 500. A 96 kHz recording moves the mouth as its 16 kHz original."""
    import tracemalloc

    from tha.models.limits import AUDIO_RATE_RANGE

    audio = two_vowels()
    original = analyse_wav(write_wav(tmp_path / "speech.wav", audio))
    samples, rate = read_wav(encode(tmp_path / "speech.flac", audio, "flac", 96000))
    assert rate == 48000 and len(samples) == pytest.approx(len(audio) * 3, abs=64)
    resampled = analyse(samples, rate, FPS)
    assert np.abs(resampled.openness - original.openness).max() < 0.05
    voiced = original.openness > 0.5
    assert (resampled.vowels[voiced].argmax(axis=1) == original.vowels[voiced].argmax(axis=1)).mean() > 0.9

    upload = silent_flac(tmp_path / "huge.flac", AUDIO_RATE_RANGE[1], 599).read_bytes()
    assert len(upload) < 200_000
    tracemalloc.start()
    try:
        samples, rate = read_wav(upload)
        track = analyse(samples, rate, FPS)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert rate == 48000 and track.duration == pytest.approx(599, abs=0.1)
    assert peak < 500e6, f"{peak / 1e6:.0f} MB"


def _zero_bits(path: Path) -> bytes:
    data = bytearray(path.read_bytes())
    data[34:36] = b"\0\0"
    return bytes(data)


def test_bad_audio_is_one_clear_error(tmp_path):
    (tmp_path / "fake.wav").write_bytes(b"ID3 not a wav at all")
    cases = {tmp_path / "missing.wav": "does not exist",
             tmp_path / "fake.wav": "not an audio file FFmpeg can read",
             b"": "not an audio file FFmpeg can read",
             Path(__file__).resolve().parents[1] / "configs" / "demo" / "character.png": "has no audio track",
             write_wav(tmp_path / "empty.wav", np.zeros(0)).read_bytes(): "has no samples",
             # a header of 0 bits per sample (bytes 34-35): PyAV then has no sample rate (a 500 once)
             _zero_bits(write_wav(tmp_path / "tone.wav", np.zeros(1600))): "no readable sample rate"}
    for source, needle in cases.items():
        with pytest.raises(ThaError, match=needle) as caught:
            read_wav(source)
        assert "\n" not in str(caught.value)


def test_audio_past_the_limits_is_refused_before_analysis(tmp_path):
    """A few KB declaring a 1 Hz rate is hours of audio (the server once spent 6 minutes on
    one); 0 Hz divided by zero. Both, and clips over the length limit, are one ThaError naming
    the limit, read from the header before any analysis."""
    from pathlib import Path

    from tha.models.limits import AUDIO_RATE_RANGE, MAX_AUDIO_SECONDS

    one_hz = write_wav(tmp_path / "1hz.wav", np.zeros(20000), rate=1)
    zero_hz = tmp_path / "0hz.wav"
    data = bytearray(write_wav(tmp_path / "ok.wav", np.zeros(100)).read_bytes())
    data[24:32] = bytes(8)  # sample rate and byte rate 0: the wave module will not write this itself
    zero_hz.write_bytes(bytes(data))
    long = write_wav(tmp_path / "long.wav", np.zeros(int(AUDIO_RATE_RANGE[0] * (MAX_AUDIO_SECONDS + 1))),
                     rate=AUDIO_RATE_RANGE[0])
    # FFmpeg itself refuses a 0 Hz header; the 1 Hz and 660 s ones it reads, and the limits refuse.
    for path, needle in ((one_hz, "sample rate of 1 Hz"), (zero_hz, "not an audio file"), (long, "over the limit")):
        with pytest.raises(ThaError, match=needle):
            analyse_wav(path)
    with pytest.raises(ThaError, match="fps"):
        analyse(np.zeros(RATE), RATE, 1e6)
    demo = str(Path(__file__).resolve().parents[1] / "configs" / "demo")
    result = tha("render", demo, "--audio", one_hz, "-o", tmp_path / "out.mp4", timeout=300)
    assert_one_line_error(result, "sample rate of 1 Hz", "ffmpeg")
    assert not (tmp_path / "out.mp4").exists()


def test_the_live_mouth_shuts_when_audio_stops_arriving(monkeypatch):
    """An unplugged headset stops the audio callbacks: the mouth held the last block's level
    for good. The audio block is real (a vowel); the clock is stepped, so no timing can race."""
    import tha.runtime.lipsync as lipsync

    clock = [100.0]
    monkeypatch.setattr(lipsync, "monotonic", lambda: clock[0])
    mic = lipsync.MicrophoneLevel()
    assert not mic.read().any()  # nothing heard yet
    block = vowel((800, 1200), mic.settings.window, f0=140.0)  # one block of "aaa", as PortAudio delivers it
    mic._on_audio(block[:, None].astype(np.float32), len(block), None, None)
    heard = mic.read()
    assert heard.sum() > 0.5 and heard.argmax() == VOWELS.index("aaa")
    clock[0] += lipsync.STALE_AUDIO_SECONDS  # blocks late, not yet missing
    np.testing.assert_array_equal(mic.read(), heard)
    clock[0] += 0.01
    np.testing.assert_array_equal(mic.read(), np.zeros(len(VOWELS), np.float32))
    mic._on_audio(block[:, None].astype(np.float32), len(block), None, None)  # plugged back in
    np.testing.assert_array_equal(mic.read(), heard)
