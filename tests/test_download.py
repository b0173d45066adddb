"""The built-in data arrive by themselves: ``medmnist:<flag>`` not found locally is downloaded from
``$REPRODISTILL_DATA_URL`` (here a local HTTP server) with its MD5 checked and an atomic write; a corrupt file, a
dropped connection and a server that is down leave nothing behind and stop with the URL and the folder."""

from __future__ import annotations

import hashlib
import http.server
import io
import threading
from pathlib import Path

import numpy as np
import pytest

from reprodistill.data import download
from reprodistill.data.npz import find_medmnist, read_npz
from reprodistill.errors import DataError


def _npz_bytes() -> bytes:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 6), ("val", 2), ("test", 2)):
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 2).reshape(n, 1)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


class _Server:
    """A local HTTP server: ``files`` maps a path to bytes; ``truncate`` sends only that many bytes of a file while
    announcing its full length, then closes (a dropped connection)."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.truncate: int | None = None
        self.requests: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                server.requests.append(self.path)
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: server.truncate] if server.truncate is not None else body)
                self.close_connection = True

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/mirror"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def server(monkeypatch, tmp_path):
    """A mirror holding ``toymnist.npz`` (its MD5 registered as if published), with HOME moved so that no real
    ~/.medmnist is searched or written."""
    s = _Server()
    body = _npz_bytes()
    s.files["/mirror/toymnist.npz"] = body
    monkeypatch.setitem(download.MEDMNIST_MD5, "toymnist", hashlib.md5(body).hexdigest())
    monkeypatch.setenv(download.DATA_URL_ENV, s.url)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("REPRODISTILL_DATA", raising=False)
    monkeypatch.chdir(tmp_path)  # no ../shared/data beside the working directory
    yield s
    s.close()


def test_missing_file_is_downloaded_once_checked_and_readable(server, tmp_path):
    path = find_medmnist("toymnist")
    assert path == tmp_path / "home" / ".medmnist" / "toymnist.npz"
    assert sorted(read_npz(path)) == ["test", "train", "val"]
    assert server.requests == ["/mirror/toymnist.npz"]
    assert find_medmnist("toymnist") == path and len(server.requests) == 1  # found locally the second time
    assert [p.name for p in path.parent.iterdir()] == ["toymnist.npz"]  # no .part left


def test_data_root_receives_the_download(server, tmp_path):
    path = find_medmnist("toymnist", root=str(tmp_path / "data"))
    assert path == tmp_path / "data" / "toymnist.npz" and path.is_file()


def test_corrupt_download_leaves_nothing_and_says_so(server, tmp_path):
    server.files["/mirror/toymnist.npz"] = b"not the published file"
    with pytest.raises(DataError) as e:
        find_medmnist("toymnist")
    msg = str(e.value)
    assert "MD5" in msg and f"{server.url}/toymnist.npz" in msg and str(tmp_path / "home" / ".medmnist") in msg
    assert not any((tmp_path / "home" / ".medmnist").iterdir())


def test_dropped_connection_leaves_nothing(server, tmp_path):
    server.truncate = 100
    with pytest.raises(DataError, match="could not download"):
        find_medmnist("toymnist")
    assert not any((tmp_path / "home" / ".medmnist").iterdir())


def test_server_down_stops_the_cli_with_one_line_naming_url_and_folder(server, tmp_path, capsys):
    from reprodistill.cli import main

    url = server.url
    server.close()
    code = main(["distill", "data.source=medmnist:toymnist", "methods=[student]", "--run-dir", str(tmp_path / "r")])
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert code == 2
    assert len(errors) == 1, errors  # one line, no traceback
    assert f"{url}/toymnist.npz" in errors[0] and str(tmp_path / "home" / ".medmnist") in errors[0], errors


def test_unknown_flag_and_official_url():
    with pytest.raises(DataError, match="breastmnist"):
        download.download_medmnist("nosuchmnist", Path("."))
    assert download.medmnist_url("breastmnist") == f"{download.OFFICIAL_BASE_URL}/breastmnist.npz?download=1" or (
        download.DATA_URL_ENV in __import__("os").environ
    )
