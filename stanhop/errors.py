"""The one exception type for mistakes a user can fix (bad file, bad option, bad run).

The CLI turns it into a one-line message on stderr and exit code 2; anything else is an
internal error (exit 1).
"""

from __future__ import annotations

import os
import re
import reprlib
import stat
import sys
import tempfile
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path


class UserError(Exception):
    """A problem with the user's input; the message says what to do about it."""


class Terminated(KeyboardInterrupt):
    """A stop by SIGTERM (``kill``, a scheduler ending a job): handled as Ctrl+C is, with the
    exit status of a process that SIGTERM ended (143)."""


def abridged(items: list, most: int = 12) -> tuple[list, int, list]:
    """(first, how many left out, last) of ``items``: all of them while there are at most
    ``most``, else the first five and the last two (a CSV of hundreds of series, as
    Electricity's 321, would make one message or table fill the screen)."""
    if len(items) <= most:
        return items, 0, []
    return items[:5], len(items) - 7, items[-2:]


MOST_SHOWN = 100  # characters of a user's text (a cell, a column name, a config value) quoted in a message
MOST_LINE = 2_000  # characters of one message line, at most
LONGEST_ITEM = 4 * MOST_SHOWN  # characters of one item of a listing: a sentence about a name (clipped where quoted)


def clipped(text, most: int = MOST_SHOWN) -> str:
    """``text`` for a message, cut after ``most`` characters with its length told ('1111… (100000002
    characters)'): a CSV cell or column name of 100 MB would make a line of 100 MB."""
    text = str(text)
    return text if len(text) <= most else f"{text[:most]}… ({len(text)} characters)"


_CITED = reprlib.Repr()  # its first items, a few levels deep: aliases of YAML nested 10 deep are 9**10 items written out
_CITED.maxlevel, _CITED.maxstring, _CITED.maxother = 3, MOST_SHOWN, MOST_SHOWN


def cited(value) -> str:
    """``repr(value)`` of a value a user gave, for a message: a long text clipped, a list or
    mapping abridged (reprlib), and never more than 2 * MOST_SHOWN characters in all."""
    if isinstance(value, str):
        return repr(value) if len(value) <= MOST_SHOWN else f"{value[:MOST_SHOWN]!r}… ({len(value)} characters)"
    text = _CITED.repr(value)
    return text if len(text) <= 2 * MOST_SHOWN else f"{text[:2 * MOST_SHOWN]}…"


def bounded(message: str, most: int = MOST_LINE) -> str:
    """``message`` cut in its middle where it runs past ``most`` characters, keeping its start
    (what is wrong) and its end (what to do): no line the CLI prints repeats user data whole."""
    if len(message) <= most:
        return message
    half = most // 2
    return f"{message[:half]} … ({len(message) - 2 * half} characters left out) … {message[-half:]}"


def listing(items, most: int = 12) -> str:
    """Names joined by commas for a message, ``abridged`` around their count, each clipped at
    LONGEST_ITEM characters (a safety net: an item that quotes a user's name clips it itself,
    at MOST_SHOWN, so a sentence about it is never cut)."""
    items = [clipped(item, LONGEST_ITEM) for item in items]
    first, left_out, last = abridged(items, most)
    if not left_out:
        return ", ".join(first)
    return f"{', '.join(first)}, …, {', '.join(last)} ({len(items)} in all)"


def counted(n: int, word: str) -> str:
    """'1 window', '2 windows': a count with its noun (a plural in -s)."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


_ALIASES: dict[str, tuple[str, int | None]] = {}  # text of messages -> (the name the user knows it by, line of row 0)


@contextmanager
def known_as(text: str, name: str, *, first_row_line: int | None = None):
    """Within the block, messages (notices and UserErrors leaving it) say ``name`` for ``text``:
    a DataFrame written to a temporary CSV is "the DataFrame", not that file's path. With
    ``first_row_line`` (the file line that holds the frame's row 0), such a message also names
    rows by their position in the frame (pandas' iloc, from 0) instead of the file's lines,
    and says ``name`` for "the file"."""
    _ALIASES[text] = (name, first_row_line)
    try:
        yield
    except UserError as err:
        raise UserError(aliased(str(err))) from None
    finally:
        _ALIASES.pop(text, None)


def aliased(message: str) -> str:
    for text, (name, first_row_line) in sorted(_ALIASES.items(), key=lambda item: -len(item[0])):  # longest first
        if text in message:
            message = message.replace(text, name)
            if first_row_line is not None:
                message = _as_rows(message, first_row_line).replace("the file", name)
    return message


_LINE_NUMBERS = re.compile(r"\b(line\(s\)|lines|line) (\d+(?:, \d+)*(?: and \d+\b(?! more))?)")


def _as_rows(message: str, first_row_line: int) -> str:
    """'line 7' -> 'position 5', 'between lines 101 and 102' -> 'between positions 99 and
    100' for a file whose line 2 holds row 0: rows as pandas' iloc counts them."""

    def positions(match: re.Match) -> str:
        numbers = re.sub(r"\d+", lambda n: str(int(n.group()) - first_row_line), match.group(2))
        return f"{match.group(1).replace('line', 'position')} {numbers}"

    return _LINE_NUMBERS.sub(positions, message)


def redrawn_bars() -> bool:
    """Whether stderr shows progress bars as they are redrawn: a terminal or a Jupyter notebook,
    not a log file (where each redraw would be a line of its own), nor a terminal that tells no
    width (`script`, `docker run -t`, `ssh -tt`: its bars were drawn as empty lines)."""
    if "ipykernel" in sys.modules:
        return True
    try:
        return sys.stderr.isatty() and os.get_terminal_size(sys.stderr.fileno()).columns > 0
    except (OSError, ValueError, AttributeError):  # no descriptor (a replaced stderr)
        return False


def log_line(line: str) -> None:
    """A line on stderr (a notice, or progress for a log file, where no bar is redrawn, so that a
    log is not silent for minutes), written with its newline in one write: print writes them
    apart, and lines told from several threads at once would interleave."""
    sys.stderr.write(f"{line}\n")
    sys.stderr.flush()


def command(*words) -> str:
    """A stanhop command line to suggest, its words quoted as a shell needs them (a run folder
    with spaces in its name): command("train", "--resume", path) -> "stanhop train --resume 'my run'"."""
    import shlex

    return shlex.join(["stanhop", *map(str, words)])


def likely_name(wanted: str, names: list[str]) -> str | None:
    """The one of ``names`` that is ``wanted`` but for case and spaces ('Date ', 'DATE'), or else
    the closest spelling (difflib), if any is close; None otherwise: what a mistyped name meant."""
    import difflib

    same = [n for n in names if n.strip().casefold() == wanted.strip().casefold()]
    if same:
        return same[0]
    close = difflib.get_close_matches(wanted, names, n=1, cutoff=0.75)
    return close[0] if close else None


def notice_to_stderr(message: str) -> None:
    """Tell the user something they may want to act on, without stopping (one line on stderr)."""
    log_line(f"notice: {bounded(aliased(message))}")


_TOLD: ContextVar[set[str] | None] = ContextVar("stanhop_told", default=None)  # the notices told in this job


@contextmanager
def one_job():
    """A job: one command, or one call of the Python API (as a decorator, on each call). Within
    it :func:`tell_once` tells each notice once; a job begun inside another is part of it. Two
    trainings in one notebook are two jobs, so the second DataFrame's notices are told too,
    though they read as the first's ("the DataFrame: 3 empty cell(s) filled ...")."""
    if _TOLD.get() is not None:
        yield
        return
    token = _TOLD.set(set())
    try:
        yield
    finally:
        _TOLD.reset(token)


def tell_once(message: str) -> None:
    """A notice, once per job (:func:`one_job`; every time outside one) and text as the user
    reads it (aliased): a run reads its file more than once, and a DataFrame's staged file and
    the run's copy read alike."""
    told, text = _TOLD.get(), aliased(message)
    if told is not None and text in told:
        return
    if told is not None:
        told.add(text)
    notice_to_stderr(message)


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
        blocking = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
        why = (f"{blocking} is a file, not a folder" if blocking is not None
               else f"{folder} takes no new files" if folder.is_dir() and isinstance(err, FileNotFoundError)  # /proc
               else err.strerror)
        raise UserError(f"cannot write in {folder} ({why}); choose another {option}") from None
    return folder


def not_a_file(path: str | os.PathLike) -> str | None:
    """What stands at ``path`` (links followed) where it is there but is no regular file: "a FIFO
    (named pipe)", "a device", ...; None for a file or nothing. Such a thing is never opened to be
    read: a FIFO waits for a writer forever, a device (/dev/zero, /dev/urandom) never ends."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):  # not there, a dangling link, a name too long
        return None
    if stat.S_ISREG(mode):
        return None
    return ("a folder" if stat.S_ISDIR(mode) else "a FIFO (named pipe)" if stat.S_ISFIFO(mode)
            else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "not a file")
