"""Fetching the built-in MedMNIST v2 files (``data.source=medmnist:<flag>``) from the official record with the
standard library: the published MD5 checked, a progress bar, an atomic write (nothing half-written is ever left under
the final name), and a mirror through ``$REPRODISTILL_DATA_URL`` for machines behind a proxy or offline mirrors."""

from __future__ import annotations

import hashlib
import math
import os
import urllib.error
import urllib.request
from http.client import HTTPException
from pathlib import Path

from reprodistill.errors import DataError
from reprodistill.util.progress import progress

# Base URL of the files, overridable with $REPRODISTILL_DATA_URL (a folder served over http(s) or file:// holding
# <flag>.npz as the official record names them).
DATA_URL_ENV = "REPRODISTILL_DATA_URL"
# The official MedMNIST record on Zenodo (v3 of the package; the 28-px files are the MedMNIST v2 files, same MD5).
OFFICIAL_BASE_URL = "https://zenodo.org/records/10519652/files"
# MD5 of each 28-px 2D single-label file, as the `medmnist` package's INFO records publish them.
MEDMNIST_MD5 = {
    "pathmnist": "a8b06965200029087d5bd730944a56c1",
    "dermamnist": "0744692d530f8e62ec473284d019b0c7",
    "octmnist": "c68d92d5b585d8d81f7112f81e2d0842",
    "pneumoniamnist": "28209eda62fecd6e6a2d98b1501bb15f",
    "retinamnist": "bd4c0672f1bba3e3a89f0e4e876791e4",
    "breastmnist": "750601b1f35ba3300ea97c75c52ff8f6",
    "bloodmnist": "7053d0359d879ad8a5505303e11de1dc",
    "tissuemnist": "ebe78ee8b05294063de985d821c1c34b",
    "organamnist": "68e3f8846a6bd62f0c9bf841c0d9eacc",
    "organcmnist": "b9ceb9546e10131b32923c5bbeaea2b1",
    "organsmnist": "9ab87b696fb54e2a387ebe992d6ed5f1",
}
_CHUNK = 1 << 20


def medmnist_url(flag: str) -> str:
    """Where ``<flag>.npz`` is downloaded from: the mirror in ``$REPRODISTILL_DATA_URL`` if set, else the official
    record."""
    base = os.environ.get(DATA_URL_ENV, "").strip() or OFFICIAL_BASE_URL
    url = f"{base.rstrip('/')}/{flag}.npz"
    return f"{url}?download=1" if base == OFFICIAL_BASE_URL else url


def file_md5(path: Path) -> str:
    """Hex MD5 of a file, read in chunks."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def download_file(url: str, target: Path, md5: str, timeout_s: float = 60.0) -> Path:
    """Download ``url`` to ``target``, checking its MD5; a progress bar (or log lines) on the way.

    The bytes go to a hidden ``.part`` file beside the target, renamed onto it only once complete and checked, so a
    dropped connection, a wrong checksum or a killed process leaves nothing under the final name (and the ``.part``
    is removed). Raises :class:`DataError` naming the URL, the cause and where to put the file by hand.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(f".{target.name}.{os.getpid()}.part")
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            size = int(response.headers.get("Content-Length") or 0)
            h, received = hashlib.md5(), 0
            with open(part, "wb") as f:
                chunks = iter(lambda: response.read(_CHUNK), b"")
                for chunk in progress(chunks, f"downloading {target.name}", math.ceil(size / _CHUNK) or None, "MB"):
                    f.write(chunk)
                    h.update(chunk)
                    received += len(chunk)
        if size and received != size:
            raise DataError(f"the connection dropped after {received:,} of {size:,} bytes")
        if h.hexdigest() != md5:
            raise DataError(f"its MD5 is {h.hexdigest()}, not the published {md5} (a corrupt or different file)")
        os.replace(part, target)
        return target
    except (urllib.error.URLError, HTTPException, OSError, DataError) as e:
        reason = getattr(e, "reason", None) or str(e) or type(e).__name__
        raise DataError(
            f"could not download {url} ({str(reason).splitlines()[0][:200]}); download it yourself into "
            f"{target} (or point ${DATA_URL_ENV} at a mirror holding {target.name})"
        ) from None
    finally:
        part.unlink(missing_ok=True)


def download_medmnist(flag: str, folder: Path) -> Path:
    """``<folder>/<flag>.npz`` fetched from :func:`medmnist_url` and checked against its published MD5."""
    if flag not in MEDMNIST_MD5:
        raise DataError(
            f"medmnist:{flag}: not a MedMNIST v2 2D single-label data set this tool knows; flags: "
            f"{', '.join(sorted(MEDMNIST_MD5))} (or give data.source=<path to a .npz>)"
        )
    return download_file(medmnist_url(flag), folder / f"{flag}.npz", MEDMNIST_MD5[flag])
