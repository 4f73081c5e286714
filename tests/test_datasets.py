"""The data-set registry: lookup order, cache, download with checksum, offline errors.

Downloads come from a file server on 127.0.0.1 in a thread, never from the internet.
"""

import hashlib
import http.server
import os
import socket
import threading
import urllib.error
from pathlib import Path

import pytest

from stanhop import datasets
from stanhop.errors import UserError

CSV = b"date,a,b\n2020-01-01 00:00:00,1.0,2.0\n2020-01-01 01:00:00,1.5,2.5\n2020-01-01 02:00:00,2.0,3.0\n"


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``files`` by path; ``/truncated`` promises more bytes than it sends."""

    files: dict[str, bytes] = {}
    requests: list[str] = []

    def do_GET(self):
        type(self).requests.append(self.path)
        if self.path == "/truncated":
            self.send_response(200)
            self.send_header("Content-Length", str(len(CSV) * 10))
            self.end_headers()
            self.wfile.write(CSV)
            return
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    """A local HTTP server; yields its base URL. Handler.requests records each GET."""
    _Handler.files = {"/Toy.csv": CSV}
    _Handler.requests = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def dirs(tmp_path, monkeypatch):
    """Empty cache and data folders; returns (cache folder, data folder)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("STANHOP_DATA_DIR", str(tmp_path / "data"))
    (tmp_path / "data").mkdir()
    return tmp_path / "xdg" / "stanhop", tmp_path / "data"


def register(monkeypatch, url: str, sha256: str = hashlib.sha256(CSV).hexdigest()) -> datasets.DatasetInfo:
    info = datasets.DatasetInfo("Toy", url, sha256, "h", ("date", "a", "b"), "b", "test only")
    monkeypatch.setitem(datasets.REGISTRY, "Toy", info)
    return info


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_etth1_registry_matches_the_real_file(etth1_path):
    info = datasets.REGISTRY["ETTh1"]
    assert datasets.sha256_of(etth1_path) == info.sha256
    assert etth1_path.read_text().splitlines()[0].split(",") == list(info.columns)
    assert info.url.startswith("https://") and info.freq == "h" and info.target == "OT"


def test_download_verifies_and_fills_the_cache_once(server, dirs, monkeypatch):
    cache, _ = dirs
    register(monkeypatch, f"{server}/Toy.csv")
    path = datasets.resolve("Toy")
    assert path == cache / "Toy.csv" and path.read_bytes() == CSV
    assert leftovers(cache) == ["Toy.csv"]  # no temporary file left behind
    assert datasets.resolve("toy") == path  # names are case-insensitive; a cache hit
    assert _Handler.requests == ["/Toy.csv"]


def test_cache_hit_needs_no_network(dirs, monkeypatch):
    cache, _ = dirs
    register(monkeypatch, f"http://127.0.0.1:{closed_port()}/Toy.csv")
    cache.mkdir(parents=True)
    (cache / "Toy.csv").write_bytes(CSV)
    assert datasets.resolve("Toy") == cache / "Toy.csv"


def test_data_dir_comes_before_the_cache(dirs, monkeypatch):
    cache, data = dirs
    register(monkeypatch, f"http://127.0.0.1:{closed_port()}/Toy.csv")
    cache.mkdir(parents=True)
    (cache / "Toy.csv").write_bytes(CSV)
    (data / "Toy.csv").write_bytes(CSV)
    assert datasets.resolve("Toy") == data / "Toy.csv"


def test_a_local_copy_that_is_not_the_original_is_told_once(dirs, monkeypatch, capsys):
    _, data = dirs
    register(monkeypatch, f"http://127.0.0.1:{closed_port()}/Toy.csv")
    (data / "Toy.csv").write_bytes(CSV)
    assert datasets.resolve("Toy") == data / "Toy.csv" and capsys.readouterr().err == ""  # the original: silent
    (data / "Toy.csv").write_bytes(CSV[: len(CSV) // 2])  # cut short, as a hand-made extract
    assert datasets.resolve("Toy") == data / "Toy.csv" and datasets.resolve("Toy") == data / "Toy.csv"
    told = capsys.readouterr().err
    assert told.count(f"notice: {data / 'Toy.csv'} is not the original Toy (sha256 ") == 1  # used, and said once
    assert "figures from it will not match the papers'" in told


def test_local_copy_looks_where_resolve_does_but_never_downloads(server, dirs, monkeypatch):
    cache, data = dirs
    register(monkeypatch, f"{server}/Toy.csv")
    assert datasets.local_copy("Toy") is None and _Handler.requests == []
    cache.mkdir(parents=True)
    (cache / "Toy.csv").write_bytes(CSV)
    assert datasets.local_copy("Toy") == cache / "Toy.csv"
    (data / "Toy.csv").write_bytes(CSV)
    assert datasets.local_copy("Toy") == data / "Toy.csv" == datasets.resolve("Toy")
    assert _Handler.requests == []


def test_a_path_comes_before_a_registered_name(tmp_path, dirs, monkeypatch):
    register(monkeypatch, f"http://127.0.0.1:{closed_port()}/Toy.csv")
    monkeypatch.chdir(tmp_path)
    Path("Toy").write_bytes(CSV)  # a file in the working folder named like the data set
    assert datasets.resolve("Toy") == Path("Toy")


def test_cache_folder_default_is_under_home(monkeypatch, tmp_path):
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert datasets.cache_dir() == tmp_path / ".cache" / "stanhop"


def test_checksum_mismatch_leaves_no_file(server, dirs, monkeypatch):
    cache, _ = dirs
    info = register(monkeypatch, f"{server}/Toy.csv", sha256="0" * 64)
    with pytest.raises(UserError) as err:
        datasets.resolve("Toy")
    message = str(err.value)
    assert "sha256" in message and info.url in message and "$STANHOP_DATA_DIR/Toy.csv" in message
    assert "\n" not in message
    assert leftovers(cache) == []


@pytest.mark.parametrize("path", ["/missing.csv", "/truncated"])
def test_http_error_or_cut_download_leaves_no_file(server, dirs, monkeypatch, path):
    cache, _ = dirs
    register(monkeypatch, f"{server}{path}")
    with pytest.raises(UserError, match="could not download Toy"):
        datasets.resolve("Toy")
    assert leftovers(cache) == []


def test_offline_error_says_how_to_provide_the_file(dirs, monkeypatch):
    cache, data = dirs
    info = register(monkeypatch, f"http://127.0.0.1:{closed_port()}/Toy.csv")
    with pytest.raises(UserError) as err:
        datasets.resolve("Toy")
    message = str(err.value)
    assert info.url in message and str(data / "Toy.csv") in message and "\n" not in message
    assert leftovers(cache) == []


def test_offline_without_data_dir_names_the_cache(dirs, monkeypatch):
    cache, _ = dirs
    monkeypatch.delenv("STANHOP_DATA_DIR")
    register(monkeypatch, f"http://127.0.0.1:{closed_port()}/Toy.csv")
    with pytest.raises(UserError, match="STANHOP_DATA_DIR") as err:
        datasets.resolve("Toy")
    assert str(cache / "Toy.csv") in str(err.value)


def test_real_etth1_offline_message(dirs, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(datasets.urllib.request, "urlopen", offline)
    with pytest.raises(UserError) as err:
        datasets.resolve("ETTh1")
    assert datasets.REGISTRY["ETTh1"].url in str(err.value)
    assert "$STANHOP_DATA_DIR/ETTh1.csv" in str(err.value) and "no network" in str(err.value)


def test_server_that_never_answers_times_out(dirs, monkeypatch):
    cache, _ = dirs
    with socket.socket() as silent:  # accepts connections (backlog) but never replies
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        info = register(monkeypatch, f"http://127.0.0.1:{silent.getsockname()[1]}/Toy.csv")
        with pytest.raises(UserError, match="could not download Toy.*timed out"):
            datasets.download(info, cache / "Toy.csv", timeout=0.3)
    assert leftovers(cache) == []


def test_file_moves_in_place_atomically_from_the_same_folder(server, dirs, monkeypatch):
    cache, _ = dirs
    register(monkeypatch, f"{server}/Toy.csv")
    moves = []
    real_replace = os.replace

    def spy(src, dst):
        src, dst = Path(src), Path(dst)
        moves.append((src.parent, dst.parent, dst.exists(), src.read_bytes()))
        real_replace(src, dst)

    monkeypatch.setattr(datasets.os, "replace", spy)
    datasets.resolve("Toy")
    assert moves == [(cache, cache, False, CSV)]


def test_unwritable_cache_is_a_user_error(dirs, monkeypatch, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    register(monkeypatch, "http://127.0.0.1:1/Toy.csv")
    with pytest.raises(UserError, match="cannot write to the cache folder"):
        datasets.resolve("Toy")


def test_an_unwritable_cache_is_not_where_the_file_is_advised_to_go(dirs, monkeypatch):
    """A read-only HOME (a container's) and no STANHOP_DATA_DIR: the advice was to put the file in
    the cache folder, which cannot be written."""
    cache, _ = dirs
    monkeypatch.delenv("STANHOP_DATA_DIR")
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kwargs:
                        False if Path(path) in (cache, *cache.parents) else real_access(path, mode, **kwargs))
    advice = datasets.how_to_provide(register(monkeypatch, "http://127.0.0.1:1/Toy.csv"))
    assert "export STANHOP_DATA_DIR=" in advice and f"put it at {cache}" not in advice
    assert f"the cache folder {cache} cannot be written" in advice


def test_unknown_name_lists_known_ones():
    with pytest.raises(UserError, match="unknown data set 'ETTh9'; known: ETTh1"):
        datasets.resolve("ETTh9")


@pytest.mark.parametrize("text", ["nowhere/data.csv", "missing.csv"])
def test_missing_path(text, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="not found"):
        datasets.resolve(text)


def test_folder_is_not_a_file(tmp_path):
    with pytest.raises(UserError, match="is not a file"):
        datasets.resolve(str(tmp_path))
