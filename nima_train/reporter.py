"""Reporting a training run: log lines on stdout, and to Dagster through Pipes when launched by it."""

from __future__ import annotations

import os
from typing import Any

from nima_train.distributed import DistInfo


class Reporter:
    """Log lines to stdout, and to Dagster through Pipes when launched by it (rank 0 only)."""

    def __init__(self, info: DistInfo) -> None:
        self.info = info
        self.pipes = None
        self._ctx = None
        if info.is_main and os.environ.get("DAGSTER_PIPES_CONTEXT"):
            from dagster_pipes import open_dagster_pipes

            self._ctx = open_dagster_pipes()
            self.pipes = self._ctx.__enter__()

    def log(self, line: str) -> None:
        if not self.info.is_main:
            return
        print(line, flush=True)

    def epoch(self, line: str) -> None:
        self.log(line)
        if self.pipes is not None:
            self.pipes.log.info(line)

    def finish(self, summary: dict[str, Any]) -> None:
        if self.pipes is not None:
            self.pipes.report_custom_message(summary)

    def close(self, exc: BaseException | None = None) -> None:
        if self._ctx is not None:
            self._ctx.__exit__(type(exc) if exc else None, exc, exc.__traceback__ if exc else None)
            self._ctx = None
