"""`tha models fetch`'s downloader: real HTTP from a loopback mirror, with a tiny model whose
hashes the test registers, so every path (fresh, cached, tampered, offline) runs in seconds."""
from __future__ import annotations

import functools
import hashlib
import http.server
import threading

import pytest

from tha.models import hub
from tha.models.errors import ThaError

FILES = {"character_model.yaml": b"face_morpher: face_morpher.pt\n", "face_morpher.pt": b"\x00weights" * 1000}


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """An HTTP server laid out like upstream's data/character_models, serving model 'tiny'."""
    root = tmp_path / "mirror"
    (root / "tiny").mkdir(parents=True)
    for name, data in FILES.items():
        (root / "tiny" / name).write_bytes(data)
    monkeypatch.setitem(hub.MODELS, "tiny", {n: hashlib.sha256(d).hexdigest() for n, d in FILES.items()})
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_fetch_downloads_verifies_and_then_uses_the_cache(mirror, tmp_path):
    root, url = mirror
    fetched: list[tuple[str, int]] = []
    target = hub.fetch_model("tiny", tmp_path / "cache", url, progress=lambda f, n: fetched.append((f, n)))
    assert target == tmp_path / "cache" / "tiny"
    assert {p.name: p.read_bytes() for p in target.iterdir()} == FILES
    assert fetched == [(n, len(d)) for n, d in FILES.items()]
    from tha.models.files import umask  # pooch's temporary files are 0600; ours follow the umask
    assert {p.stat().st_mode & 0o777 for p in target.iterdir()} == {0o666 & ~umask()}
    fetched.clear()
    (root / "tiny" / "face_morpher.pt").unlink()  # intact cached files are not asked for again
    assert hub.fetch_model("tiny", tmp_path / "cache", url, progress=lambda f, n: fetched.append((f, n))) == target
    assert fetched == []


def test_a_tampered_download_is_refused_and_not_cached(mirror, tmp_path):
    root, url = mirror
    hub.fetch_model("tiny", tmp_path / "cache", url)
    cached = tmp_path / "cache" / "tiny" / "face_morpher.pt"
    cached.unlink()
    (root / "tiny" / "face_morpher.pt").write_bytes(b"tampered")
    fetched: list[str] = []
    with pytest.raises(ThaError, match="did not match its known checksum") as err:
        hub.fetch_model("tiny", tmp_path / "cache", url, progress=lambda f, n: fetched.append(f))
    assert "\n" not in str(err.value) and fetched == []
    assert sorted(p.name for p in cached.parent.iterdir()) == ["character_model.yaml"]  # no temp file either


def test_a_corrupted_cached_file_is_downloaded_again(mirror, tmp_path):
    _, url = mirror
    target = hub.fetch_model("tiny", tmp_path / "cache", url)
    (target / "face_morpher.pt").write_bytes(b"bit rot")
    fetched: list[str] = []
    hub.fetch_model("tiny", tmp_path / "cache", url, progress=lambda f, n: fetched.append(f))
    assert fetched == ["face_morpher.pt"] and (target / "face_morpher.pt").read_bytes() == FILES["face_morpher.pt"]


@pytest.mark.parametrize("where", ["a closed port", "mirror/without/the/model"])
def test_unreachable_or_missing_files_say_where_to_put_them(mirror, tmp_path, where):
    from tha.runtime.feed_bench import free_port

    _, url = mirror
    # a port bound a moment ago, then closed: nothing listens there
    base = f"http://127.0.0.1:{free_port()}" if where == "a closed port" else f"{url}/{where}"
    with pytest.raises(ThaError, match="cannot download") as err:
        hub.fetch_model("tiny", tmp_path / "cache", base, timeout=5)
    message = str(err.value)
    assert "\n" not in message and "by hand" in message and str(tmp_path / "cache" / "tiny") in message


def test_unknown_names_list_the_known_ones():
    with pytest.raises(ThaError, match="unknown model 'lambda_99'; available: lambda_00, lambda_01"):
        hub.fetch_model("lambda_99")


def test_cache_dir_follows_tha_home_then_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("THA_HOME", raising=False)
    assert hub.cache_dir() == tmp_path / "xdg" / "tha" / "models"
    monkeypatch.setenv("THA_HOME", str(tmp_path / "home"))
    assert hub.cache_dir() == tmp_path / "home" / "models"
    assert hub.resolve_model(tmp_path) == tmp_path  # a directory is taken as it is
    with pytest.raises(ThaError, match="tha models fetch lambda_00"):
        hub.resolve_model("lambda_00")
    (tmp_path / "home" / "models" / "lambda_00").mkdir(parents=True)
    for name in hub.MODELS["lambda_00"]:
        (tmp_path / "home" / "models" / "lambda_00" / name).write_text("x")
    assert hub.resolve_model("lambda_00") == tmp_path / "home" / "models" / "lambda_00"


def test_an_unwritable_cache_is_one_line(mirror, tmp_path, monkeypatch):
    _, url = mirror
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(ThaError, match="cannot write the model cache .*Not a directory") as err:
        hub.fetch_model("tiny", tmp_path / "a_file", url)
    assert "\n" not in str(err.value)
    # A folder this user may not write (as root, only simulated): pooch words it as "will not be
    # able to download data files", which read as the mirror's failure; the cause is named instead.
    import pooch.utils

    def denied(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(pooch.utils.os, "makedirs", denied)
    with pytest.raises(ThaError) as err:
        hub.fetch_model("tiny", tmp_path / "cache", url)
    monkeypatch.undo()
    message = str(err.value)
    assert message == (f"cannot write the model cache {tmp_path / 'cache' / 'tiny'} (Permission denied: "
                       f"{tmp_path / 'cache' / 'tiny'}); pass a writable --cache-dir"), message


@pytest.mark.parametrize("as_url", [True, False])
def test_a_local_folder_mirror_is_copied_and_verified(mirror, tmp_path, as_url):
    """An offline mirror on disk (a file:// URL or a plain folder): copied, hash-checked, cached;
    a tampered copy is refused and a missing file names what the folder must hold."""
    root, _ = mirror
    base = root.as_uri() if as_url else str(root)
    target = hub.fetch_model("tiny", tmp_path / "cache", base)
    assert {p.name: p.read_bytes() for p in target.iterdir()} == FILES
    (root / "tiny" / "face_morpher.pt").write_bytes(b"tampered")
    (target / "face_morpher.pt").unlink()
    with pytest.raises(ThaError, match="checksum"):
        hub.fetch_model("tiny", tmp_path / "cache", base)
    assert not (target / "face_morpher.pt").exists()
    (root / "tiny" / "face_morpher.pt").unlink()
    with pytest.raises(ThaError, match="the mirror has no .*face_morpher.pt; point --base-url at a folder"):
        hub.fetch_model("tiny", tmp_path / "cache", base)


def test_bench_and_export_take_a_fetched_models_name(tmp_path):
    """`tha bench lambda_00` (the README's own example) and `tha export lambda_00` said the
    fetched model did not exist; view, render and pose already took the name."""
    import shutil
    from pathlib import Path

    from cli import assert_one_line_error, tha

    home = tmp_path / "home"
    # the small demo student stands in for a fetched model: only the name's lookup is under test
    shutil.copytree(Path(__file__).resolve().parents[1] / "configs" / "demo", home / "models" / "lambda_00")
    env = {"THA_HOME": str(home)}
    bench = tha("bench", "lambda_00", "--backends", "fastcpu", "--frames", "1", "--warmup", "0",
                "--chart", tmp_path / "b.png", env=env)
    assert bench.returncode == 0 and (tmp_path / "b.png").is_file(), bench.stderr
    exported = tha("export", "lambda_00", "--onnx", "-o", tmp_path / "export", "--verify-poses", "1", env=env)
    assert exported.returncode == 0 and (tmp_path / "export" / "student.onnx").is_file(), exported.stderr
    # the chart's path is checked before the timing, not after it
    started = tha("bench", "lambda_00", "--backends", "fastcpu", "--frames", "1", "--chart", tmp_path, env=env)
    assert_one_line_error(started, "is a directory")
    assert "ms/frame" not in started.stdout


def test_an_unreadable_mirror_file_is_blamed_on_the_mirror(mirror, tmp_path):
    """A file:// mirror's file that cannot be read (here a folder in its place) was reported as
    a cache that cannot be written ("pass a writable --cache-dir"); it names the mirror now."""
    root, _ = mirror
    (root / "tiny" / "face_morpher.pt").unlink()
    (root / "tiny" / "face_morpher.pt").mkdir()
    with pytest.raises(ThaError) as err:
        hub.fetch_model("tiny", tmp_path / "cache", str(root))
    message = str(err.value)
    assert message.startswith(f"cannot read {root / 'tiny' / 'face_morpher.pt'} in the mirror (Is a directory)")
    assert "--cache-dir" not in message and "\n" not in message
    assert sorted(p.name for p in (tmp_path / "cache" / "tiny").iterdir()) == ["character_model.yaml"]


def test_a_partly_downloaded_model_is_listed_and_refused_as_such(tmp_path):
    """`tha models list` called a model downloaded when only its first file was there (a fetch
    stopped part way); it says what is missing, and the name is refused until it is whole."""
    from cli import assert_one_line_error, tha

    home = tmp_path / "home"
    (home / "models" / "lambda_00").mkdir(parents=True)
    (home / "models" / "lambda_00" / "character_model.yaml").write_text("x")
    env = {"THA_HOME": str(home)}
    listed = tha("models", "list", env=env)
    assert listed.returncode == 0, listed.stderr
    lines = dict(line.split("\t")[:2] for line in listed.stdout.splitlines())
    assert lines == {"lambda_00": "partly downloaded (missing character.png, face_morpher.pt, body_morpher.pt)",
                     "lambda_01": "not downloaded"}
    assert_one_line_error(tha("pose", "lambda_00", "-o", tmp_path / "x.png", env=env),
                          "model 'lambda_00' is partly downloaded (missing", "tha models fetch lambda_00")


def test_a_bad_copy_in_a_local_mirror_is_named_not_retried(mirror, tmp_path):
    """A tampered file in a local mirror said "run the command again", which cannot help."""
    root, url = mirror
    (root / "tiny" / "face_morpher.pt").write_bytes(b"tampered")
    with pytest.raises(ThaError) as err:
        hub.fetch_model("tiny", tmp_path / "cache", str(root))
    message = str(err.value)
    assert f"the mirror's {root / 'tiny' / 'face_morpher.pt'} did not match its known checksum" in message
    assert "run the command again" not in message and "replace it with upstream's" in message
    with pytest.raises(ThaError, match=f"{url}/tiny/face_morpher.pt did not match.*pass another --base-url"):
        hub.fetch_model("tiny", tmp_path / "cache2", url)


def test_models_list_takes_cache_dir_and_refuses_a_cache_that_is_a_file(tmp_path):
    """`list` had no --cache-dir (fetch has one), and THA_HOME naming a file listed "not downloaded"."""
    from cli import assert_one_line_error, tha

    (tmp_path / "cache" / "lambda_01").mkdir(parents=True)
    for name in hub.MODELS["lambda_01"]:
        (tmp_path / "cache" / "lambda_01" / name).write_text("x")
    listed = tha("models", "list", "--cache-dir", tmp_path / "cache")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines() == [f"lambda_00\tnot downloaded\t{tmp_path / 'cache' / 'lambda_00'}",
                                          f"lambda_01\tdownloaded\t{tmp_path / 'cache' / 'lambda_01'}"]
    (tmp_path / "file").write_text("x")
    assert_one_line_error(tha("models", "list", env={"THA_HOME": str(tmp_path / "file")}),
                          f"model cache {tmp_path / 'file' / 'models'} lies under {tmp_path / 'file'}, which is a file",
                          "--cache-dir", code=2)
    assert_one_line_error(tha("models", "list", "--cache-dir", tmp_path / "file"), "model cache", "is a file", code=2)
