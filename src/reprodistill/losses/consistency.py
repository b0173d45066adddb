"""Semi-supervised consistency losses on unlabelled images: FixMatch's thresholded pseudo-label CE (with FlexMatch's
per-class thresholds), Mean Teacher's softmax MSE, and MixMatch's sharpening, MixUp and ramp."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def fixmatch_loss(
    weak_logits: torch.Tensor, strong_logits: torch.Tensor, threshold: float | torch.Tensor = 0.95
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, mask): FixMatch's unlabelled term (Sohn et al. 2020, eq. 4).

    The weak view's prediction, without gradient, is the pseudo-label ``argmax p_w``; images whose confidence
    ``max p_w`` reaches ``threshold`` contribute ``CE(strong_logits, pseudo-label)``. The sum is divided by the number
    of unlabelled images, not of confident ones (the paper's ``1 / (mu B)``), so the term grows as confidence does.
    ``threshold`` may be a [K] tensor, one threshold per class, read at each image's pseudo-label (FlexMatch).
    ``mask`` is the float [N] confidence mask.
    """
    with torch.no_grad():
        p = weak_logits.detach().float().softmax(-1)
        conf, pseudo = p.max(-1)
        mask = (conf >= (threshold[pseudo] if isinstance(threshold, torch.Tensor) else threshold)).float()
    ce = F.cross_entropy(strong_logits.float(), pseudo, reduction="none")
    return (ce * mask).sum() / max(1, len(ce)), mask


def softmax_mse(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Mean Teacher's consistency (Tarvainen & Valpola 2017): squared difference of the two softmax outputs, mean over
    classes and images; the teacher side carries no gradient."""
    p_s = student_logits.float().softmax(-1)
    p_t = teacher_logits.detach().float().softmax(-1)
    return (p_s - p_t).pow(2).mean()


def sigmoid_rampup(progress: float, length: float) -> float:
    """``exp(-5 (1 - t)^2)`` with ``t = progress / length`` clipped to [0, 1] (the Mean Teacher ramp-up); 1 when
    ``length`` is 0."""
    if length <= 0:
        return 1.0
    t = min(1.0, max(0.0, progress / length))
    return math.exp(-5.0 * (1.0 - t) ** 2)


def linear_rampup(progress: float, length: float) -> float:
    """``progress / length`` clipped to [0, 1] (MixMatch's ramp of the unlabelled weight); 1 when ``length`` is 0."""
    return 1.0 if length <= 0 else min(1.0, max(0.0, progress / length))


def sharpen(probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """MixMatch's sharpening (Berthelot et al. 2019, eq. 7): ``p_c^(1/T) / sum_j p_j^(1/T)`` per row; T -> 0 gives
    the one-hot argmax, T = 1 leaves ``probs`` as they are. Computed in log space, so tiny probabilities do not
    underflow to a 0/0 row."""
    return torch.softmax(probs.float().clamp_min(1e-30).log() / temperature, dim=-1)


def mixup_pairs(inputs: torch.Tensor, targets: torch.Tensor, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """MixMatch's MixUp (eq. 8-11): each row is mixed with a random row of the same batch (itself included),
    ``lambda' x_i + (1 - lambda') x_perm(i)`` and the same for its target, ``lambda' = max(lambda, 1 - lambda)`` with
    ``lambda ~ Beta(alpha, alpha)`` drawn per row (the paper's code), so every mixed row stays closer to its own
    input: labelled rows stay labelled-like, unlabelled rows unlabelled-like. Draws from torch's global RNG (the
    loop checkpoints it, so a resumed run mixes the same pairs)."""
    n = len(inputs)
    lam = torch.distributions.Beta(float(alpha), float(alpha)).sample((n,))
    lam = torch.maximum(lam, 1.0 - lam).to(inputs.device)
    perm = torch.randperm(n).to(inputs.device)
    lam_x = lam.view(n, *([1] * (inputs.dim() - 1)))
    mixed = lam_x * inputs + (1.0 - lam_x) * inputs[perm]
    mixed_targets = lam.view(n, 1) * targets + (1.0 - lam.view(n, 1)) * targets[perm]
    return mixed, mixed_targets


def probability_mse(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """MixMatch's unlabelled loss (eq. 5): the squared difference between the softmax of ``logits`` and the target
    distributions, mean over classes and rows (the paper's code); ``targets`` carry no gradient."""
    return (logits.float().softmax(-1) - targets.detach().float()).pow(2).mean()


def flexmatch_class_thresholds(
    selected: torch.Tensor, num_classes: int, previous: torch.Tensor, warmup: bool = True
) -> torch.Tensor:
    """FlexMatch's per-class learning effects ``beta_c`` (Zhang et al. 2021, eq. 6-7, as in the USB library).

    Args:
        selected: [U] the class each unlabelled image last passed the fixed threshold with, -1 if never.
        num_classes: K.
        previous: [K] the current effects, kept where every image sits in one bucket (at the start: all -1).
        warmup: The paper's threshold warm-up: ``sigma_c / max(max_c sigma_c, n_unused)``, so thresholds stay low
            while most images are still unused; without it ``sigma_c / max_c sigma_c``.

    Returns:
        [K] ``beta_c`` in [0, 1]; the threshold of class c is ``tau * M(beta_c)`` with ``M(x) = x / (2 - x)``.
    """
    counts = torch.bincount(selected.long() + 1, minlength=num_classes + 1).float()  # [unused, class 0, ...]
    if counts.max() >= len(selected):  # every image in one bucket: nothing to compare yet
        return previous
    per_class = counts[1:]
    top = counts.max() if warmup else per_class.max()
    return per_class / top if top > 0 else previous
