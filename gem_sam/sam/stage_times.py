"""Wall time per named stage of a computation, for profiles (off unless enabled: then free)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch


class StageTimes:
    """Accumulates the seconds spent in each ``with times.stage(name):`` block while ``enabled``.

    On a GPU the device is synchronised at both ends of a stage, so the time is the stage's own.
    """

    def __init__(self, *, enabled: bool = False) -> None:
        self.enabled = enabled
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str, device: torch.device | None = None) -> Iterator[None]:
        if not self.enabled:
            yield
            return
        synchronize = device is not None and device.type == "cuda"
        if synchronize:
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        try:
            yield
        finally:
            if synchronize:
                torch.cuda.synchronize(device)
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

    def reset(self) -> None:
        self.seconds = {}
