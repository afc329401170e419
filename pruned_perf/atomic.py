"""Files written all or nothing: a temporary file beside the target, then one rename."""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp"):
    """Yield a temporary path next to `path`; on success it replaces `path` in one rename.

    On any error the temporary file is removed and `path` is untouched, so readers never see a
    half-written file.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=suffix)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        new_file_mode(tmp)  # after writing: mkstemp, and safetensors' own writer, leave 0600
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
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
