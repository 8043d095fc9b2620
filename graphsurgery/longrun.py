"""Saying, once, how long a long run will take: `run`, `bench`, `eval-coco`, `verify`, `convert --int8` and `chain
--check` each time the first part of their work and extrapolate; a run of over a minute says so in one line on
stderr (logs too, where no progress bar is drawn), with the options that shorten it, so that it is not taken for a
hang. One threshold, one wording."""

from __future__ import annotations

import contextlib
import contextvars
import time

from graphsurgery.errors import say_note

#: a run projected to last longer than this says how long, once (on stderr)
LONG_RUN_SECONDS = 60.0
#: how long `FirstPart` times the work before it extrapolates (the first call also pays the runtime's set-up)
SAMPLE_SECONDS = 2.0
#: set while a command runs another's work inside its own, whose estimate already counts it (`told_by_caller`)
_TOLD_BY_CALLER = contextvars.ContextVar("told_by_caller", default=False)


def long_run_note(seconds: float, work: str, measured: str, shorter: str = "") -> str | None:
    """The line for a run of `work` projected to take `seconds` ("note: 300 crops to run: about 5 min (2.6 ms per
    crop, measured on one batch)"), with the options that shorten it; None when it takes at most
    LONG_RUN_SECONDS."""
    if not seconds > LONG_RUN_SECONDS:
        return None
    from graphsurgery.supervisor import announced  # (not at the top: the supervisor imports this module)

    announced()  # the supervisor's own note would only repeat it
    return f"note: {work}: about {duration(seconds)} ({measured})" + (f"; to shorten it: {shorter}" if shorter else "")


def duration(seconds: float) -> str:
    """"5 min", or "40 s" under a minute."""
    return f"{seconds / 60:,.0f} min" if seconds >= 60 else f"{seconds:.0f} s"


def say_long_run(seconds: float, work: str, measured: str, shorter: str = "") -> None:
    """`long_run_note`'s line on stderr, when the run is long (where no progress bar owns the console)."""
    if not _TOLD_BY_CALLER.get() and (note := long_run_note(seconds, work, measured, shorter)):
        say_note(note)


@contextlib.contextmanager
def told_by_caller():
    """No note from the work inside: eval-coco's own counts the verify it runs, whose note would name verify's
    options (--random) for a command that has none."""
    token = _TOLD_BY_CALLER.set(True)
    try:
        yield
    finally:
        _TOLD_BY_CALLER.reset(token)


class FirstPart:
    """Times the first part of `total` units of work from a progress count: `tick(done)` after each part, and,
    once SAMPLE_SECONDS have passed since the first tick (which pays for loading), the seconds the whole takes at
    that rate, once; None before and after."""

    def __init__(self, total: int):
        self.total, self.start, self.told = total, None, False

    def tick(self, done: int) -> float | None:
        now = time.perf_counter()
        if self.start is None:
            self.start = (now, done)
            return None
        began, first = self.start
        if self.told or done <= first or now - began < SAMPLE_SECONDS:
            return None
        self.told = True
        return (now - began) / (done - first) * self.total
