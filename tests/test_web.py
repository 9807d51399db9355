"""`tha export --web` and `tha serve-web`: the exported page in a real headless Chromium
(Debian's /usr/bin/chromium driven by Playwright), served from localhost with the
cross-origin isolation headers."""
from __future__ import annotations

import base64
import json
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from tha.export.verify import rgba_parity
from tha.models.image import load_rgba
from tha.models.pose import index_of, pose_to_dict
from cli import assert_one_line_error, tha

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]
# A browser without WebGPU: the page must fall back to WebAssembly and say so.
NO_WEBGPU = ("--disable-features=WebGPU",)
# Headless Chromium's own WebGPU adapter (SwiftShader: Vulkan on the CPU, no shader-f16).
CPU_WEBGPU = ("--enable-unsafe-webgpu",)
PAGE_START_S = 240  # model download + WebAssembly compile + the first frame, on a loaded 2-core CPU


def test_web_export_refuses_a_directory_that_is_not_a_student(tmp_path):
    (tmp_path / "not_a_model").mkdir()
    result = tha("export", str(tmp_path / "not_a_model"), "--web", str(tmp_path / "site"))
    assert_one_line_error(result, "not a character model")
    assert not (tmp_path / "site").exists()


def test_web_export_refuses_an_out_that_is_a_file(lambda00_dir, tmp_path):
    (tmp_path / "site").write_text("keep me")
    result = tha("export", str(lambda00_dir), "--web", str(tmp_path / "site"))
    assert_one_line_error(result, "is a file")
    assert (tmp_path / "site").read_text() == "keep me"


def test_web_export_refuses_a_folder_that_is_not_a_page(lambda00_dir, tmp_path):
    """The user's own site is not overwritten file by file (the page is built beside the folder
    and swapped in whole, so only a folder holding an exported page is replaced)."""
    (tmp_path / "mysite").mkdir()
    (tmp_path / "mysite" / "index.html").write_text("<h1>mine</h1>")
    result = tha("export", str(lambda00_dir), "--web", str(tmp_path / "mysite"))
    assert_one_line_error(result, "is a folder that is not an exported page")
    assert (tmp_path / "mysite" / "index.html").read_text() == "<h1>mine</h1>"


def test_first_web_export_without_node_says_what_to_install(tmp_path, monkeypatch):
    from tha.web import build
    from tha.models.errors import ThaError

    monkeypatch.setattr(build.shutil, "which", lambda name: None)
    with pytest.raises(ThaError, match="needs Node.js and npm"):
        build.npm_packages(cache_root=tmp_path)


def _fake_npm(tmp_path: Path, body: str) -> str:
    """A stand-in for npm (the real install is exercised by every export test): ``body`` runs in
    the install folder, after a pause that lets two installs overlap."""
    npm = tmp_path / "npm"
    npm.write_text(f"#!/bin/sh\nsleep 1\n{body}\n")
    npm.chmod(0o755)
    return str(npm)


def test_npm_cache_is_installed_whole_by_concurrent_exports(tmp_path, monkeypatch):
    """Each install runs in a folder of its own (npm ci empties node_modules first: in place, one
    export read files another was replacing); the second to finish takes the first's install."""
    from concurrent.futures import ThreadPoolExecutor

    from tha.web import build

    npm = _fake_npm(tmp_path, "mkdir -p node_modules/pkg && echo $$ > node_modules/pkg/who")
    monkeypatch.setattr(build.shutil, "which", lambda name: npm)
    cache = tmp_path / "cache"
    with ThreadPoolExecutor(2) as pool:
        modules = list(pool.map(lambda _: build.npm_packages(cache_root=cache), range(2)))
    assert modules[0] == modules[1] and (modules[0] / "pkg/who").is_file()
    assert [p.name for p in cache.iterdir()] == [modules[0].parent.name]  # no install folder left behind


def test_a_failed_npm_install_leaves_no_cache(tmp_path, monkeypatch):
    """A failed `npm ci` left its half-installed folder where the cache goes."""
    from tha.models.errors import ThaError
    from tha.web import build

    npm = _fake_npm(tmp_path, "mkdir node_modules && echo 'npm ERR! network' >&2 && exit 1")
    monkeypatch.setattr(build.shutil, "which", lambda name: npm)
    with pytest.raises(ThaError, match="network"):
        build.npm_packages(cache_root=tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


def test_serve_web_refuses_a_directory_that_is_not_a_site(tmp_path):
    assert_one_line_error(tha("serve-web", str(tmp_path)), "not an exported site")


@pytest.fixture()
def tiny_site(tmp_path) -> Path:
    """Enough of an exported site for make_server: index.html, tha.json and a vendor folder."""
    (tmp_path / "index.html").write_text("<html>tha</html>")
    (tmp_path / "tha.json").write_text("{}")
    (tmp_path / "vendor").mkdir()
    (tmp_path / "vendor" / "ort.mjs").write_text("export {};")
    return tmp_path


def _serve(site: Path, host: str = "127.0.0.1"):
    from tha.web.serve import make_server

    server = make_server(site, host, 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _get(server, path: str):
    """(status, headers (case-insensitive), body) of GET ``path``."""
    import http.client

    host, port = server.server_address[:2]
    connection = http.client.HTTPConnection(host, port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.headers, response.read()
    finally:
        connection.close()


def _stop(server) -> None:
    server.shutdown()
    server.server_close()


def _has_ipv6_loopback() -> bool:
    import socket

    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


def test_serve_web_serves_files_but_no_directory_listings(tiny_site):
    server = _serve(tiny_site)
    try:
        status, headers, body = _get(server, "/")
        assert status == 200 and body == b"<html>tha</html>"
        assert headers["Cross-Origin-Embedder-Policy"] == "require-corp"
        status, headers, _ = _get(server, "/vendor/ort.mjs")
        assert status == 200 and headers["Content-Type"] == "text/javascript"
        assert headers["Cross-Origin-Opener-Policy"] == "same-origin"
        for folder in ("/vendor/", "/vendor", "/vendor/?x=1", "/vendor/../vendor/"):
            status, _, body = _get(server, folder)
            assert status == 404 and b"ort.mjs" not in body, folder
        assert _get(server, "/../../etc/passwd")[0] == 404
    finally:
        _stop(server)


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="this machine has no IPv6 loopback (::1)")
def test_serve_web_listens_on_an_ipv6_host(tiny_site):
    from tha.models.net import host_port

    assert host_port("::1", 8000) == "[::1]:8000"  # the URL tha serve-web prints (was http://::1:8000/)
    server = _serve(tiny_site, "::1")
    try:
        assert server.server_address[0] == "::1"
        status, headers, body = _get(server, "/")
        assert status == 200 and body == b"<html>tha</html>"
        assert headers["Cross-Origin-Opener-Policy"] == "same-origin"
    finally:
        _stop(server)


@pytest.mark.parametrize("host", ["192.0.2.1", "nosuch.invalid"])
def test_serve_web_on_a_host_this_machine_lacks_names_the_host(tiny_site, host):
    result = tha("serve-web", str(tiny_site), "--host", host, "--port", "0")
    assert_one_line_error(result, f"--host {host}", "127.0.0.1")
    assert "--port" not in result.stderr


def test_serve_web_on_a_busy_port_says_pass_another_port(tiny_site):
    import socket

    from tha.models.errors import ThaError
    from tha.web.serve import make_server

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(ThaError, match="pass another --port") as caught:
            make_server(tiny_site, "127.0.0.1", busy.getsockname()[1])
    assert "--host" not in str(caught.value)


# ---- the page in Chromium ----------------------------------------------------------------

def export_site(model: Path, out: Path) -> Path:
    result = tha("export", str(model), "--web", str(out))
    assert result.returncode == 0, result.stderr
    return out


@contextmanager
def serving(site: Path) -> Iterator[str]:
    from tha.web.serve import make_server

    server = make_server(site, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def site(lambda00_dir, tmp_path_factory) -> Path:
    return export_site(lambda00_dir, tmp_path_factory.mktemp("web") / "site")


@pytest.fixture(scope="module")
def origin(site):
    with serving(site) as url:
        yield url


@pytest.fixture(scope="module")
def playwright():
    if not CHROMIUM.is_file():
        pytest.skip("Debian's chromium is not installed (the README's test command installs it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the dev extra installs playwright")
    with sync_api.sync_playwright() as p:
        yield p


class Page:
    """A page of the site with everything it logs and requests recorded."""

    def __init__(self, playwright, origin: str, tmp: Path, extra_flags: tuple[str, ...] = NO_WEBGPU,
                 camera: bool = False, query: str = "", start_s: float = PAGE_START_S):
        self.origin = origin
        self.context = playwright.chromium.launch_persistent_context(
            str(tmp / "profile"), executable_path=str(CHROMIUM), headless=True,
            args=CHROMIUM_FLAGS + list(extra_flags), permissions=["camera"] if camera else [])
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page = self.context.new_page()
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.goto(f"{origin}/index.html{query}")
        self.page.wait_for_function("() => window.tha.state && window.tha.state().frames > 0", timeout=start_s * 1000)

    def state(self) -> dict:
        return self.page.evaluate("() => window.tha.state()")

    def shows(self, test: str) -> None:
        """Wait until the drawn frame's pose passes ``test`` (a JS function of the pose)."""
        self.page.wait_for_function(f"() => window.tha.state().pose !== null && ({test})(window.tha.state().pose)",
                                    timeout=120_000)

    def frames_after(self, count: int) -> None:
        self.page.wait_for_function(f"() => window.tha.state().frames >= {count}", timeout=120_000)

    def canvas(self) -> np.ndarray:
        data = self.page.evaluate("""() => { const c = document.getElementById('canvas');
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let s = ''; for (let i = 0; i < d.length; i += 0x8000) s += String.fromCharCode(...d.subarray(i, i + 0x8000));
            return btoa(s); }""")
        return decode_rgba(data)

    def off_origin(self) -> list[str]:
        return [u for u in self.requests if not u.startswith(self.origin + "/") and not u.startswith(("data:", "blob:"))]

    def close(self) -> None:
        self.context.close()


@pytest.fixture(scope="module")
def page(playwright, origin, tmp_path_factory):
    # A camera exists (Chromium's fake one) but the page is never granted it.
    p = Page(playwright, origin, tmp_path_factory.mktemp("chromium"), NO_WEBGPU + ("--use-fake-device-for-media-stream",))
    yield p
    p.close()


def decode_rgba(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), np.uint8).reshape(512, 512, 4)


def tha_pose(model: Path, pose: np.ndarray, tmp_path: Path) -> np.ndarray:
    """What `tha pose` draws for ``pose``: the reference the page is held to."""
    (tmp_path / "pose.json").write_text(json.dumps(pose_to_dict(pose)))
    result = tha("pose", str(model), "--pose-file", str(tmp_path / "pose.json"), "-o", str(tmp_path / "ref.png"))
    assert result.returncode == 0, result.stderr
    return load_rgba(tmp_path / "ref.png")


def report_fps(capsys, page: Page, what: str) -> None:
    state = page.state()
    with capsys.disabled():
        print(f"\nin-page FPS ({what}, {state['backend']}): {state['fps']:.2f}")


@pytest.mark.slow
def test_page_loads_falls_back_to_webassembly_and_matches_tha_pose(page, lambda00_dir, student_reference, tmp_path, capsys):
    state = page.state()
    assert state["backend"].startswith("WebAssembly (SIMD, ")
    assert "no WebGPU" in state["backend"] and "fell back" in state["backend"]
    assert page.page.locator("#backend").inner_text() == state["backend"]
    # The server sends COOP/COEP, so WebAssembly runs threaded where the browser has cores.
    assert page.page.evaluate("() => self.crossOriginIsolated") is True

    pose = student_reference["poses"][2].astype(np.float32)
    want = tha_pose(lambda00_dir, pose, tmp_path)
    got = decode_rgba(page.page.evaluate("(p) => window.tha.render(p)", pose.tolist()))
    parity = rgba_parity("web", got, want, fp16=False)
    assert parity.ok, parity.line()  # within +-1 on >= 99.9% of pixels, transparent ones left out
    assert np.abs(got[..., 3].astype(int) - want[..., 3]).max() <= 1

    assert page.errors == [], page.errors
    assert page.off_origin() == [], page.off_origin()
    report_fps(capsys, page, "idle animator")


@pytest.mark.slow
def test_webgpu_adapter_runs_the_fp32_graph(playwright, tmp_path, capsys):
    """With an adapter the page runs on WebGPU: here Chromium's SwiftShader (Vulkan on the CPU,
    minutes a frame on 2 cores), which has no shader-f16, so the fp32 graph. To keep that to a
    few minutes it is the demo character's page (the same graph, narrower networks than
    lambda_00's), and its first frame (the sliders' neutral pose) is the one checked. WebGPU
    shader arithmetic is not bit-exact fp32 (measured against `tha pose`: 53.3 dB, 99.99% of
    pixels within one level; lambda_00's page, 50.5 dB and 99.0%), so it is held to the fp16
    bound. 65 s on a quiet 2-core Xeon, against 551 s for lambda_00's first frame."""
    with serving(export_site(DEMO, tmp_path / "site")) as origin:
        page = Page(playwright, origin, tmp_path, CPU_WEBGPU, query="?source=sliders", start_s=900)
        try:
            state = page.state()
            assert state["backend"] == "WebGPU (fp32)" and state["source"] == "sliders"
            drawn = page.page.evaluate("() => window.tha.lastFrame()")
            assert page.errors == [], page.errors
            assert page.off_origin() == [], page.off_origin()
        finally:
            page.close()
    parity = rgba_parity("webgpu", decode_rgba(drawn["rgba"]),
                         tha_pose(DEMO, np.array(drawn["pose"], np.float32), tmp_path), fp16=True)
    with capsys.disabled():
        print(f"\nWebGPU (SwiftShader) against tha pose: {parity.line()}")
    assert parity.ok, parity.line()


@pytest.mark.slow
def test_sliders_change_the_image(page):
    page.page.evaluate("(p) => window.tha.setPose(p)", [0.0] * 45)
    page.shows("(pose) => pose.every((v) => v === 0)")
    before = page.canvas()
    frames = page.state()["frames"]
    page.page.locator('input[data-name="head_y"]').fill("0.8")
    page.shows(f"(pose) => Math.abs(pose[{index_of('head_y')}] - 0.8) < 1e-6")
    time.sleep(1.0)
    assert page.state()["frames"] == frames + 1  # a still pose is drawn once, not every frame
    state = page.state()
    assert state["source"] == "sliders"
    assert state["pose"][index_of("head_y")] == pytest.approx(0.8)
    after = page.canvas()
    changed = np.any(after != before, axis=-1).mean()
    assert changed > 0.01, f"only {changed:.2%} of pixels changed"
    assert page.errors == [], page.errors


@pytest.mark.slow
def test_refused_camera_gives_one_clear_message(page):
    page.page.select_option("#source", "webcam")
    message = page.page.locator("#message")
    message.wait_for(state="visible", timeout=30_000)
    assert "Camera permission was refused" in message.inner_text()
    assert page.state()["source"] == "animator"


@pytest.mark.slow
def test_camera_without_a_face_says_so(playwright, origin, tmp_path):
    """Chromium's fake camera (its default pattern, no face): the camera opens, so the page must
    say that it finds no face rather than idle silently while the select says webcam."""
    page = Page(playwright, origin, tmp_path, camera=True,
                extra_flags=NO_WEBGPU + ("--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"))
    try:
        page.page.select_option("#source", "webcam")
        message = page.page.locator("#message")
        message.wait_for(state="visible", timeout=PAGE_START_S * 1000)  # FaceMesh loads first
        assert "No face found in the camera" in message.inner_text()
        state = page.state()
        assert "No face found" in state["message"]
        assert state["source"] == "webcam" and state["tracked"] is None
        page.page.select_option("#source", "animator")  # the message is about the webcam only
        message.wait_for(state="hidden", timeout=10_000)
        assert page.state()["message"] == ""
        assert page.errors == [], page.errors
    finally:
        page.close()


@pytest.mark.slow
def test_fps_counts_frame_time_not_idle_time(playwright, tmp_path):
    """With the sliders a still pose is drawn once: the seconds waiting for the next pose, and the
    first frame's warm-up, must not drag the fps readout down. Two posed frames with an idle gap
    between them: a readout whose window held the gap counts at most those two frames over more
    than the gap, under 2 / idle_s. The gap is six times the first posed frame's wall-clock time
    (at least 5 s), so the true rate, one frame over its own time, reads above that bound unless
    the second frame takes three times as long as the first: no speed is assumed. The readout
    does not depend on the model, so this is the demo character's page (narrower networks): a
    shorter test, and frames more often under the second after which a window closes by itself."""
    with serving(export_site(DEMO, tmp_path / "site")) as origin:
        page = Page(playwright, origin, tmp_path, query="?source=sliders")
        try:
            assert page.state()["fps"] == 0  # one warm-up frame: no rate yet
            first, second = [0.0] * 45, [0.0] * 45
            first[index_of("head_y")], second[index_of("head_y")] = -0.5, 0.5
            began = time.monotonic()
            page.page.evaluate("(p) => window.tha.setPose(p)", first)
            page.shows(f"(pose) => Math.abs(pose[{index_of('head_y')}] + 0.5) < 1e-6")
            frame_s = time.monotonic() - began  # the first posed frame, and the wait's own overhead
            idle_s = max(5.0, 6 * frame_s)
            time.sleep(idle_s)
            page.page.evaluate("(p) => window.tha.setPose(p)", second)
            page.shows(f"(pose) => Math.abs(pose[{index_of('head_y')}] - 0.5) < 1e-6")
            page.page.wait_for_function("() => window.tha.state().fps > 0", timeout=60_000)
            # the rate and its text in one task: a frame's rate may be published between two reads
            fps, text = page.page.evaluate("() => [window.tha.state().fps, document.getElementById('fps').textContent]")
            assert fps > 2 / idle_s, f"fps {fps:.3f}: idle time counted (first frame {frame_s:.1f} s, idle {idle_s:.1f} s)"
            assert text == f"{fps:.1f} fps"
            assert page.errors == [], page.errors
        finally:
            page.close()


def _facemesh_landmarks(rgb: np.ndarray) -> np.ndarray:
    import mediapipe as mp

    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=True) as mesh:
        found = mesh.process(np.ascontiguousarray(rgb)).multi_face_landmarks
    assert found, "MediaPipe found no face"
    return np.array([(m.x, m.y, m.z) for m in found[0].landmark], dtype=np.float64)


def _astronaut(roll_degrees: float) -> np.ndarray:
    from skimage import data
    from skimage.transform import rotate

    image = data.astronaut()
    if roll_degrees:
        image = (rotate(image, roll_degrees, mode="edge") * 255).round().astype(np.uint8)
    return image


@pytest.mark.slow
def test_page_converts_and_smooths_landmarks_exactly_as_python(page):
    """One definition: the page's FaceMesh -> ARKit -> pose conversion and its One Euro
    smoothing equal Python's, frame by frame, on real FaceMesh landmarks."""
    from tha.runtime.sources.arkit import ArkitConverter
    from tha.runtime.sources.webcam import face_state_from_landmarks

    upright, rolled = (_facemesh_landmarks(_astronaut(r)) for r in (0.0, 20.0))
    frames = [(upright, None), (rolled, None), (upright, 0.0), (rolled, 0.05), (rolled, 0.1), (upright, 0.3)]
    converter = ArkitConverter()  # smoothing state carries over frame to frame, as in the page
    want = [converter.raw_pose(face_state_from_landmarks(lm, 512, 512)) if t is None
            else converter.convert(face_state_from_landmarks(lm, 512, 512), t) for lm, t in frames]
    got = page.page.evaluate("([f, w, h]) => window.tha.posesFromLandmarks(f, w, h)",
                             [[[lm.tolist(), t] for lm, t in frames], 512, 512])
    np.testing.assert_allclose(np.array(got), np.array(want), atol=1e-5)
    neck = index_of("neck_z")
    assert abs(want[1][neck] - want[0][neck]) > 0.3  # the rolled face really moves the neck
    assert 0 < abs(want[3][neck] - want[2][neck]) < abs(want[1][neck] - want[0][neck])  # and is smoothed


def write_y4m(path: Path, frames: list[np.ndarray], fps: int) -> None:
    """RGB frames -> YUV4MPEG2 4:2:0 (full-range BT.601), what Chromium's fake camera plays."""
    h, w = frames[0].shape[:2]
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for rgb in frames:
            r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
            y = 0.299 * r + 0.587 * g + 0.114 * b
            u = 128 - 0.168736 * r - 0.331264 * g + 0.5 * b
            v = 128 + 0.5 * r - 0.418688 * g - 0.081312 * b
            sub = lambda c: c.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))  # noqa: E731
            f.write(b"FRAME\n")
            for plane in (y, sub(u), sub(v)):
                f.write(np.clip(plane.round(), 0, 255).astype(np.uint8).tobytes())


@pytest.mark.slow
def test_webcam_head_roll_rolls_the_character(playwright, origin, tmp_path, capsys):
    """Chromium's fake camera plays the astronaut upright, then rolled 25 degrees, in a loop;
    the tracked pose's neck_z must swing with it, the way Python's tracker reads those frames."""
    from tha.runtime.sources.arkit import ArkitConverter
    from tha.runtime.sources.webcam import face_state_from_landmarks

    upright, rolled = _astronaut(0.0), _astronaut(25.0)
    write_y4m(tmp_path / "astronaut.y4m", [upright] * 15 + [rolled] * 15, fps=10)
    expected = [ArkitConverter().raw_pose(face_state_from_landmarks(_facemesh_landmarks(x), 512, 512))[index_of("neck_z")]
                for x in (upright, rolled)]
    page = Page(playwright, origin, tmp_path, camera=True,
                extra_flags=NO_WEBGPU + ("--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                             f"--use-file-for-fake-video-capture={tmp_path / 'astronaut.y4m'}"))
    try:
        page.page.select_option("#source", "webcam")
        page.page.wait_for_function("() => window.tha.state().tracked !== null", timeout=PAGE_START_S * 1000)
        # Sample until both phases of the 3 s loop were tracked (or a minute passed): on a loaded
        # CPU FaceMesh can take seconds a frame and see one phase for a while.
        neck = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not rolls_like(neck, expected):
            neck.append(page.state()["tracked"][index_of("neck_z")])
            time.sleep(0.1)
        frames = page.state()["frames"]
        page.frames_after(frames + 1)  # the character is drawn from the tracked pose
        assert page.state()["source"] == "webcam"
        assert page.state()["message"] == "" and page.page.locator("#message").is_hidden()  # a face: no warning
        assert page.errors == [], page.errors
        assert page.off_origin() == [], page.off_origin()
        report_fps(capsys, page, "webcam")
    finally:
        page.close()
    assert abs(expected[1] - expected[0]) > 0.5
    swing = max(neck) - min(neck)
    assert swing > 0.5, f"neck_z only moved {swing:.2f} while the video rolled the head 25 degrees"
    assert rolls_like(neck, expected), (neck, expected)


def rolls_like(neck: list[float], expected: list[float]) -> bool:
    """The tracked neck_z swung by more than 0.5 and reached the rolled frame's value (+-0.25)."""
    if not neck or max(neck) - min(neck) <= 0.5:
        return False
    extreme = max(neck) if expected[1] > expected[0] else min(neck)
    return abs(extreme - expected[1]) < 0.25


def test_shared_definition_comes_from_python(site):
    """tha.json is generated from Python's data: the pose layout, emotions and puppet settings."""
    from tha.models.pose import POSE_PARAMETERS
    from tha.runtime.emotions import load_emotions
    from tha.runtime.sources.arkit import ConverterSettings
    from tha.runtime.sources.filters import OneEuroSettings

    shared = json.loads((site / "tha.json").read_text())
    assert [p["name"] for p in shared["pose"]] == [p.name for p in POSE_PARAMETERS]
    assert sorted(n for panel in shared["panels"] for g in panel["groups"] for n in g["parameters"]) \
        == sorted(p.name for p in POSE_PARAMETERS)
    assert shared["emotions"]["joy"] == pytest.approx(load_emotions()["joy"].tolist())
    assert shared["converter"]["head_range"] == list(ConverterSettings().head_range)
    assert shared["one_euro"] == {"min_cutoff": OneEuroSettings().min_cutoff, "beta": OneEuroSettings().beta,
                                  "derivative_cutoff": OneEuroSettings().derivative_cutoff}
    for name in ("index.html", "app.js", "puppet.js", "vendor/ort/ort.webgpu.min.mjs",
                 "vendor/ort/ort-wasm-simd-threaded.jsep.wasm", "vendor/face_mesh/face_mesh_solution_packed_assets.data"):
        assert (site / name).is_file(), name
