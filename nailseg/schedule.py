"""Training for a wall-clock budget: ``nailseg train --minutes M``.

A lent GPU machine gives 15 minutes, a CPU session an afternoon; neither says in advance how many
iterations that is. ``TimeBudgetHook`` makes the learning rate a function of the time spent instead
of the iteration: a short linear warm-up, then a cosine decay that reaches its floor when the
budget is spent, and there training ends with a checkpoint. The time spent is kept in the
checkpoints, so a resumed run goes on where it stopped.
"""

from __future__ import annotations

import math
import time

import torch
from mmengine.dist import broadcast, get_world_size
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

ELAPSED, BASE_LR = "time_budget_elapsed", "time_budget_base_lr"


def lr_factor(fraction: float, warmup: float = 0.03, floor: float = 0.01) -> float:
    """The multiplier of the base lr at ``fraction`` of the budget: warm-up from 10 %, cosine to ``floor``."""
    if fraction < warmup:
        return 0.1 + 0.9 * fraction / warmup
    progress = min(1.0, (fraction - warmup) / (1.0 - warmup))
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


@HOOKS.register_module()
class TimeBudgetHook(Hook):
    """Warm-up and cosine lr over ``minutes`` of training, then the last iteration (and checkpoint).

    Replaces the config's ``param_scheduler`` (``nailseg.train.build_config`` drops it). Model
    building, data loading before the first iteration and validation count as training time: the
    budget is what the clock on the wall shows.
    """

    priority = "NORMAL"  # after_train_iter before the CheckpointHook (VERY_LOW), which saves the last

    def __init__(self, minutes: float, warmup: float = 0.03, floor: float = 0.01):
        if not minutes > 0:
            raise ValueError(f"minutes must be positive, got {minutes}")
        self.budget_s = 60.0 * minutes
        self.warmup, self.floor = warmup, floor

    def before_train(self, runner) -> None:
        hub = runner.message_hub
        self.start = time.monotonic() - float(hub.get_info(ELAPSED, 0.0))
        groups = runner.optim_wrapper.param_groups
        self.base = hub.get_info(BASE_LR) or [group["lr"] for group in groups]
        hub.update_info(BASE_LR, list(self.base))

    def _elapsed(self) -> float:
        """Seconds of training so far; in a distributed run rank 0's, so that all ranks agree on lr and stop."""
        elapsed = time.monotonic() - self.start
        if get_world_size() > 1:
            shared = torch.tensor([elapsed], dtype=torch.float64)
            broadcast(shared, src=0)
            elapsed = float(shared.item())
        return elapsed

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        elapsed = self._elapsed()
        runner.message_hub.update_info(ELAPSED, elapsed)
        factor = lr_factor(elapsed / self.budget_s, self.warmup, self.floor)
        for group, base in zip(runner.optim_wrapper.param_groups, self.base):
            group["lr"] = base * factor

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        elapsed = self._elapsed()
        runner.message_hub.update_info(ELAPSED, elapsed)  # what a checkpoint of this iteration keeps
        if elapsed >= self.budget_s and runner.iter + 1 < runner.max_iters:
            # This iteration becomes the last: the loop ends after it, and the CheckpointHook
            # (save_last) saves it, as at the end of any schedule.
            runner.train_loop._max_iters = runner.iter + 1
