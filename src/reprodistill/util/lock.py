"""Exclusive locks: on a run or bench folder, so two processes never train into the same folder at once, and on a
feature-cache entry being computed, so a second process waits for it instead of repeating the FM pass.

``fcntl.flock`` on ``<folder>/.lock`` (or a named lock file): the kernel drops it when the holder exits, however it
exits, so a stale lock cannot outlive a killed process. The file records the holder's pid and host for the message
the second process gets.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from typing import Optional

from reprodistill.errors import ReprodistillError

log = logging.getLogger("reprodistill")


class FolderLock:
    """``with FolderLock(folder): ...`` holds ``folder/<name>`` exclusively.

    Args:
        folder: The folder the lock protects.
        name: The lock file's name in it.
        wait: Wait for the holder to finish (logging who it is once) instead of stopping with who holds it.
    """

    def __init__(self, folder: Path, name: str = ".lock", wait: bool = False) -> None:
        self.path = Path(folder) / name
        self.wait = wait
        self._fd: Optional[int] = None

    def __enter__(self) -> "FolderLock":
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
            if not self.wait:
                os.close(fd)
                raise ReprodistillError(
                    f"{self.path.parent} is in use by {holder}; wait for it to finish, or use another folder"
                ) from None
            log.info("waiting for %s, which holds %s", holder, self.path)
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None
