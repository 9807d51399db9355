"""`tha render` end to end with the committed demo student: lip-synced audio to a transparent
.webm, a pose track to .mp4 and to PNG frames; frame counts, rates and durations checked."""
from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tha.runtime.video import read_video
from wav import RATE, write_wav
from cli import THA, assert_one_line_error, tha as run_tha

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo"


def tha(*args: str) -> subprocess.CompletedProcess:
    return run_tha(*args, env={"OMP_NUM_THREADS": "1"})


def tone_wav(path: Path, silence: float, tone: float) -> Path:
    t = np.arange(int(tone * RATE)) / RATE
    voiced = 0.3 * sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 12))
    quiet = np.zeros(int(silence * RATE))
    return write_wav(path, np.concatenate([quiet, voiced, quiet]))


def test_audio_to_transparent_webm_with_lip_sync(tmp_path):
    fps, silence, tone = 8, 0.375, 0.5
    audio = tone_wav(tmp_path / "speech.wav", silence, tone)
    out = tmp_path / "talk.webm"
    result = tha("render", str(DEMO), "--audio", str(audio), "-o", str(out), "--fps", str(fps), "--no-idle")
    assert result.returncode == 0, result.stderr
    assert "rendering" in result.stderr  # the progress bar
    frames, rate = read_video(out)
    duration = 2 * silence + tone
    assert len(frames) == int(np.ceil(duration * fps)) and rate == pytest.approx(fps)
    assert len(frames) / rate == pytest.approx(duration, abs=1 / fps)
    import av

    with av.open(str(out)) as container:  # the speech rides along in the file
        assert [s.type for s in container.streams] == ["video", "audio"]
        assert container.duration / 1e6 == pytest.approx(duration, abs=0.1)
    # Alpha survives in .webm: frame 0 (silent, no idle) is the neutral pose rendered directly.
    from tha.models.pose import neutral_pose
    from tha.runtime.renderer import open_backend

    with open_backend("auto", DEMO) as engine:
        expected = engine.render(neutral_pose()).host()
    assert np.abs(frames[0][..., 3].astype(int) - expected[..., 3]).mean() < 2.0
    assert frames[0][..., 3].min() < 16 and frames[0][..., 3].max() > 240
    mouth = [f[150:210, 216:296, :3].astype(int) for f in frames]
    speaking = np.abs(mouth[4] - mouth[0]).mean()
    quiet = np.abs(mouth[1] - mouth[0]).mean()  # silent frames differ only by codec noise
    assert speaking > max(3 * quiet, 0.3)  # the mouth moves with the sound


def test_pose_track_to_mp4_and_png_frames(tmp_path):
    track = tmp_path / "track.jsonl"
    track.write_text("\n".join(json.dumps(p) for p in ({}, {"head_y": 0.9, "neck_z": 0.5}, {})) + "\n")
    frames_dir = tmp_path / "frames"
    result = tha("render", str(DEMO), "--poses", str(track), "-o", str(frames_dir), "--no-idle")
    assert result.returncode == 0, result.stderr
    pngs = sorted(frames_dir.glob("*.png"))
    assert len(pngs) == 3
    frames = [np.asarray(Image.open(p)) for p in pngs]
    assert frames[0].shape == (512, 512, 4)
    assert np.array_equal(frames[0], frames[2])  # no idle motion: the same pose, the same pixels
    assert np.abs(frames[1].astype(int) - frames[0].astype(int)).mean() > 1.0

    out = tmp_path / "track.mp4"
    result = tha("render", str(DEMO), "--poses", str(track), "-o", str(out), "--fps", "12", "--frames", "2")
    assert result.returncode == 0, result.stderr
    video, rate = read_video(out)
    assert len(video) == 2 and rate == pytest.approx(12)


def test_bad_render_input_is_one_line(tmp_path):
    track = tmp_path / "bad.jsonl"
    track.write_text('{"head_y": 0.1}\n{"head_y": oops}\n')
    result = tha("render", str(DEMO), "--poses", str(track), "-o", str(tmp_path / "x.mp4"))
    assert_one_line_error(result, "bad.jsonl:2", code=2)
    assert result.stderr.startswith("error:") and not (tmp_path / "x.mp4").exists()
    assert_one_line_error(tha("render", str(DEMO), "-o", str(tmp_path / "x.mp4")), "exactly one of --audio", code=2)
    good = tmp_path / "good.jsonl"
    good.write_text('{"head_y": 0.1}\n')
    result = tha("render", str(DEMO), "--poses", str(good), "-o", str(tmp_path / "x.avi"))
    assert_one_line_error(result, "cannot write '.avi'", code=2)
    (tmp_path / "a_file").write_text("")
    for command in (["render", str(DEMO), "--poses", str(good), "-o"], ["demo", "--offscreen", "--record"]):
        result = tha(*command, str(tmp_path / "a_file/x.mp4"))
        assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
        assert "lies under" in result.stderr and "which is a file" in result.stderr


def _still_frames(count: int) -> list[np.ndarray]:
    return [np.full((64, 64, 4), (40 * i, 100, 200, 255), np.uint8) for i in range(count)]


def test_a_failed_or_killed_render_leaves_the_old_video_whole(tmp_path):
    """The video is written under a hidden temporary name and renamed when finished: an error
    in the middle, a SIGTERM or a SIGKILL leaves the video that was there before as it was. A
    SIGTERM (a service stop) also removes the temporary file, as Ctrl+C does; it stayed once."""
    from tha.runtime.video import VideoWriter

    out = tmp_path / "out.mp4"
    with VideoWriter(out, fps=10) as writer:
        for frame in _still_frames(2):
            writer.write(frame)
    old = out.read_bytes()
    with pytest.raises(RuntimeError):
        with VideoWriter(out, fps=10) as writer:
            for frame in _still_frames(5):
                writer.write(frame)
            raise RuntimeError("the render failed")
    assert out.read_bytes() == old and sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]

    track = tmp_path / "long.jsonl"
    track.write_text("".join(json.dumps({"head_y": (i % 20) / 20}) + "\n" for i in range(2000)))
    for stop in (signal.SIGTERM, signal.SIGKILL):
        process = subprocess.Popen([*THA, "render", str(DEMO), "--poses", str(track), "-o", str(out)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 240
            while not any(p.stat().st_size for p in tmp_path.glob(".out.mp4.*.tmp")):
                assert process.poll() is None and time.monotonic() < deadline, "the render ended before writing"
                time.sleep(0.05)
        finally:
            process.send_signal(stop)
            try:
                _, stderr = process.communicate(timeout=60)
            finally:
                process.kill()  # a run that outlived the signal must not outlive the test
                process.wait()
        assert out.read_bytes() == old
        frames, _ = read_video(out)
        assert len(frames) == 2
        if stop == signal.SIGTERM:
            assert process.returncode == 128 + signal.SIGTERM and "Traceback" not in stderr, stderr
            assert not list(tmp_path.glob(".out.mp4.*.tmp"))


@pytest.mark.skipif(bool(list(Path("/dev").glob("video*"))), reason="a video device exists here")
def test_virtual_camera_without_a_device_is_a_clear_message():
    pytest.importorskip("pyvirtualcam")
    from tha.models.errors import ThaError
    from tha.runtime.virtualcam import VirtualCamera

    with pytest.raises(ThaError, match="no virtual camera device.*(modprobe v4l2loopback|OBS)"):
        VirtualCamera()


def test_model_fps_interpolates_between_model_frames(tmp_path):
    """--model-fps 10 at --fps 30: frames 0 and 3 are model frames of their poses, 1 and 2 lie
    between them (a frame the interpolator made, not a copy of either end)."""
    track = tmp_path / "track.jsonl"
    track.write_text("\n".join(json.dumps({"head_y": y}) for y in (0.0, 0.3, 0.6, 0.9)) + "\n")
    plain, tweened = tmp_path / "plain", tmp_path / "tweened"
    for out, extra in ((plain, []), (tweened, ["--model-fps", "10"])):
        result = tha("render", str(DEMO), "--poses", str(track), "-o", str(out), "--no-idle", "--backend", "fastcpu",
                     *extra)
        assert result.returncode == 0, result.stderr
    truth = [np.asarray(Image.open(p)).astype(int) for p in sorted(plain.glob("*.png"))]
    got = [np.asarray(Image.open(p)).astype(int) for p in sorted(tweened.glob("*.png"))]
    assert len(got) == len(truth) == 4
    assert np.array_equal(got[0], truth[0]) and np.array_equal(got[3], truth[3])
    for i in (1, 2):
        assert not np.array_equal(got[i], got[0]) and not np.array_equal(got[i], got[3])
        assert np.abs(got[i] - truth[i]).mean() < np.abs(truth[0] - truth[i]).mean()


def test_pose_track_values_are_clamped_as_tha_pose_clamps_them(tmp_path):
    """Out-of-range values in a track were refused although the README (and `tha pose`) clamp
    them with a warning; one warning for the track, not one a frame. A wrong value names its line."""
    from tha.models.errors import ThaError
    from tha.runtime.render_file import read_pose_track

    track = tmp_path / "track.jsonl"
    track.write_text('{"head_x": 0.2}\n{"head_x": 1.5, "eye_wink_left": -3}\n{"head_x": 2}\n')
    with pytest.warns(UserWarning) as caught:
        frames = read_pose_track(track)
    assert frames == [{"head_x": pytest.approx(0.2)}, {"head_x": 1.0, "eye_wink_left": 0.0}, {"head_x": 1.0}]
    assert len(caught) == 1 and "2 line(s) had values outside their ranges (first: line 2)" in str(caught[0].message)
    track.write_text('{"head_x": 0.2}\n\n{"eye_wink_left": "x"}\n')
    with pytest.raises(ThaError, match=f"{track}:3: pose parameter 'eye_wink_left' has value 'x'"):
        read_pose_track(track)


def test_a_png_folder_render_replaces_the_old_frames_whole(tmp_path):
    """A shorter render into a frame folder of a longer one left the old frames past its end;
    the folder is now built beside and swapped in whole, and a folder of the user's own is refused."""
    track = tmp_path / "track.jsonl"
    track.write_text('{}\n{"head_y": 0.5}\n{}\n')
    frames_dir = tmp_path / "frames"
    for count in ("3", "1"):
        result = tha("render", str(DEMO), "--poses", str(track), "-o", str(frames_dir), "--frames", count)
        assert result.returncode == 0, result.stderr
        assert sorted(p.name for p in frames_dir.glob("*.png")) == [f"frame_{i:06d}.png" for i in range(int(count))]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no partial folders left
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "holiday.png").write_bytes(b"")
    result = tha("render", str(DEMO), "--poses", str(track), "-o", str(mine), "--frames", "1")
    assert_one_line_error(result, "frame folder", "not PNG frames tha wrote", "new or empty folder")
    assert [p.name for p in mine.iterdir()] == ["holiday.png"]


@pytest.mark.parametrize("interruption", [KeyboardInterrupt, RuntimeError])
def test_adding_the_sound_replaces_the_video_in_one_step(tmp_path, monkeypatch, interruption):
    """The silent video took the old one's place before its sound was added: a failure (or
    Ctrl+C) while muxing left a soundless video where the old one was. Now the old video stays
    until the finished one with sound replaces it, and no temporary is left in the folder."""
    import av

    from tha.runtime import render_file
    from tha.runtime.render_file import render_to_file

    audio = tone_wav(tmp_path / "speech.wav", 0.1, 0.2)
    out = tmp_path / "talk.mp4"
    render_to_file(DEMO, out, audio=audio, fps=8, progress=False)
    with av.open(str(out)) as container:
        assert [s.type for s in container.streams] == ["video", "audio"]
    old = out.read_bytes()

    def fail(*args, **kwargs):
        raise interruption("stopped while muxing")

    sound = render_file.read_wav(audio)  # read before FFmpeg's resampler, which it uses too, fails
    monkeypatch.setattr(render_file, "read_wav", lambda path: sound)
    monkeypatch.setattr(av, "AudioResampler", fail)  # the sound's encoding fails, after the frames
    with pytest.raises(interruption):
        render_to_file(DEMO, out, audio=audio, fps=8, max_frames=2, progress=False)
    assert out.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["speech.wav", "talk.mp4"]


@pytest.mark.parametrize("suffix", [".mkv", ".mp4", ".webm", ".mov"])
def test_every_frame_survives_adding_the_sound(tmp_path, suffix):
    """Matroska's demuxer gives packets no dts, and the copy skipped every packet without one:
    an .mkv with sound held no keyframe and decoded to 0 frames."""
    import av

    from tha.runtime.video import VideoWriter

    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (64, 64, 4), dtype=np.uint8) for _ in range(12)]
    out = tmp_path / f"talk{suffix}"
    with VideoWriter(out, fps=12, audio=(0.3 * np.sin(np.arange(16000) / 8.0), 16000)) as writer:
        for rgba in frames:
            writer.write(rgba)
    decoded, rate = read_video(out)
    assert len(decoded) == len(frames) and rate == 12
    with av.open(str(out)) as container:
        assert [s.type for s in container.streams] == ["video", "audio"]


def test_audio_into_a_format_without_sound_says_so(tmp_path):
    """--audio with a GIF or a PNG folder dropped the sound silently; it is one warning line
    naming the formats that carry sound (the lip sync still applies)."""
    audio = tone_wav(tmp_path / "speech.wav", 0.05, 0.1)
    for out in (tmp_path / "talk.gif", tmp_path / "frames"):
        result = tha("render", str(DEMO), "--audio", str(audio), "-o", str(out), "--fps", "8")
        assert result.returncode == 0, result.stderr
        warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
        assert len(warnings) == 1 and "no sound" in warnings[0] and ".mp4, .mkv, .webm, .mov" in warnings[0], warnings
    result = tha("render", str(DEMO), "--audio", str(audio), "-o", str(tmp_path / "talk.mp4"), "--fps", "8")
    assert result.returncode == 0 and "warning:" not in result.stderr, result.stderr


def test_an_interrupted_png_render_leaves_the_old_frames_whole(tmp_path):
    """Frames went straight into the folder, so Ctrl+C part way left old and new frames mixed;
    the partial folder beside it is removed and the old frames stay as they were."""
    from tha.runtime.video import VideoWriter

    out = tmp_path / "frames"
    with VideoWriter(out) as writer:
        for frame in _still_frames(3):
            writer.write(frame)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(KeyboardInterrupt):
        with VideoWriter(out) as writer:
            writer.write(np.zeros((64, 64, 4), np.uint8))
            raise KeyboardInterrupt
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["frames"]


def test_an_output_that_is_an_input_is_refused_before_any_work(tmp_path):
    """`--audio sp.mp4 -o sp.mp4` replaced the user's speech video with a 2-frame clip."""
    speech = tmp_path / "sp.mp4"
    speech.write_bytes(b"the user's video")  # refused before it is read, so any bytes do
    result = tha("render", str(DEMO), "--audio", str(speech), "-o", str(speech))
    assert_one_line_error(result, "--output", "sp.mp4", "is also this command's input", code=2)
    assert speech.read_bytes() == b"the user's video"
