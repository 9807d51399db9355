"""Writing frame sequences: video files through PyAV (FFmpeg) or a folder of PNGs.

Transparency survives where the container allows it (.webm VP9 with alpha, .mov QuickTime
Animation, PNG folders); elsewhere frames are composited over a solid background.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from tha.models.errors import ThaError
from tha.models.files import (check_output_path, check_replaceable_dir, put_directory_in_place, put_in_place,
                              temporary_beside, temporary_directory_beside, writes_through)


@dataclass(frozen=True)
class Format:
    muxer: str  # FFmpeg's container name: the file is written under a temporary name first
    codec: str
    pixel_format: str
    keeps_alpha: bool
    options: tuple[tuple[str, str], ...] = ()
    audio_codec: str | None = None  # None: the container carries no sound


FORMATS: dict[str, Format] = {
    ".mp4": Format("mp4", "libx264", "yuv420p", False, (("crf", "18"), ("preset", "veryfast")), "aac"),
    ".mkv": Format("matroska", "libx264", "yuv420p", False, (("crf", "18"), ("preset", "veryfast")), "aac"),
    ".webm": Format("webm", "libvpx-vp9", "yuva420p", True, (("crf", "30"), ("b", "0"), ("deadline", "realtime")),
                    "libopus"),
    ".mov": Format("mov", "qtrle", "argb", True, audio_codec="aac"),
    ".gif": Format("gif", "gif", "rgb8", False),
}

SOUND_SUFFIXES = tuple(suffix for suffix, f in FORMATS.items() if f.audio_codec)

# In every PNG-frame folder we write: a later render may replace such a folder whole, never the user's own.
FRAMES_MARKER = ".tha-frames"


def check_video_output(path: str | Path) -> Path:
    """Refuse, before any frame is rendered, a video or frame folder that cannot be written: an
    unknown suffix, a folder this user cannot write in."""
    path = Path(path)
    if path.suffix.lower() in FORMATS:
        return check_output_path(path, "video")
    if path.suffix:
        raise ThaError(f"cannot write '{path.suffix}' video; use one of {', '.join(FORMATS)} or a directory "
                       "name for PNG frames")
    return check_replaceable_dir(path, FRAMES_MARKER, "frame folder", "PNG frames tha wrote")


def keeps_alpha(path: str | Path) -> bool:
    """Whether frames written to ``path`` keep their transparency (PNG folders, .webm, .mov)."""
    video = FORMATS.get(Path(path).suffix.lower())
    return video is None or video.keeps_alpha


def carries_sound(path: str | Path) -> bool:
    """Whether a video written to ``path`` can hold an audio track (GIFs and PNG folders cannot)."""
    video = FORMATS.get(Path(path).suffix.lower())
    return video is not None and video.audio_codec is not None


def composite(rgba: np.ndarray, background: tuple[int, int, int]) -> np.ndarray:
    """Straight-alpha RGBA over an opaque colour -> RGB uint8."""
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    rgb = rgba[..., :3].astype(np.float32) * alpha + np.asarray(background, np.float32) * (1.0 - alpha)
    return np.round(rgb).astype(np.uint8)


class VideoWriter:
    """``write(rgba)`` frames of one size; ``close()`` finishes the file and puts it in place of
    any old one (until then it is a hidden temporary beside it, so a killed recording leaves
    the old file whole); leaving a ``with`` block on an error discards it instead.

    ``path`` ending in a known suffix is a video; anything else is a directory of
    ``frame_000000.png`` files, built beside and swapped in whole (an old render's extra frames
    go with it). ``audio`` (mono samples, rate) is added as the video's sound track, cut to
    the frames' length, before the file is put in place."""

    def __init__(self, path: str | Path, fps: float = 30.0, size: tuple[int, int] | None = None,
                 background: tuple[int, int, int] = (255, 255, 255), audio: tuple[np.ndarray, int] | None = None):
        self.path = check_video_output(path)
        if audio is not None and not carries_sound(self.path):
            raise ValueError(f"{self.path} cannot carry sound; see carries_sound()")
        self.fps = fps
        self.size = size
        self.background = background
        self.audio = audio
        self.frames = 0
        self.format = FORMATS.get(self.path.suffix.lower())
        self._container = None
        self._stream = None
        self._temporary: Path | None = None  # the hidden video file or PNG folder until close()

    def _open_folder(self) -> None:
        self._temporary = temporary_directory_beside(self.path)
        (self._temporary / FRAMES_MARKER).write_bytes(b"")

    def _open(self, width: int, height: int) -> None:
        import av

        if self.format.pixel_format.startswith("yuv") and (width % 2 or height % 2):
            raise ThaError(f"{self.path.suffix} needs even frame sizes, got {width}x{height}")
        # a pipe is written through, except under audio: the silent video is read back to add it
        through = writes_through(self.path) and self.audio is None
        self._temporary = None if through else temporary_beside(self.path)
        self._container = av.open(str(self._temporary or self.path), mode="w", format=self.format.muxer)
        rate = Fraction(self.fps).limit_denominator(1001)
        self._stream = self._container.add_stream(self.format.codec, rate=rate)
        self._stream.width, self._stream.height = width, height
        self._stream.pix_fmt = self.format.pixel_format
        self._stream.options = dict(self.format.options)

    def write(self, rgba: np.ndarray) -> None:
        if rgba.ndim != 3 or rgba.shape[2] != 4 or rgba.dtype != np.uint8:
            raise ValueError(f"frames are (H,W,4) uint8, got {rgba.shape} {rgba.dtype}")
        height, width = rgba.shape[:2]
        if self.size is None:
            self.size = (width, height)
        elif self.size != (width, height):
            raise ValueError(f"frame size changed from {self.size} to {(width, height)}")
        if self.format is None:
            from tha.models.image import save_png  # torch-free CLI start: models.image loads torch

            if self._temporary is None:
                self._open_folder()
            save_png(self._temporary / f"frame_{self.frames:06d}.png", rgba)
        else:
            import av

            if self._container is None:
                self._open(width, height)
            if self.format.keeps_alpha:
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgba), format="rgba")
            else:
                frame = av.VideoFrame.from_ndarray(composite(rgba, self.background), format="rgb24")
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        try:
            if self.format is None and self._temporary is not None:
                put_directory_in_place(self._temporary, self.path)
                self._temporary = None
            elif self._container is not None:
                self._finish_video()
        finally:
            self.discard()  # what a failure above left behind

    def _finish_video(self) -> None:
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()
        self._container = None
        if self.audio is not None:
            self._add_audio()
        if self._temporary is not None:
            put_in_place(self._temporary, self.path)
            self._temporary = None

    def _add_audio(self) -> None:
        """The silent video in ``_temporary`` -> a new temporary (or the pipe) with sound."""
        silent = self._temporary
        self._temporary = None if writes_through(self.path) else temporary_beside(self.path)
        samples, rate = self.audio
        try:
            mux_audio(silent, self._temporary or self.path, self.format, samples[: int(self.frames / self.fps * rate)],
                      rate)
        finally:
            silent.unlink(missing_ok=True)

    def discard(self) -> None:
        """Stop without touching ``path`` (a failed render must not replace a good file)."""
        if self._container is not None:
            self._container.close()
            self._container = None
        if self._temporary is not None and self._temporary.is_dir():
            shutil.rmtree(self._temporary, ignore_errors=True)
        elif self._temporary is not None:
            self._temporary.unlink(missing_ok=True)
        self._temporary = None

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, kind: type | None, *exc: object) -> None:
        if kind is None:
            self.close()
        else:
            self.discard()


def mux_audio(video: Path, out_path: Path, video_format: Format, samples: np.ndarray, rate: int) -> None:
    """``video`` with a mono audio track added, written to ``out_path`` (video packets copied,
    not re-encoded)."""
    import av

    codec = video_format.audio_codec
    with av.open(str(video)) as source, av.open(str(out_path), "w", format=video_format.muxer) as out:
        video_in = source.streams.video[0]
        video_out = out.add_stream_from_template(video_in)
        audio_out = out.add_stream(codec, rate=48000 if codec == "libopus" else rate, layout="mono")
        for packet in source.demux(video_in):
            if packet.size:  # not the demuxer's final empty packet (Matroska's have no dts: that is no test)
                packet.stream = video_out
                out.mux(packet)
        frame = av.AudioFrame.from_ndarray((np.clip(samples, -1, 1) * 32767).astype("<i2")[None],
                                           format="s16", layout="mono")
        frame.sample_rate = rate
        resampler = av.AudioResampler(format=audio_out.format.name, layout="mono", rate=audio_out.rate)
        for chunk in [*resampler.resample(frame), *resampler.resample(None), None]:
            for packet in audio_out.encode(chunk):
                out.mux(packet)


def read_video(path: str | Path) -> tuple[list[np.ndarray], float]:
    """Decode every frame of a video as RGBA uint8, with its frame rate (tests, tools)."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate = float(stream.average_rate or stream.guessed_rate or 0)
        if stream.codec_context.name == "vp9":
            # FFmpeg's native VP9 decoder drops the alpha plane; libvpx's keeps it.
            decoder = av.codec.CodecContext.create("libvpx-vp9", "r")
            frames = [f.to_ndarray(format="rgba") for p in container.demux(stream) for f in decoder.decode(p)]
        else:
            frames = [f.to_ndarray(format="rgba") for f in container.decode(stream)]
        return frames, rate
