"""The one exception type for mistakes a user can fix (bad file, bad option, bad run).

The CLI turns it into a one-line message on stderr and exit code 2; anything else is an
internal error (exit 1).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path


class UserError(Exception):
    """A problem with the user's input; the message says what to do about it."""


class Terminated(KeyboardInterrupt):
    """A stop by SIGTERM (``kill``, a scheduler ending a job): handled as Ctrl+C is, with the
    exit status of a process that SIGTERM ended (143)."""


def listing(items, most: int = 12) -> str:
    """Names joined by commas for a message; past ``most``, the first five and the last two
    around the count (a CSV of hundreds of series, as Electricity's 321, would make one
    message fill the screen)."""
    items = [str(item) for item in items]
    if len(items) <= most:
        return ", ".join(items)
    return f"{', '.join(items[:5])}, …, {', '.join(items[-2:])} ({len(items)} in all)"


def notice_to_stderr(message: str) -> None:
    """Tell the user something they may want to act on, without stopping (one line on stderr)."""
    print(f"notice: {message}", file=sys.stderr)


def writable_folder(folder: str | os.PathLike, option: str) -> Path:
    """``folder``, created if missing, once a file could be created in it; otherwise (no
    permission, a read-only or full disk, a file in the way) a UserError naming ``option``,
    the option that chose the folder."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise UserError(f"cannot write in {folder} ({err.strerror}); choose another {option}") from None
    return folder
