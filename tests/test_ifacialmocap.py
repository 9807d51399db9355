"""iFacialMocap: real v1/v2 datagrams over loopback UDP into the receiver and the ARKit converter."""
from __future__ import annotations

import os
import re
import socket
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tha.models.errors import ThaError
from tha.models.pose import index_of, neutral_pose
from tha.runtime.sources.arkit import BLENDSHAPE_NAMES, ArkitConverter, ConverterSettings, FaceState
from tha.runtime.sources.ifacialmocap import (
    MAX_PACKET_BYTES, START_STRING, IFacialMocapSource, PacketError, format_packet, parse_packet)
from cli import THA, assert_one_line_error, tha

# One frame as the iOS app sends it (v2): every blend shape with _L/_R names, then the bones.
REAL_V2 = (
    "mouthSmile_R&8|eyeLookOut_L&0|mouthUpperUp_L&3|eyeWide_R&12|mouthClose&0|mouthPucker&9|"
    "mouthRollLower&4|eyeBlink_R&2|eyeLookDown_L&17|cheekSquint_R&5|eyeBlink_L&3|tongueOut&0|"
    "jawRight&0|eyeLookIn_R&0|cheekSquint_L&5|mouthDimple_L&2|mouthPress_L&6|eyeSquint_L&4|"
    "mouthRight&0|mouthShrugLower&12|eyeLookUp_R&0|eyeLookOut_R&9|mouthPress_R&6|cheekPuff&3|"
    "jawForward&2|mouthLowerDown_L&3|mouthFrown_L&1|mouthShrugUpper&8|browOuterUp_L&2|"
    "browInnerUp&6|mouthDimple_R&2|browDown_R&0|mouthUpperUp_R&3|mouthRollUpper&2|"
    "mouthFunnel&3|mouthStretch_R&4|mouthFrown_R&1|eyeLookDown_R&17|jawOpen&4|jawLeft&1|"
    "browDown_L&0|mouthSmile_L&7|noseSneer_R&5|mouthLowerDown_R&3|noseSneer_L&6|eyeWide_L&12|"
    "mouthStretch_L&4|browOuterUp_R&2|eyeLookIn_L&9|eyeSquint_R&4|eyeLookUp_L&0|mouthLeft&1|"
    "=head#-4.2871337,3.5216045,-1.1590178,0.0114513,-0.0292871,-0.3864261|"
    "rightEye#6.1022124,0.3581547,0.0212004|leftEye#6.0919361,-2.5604627,-0.1412331|"
)


def test_real_v2_frame_parses_every_blend_shape():
    face = parse_packet(REAL_V2.encode())
    assert set(face.blendshapes) == set(BLENDSHAPE_NAMES)
    assert face["eyeLookDownLeft"] == pytest.approx(0.17) and face["mouthSmileRight"] == pytest.approx(0.08)
    assert face.head == pytest.approx((-4.2871337, 3.5216045, -1.1590178))


def test_v1_frame_parses_like_v2():
    face = FaceState({"eyeBlinkLeft": 0.75, "jawOpen": 0.3, "browInnerUp": 0.1}, (-12.5, 7.25, -3.0))
    v1, v2 = parse_packet(format_packet(face, version=1)), parse_packet(format_packet(face, version=2))
    assert b"eyeBlink_L-75" in format_packet(face, version=1)
    assert v1.blendshapes == v2.blendshapes == pytest.approx(face.blendshapes)
    assert v1.head == v2.head == pytest.approx(face.head)


def test_fields_the_converter_does_not_read_are_skipped_not_fatal():
    """Newer app versions add unnamed fields (iFacialMocap's developer sample ends with one) and
    longer bone parts; upstream's reader skips them, and a whole frame must not be lost to them."""
    extra = REAL_V2 + "34903,-1.666,-0.175|rightEye#6.1,0.35,0.02,1.0|hipRotation#1,2,3|"
    face = parse_packet(extra.replace("=head#-4.2871337,3.5216045,-1.1590178,0.0114513,-0.0292871,-0.3864261",
                                      "=head#-4.2871337,3.5216045,-1.1590178,0.0114513,-0.0292871,-0.3864261,7").encode())
    assert face == parse_packet(REAL_V2.encode())


def test_format_packet_spells_names_as_the_app_does():
    """eyeBlink_L for a side, mouthLeft / jawRight as they are (a direction), a trailing '|': as
    REAL_V2, captured from the app."""
    face = parse_packet(REAL_V2.encode())
    sent = format_packet(face).decode()
    assert sent.endswith("|") and "mouthLeft&1|" in sent and "jawRight&0|" in sent and "eyeBlink_L&3|" in sent
    assert set(sent.split("|")[:52]) == set(REAL_V2.split("|")[:52])
    again = parse_packet(sent.encode())
    assert again.blendshapes == face.blendshapes and again.head == pytest.approx(face.head, abs=1e-4)


@pytest.mark.parametrize("data", [
    b"\xff\xfe\x00garbage",
    REAL_V2[: len(REAL_V2) // 2].encode(),  # truncated: the head part is lost
    REAL_V2.replace("jawOpen&4", "jawOpen&").encode(),
    REAL_V2.replace("=head#-4.2871337,", "=head#").encode(),
    REAL_V2.replace("browInnerUp&6", "browInnerUp&nan").encode(),
    b"x" * (MAX_PACKET_BYTES + 1),
])
def test_bad_frames_raise_packet_error(data):
    with pytest.raises(PacketError):
        parse_packet(data)


@pytest.fixture
def receiver():
    # no breathing: these tests compare poses with the neutral one (breathing has its own test)
    converter = ArkitConverter(ConverterSettings(breathing_cycle_duration=0.0))
    source = IFacialMocapSource(bind="127.0.0.1", port=0, stale_after=0.5, ease_seconds=0.3, converter=converter)
    source.start()
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    yield source, sender
    sender.close()
    source.close()


def _wait(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "the receiver did not take the datagrams in time"
        time.sleep(0.005)


def _perform(source: IFacialMocapSource, sender: socket.socket, face: FaceState, frames: int = 30) -> np.ndarray:
    """Send ``face`` for ``frames`` frames at the phone's 60 Hz; the receiver's newest pose."""
    expected = source.packets + frames
    for _ in range(frames):
        sender.sendto(format_packet(face), source.address)
        time.sleep(1 / 60)
    _wait(lambda: source.packets >= expected)
    return source.read(time.monotonic())


def test_blink_turn_and_jaw_move_the_right_parameters(receiver):
    source, sender = receiver
    rest = _perform(source, sender, FaceState({}, (0.0, 0.0, 0.0)), frames=5)
    np.testing.assert_allclose(rest, neutral_pose(), atol=1e-6)

    blink = _perform(source, sender, FaceState({"eyeBlinkLeft": 1.0}))
    assert blink[index_of("eye_wink_left")] > 0.8
    assert blink[index_of("eye_wink_right")] == pytest.approx(0.0, abs=1e-6)

    turn = _perform(source, sender, FaceState({}, (0.0, 8.0, 12.0)))
    assert turn[index_of("eye_wink_left")] < 0.2  # eyes open again
    assert turn[index_of("head_y")] == pytest.approx(-0.8, abs=0.1)  # yaw / 10 degrees, mirrored
    assert turn[index_of("neck_z")] == pytest.approx(0.8, abs=0.1)  # roll / 15 degrees
    assert turn[index_of("body_y")] < 0 and turn[index_of("body_z")] > 0
    assert abs(turn[index_of("head_x")]) < 1e-3

    jaw = _perform(source, sender, FaceState({"jawOpen": 0.6}, (0.0, 0.0, 0.0)))
    assert jaw[index_of("mouth_aaa")] > 0.8
    assert jaw[index_of("mouth_ooo")] == pytest.approx(0.0, abs=1e-6)
    assert abs(jaw[index_of("head_y")]) < 0.2
    assert source.malformed == source.oversized == 0


def test_start_string_reaches_the_phone():
    phone = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    phone.bind(("127.0.0.1", 0))
    phone.settimeout(60.0)
    source = IFacialMocapSource(bind="127.0.0.1", port=0, phone="127.0.0.1", phone_port=phone.getsockname()[1])
    try:
        source.start()
        data, sender = phone.recvfrom(4096)
        assert data == START_STRING
        assert data.decode().endswith("|sendDataVersion=v2")
        assert sender[1] == source.address[1]  # sent from the port the phone's frames come back to
    finally:
        source.close()
        phone.close()


def test_garbage_truncated_and_oversized_are_counted_and_skipped(receiver):
    source, sender = receiver
    bad = [b"\x00\xff\xfe\xfd", b"hello|world", REAL_V2[:200].encode(), REAL_V2.replace("&", "&x").encode()]
    for data in bad:
        sender.sendto(data, source.address)
    sender.sendto(b"eyeBlink_L&100|" * 3000, source.address)  # 45 KB: one UDP datagram, far too big
    _wait(lambda: source.malformed + source.oversized == len(bad) + 1)
    assert (source.malformed, source.oversized, source.packets) == (len(bad), 1, 0)
    np.testing.assert_array_equal(source.read(time.monotonic()), neutral_pose())
    assert source.status.startswith("waiting")

    sender.sendto(REAL_V2.encode(), source.address)  # the receiver is still alive
    _wait(lambda: source.packets == 1)
    assert source.status.startswith("ok")


def test_silence_makes_the_source_stale_and_eases_to_neutral(receiver):
    source, sender = receiver
    turned = _perform(source, sender, FaceState({"jawOpen": 0.5}, (10.0, -10.0, 0.0)), frames=20)
    assert turned[index_of("head_x")] < -0.5 and turned[index_of("head_y")] > 0.5
    last = source.received_at
    halfway = source.read(last + source.stale_after + source.ease_seconds / 2)
    assert 0.2 < halfway[index_of("head_y")] < turned[index_of("head_y")]
    np.testing.assert_allclose(source.read(last + source.stale_after + source.ease_seconds), neutral_pose(), atol=1e-6)

    time.sleep(source.stale_after + 0.2)
    assert source.stale(time.monotonic())
    assert source.status.startswith("stale")


def test_calibrating_on_the_users_rest_face(receiver):
    source, sender = receiver
    rest = FaceState({"browInnerUp": 0.3, "jawOpen": 0.2}, (5.0, -3.0, 2.0))  # this user's relaxed face
    assert _perform(source, sender, rest, frames=5)[index_of("head_x")] < -0.2
    source.calibrate(frames=5)
    _perform(source, sender, rest, frames=5)
    assert not source.converter.calibrating
    settled = _perform(source, sender, rest, frames=30)
    np.testing.assert_allclose(settled, neutral_pose(), atol=0.02)


def test_default_listens_on_all_interfaces_so_the_phone_reaches_it():
    """The phone sends from the LAN: a loopback default would never hear it (a deliberate
    default, documented in --help; --bind narrows it)."""
    from tha.runtime.sources.ifacialmocap import DEFAULT_BIND

    assert DEFAULT_BIND == "0.0.0.0" and IFacialMocapSource().bind == DEFAULT_BIND
    help_text = tha("puppet", "--help", timeout=120, env={"COLUMNS": "200"}).stdout
    assert "all interfaces" in " ".join(help_text.split())


@pytest.mark.parametrize("bind", ["192.0.2.1", "nosuch.invalid"])
def test_bind_to_an_address_this_machine_lacks_names_bind(bind):
    """192.0.2.1 (TEST-NET-1) is no address of this machine; the advice is about --bind, not the port."""
    source = IFacialMocapSource(bind=bind, port=0)
    with pytest.raises(ThaError) as caught:
        source.start()
    message = str(caught.value)
    assert f"--bind {bind}" in message and "0.0.0.0" in message and "--port" not in message
    assert "\n" not in message


def test_puppet_names_a_bad_bind_before_loading_the_model():
    """`tha puppet` bound its socket only once the model was loaded and the viewer opened."""
    demo = Path(__file__).resolve().parents[1] / "configs" / "demo"
    result = tha("puppet", demo, "--source", "ifacialmocap", "--bind", "192.0.2.1", "--offscreen", "--frames", "1")
    assert_one_line_error(result, "--bind 192.0.2.1", code=2)
    assert "backend:" not in result.stderr  # `auto` says what it picked once it loads the model


def test_busy_port_says_pick_another_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))
        source = IFacialMocapSource(bind="127.0.0.1", port=busy.getsockname()[1])
        with pytest.raises(ThaError, match="pass another --port") as caught:
            source.start()
    assert "--bind" not in str(caught.value)


def _free_udp_port() -> int:
    """A loopback UDP port that was free a moment ago (bound to port 0, then closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_offscreen_puppet_reports_malformed_packets(tmp_path):
    """A real `tha puppet --offscreen` run fed garbage and one oversized datagram over UDP
    prints the receiver's counters when it ends (no overlay shows them)."""
    port = _free_udp_port()
    demo = Path(__file__).resolve().parents[1] / "configs" / "demo"
    process = subprocess.Popen(
        [*THA, "puppet", str(demo), "--source",
         "ifacialmocap", "--bind", "127.0.0.1", "--port", str(port), "--offscreen", "--frames", "40",
         "--backend", "torch"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    done = threading.Event()

    def send() -> None:  # until the run ends: it listens only once its backend is up
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            while not done.is_set():
                sender.sendto(b"hello|world", ("127.0.0.1", port))
                sender.sendto(b"eyeBlink_L&100|" * 1000, ("127.0.0.1", port))
                time.sleep(0.02)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    try:
        out, err = process.communicate(timeout=300)
    finally:
        done.set()
        process.kill()
    assert process.returncode == 0, err
    line = [l for l in out.splitlines() if l.startswith("ifacialmocap:")]
    assert len(line) == 1, out
    counts = re.search(r"(\d+) frames, (\d+) malformed, (\d+) oversized", line[0])
    assert counts, line[0]
    frames, malformed, oversized = map(int, counts.groups())
    assert frames == 0 and malformed > 0 and oversized > 0


def test_a_failure_while_handling_a_packet_is_logged_once_and_receiving_goes_on(receiver, caplog):
    """An exception in handle() killed the receiver thread ("Exception in thread ifacialmocap"):
    the puppet froze on its last pose and the run still ended with status 0."""
    source, sender = receiver

    def broken_hook(settings) -> None:
        raise OSError("disk on fire")

    source.converter.on_calibrated = broken_hook
    source.calibrate(frames=1)
    face = FaceState({"jawOpen": 0.5}, (0.0, 0.0, 0.0))
    sender.sendto(format_packet(face), source.address)  # completes the calibration: the hook raises
    _wait(lambda: "disk on fire" in source.last_error)
    _perform(source, sender, face, frames=5)  # counted: the thread is alive
    assert source._thread is not None and source._thread.is_alive()
    lines = [r.getMessage() for r in caplog.records if "disk on fire" in r.getMessage()]
    assert lines == ["iFacialMocap: OSError: disk on fire (still receiving)"]


def test_a_calibration_that_cannot_be_saved_is_a_warning_not_a_dead_tracker(tmp_path, caplog):
    from tha.runtime.puppeteers import load_converter

    profile = tmp_path / "later" / "cal.yaml"
    converter = load_converter(profile, calibrate=True)  # writable when the run starts ...
    (tmp_path / "later").write_text("")  # ... a file in the way of its folder by the time faces come
    for _ in range(15):
        converter.convert(FaceState({"jawOpen": 0.2}, (1.0, 2.0, 3.0)), 0.0)
    assert not converter.calibrating and converter.settings.neutral_head == (1.0, 2.0, 3.0)
    assert any("rest face was not saved" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("profile, problem", [("/proc/cal.yaml", "cannot write in /proc"),
                                              ("folder", "is a folder; give a YAML file")])
def test_calibrate_checks_the_profile_it_will_write_before_starting(tmp_path, profile, problem):
    """`--calibrate --profile /proc/cal.yaml` failed only once faces arrived, on the receiver
    thread; a folder was called "not found"."""
    (tmp_path / "folder").mkdir()
    demo = Path(__file__).resolve().parents[1] / "configs" / "demo"
    result = tha("puppet", demo, "--offscreen", "--frames", "1", "--calibrate", "--profile", profile,
                 "--bind", "127.0.0.1", "--port", _free_udp_port(), cwd=tmp_path)
    assert_one_line_error(result, problem, code=2)
    assert "backend:" not in result.stderr
