"""Known data sets and where their files come from.

A name resolves to a CSV file in this order:

1. a path to a CSV file given by the user (``my/data.csv``);
2. ``$STANHOP_DATA_DIR/<name>.csv``;
3. the cache, ``$XDG_CACHE_HOME/stanhop/<name>.csv`` (default ``~/.cache/stanhop/``);
4. a download from the data set's canonical address into the cache. The bytes go to a
   temporary file in the cache folder, their sha256 is checked, and only then is the file
   moved in place with ``os.replace`` (atomic), so no partial or wrong file is ever left.

Offline, or on a wrong checksum, the UserError says where to download the file by hand and
where to put it. This module imports only the standard library.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from stanhop.errors import UserError, notice_to_stderr
from stanhop.runs import publish

DOWNLOAD_TIMEOUT_S = 60.0
_CHUNK = 1 << 16


@dataclass(frozen=True)
class DatasetInfo:
    """A registered data set: where it lives, how to check it, and what it holds."""

    name: str
    url: str
    sha256: str
    freq: str  # pandas offset alias of the time step
    columns: tuple[str, ...]  # the file's header, date column first
    target: str  # the channel forecasts are usually reported on
    licence: str


REGISTRY: dict[str, DatasetInfo] = {
    "ETTh1": DatasetInfo(
        name="ETTh1",
        url="https://raw.githubusercontent.com/zhouhaoyi/ETDataset/main/ETT-small/ETTh1.csv",
        sha256="f18de3ad269cef59bb07b5438d79bb3042d3be49bdeecf01c1cd6d29695ee066",
        freq="h",
        columns=("date", "HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT"),
        target="OT",
        licence="CC BY-ND 4.0",
    ),
}


def known_names() -> list[str]:
    return sorted(REGISTRY)


def lookup(name: str) -> DatasetInfo | None:
    """The registered data set called ``name`` (case-insensitive), or None."""
    for key, info in REGISTRY.items():
        if key.lower() == name.lower():
            return info
    return None


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/stanhop``, else ``~/.cache/stanhop``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "stanhop"


def data_dir() -> Path | None:
    value = os.environ.get("STANHOP_DATA_DIR")
    return Path(value) if value else None


def looks_like_path(text: str) -> bool:
    """True for anything the user meant as a file rather than a registered name."""
    return Path(text).exists() or text.lower().endswith(CSV_ENDINGS) or "/" in text or os.sep in text


CSV_ENDINGS = (".csv", ".csv.gz", ".csv.bz2", ".csv.xz")  # read compressed (stanhop.csvio)


def data_label(name: str) -> str:
    """What a run folder's name calls its data: a registered data set's name, else the file's
    name without its endings (``sales`` for /data/sales.csv.gz)."""
    if not looks_like_path(name):
        return name
    file = Path(name).name
    for ending in (".gz", ".bz2", ".xz", ".zip"):
        file = file.removesuffix(ending)
    return Path(file).stem or file


def check_run_file(name: str, remedy: str) -> None:
    """Raise UserError when a run's data ``name`` is a CSV path with no file there, saying why
    (moved or deleted; or, for a run trained before paths were saved absolute, named relative
    to another folder) and the command's ``remedy``."""
    path = Path(name).expanduser()
    if not looks_like_path(name) or path.is_file():
        return
    why = "moved or deleted?" if path.is_absolute() else \
        "the run names it relative to the folder it was trained in: run the command there"
    raise UserError(f"the run's data file {name} is not found ({why}); {remedy}")


def resolve(name_or_path: str | os.PathLike, *, timeout: float = DOWNLOAD_TIMEOUT_S) -> Path:
    """The local CSV file for a path or a registered name, downloading it if need be."""
    text = os.fspath(name_or_path)
    if looks_like_path(text):
        path = Path(text).expanduser()
        if not path.exists():
            raise UserError(f"file {path} not found")
        if not path.is_file():
            raise UserError(f"{path} is not a file; give the path of a CSV file")
        return path
    info = lookup(text)
    if info is None:
        raise UserError(f"unknown data set '{text}'; known: {', '.join(known_names())} (or give the path of a CSV file)")
    path = local_copy(info.name)
    if path is None:
        return download(info, cache_dir() / f"{info.name}.csv", timeout=timeout)
    _check_copy(path, info)
    return path


_CHECKED: set[tuple[str, int, int]] = set()  # (path, size, mtime) of local copies already hashed in this process


def _check_copy(path: Path, info: DatasetInfo) -> None:
    """Say once (a notice, not an error: a user may mean to use an edited copy) when a local
    copy of a registered data set is not the original file."""
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key in _CHECKED:
        return
    _CHECKED.add(key)
    if (digest := sha256_of(path)) != info.sha256:
        notice_to_stderr(f"{path} is not the original {info.name} (sha256 {digest[:12]}…, expected {info.sha256[:12]}…): "
                         f"figures from it will not match the papers'; for the original, {how_to_provide(info)}")


def local_copy(name: str) -> Path | None:
    """The file of a registered data set already on this machine (``$STANHOP_DATA_DIR``, then
    the cache), without downloading; None when neither holds it."""
    files = (folder / f"{name}.csv" for folder in (data_dir(), cache_dir()) if folder is not None)
    return next((path for path in files if path.is_file()), None)


def how_to_provide(info: DatasetInfo) -> str:
    """The sentence that tells a user how to put the file in place by hand."""
    file = f"{info.name}.csv"
    folder = data_dir()
    if folder is not None:
        return f"download {info.url} and put it at $STANHOP_DATA_DIR/{file} ({folder / file})"
    cache = cache_dir()
    existing = next((p for p in (cache, *cache.parents) if p.exists()), None)
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):  # (a read-only home, a container's)
        return (f"download {info.url} into a folder you can write and name that folder by $STANHOP_DATA_DIR "
                f"(export STANHOP_DATA_DIR=that/folder; the cache folder {cache} cannot be written)")
    return f"download {info.url} and put it at {cache / file} (or in a folder named by $STANHOP_DATA_DIR)"


def download(info: DatasetInfo, dest: Path, *, timeout: float = DOWNLOAD_TIMEOUT_S) -> Path:
    """Fetch ``info.url`` to ``dest``, checking its sha256; atomic, no partial file on failure."""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    except OSError as err:
        raise UserError(f"cannot write to the cache folder {dest.parent} ({err.strerror}); {how_to_provide(info)}") from None
    tmp = Path(tmp_name)
    try:
        with os.fdopen(handle, "wb") as out:
            digest = _fetch(info.url, out, timeout)
        if digest != info.sha256:
            raise UserError(
                f"downloaded {info.name} has sha256 {digest}, expected {info.sha256}; {how_to_provide(info)}"
            )
        publish(tmp, dest)  # readable as the umask allows, as a plain download would be
    except (OSError, ValueError, http.client.HTTPException) as err:  # URLError is an OSError
        reason = err.reason if type(err) is urllib.error.URLError else err
        raise UserError(f"could not download {info.name} ({reason}); {how_to_provide(info)}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _fetch(url: str, out, timeout: float) -> str:
    """Stream ``url`` into the open binary file ``out``; return the sha256 hex digest."""
    digest, size = hashlib.sha256(), 0
    with urllib.request.urlopen(url, timeout=timeout) as response:
        expected = response.headers.get("Content-Length", "")
        while chunk := response.read(_CHUNK):
            digest.update(chunk)
            out.write(chunk)
            size += len(chunk)
    if expected.isdigit() and size != int(expected):  # http.client does not raise on a short body
        raise OSError(f"the download stopped after {size} of {expected} bytes")
    return digest.hexdigest()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
