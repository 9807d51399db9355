"""Atomic file writes: a crash or kill never leaves a half-written file where a good one was.
Outputs get the mode a plain ``open()`` would give them (0666 less the umask), and a path that
cannot be written is one ThaError line, found before any work is done."""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

from tha.models.errors import ThaError


def umask() -> int:
    """The process umask, read without changing it where Linux tells it (/proc), else swapped
    and put back (briefly wrong only for files other threads create in that instant)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def set_umask_mode(path: str | Path) -> None:
    """The mode a plain ``open()`` gives, for files made by mkstemp (0600) or by other libraries."""
    os.chmod(path, 0o666 & ~umask())


def check_output_path(path: str | Path, what: str = "output") -> Path:
    """Refuse, before any work, an output that is a directory, lies under a file, or sits in a
    directory this user cannot write."""
    path = Path(path)
    if path.is_dir():
        raise ThaError(f"{what} {path} is a directory; give a file name, e.g. {path / 'out.png'}")
    _probe(_existing_ancestor(path, what), what, path)
    return path


def check_not_input(path: str | Path, inputs: Iterable[str | Path], what: str) -> None:
    """Refuse an output that is one of the command's own inputs (the model's image, the audio
    being lip-synced, the -o of another output): writing it would destroy what is read."""
    path = Path(path)
    for source in (Path(i) for i in inputs):
        same = path.resolve() == source.resolve() or (path.exists() and source.exists() and path.samefile(source))
        if same:
            raise ThaError(f"{what} {path} is also this command's input {source}: writing it would replace it; "
                           "give another name")


def check_suffixed_output(path: str | Path, what: str, suffix: str, kind: str) -> Path:
    """``check_output_path`` for a file written as ``kind`` (e.g. "a PNG"): a name without
    ``suffix``, or with another, misleads every viewer and program that opens it, so it is
    refused; /dev/null and FIFOs are written through, so their names are theirs."""
    path = check_output_path(path, what)
    if path.suffix.lower() != suffix and not writes_through(path):
        raise ThaError(f"{what} {path}: it is written as {kind}; give a {suffix} name, "
                       f"e.g. {path.with_suffix(suffix) if path.suffix else path.with_name(path.name + suffix)}")
    return path


def check_png_output(path: str | Path, what: str) -> Path:
    """``check_suffixed_output`` for a PNG."""
    return check_suffixed_output(path, what, ".png", "a PNG")


def _existing_ancestor(path: Path, what: str) -> Path:
    """The nearest existing folder above ``path`` (refused when it is a file)."""
    ancestor = path.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ThaError(f"{what} {path} lies under {ancestor}, which is a file; choose another path")
    return ancestor


def _probe(directory: Path, what: str, path: Path) -> None:
    """Create and remove a file in ``directory``: permissions, read-only mounts and root all
    answer the same way (os.access says yes to root even where nothing can be written)."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".tha-probe.", dir=directory)
    except OSError as err:
        raise ThaError(f"{what} {path}: cannot write in {directory}, it is not writable ({err.strerror}); "
                       "choose another path") from None
    os.close(fd)
    os.unlink(probe)


def check_output_dir(path: str | Path, what: str = "output directory") -> Path:
    """As ``check_output_path`` for a directory to be (re)created."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ThaError(f"{what} {path} is a file; give a directory")
    _probe(_existing_ancestor(path, what), what, path)
    return path


def check_replaceable_dir(path: Path, marker: str, what: str, kind: str) -> Path:
    """As ``check_output_dir`` for a folder to be replaced whole: refused when it holds files but
    not ``marker`` (then it is the user's folder, not ``kind`` we wrote)."""
    check_output_dir(path, what)
    if path.is_dir() and any(path.iterdir()) and not (path / marker).is_file():
        raise ThaError(f"{what} {path} is a folder that is not {kind} (no {marker}); give a new or "
                       "empty folder, so nothing in it is replaced")
    return path


def _make_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ThaError(f"cannot write {path}: a file is in the way of its folder; choose another path") from None
    except OSError as err:
        raise ThaError(f"cannot create the folder of {path} ({err.strerror}); choose another path") from None


def temporary_beside(path: Path) -> Path:
    """An empty hidden file in ``path``'s folder (made if missing), to be renamed over ``path``."""
    _make_parent(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise ThaError(f"cannot write in {path.parent} ({err.strerror}); choose another path") from None
    os.close(fd)
    return Path(tmp)


def put_in_place(tmp: Path, path: Path) -> None:
    """``tmp``, synced to disk and given a plain ``open()``'s mode, replaces ``path`` in one rename."""
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    set_umask_mode(tmp)
    os.replace(tmp, path)


def writes_through(path: Path) -> bool:
    """/dev/null, a FIFO: written to directly, never replaced."""
    return path.exists() and not path.is_file()


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename."""
    path = check_output_path(path)
    if writes_through(path):
        yield path
        return
    tmp_path = temporary_beside(path)
    try:
        yield tmp_path
        put_in_place(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def temporary_directory_beside(path: Path) -> Path:
    """An empty hidden directory in ``path``'s folder (made if missing), to take ``path``'s place."""
    _make_parent(path)
    try:
        return Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    except OSError as err:
        raise ThaError(f"cannot write in {path.parent} ({err.strerror}); choose another path") from None


def put_directory_in_place(tmp: Path, path: Path) -> None:
    """``tmp``, given a plain ``mkdir``'s mode, takes ``path``'s place (an old ``path`` is moved
    aside, then removed), so readers see the old or the new whole."""
    os.chmod(tmp, 0o777 & ~umask())  # mkdtemp makes 0700
    old = None
    if path.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
        os.replace(path, old / path.name)
    os.replace(tmp, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary directory beside ``path``; on success it takes ``path``'s place."""
    path = check_output_dir(path)
    tmp = temporary_directory_beside(path)
    try:
        yield tmp
        put_directory_in_place(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def read_json(path: str | Path, what: str):
    """Parse a JSON file within the limits (tha.models.limits); a missing, oversized or
    malformed file is one ThaError line naming ``what``."""
    from tha.models.limits import MAX_JSON_BYTES, parse_json

    path = Path(path)
    try:
        if path.stat().st_size > MAX_JSON_BYTES:
            raise ThaError(f"{what} {path} is {path.stat().st_size:,} bytes, over the limit of {MAX_JSON_BYTES:,}")
        data = path.read_bytes()
    except FileNotFoundError:
        raise ThaError(f"{what} {path} does not exist") from None
    except OSError as err:
        raise ThaError(f"{what} {path} cannot be read ({err.strerror})") from None
    return parse_json(data, f"{what} {path}")
