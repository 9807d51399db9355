"""`tha render`: a character animated offline to a video file or a folder of PNGs.

The animator runs on the video's clock (frame i is time i/fps), so the output is the same
however slow the backend is. Audio drives the mouth through lip sync and is muxed into the
video where the container carries sound; a pose track (JSON
lines, one object of parameter -> value per frame) pins the parameters it names, and idle
animation fills in the rest.

``write_frames`` is the offline render loop (every pose one frame, no clock) that `tha render`
and `tha puppet --source video --offscreen` share; live outputs use ``tha.runtime.render_loop``.
"""
from __future__ import annotations

from collections.abc import Iterable
from contextlib import nullcontext
from dataclasses import replace
import warnings
from pathlib import Path

import numpy as np
from tqdm import tqdm

from tha.models.errors import ThaError
from tha.models.limits import parse_json
from tha.models.pose import index_of, pose_from_dict
from tha.runtime.lipsync import analyse, read_wav
from tha.runtime.sources.animator import Animator, AnimatorSettings
from tha.runtime.video import SOUND_SUFFIXES, VideoWriter, carries_sound


def read_pose_track(path: str | Path) -> list[dict[str, float]]:
    """One ``{parameter: value}`` object per line; blank lines are skipped."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        raise ThaError(f"pose track {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ThaError(f"cannot read pose track {path} ({err})") from None
    frames = []
    clamped_lines: list[int] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:  # the JSON limits of tha.models.limits (depth, digits) apply per line
            values = parse_json(line, f"{path}:{number}")
        except ThaError as err:
            raise ThaError(f"{err}; each line is an object like " '{"head_x": 0.2}') from None
        if not isinstance(values, dict):
            raise ThaError(f"{path}:{number} must be a JSON object of parameter -> value")
        with warnings.catch_warnings(record=True) as clamped:  # one summary below, not one per line
            warnings.simplefilter("always")
            try:  # name the bad line now, not mid-render
                pose = pose_from_dict(values)
            except ThaError as err:
                raise ThaError(f"{path}:{number}: {err}") from None
        if clamped:
            clamped_lines.append(number)
        frames.append({name: float(pose[index_of(name)]) for name in values})
    if not frames:
        raise ThaError(f"pose track {path} has no frames")
    if clamped_lines:  # as `tha pose` does with out-of-range values
        warnings.warn(f"pose track {path}: {len(clamped_lines)} line(s) had values outside their ranges "
                      f"(first: line {clamped_lines[0]}); clamped to the ranges", stacklevel=2)
    return frames


def still(settings: AnimatorSettings) -> AnimatorSettings:
    """Settings with blinking, breathing and sway switched off."""
    return replace(settings, blink_strength=0.0, breathing_strength=0.0, sway_macro_strength=0.0,
                   sway_micro_strength=0.0)


def render_to_file(model_dir: str | Path, output: str | Path, *, audio: str | Path | None = None,
                   poses: str | Path | None = None, fps: float = 30.0, backend: str = "auto",
                   device: str = "cpu", precision: str | None = None, settings: AnimatorSettings = AnimatorSettings(),
                   emotion: str = "neutral", idle: bool = True, max_frames: int | None = None,
                   progress: bool = True, model_fps: float | None = None) -> int:
    """Render and return the number of frames written. With ``model_fps`` below ``fps`` the
    student runs at about that rate and the frames between are interpolated
    (``tha.runtime.interpolate``)."""
    from tha.models.character import model_files
    from tha.models.files import check_not_input
    from tha.runtime.renderer import open_backend

    if (audio is None) == (poses is None):
        raise ThaError("give exactly one of --audio speech.wav or --poses track.jsonl")
    # before reading anything: the video replaces its output, which must not be what it reads
    check_not_input(output, [*model_files(model_dir), *(p for p in (audio, poses) if p is not None)], "--output")
    settings = settings if idle else still(settings)
    sound = read_wav(audio) if audio is not None else None
    if sound is not None and len(sound[0]) == 0:
        raise ThaError(f"audio file {audio} has no samples")
    if sound is not None and not carries_sound(output):
        # the lip sync still applies, so a warning rather than a refusal
        warnings.warn(f"{output} will have no sound (GIFs and PNG frame folders carry none); the audio drives "
                      f"the lip sync only; for a video with sound write {', '.join(SOUND_SUFFIXES)}", stacklevel=2)
    track = analyse(*sound, fps) if sound is not None else None
    pose_track = read_pose_track(poses) if poses is not None else None
    if pose_track is not None:
        settings = replace(settings, transition_time=0.0)  # the track sets its own timing
    count = len(track) if track is not None else len(pose_track)
    count = min(count, max_frames) if max_frames else count
    animator = Animator(settings)
    animator.set_emotion(emotion)
    if track is not None:
        animator.speak(track, 0.0)
    every = max(1, round(fps / model_fps)) if model_fps else 1

    def poses_in_order():
        for i in range(count):
            if pose_track is not None:
                animator.set_overrides(pose_track[i])
            yield animator.read(i / fps)

    with open_backend(backend, model_dir, device, precision=precision) as engine:
        write_frames(engine, poses_in_order(), output, fps, total=count, every=every, progress=progress,
                     audio=sound if sound is not None and carries_sound(output) else None)
    return count


def write_frames(engine, poses: Iterable[np.ndarray], output: str | Path | None, fps: float, *,
                 total: int | None = None, every: int = 1, progress: bool = True, desc: str = "rendering",
                 audio: tuple[np.ndarray, int] | None = None) -> int:
    """One frame per pose into ``output`` (a video file or a PNG folder; None renders without
    writing), a model frame every ``every`` poses and blended frames between
    (``tha.runtime.interpolate``), with ``audio`` (samples, rate) as its sound track. Returns
    the number of frames."""
    from tha.runtime.interpolate import interpolated_frames

    count = 0
    with VideoWriter(output, fps=fps, audio=audio) if output is not None else nullcontext() as writer:
        frames = interpolated_frames(engine, poses, every)
        for rgba in tqdm(frames, total=total, desc=desc, unit="frame", disable=not progress):
            if writer is not None:
                writer.write(rgba)
            count += 1
    return count
