"""Upstream's public student models, downloaded once into a cache directory and verified.

pooch does the download and the check: a file already cached and intact is not fetched again,
and a download that does not match its known hash is deleted, never left in the cache. A mirror
is an HTTP(S) URL, a ``file://`` URL or a local directory, laid out as upstream's
``data/character_models``.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable
from urllib.parse import unquote, urlparse

import pooch
import requests  # pooch's HTTP downloader is requests: its errors are the network failures

from tha.models.errors import ThaError
from tha.models.files import set_umask_mode

UPSTREAM_URL = "https://raw.githubusercontent.com/pkhungurn/talking-head-anime-4-demo/main/data/character_models"

# sha256 of every file upstream ships, so a truncated or altered download is caught.
MODELS: dict[str, dict[str, str]] = {
    "lambda_00": {
        "character_model.yaml": "a2dfad8d59e353931dc2f8333723385ec1710999ef0655490db7d462d20decb2",
        "character.png": "e4a594c801d3d586365b5cc0986dc5abc98dac98cced2517cc40cddafcc92abc",
        "face_morpher.pt": "9c8914a7ab6c3a155785994ed82dc82ca49c6d91eb2f92c35ef806b6bb21b4c5",
        "body_morpher.pt": "f9d06d0bd8b0344a0642e4e80bc81a6f227921f6724fd580904821dad7666a80",
    },
    "lambda_01": {
        "character_model.yaml": "a2dfad8d59e353931dc2f8333723385ec1710999ef0655490db7d462d20decb2",
        "character.png": "31c905d9ceb4cd94b900593c1962c17d9633ef1c87b3b119b33d364d65949876",
        "face_morpher.pt": "40f1430ed079c94fd1504438a0d77131f79a6d34996c63b0c5ee396f48b8354a",
        "body_morpher.pt": "45b863d93d9cbf87c7702c0b17dd1b8692888ec17508762d1fecc8d57a2d5cdc",
    },
}


def cache_dir() -> Path:
    """``$THA_HOME/models``, else ``$XDG_CACHE_HOME/tha/models``, else ``~/.cache/tha/models``."""
    if "THA_HOME" in os.environ:
        return Path(os.environ["THA_HOME"]) / "models"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tha" / "models"


class _MirrorUnreadable(Exception):
    """A file:// mirror's file could not be opened; kept apart from the OSErrors of writing the
    cache, so each is reported as what it is."""


class _Downloader:
    """pooch's HTTP downloader, or a copy for a file:// mirror (pooch has none), remembering
    whether pooch needed it (an intact file it skips)."""

    def __init__(self, timeout: float):
        self.http = pooch.HTTPDownloader(progressbar=False, timeout=timeout)
        self.ran = False

    def __call__(self, url: str, output_file, pooch_instance) -> None:
        self.ran = True
        if url.startswith("file://"):
            try:
                source = open(unquote(urlparse(url).path), "rb")
            except OSError as err:
                raise _MirrorUnreadable(err) from None
            with source, open(output_file, "wb") as out:
                shutil.copyfileobj(source, out)
        else:
            self.http(url, output_file, pooch_instance)


def _mirror_url(base_url: str) -> str:
    """A mirror's base URL; a local directory becomes its file:// URL."""
    if "://" in base_url:
        return base_url.rstrip("/")
    return Path(base_url).expanduser().resolve().as_uri()


def fetch_model(name: str, target_root: Path | None = None, base_url: str | None = None,
                timeout: float = 30.0, progress: Callable[[str, int], None] | None = None) -> Path:
    """Download model ``name`` (skipping files already present and intact); return its dir.
    ``progress(file_name, size)`` is called for each file downloaded."""
    if name not in MODELS:
        raise ThaError(f"unknown model '{name}'; available: {', '.join(MODELS)}")
    target = (target_root or cache_dir()) / name
    base_url = _mirror_url(base_url or os.environ.get("THA_MODELS_URL") or UPSTREAM_URL)
    pooch.get_logger().setLevel("WARNING")  # its per-file INFO lines would repeat `progress`
    for file_name, digest in MODELS[name].items():
        url = f"{base_url}/{name}/{file_name}"
        download = _Downloader(timeout)
        try:
            path = pooch.retrieve(url, known_hash=f"sha256:{digest}", fname=file_name, path=target,
                                  downloader=download)
        except requests.RequestException as err:
            raise ThaError(f"cannot download {url} ({_reason(err)}); offline, pass --base-url FOLDER holding a copy of "
                           f"upstream's data/character_models/, or copy {', '.join(MODELS[name])} into {target}/ "
                           "by hand") from None
        except _MirrorUnreadable as err:
            raise ThaError(_mirror_problem(err.args[0], name, unquote(urlparse(url).path))) from None
        except ValueError:  # pooch's hash mismatch; it has deleted the download
            raise ThaError(_mismatch(url)) from None
        except OSError as err:  # the mirror's errors are caught above: this one is the cache's
            raise ThaError(f"cannot write the model cache {target} ({_cache_problem(err)}); "
                           "pass a writable --cache-dir") from None
        if download.ran:
            set_umask_mode(path)  # pooch keeps its temporary file's 0600
            if progress:
                progress(file_name, Path(path).stat().st_size)
    return target


def _mismatch(url: str) -> str:
    """A download that failed its sha256: a local mirror's copy is wrong, so running again
    cannot help; a network download may have been cut off, or the server's copy is wrong."""
    if url.startswith("file://"):
        return (f"the mirror's {unquote(urlparse(url).path)} did not match its known checksum: it is not "
                "upstream's file; replace it with upstream's, or point --base-url at another mirror")
    return (f"{url} did not match its known checksum (truncated or changed download); run the command "
            "again, and if it fails the same way that server's copy is wrong: pass another --base-url")


def check_cache_root(root: Path) -> Path:
    """A model cache that is, or lies under, a file (THA_HOME pointing at one) is refused, not
    listed as empty (fetch finds it when it writes: "cannot write the model cache")."""
    existing = next(p for p in (root, *root.parents) if p.exists())
    if not existing.is_dir():
        where = "is a file" if existing == root else f"lies under {existing}, which is a file"
        raise ThaError(f"model cache {root} {where}; point --cache-dir (or THA_HOME) at a folder")
    return root


def _mirror_problem(err: OSError, name: str, source: str) -> str:
    if isinstance(err, FileNotFoundError):
        return (f"the mirror has no {source}; point --base-url at a folder holding {name}/ with "
                f"{', '.join(MODELS[name])}")
    return f"cannot read {source} in the mirror ({err.strerror}); fix the mirror or point --base-url at another"


def _cache_problem(err: OSError) -> str:
    """The OS's reason and path; pooch wraps a PermissionError in its own words ("Will not be
    able to download data files"), which would read as a download failure."""
    cause = err.__cause__ if isinstance(err.__cause__, OSError) else err
    if cause.strerror is None:
        return str(cause).splitlines()[0]
    return f"{cause.strerror}: {cause.filename}" if cause.filename else cause.strerror


def _reason(err: requests.RequestException) -> str:
    """The cause without requests' wrapping (urllib3's retry error around the refused connection)."""
    cause = getattr(err.args[0], "reason", None) if err.args else None
    return str(cause or err).splitlines()[0]


def download_state(name: str, root: Path | None = None) -> str:
    """'downloaded', 'not downloaded' or 'partly downloaded (missing …)' in ``root`` (default:
    ``cache_dir()``), for a fetch stopped between files (pooch puts each file in place only
    whole and verified)."""
    directory = (root or cache_dir()) / name
    missing = [f for f in MODELS[name] if not (directory / f).is_file()]
    if not missing:
        return "downloaded"
    if len(missing) == len(MODELS[name]):
        return "not downloaded"
    return f"partly downloaded (missing {', '.join(missing)})"


def resolve_model(name_or_dir: str | Path) -> Path:
    """A model directory as given, or a cached model's directory by name."""
    path = Path(name_or_dir)
    if path.exists() or str(name_or_dir) not in MODELS:
        return path
    state = download_state(str(name_or_dir))
    if state != "downloaded":
        raise ThaError(f"model '{name_or_dir}' is {state}; run `tha models fetch {name_or_dir}`")
    return cache_dir() / str(name_or_dir)
