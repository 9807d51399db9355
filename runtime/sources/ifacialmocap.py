"""iFacialMocap (iOS ARKit face capture) over UDP: the packet parser and the pose source.

Protocol (SPEC, iFacialMocap section): the phone sends one UDP datagram per tracked frame to
port 49983; it starts after the computer sends :data:`START_STRING` to the phone's port
49983. A v2 datagram is ``|``-separated parts: ``name&value`` for the ARKit blend shapes
(0..100; ``_L``/``_R`` mean Left/Right), ``=head#rx,ry,rz,tx,ty,tz`` and
``rightEye#rx,ry,rz`` / ``leftEye#rx,ry,rz`` (degrees). v1 writes ``name-value``.
"""
from __future__ import annotations

import logging
import math
import socket
import threading
import time

import numpy as np

from tha.models.errors import failure_text
from tha.models.net import bound_socket, listen_error
from tha.models.pose import neutral_pose
from tha.runtime.sources.arkit import BLENDSHAPE_NAMES, ArkitConverter, FaceState, ease_to_neutral
from tha.runtime.sources.base import PoseSource

DEFAULT_PORT = 49983
START_STRING = b"iFacialMocap_sahuasouryya9218sauhuiayeta91555dy3719|sendDataVersion=v2"
# All interfaces, on purpose: the phone sends from the local network, so a loopback-only
# listener would never hear it. Only UDP frames are read (never executed or stored); pass
# --bind with the computer's LAN address to listen on one network only.
DEFAULT_BIND = "0.0.0.0"
# A full v2 frame is ~1.5 KB; anything far larger is not from the phone.
MAX_PACKET_BYTES = 8192
_KNOWN = frozenset(BLENDSHAPE_NAMES)
_DIRECTIONS = frozenset({"mouthLeft", "mouthRight", "jawLeft", "jawRight"})

log = logging.getLogger(__name__)


class PacketError(ValueError):
    """A datagram that is not a complete iFacialMocap frame."""


def _numbers(text: str, count: int, what: str, more_ok: bool = False) -> tuple[float, ...]:
    """``count`` comma-separated finite numbers (the first ``count`` where ``more_ok``)."""
    parts = text.split(",")
    if len(parts) < count or (len(parts) > count and not more_ok):
        raise PacketError(f"{what}: expected {count} numbers, got {len(parts)}")
    parts = parts[:count]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        raise PacketError(f"{what}: not a number in '{text}'") from None
    if not all(math.isfinite(v) for v in values):
        raise PacketError(f"{what}: non-finite value")
    return values


def _arkit_name(name: str) -> str:
    if name.endswith("_L"):
        return name[:-2] + "Left"
    if name.endswith("_R"):
        return name[:-2] + "Right"
    return name


def parse_packet(data: bytes) -> FaceState:
    """One v1 or v2 datagram -> FaceState. Raises PacketError for anything incomplete or garbled:
    a frame without its head part (truncated), a named value that is not a number. Parts the
    converter does not read are skipped whatever their shape, as upstream's reader skips them:
    app versions add unnamed fields (``34903,-1.666,-0.175``) and longer bone parts."""
    if len(data) > MAX_PACKET_BYTES:
        raise PacketError(f"oversized packet ({len(data)} bytes)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise PacketError("not UTF-8") from None
    shapes: dict[str, float] = {}
    head: tuple[float, float, float] | None = None
    for part in text.split("|"):
        part = part.strip()
        if not part:
            continue
        if part.startswith(("=head#", "head#")):
            head = _numbers(part.split("#", 1)[1], 6, "head", more_ok=True)[:3]  # type: ignore[assignment]
        elif "#" in part:
            continue  # eye bones and any newer ones: the converter reads the eyeLook shapes instead
        else:
            sep = "&" if "&" in part else "-"  # v2 / v1
            name, found, value = part.partition(sep)
            if not found or not name.isidentifier():
                continue  # no name: not a blend shape
            (number,) = _numbers(value, 1, name)
            name = _arkit_name(name)
            if name in _KNOWN:  # newer app versions add extra fields; they are not errors
                shapes[name] = min(1.0, max(0.0, number / 100.0))
    if head is None:
        raise PacketError("no head part (truncated packet?)")
    return FaceState(shapes, head)


def format_packet(face: FaceState, version: int = 2) -> bytes:
    """The datagram the phone would send for ``face`` (for tests and benchmarks)."""
    sep = "&" if version == 2 else "-"
    parts = []
    for name, value in face.blendshapes.items():
        parts.append(f"{_app_name(name)}{sep}{round(value * 100)}")
    pitch, yaw, roll = face.head
    parts.append(f"=head#{pitch:.4f},{yaw:.4f},{roll:.4f},0.0,0.0,-0.35")
    parts += ["rightEye#0.0,0.0,0.0", "leftEye#0.0,0.0,0.0"]
    return ("|".join(parts) + "|").encode("utf-8")


def _app_name(name: str) -> str:
    """The app's spelling: eyeBlink_L for eyeBlinkLeft, but mouthLeft and jawRight as they are
    (there Left/Right is the direction the jaw or mouth moves, not a side of the face)."""
    if name in _DIRECTIONS:
        return name
    if name.endswith("Left"):
        return name[:-4] + "_L"
    return name[:-5] + "_R" if name.endswith("Right") else name


class IFacialMocapSource(PoseSource):
    """Receives frames on a UDP socket (own thread), converts them with the ARKit converter.

    After ``stale_after`` seconds without a good frame the source reports "stale" and eases
    back to the neutral pose over ``ease_seconds``. While stale it re-sends the start string
    to ``phone`` (if given) every ``resend_every`` seconds, so a phone app started late joins."""

    name = "ifacialmocap"

    def __init__(self, bind: str = DEFAULT_BIND, port: int = DEFAULT_PORT, phone: str | None = None,
                 phone_port: int = DEFAULT_PORT, converter: ArkitConverter | None = None,
                 stale_after: float = 1.0, ease_seconds: float = 0.5, resend_every: float = 2.0):
        self.bind = bind
        self.port = port
        self.phone = phone
        self.phone_port = phone_port
        self.converter = converter or ArkitConverter()
        self.stale_after = stale_after
        self.ease_seconds = ease_seconds
        self.resend_every = resend_every
        self.packets = 0
        self.malformed = 0
        self.oversized = 0
        self.last_error = ""
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._pose = neutral_pose()
        self.received_at: float | None = None

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port); useful when constructed with port 0."""
        if self._sock is None:
            return (self.bind, self.port)
        return self._sock.getsockname()[:2]

    def start(self) -> None:
        if self._thread is not None:
            return
        try:
            sock = bound_socket(self.bind, self.port, socket.SOCK_DGRAM)
        except OSError as err:
            raise listen_error(err, self.bind, self.port, option="--bind", example="0.0.0.0 (all interfaces)",
                               what="iFacialMocap") from None
        sock.settimeout(0.05)
        self._sock = sock
        self._stop.clear()
        self._send_start()
        self._thread = threading.Thread(target=self._receive_loop, name="ifacialmocap", daemon=True)
        self._thread.start()

    def _send_start(self) -> None:
        if self.phone is None or self._sock is None:
            return
        try:
            self._sock.sendto(START_STRING, (self.phone, self.phone_port))
        except OSError as err:  # an unreachable phone must not stop the receiver
            self.last_error = f"cannot reach phone {self.phone}: {err.strerror}"

    def _receive_loop(self) -> None:
        assert self._sock is not None
        last_start = time.monotonic()
        while not self._stop.is_set():
            try:
                data = self._sock.recv(65536)
            except socket.timeout:
                data = None
            except OSError:
                if self._stop.is_set():
                    return
                data = None
            now = time.monotonic()
            if data is not None:
                self._handle_or_log(data, now)
            if self.phone is not None and self.stale(now) and now - last_start >= self.resend_every:
                self._send_start()
                last_start = now

    def handle(self, data: bytes, now: float) -> bool:
        """Parse and convert one datagram; count and skip it when bad."""
        try:
            face = parse_packet(data)
        except PacketError as err:
            with self._lock:
                if len(data) > MAX_PACKET_BYTES:
                    self.oversized += 1
                else:
                    self.malformed += 1
                self.last_error = str(err)
            return False
        pose = self.converter.convert(face, now)
        with self._lock:
            self.packets += 1
            self._pose = pose
            self.received_at = now
        return True

    def _handle_or_log(self, data: bytes, now: float) -> None:
        """``handle`` on the receiver thread: an unexpected failure (a bug, a calibration hook
        that raises) is one logged line and the status's last error, and receiving goes on. A
        dead thread would freeze the puppet on its last pose with no word why."""
        try:
            self.handle(data, now)
        except Exception as err:  # noqa: BLE001 - anything: this thread must outlive it
            message = failure_text(err)
            with self._lock:
                repeated = message == self.last_error
                self.last_error = message
            if not repeated:  # once, not once per packet at 60 Hz
                log.warning("iFacialMocap: %s (still receiving)", message)

    def stale(self, now: float) -> bool:
        return self.received_at is None or now - self.received_at > self.stale_after

    def calibrate(self, frames: int = 15) -> None:
        """Average the next ``frames`` received faces as the user's rest face."""
        self.converter.request_calibration(frames)

    def read(self, now: float) -> np.ndarray:
        with self._lock:
            pose, received = self._pose.copy(), self.received_at
        if received is None:
            return neutral_pose()
        return ease_to_neutral(pose, now - received - self.stale_after, self.ease_seconds)

    @property
    def status(self) -> str:
        now = time.monotonic()
        with self._lock:
            counts = f"{self.packets} frames, {self.malformed} malformed, {self.oversized} oversized"
            error = f"; last: {self.last_error}" if self.last_error else ""
        if self.received_at is None:
            host, port = self.address
            return f"waiting for iFacialMocap on {host}:{port} ({counts}{error})"
        if self.stale(now):
            return f"stale: no frames for {now - self.received_at:.1f} s ({counts})"
        if self.converter.calibrating:
            return f"calibrating: hold still ({counts})"
        return f"ok ({counts})"

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
            self._thread = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
