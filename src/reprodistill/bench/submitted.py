"""The "submitted" record of a cell handed to a scheduler that runs it without the bench process
(``--launcher submitit --no-wait``): ``submitted.json`` in the cell's folder names the job, so a later bench with
the same command waits for a cell still queued instead of submitting it twice.

A running cell is already visible through its heartbeat lock; the record covers the gap before the job starts
(queued in SLURM for hours) and is ignored once the scheduler says the job is over (finished, failed, cancelled:
an unfinished cell is then submitted again).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from pathlib import Path
from typing import Any, Optional

from reprodistill.util.checkpoint import read_json, write_json
from reprodistill.util.optional import require

log = logging.getLogger("reprodistill")
RECORD = "submitted.json"

# SLURM job states in which the job will still run (or is running) the cell
ACTIVE_SLURM_STATES = frozenset(
    {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "COMPLETING", "RESIZING",
     "SUSPENDED", "SIGNALING", "STAGE_OUT"}
)  # fmt: skip
# sacct can lag a fresh submission by seconds to minutes: an UNKNOWN state counts as queued this long
UNKNOWN_GRACE_S = 600.0


def write_record(folder: Path, cluster: str, job_id: str, logs: Path) -> None:
    """Note that ``folder``'s cell was submitted as ``job_id`` on ``cluster`` ('slurm' or 'local')."""
    write_json(Path(folder) / RECORD, {"cluster": cluster, "job_id": job_id, "logs": str(logs),
                                       "host": socket.gethostname(), "time": time.time()})  # fmt: skip


def read_record(folder: Path) -> Optional[dict[str, Any]]:
    path = Path(folder) / RECORD
    return read_json(path) if path.is_file() else None


def slurm_state(job_id: str, logs: Path) -> str:
    """The job's SLURM state as sacct reports it (submitit's watcher), e.g. 'PENDING'; 'UNKNOWN' when unknown."""
    submitit = require("submitit", "a cell submitted with --launcher submitit", "slurm")
    try:
        return str(submitit.SlurmJob(folder=logs, job_id=job_id).state)
    except Exception as e:  # noqa: BLE001 - no sacct here, or it failed: say so and let the caller decide
        log.debug("sacct for job %s failed: %s", job_id, e)
        return "UNKNOWN"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def queued_holder(folder: Path) -> Optional[str]:
    """Who will still run ``folder``'s cell according to its submitted record ('SLURM job 123_4 (PENDING)'), or
    None: no record, or the job is over."""
    rec = read_record(folder)
    if rec is None:
        return None
    job = str(rec["job_id"])
    if rec["cluster"] == "local":  # submitit's local executor: the job id is the process id, on the same host
        if rec.get("host") != socket.gethostname():
            return None
        return f"local job {job}" if job.isdigit() and _pid_alive(int(job)) else None
    state = slurm_state(job, Path(rec["logs"]))
    name = state.split()[0] if state else "UNKNOWN"  # 'CANCELLED by 1000' -> 'CANCELLED'
    if name in ACTIVE_SLURM_STATES:
        return f"SLURM job {job} ({name})"
    if name == "UNKNOWN" and time.time() - float(rec.get("time", 0)) < UNKNOWN_GRACE_S:
        return f"SLURM job {job} (just submitted)"
    return None
