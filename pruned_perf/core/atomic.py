"""Output paths: checked up front, then written all or nothing (a temporary file beside the target,
then one rename).

Every output the project writes follows one rule: a missing parent directory is created (`PARENTS_HELP`
says so in each option's help). A path that is a directory, lies below a file, is not a regular file, or
sits where no file can be created (a read-only file system, no permission) is refused with one UserError
naming it, before any work is done (`check_output_file`, `check_writable_dir`); a write that fails anyway
(a full disk) becomes the same kind of error, and leaves neither a temporary file nor a created directory.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

from pruned_perf.core.errors import UserError

PARENTS_HELP = "missing parent directories are created"


def _cannot(what: str, path: Path, reason: str) -> UserError:
    return UserError(f"cannot write {what + ' ' if what else ''}{str(path)!r}: {reason}")


def _nearest_existing(path: Path) -> Path:
    """`path` or its closest ancestor that exists (the directory that new directories would go into)."""
    return next(p for p in (path, *path.parents) if os.path.lexists(p))


def _check_can_create_in(where: Path, what: str, path: Path, prefix: str) -> None:
    """`where` (the nearest existing ancestor) must be a directory that takes a new file. The only sure
    test is to make one: os.access says yes to root in /sys, which refuses every new file, and cannot
    know what an NFS server will refuse."""
    if not where.is_dir():
        raise _cannot(what, path, f"{str(where)!r} is a file, not a directory")
    try:
        fd, probe = tempfile.mkstemp(dir=where, prefix=prefix, suffix=".probe")
    except OSError as exc:
        raise _cannot(what, path, f"cannot create files in {str(where)!r} ({exc.strerror})") from None
    os.close(fd)
    os.unlink(probe)


def check_output_file(path: str | os.PathLike, what: str = "") -> Path:
    """Check that `path` can be written as a file, and return it as a Path; `what` names the option in
    the error (e.g. "--out"). Nothing is left on disk."""
    target = Path(path)
    if target.is_dir():
        raise _cannot(what, target, "it is a directory; give a file path")
    if os.path.lexists(target) and not target.is_file():
        raise _cannot(what, target, "it exists and is not a regular file")
    where = _nearest_existing(target.parent)
    # the probe takes the name the temporary file will take, so a name too long fails here too
    _check_can_create_in(where, what, target, f".{target.name}." if where == target.parent else ".")
    return target


def check_writable_dir(path: str | os.PathLike, what: str = "", replaced: bool = False) -> Path:
    """Check that files can be written into the directory `path` (or into the one that will be made
    there, where it is missing), and return it as a Path. replaced=True: the directory is replaced as a whole by one beside it, so its parent must take
    new entries as well."""
    target = Path(path)
    if os.path.lexists(target) and not target.is_dir():
        raise _cannot(what, target, "it is a file, not a directory")
    _check_can_create_in(_nearest_existing(target), what, target, ".")
    if replaced and target.is_dir():
        _check_can_create_in(target.parent, what, target, ".")
    return target


def check_append_file(path: str | os.PathLike, what: str = "") -> Path:
    """Check that `path` can be appended to (an existing regular file that opens for appending, or one
    check_output_file allows), and return it as a Path. An existing file is left as it is."""
    target = Path(path)
    if not target.is_file():
        return check_output_file(target, what)  # missing, a directory, or not a regular file
    try:
        with open(target, "a", encoding="utf-8"):
            pass
    except OSError as exc:
        raise _cannot(what, target, exc.strerror or str(exc)) from None
    return target


def _make_parents(directory: Path) -> list[Path]:
    """mkdir -p `directory`; returns the directories it created, deepest last."""
    created: list[Path] = []
    for p in [p for p in (directory, *directory.parents) if not os.path.lexists(p)][::-1]:
        try:
            p.mkdir()
        except FileExistsError:
            continue  # made meanwhile by someone else: not ours to remove
        except OSError:
            _remove_dirs(created)
            raise
        created.append(p)
    return created


def _remove_dirs(created: list[Path]) -> None:
    for p in reversed(created):
        with contextlib.suppress(OSError):
            p.rmdir()  # only when still empty


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp"):
    """Yield a temporary path next to `path`; on success it replaces `path` in one rename.

    `path` is checked first (check_output_file) and missing parent directories are made. On any error
    the temporary file and the directories made are removed and `path` is untouched, so readers never
    see a half-written file; an OSError (the write failed) is raised as a UserError naming `path`.
    """
    target = check_output_file(path)
    created: list[Path] = []
    tmp = None
    try:
        created = _make_parents(target.parent)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=suffix)
        os.close(fd)
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        new_file_mode(tmp)  # after writing: mkstemp, and safetensors' own writer, leave 0600
        os.replace(tmp, target)
    except BaseException as exc:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        _remove_dirs(created)
        if isinstance(exc, OSError):
            raise _cannot("", target, exc.strerror or str(exc)) from exc
        raise


def current_umask() -> int:
    """The process umask (os.umask can only read it by setting it, so it is set straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def new_file_mode(path: str | os.PathLike) -> None:
    """Give `path` the mode a file created with open() gets (0644 under umask 022)."""
    os.chmod(path, 0o666 & ~current_umask())


def temp_dir_beside(target: Path) -> Path:
    """An empty directory next to `target`, to be renamed onto it, with a new directory's mode
    (mkdtemp makes 0700, which would leave a saved model unreadable to everyone else)."""
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
    os.chmod(tmp, 0o777 & ~current_umask())
    return tmp


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    text = json.dumps(obj, indent=2) + "\n"  # serialise first: a bad object never touches the disk
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
