"""Training logs in the style of torchvision's references: SmoothedValue and MetricLogger."""

from __future__ import annotations

import datetime
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch

from nima_train.distributed import all_reduce_sum


class SmoothedValue:
    """A windowed median/average plus the global average of a series of numbers."""

    def __init__(self, window_size: int = 20, fmt: str = "{median:.4f} ({global_avg:.4f})") -> None:
        self.deque: deque[float] = deque(maxlen=window_size)
        self.total = 0.0
        self.count = 0
        self.fmt = fmt

    def update(self, value: float, n: int = 1) -> None:
        self.deque.append(value)
        self.count += n
        self.total += value * n

    def synchronize_between_processes(self, device: torch.device) -> None:
        """Make count and total the sums over ranks (the window stays local)."""
        count, total = all_reduce_sum([self.count, self.total], device)
        self.count, self.total = int(count), total

    @property
    def median(self) -> float:
        return float(torch.tensor(list(self.deque)).median().item()) if self.deque else 0.0

    @property
    def avg(self) -> float:
        return sum(self.deque) / len(self.deque) if self.deque else 0.0

    @property
    def global_avg(self) -> float:
        return self.total / self.count if self.count else 0.0

    @property
    def value(self) -> float:
        return self.deque[-1] if self.deque else 0.0

    def __str__(self) -> str:
        return self.fmt.format(median=self.median, avg=self.avg, global_avg=self.global_avg, value=self.value)


class MetricLogger:
    """Collects SmoothedValues and prints a line every `print_freq` steps with ETA, step and data time."""

    def __init__(self, delimiter: str = "  ", printer: Callable[[str], None] = print) -> None:
        self.meters: dict[str, SmoothedValue] = defaultdict(SmoothedValue)
        self.delimiter = delimiter
        self.printer = printer

    def update(self, n: int = 1, **kwargs: float) -> None:
        for k, v in kwargs.items():
            self.meters[k].update(float(v), n)

    def add_meter(self, name: str, meter: SmoothedValue) -> None:
        self.meters[name] = meter

    def synchronize_between_processes(self, device: torch.device) -> None:
        for meter in self.meters.values():
            meter.synchronize_between_processes(device)

    def __str__(self) -> str:
        return self.delimiter.join(f"{name}: {meter}" for name, meter in self.meters.items())

    def log_every(self, iterable: Iterable[Any], print_freq: int, header: str = "",
                  total: int | None = None) -> Iterator[Any]:
        """Yield from `iterable`, timing each step; `total` (steps expected) gives the ETA when len() is unknown."""
        if total is None:
            try:
                total = len(iterable)  # type: ignore[arg-type]
            except TypeError:
                total = None
        start = end = time.perf_counter()
        iter_time, data_time = SmoothedValue(fmt="{avg:.4f}"), SmoothedValue(fmt="{avg:.4f}")
        i = 0
        for obj in iterable:
            data_time.update(time.perf_counter() - end)
            yield obj
            iter_time.update(time.perf_counter() - end)
            i += 1
            if print_freq and (i % print_freq == 0 or i == total):
                eta = ""
                if total:
                    eta = f"eta: {datetime.timedelta(seconds=int(iter_time.global_avg * max(total - i, 0)))}"
                steps = f"[{i}/{total}]" if total else f"[{i}]"
                self.printer(self.delimiter.join(
                    p for p in (header, steps, eta, str(self), f"time: {iter_time}", f"data: {data_time}") if p
                ))
            end = time.perf_counter()
        elapsed = time.perf_counter() - start
        total_time = datetime.timedelta(seconds=int(elapsed))
        self.printer(f"{header} total time: {total_time} ({elapsed / max(i, 1):.4f} s / it)")
