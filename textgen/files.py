"""Writing files and folders all or nothing: what textgen writes never appears half-written,
and nothing textgen did not create is replaced.

A file is written beside its destination under a temporary name, flushed to disk and renamed
over the destination, so a crash or Ctrl-C leaves either the old file or the new one, never a
half-written mix; a failure becomes a TextgenError naming the destination (never the temporary
name), and the temporary file is removed. A file that must be new (`create_file`) is hard-linked
into place, which fails rather than replace one; a new folder (`publish_directory`) is filled
under a temporary name and renamed. Model files build on these in textgen.saving.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from textgen.errors import TextgenError, UsageError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def publish_file(tmp: str, path: Path) -> None:
    """Give the temporary file normal permissions and move it into place."""
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, path)


def write_file_atomic(path: str | Path, write: Callable[[str], None], suffix: str = ".tmp") -> None:
    """`write(tmp)` fills a temporary file beside `path`; it is flushed to disk and renamed to `path`.

    `suffix` ends the temporary name: matplotlib goes by the suffix of the file it writes.
    An OSError becomes a TextgenError naming `path`.
    """
    path = Path(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
        os.close(fd)
        write(tmp)
        with open(tmp, "r+b") as handle:  # a handle open for writing: Windows refuses fsync on a read-only one
            os.fsync(handle.fileno())
        publish_file(tmp, path)
    except OSError as exc:
        if tmp is not None:
            remove_file(tmp)
        raise write_failed(path, exc) from None
    except BaseException:
        if tmp is not None:
            remove_file(tmp)
        raise


def publish_directory(path: str | Path, write: Callable[[Path], None]) -> None:
    """`write(folder)` fills a new folder beside `path`, which is flushed and renamed to `path`.

    `path` must not exist (a UsageError says so): textgen never replaces what it did not
    make. A failure or an interrupt removes the temporary folder, so `path` appears whole
    or not at all.
    """
    path = Path(path)
    if os.path.lexists(path):
        raise UsageError(f"{path} already exists and textgen never replaces it; give a new --output")
    tmp = None
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        write(tmp)
        for root, _, names in os.walk(tmp):
            for name in names:
                with open(os.path.join(root, name), "r+b") as handle:
                    os.fsync(handle.fileno())
        os.chmod(tmp, 0o777 & ~_umask())
        if os.path.lexists(path):
            raise UsageError(f"{path} appeared while it was being written; give a new --output")
        os.rename(tmp, path)
        tmp = None
    except OSError as exc:
        raise write_failed(path, exc) from None
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def write_bytes_atomic(path: str | Path, data: bytes | memoryview, suffix: str = ".tmp") -> None:
    """Write `data` to `path` atomically with plain file I/O."""
    def write(tmp: str) -> None:
        with open(tmp, "wb") as out:
            out.write(data)

    write_file_atomic(path, write, suffix)


def write_text_atomic(path: str | Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_failed(path: Path, exc: OSError):
    """The one-line error for a file textgen could not write: the destination, why, and the fix."""
    why = exc.strerror or str(exc) or type(exc).__name__
    if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        fix = "free some space"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = f"make {path.parent} writable"
    else:
        fix = "check the disk"
    # Inside a run that has a checkpoint (the file is in the run directory or in its checkpoint/
    # or cache/ folder), the work done so far is kept: resuming continues from it.
    resumable = any((folder / "checkpoint" / "state.json").is_file() for folder in (path.parent, path.parent.parent))
    then = "then continue with `textgen train --resume`" if resumable else "then run again"
    return TextgenError(f"{path} cannot be written ({why}); {fix}, {then}")


def create_file(path: Path, data: bytes, exists: Callable[[Path], TextgenError]) -> None:
    """Write `data` to a new file `path`, all of it or nothing; `exists(path)` is raised if `path` exists.

    Unlike the atomic writes above, which replace their destination, this never replaces a
    file: the data is written beside `path` and hard-linked into place, and the link fails
    when anything has that name.
    """
    tmp, created = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp", False
    try:
        _write_new(tmp, data)
        created = True
        try:
            os.link(tmp, path)  # fails if `path` exists: never replaces a file
        except FileExistsError:
            raise exists(path) from None
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                raise
            try:
                _write_new(path, data)  # a file system without hard links: create it in place
            except FileExistsError:
                raise exists(path) from None
    except OSError as exc:
        raise TextgenError(f"cannot write {path}: {exc.strerror or exc}; choose another folder") from None
    finally:
        if created:
            os.unlink(tmp)


def _write_new(path: Path, data: bytes) -> None:
    """Create `path` (never opening an existing file) with the umask's permissions, write and
    flush `data` to disk; a failure removes what was created."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        os.unlink(path)
        raise


def probe_writable(directory: str | Path) -> None:
    """Make and remove a file in `directory`; an OSError says why files cannot be made there."""
    fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=directory)
    os.close(fd)
    os.remove(probe)


def temporary_name_pattern(name: str, suffix: str = ".tmp") -> re.Pattern:
    """The names `write_file_atomic` (and `tempfile.mkstemp` with textgen's prefix) gives the
    temporary files of `name`: `.NAME.` + mkstemp's eight random characters + `suffix`."""
    return re.compile(rf"\.{re.escape(name)}\.[a-z0-9_]{{8}}{re.escape(suffix)}")


def remove_temporaries(directory: str | Path, names: dict[str, str]) -> list[Path]:
    """Remove the temporary files a killed process left for the files `names` maps to
    their temporary suffix; nothing else in `directory` is touched. Returns those removed."""
    patterns = [temporary_name_pattern(name, suffix) for name, suffix in names.items()]
    removed = []
    try:
        entries = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return removed
    for entry in entries:
        if any(p.fullmatch(entry.name) for p in patterns) and entry.is_file(follow_symlinks=False):
            remove_file(entry.path)
            removed.append(Path(entry.path))
    return removed


def remove_file(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
