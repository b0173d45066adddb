"""The training budget in words before a method trains, and a time estimate after its first steps, so a run on a
small folder with a preset's budget says what it will cost instead of running silently for an hour."""

from __future__ import annotations

import logging
import time
from typing import Optional

import torch

from reprodistill.config import TrainConfig

log = logging.getLogger("reprodistill")

# Passes over the labelled images beyond which a budget is out of proportion to the data (the presets' 300 steps
# of batch 128 are ~70 passes over 546 BreastMNIST images).
MAX_SENSIBLE_PASSES = 300
# An estimate beyond this is worth a warning with what to change.
LONG_RUN_S = 3600.0


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _count(passes: float) -> str:
    return f"{passes:.0f}" if passes >= 10 else f"{passes:.2g}"


class BudgetLog:
    """Logs the budget of one method's training, then (once) the estimate of its time after ``probe_steps``."""

    def __init__(
        self,
        name: str,
        cfg: TrainConfig,
        steps_per_round: int,
        n_labelled: int,
        n_unlabelled: int,
        unlabelled_share: float,
        input_size: Optional[tuple[int, int]],
        probe_steps: int = 5,
    ) -> None:
        self.name, self.total = name, steps_per_round * cfg.epochs
        self.probe_steps, self.t0, self.done, self.reported = probe_steps, 0.0, 0, False
        per_step_unl = round(cfg.batch_size * unlabelled_share) if n_unlabelled else 0
        per_step_lab = cfg.batch_size - per_step_unl
        passes = self.total * per_step_lab / max(1, n_labelled)
        unl_passes = self.total * per_step_unl / max(1, n_unlabelled)
        mix = f" ({per_step_lab} labelled + {per_step_unl} unlabelled)" if per_step_unl else ""
        unl = f" and {_count(unl_passes)} over the {n_unlabelled} unlabelled ones" if per_step_unl else ""
        size = f"; input {input_size[0]}x{input_size[1]} px" if input_size else ""
        log.info(
            "%s: budget %d optimiser steps in %d evaluation round(s), %d images per step%s: %s passes over the %d "
            "labelled images%s%s",
            name, self.total, cfg.epochs, cfg.batch_size, mix, _count(passes), n_labelled, unl, size,
        )  # fmt: skip
        # With unlabelled images a long budget is spent on them (the labelled half of each batch repeats by design,
        # as in FixMatch's schedule): it is out of proportion only when the unlabelled pool is exhausted many times.
        what, many, pool, per_step = (
            ("unlabelled", unl_passes, n_unlabelled, per_step_unl) if per_step_unl
            else ("labelled", passes, n_labelled, per_step_lab)
        )  # fmt: skip
        if many > MAX_SENSIBLE_PASSES:
            sensible = max(cfg.epochs, int(50 * pool / max(1, per_step)))
            log.warning(
                "%s: %.0f passes over %d %s images is far more than so few images need (the presets' budget "
                "is sized for hundreds); e.g. train.steps=%d gives ~50 passes",
                name, many, pool, what, sensible,
            )  # fmt: skip

    def step(self, steps_left: int) -> None:
        """Call after every optimiser step with the steps still to go in the whole budget."""
        if self.reported:
            return
        if self.done == 0:
            self.t0 = time.perf_counter()  # the first step pays one-off costs: time from after it
        self.done += 1
        if self.done <= self.probe_steps:
            return
        per_step = (time.perf_counter() - self.t0) / (self.done - 1)
        eta = per_step * steps_left
        log.info("%s: %.2f s per step here: ~%s for the remaining %d steps (plus the validation rounds)",
                 self.name, per_step, _duration(eta), steps_left)  # fmt: skip
        if eta > LONG_RUN_S:
            device = "a GPU" if torch.cuda.is_available() else f"{torch.get_num_threads()} CPU threads"
            log.warning(
                "%s: ~%s on this machine (%s): lower train.steps, data.load_size or student.image_size, or train on "
                "a GPU",
                self.name, _duration(eta), device,
            )  # fmt: skip
        self.reported = True
