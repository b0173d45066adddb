"""A lock that works across machines on a shared file system: a small JSON file naming its holder (host, pid, SLURM
job / array ids) and a heartbeat the holder refreshes. ``flock`` (:mod:`reprodistill.util.lock`) is released by the
kernel when a process dies but only guards one machine (and not every network file system); this lock is a plain
file, so it is stale when its heartbeat stops, its process is gone (same host), or its SLURM job is this one
requeued, and the next process takes it over with a log line.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Optional

log = logging.getLogger("reprodistill")


def holder_record() -> dict[str, Any]:
    """Who this process is: host, pid, SLURM job / array ids and restart count (when under SLURM)."""
    env = os.environ
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "slurm_job_id": env.get("SLURM_JOB_ID"),
        "slurm_array_job_id": env.get("SLURM_ARRAY_JOB_ID"),
        "slurm_array_task_id": env.get("SLURM_ARRAY_TASK_ID"),
        "slurm_restart_count": env.get("SLURM_RESTART_COUNT"),
    }


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def stale_reason(record: dict[str, Any], stale_after_s: float, now: Optional[float] = None) -> Optional[str]:
    """Why a lock record no longer holds (None: it does)."""
    now = time.time() if now is None else now
    age = now - float(record.get("heartbeat", 0.0))
    if age > stale_after_s:
        return f"its heartbeat is {age:.0f} s old"
    me = holder_record()
    if record.get("host") == me["host"] and record.get("pid") != me["pid"] and not _pid_alive(int(record["pid"])):
        return f"process {record['pid']} on {record['host']} is gone"
    job = record.get("slurm_job_id")
    if job and job == me["slurm_job_id"] and record.get("slurm_restart_count") != me["slurm_restart_count"]:
        return f"SLURM job {job} was requeued"
    return None


class HeartbeatLock:
    """``lock.acquire()`` -> True when this process holds ``folder/<name>`` (taking over a stale one), False when a
    live holder has it; ``release()`` gives it up. A daemon thread refreshes the heartbeat every ``beat_s``.

    Args:
        folder: The folder the lock protects (e.g. one bench cell).
        name: The lock file's name in it.
        stale_after_s: A heartbeat older than this marks the holder dead.
        beat_s: How often the holder refreshes it.
    """

    def __init__(self, folder: Path, name: str = ".cell-lock.json", stale_after_s: float = 300.0,
                 beat_s: float = 30.0) -> None:  # fmt: skip
        self.path = Path(folder) / name
        self.stale_after_s, self.beat_s = stale_after_s, beat_s
        self.token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def read(self) -> Optional[dict[str, Any]]:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None

    def holder(self) -> Optional[str]:
        """Who holds the lock now, in words (None: nobody live)."""
        rec = self.read()
        if rec is None or stale_reason(rec, self.stale_after_s) is not None:
            return None
        slurm = f", SLURM job {rec['slurm_job_id']}" if rec.get("slurm_job_id") else ""
        return f"pid {rec.get('pid')} on {rec.get('host')}{slurm}"

    def _write(self) -> None:
        record = {**holder_record(), "token": self.token, "heartbeat": time.time()}
        tmp = self.path.with_name(f".{self.path.name}.{self.token}.tmp")
        tmp.write_text(json.dumps(record))
        os.replace(tmp, self.path)  # atomic: a reader sees the old record or the new one

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        rec = self.read()
        if rec is not None:
            reason = stale_reason(rec, self.stale_after_s)
            if reason is None:
                return False
            log.info("taking over the lock of %s (pid %s on %s): %s", self.path.parent, rec.get("pid"),
                     rec.get("host"), reason)  # fmt: skip
        elif self.path.exists():  # unreadable: a writer is mid-replace; let it win
            return False
        self._write()
        time.sleep(0.05)  # two takers at once: the last rename wins, and only the winner reads its own token back
        mine = self.read()
        if mine is None or mine.get("token") != self.token:
            return False
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, daemon=True)
        self._thread.start()
        return True

    def _beat(self) -> None:
        while not self._stop.wait(self.beat_s):
            rec = self.read()
            if rec is None or rec.get("token") != self.token:  # taken over (we looked dead): stop claiming it
                return
            self._write()

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        rec = self.read()
        if rec is not None and rec.get("token") == self.token:
            self.path.unlink(missing_ok=True)
