"""Progress of the long-running parts, for a person watching a run.

Library code reports through one logger, `captioner.progress`, and never
writes to the terminal itself: the runner decides where the lines go
(pipeline/run_log.py shows them on the console and keeps every other log
line in the run's log file). Anywhere else (tests, Kubeflow) they are
ordinary INFO log lines.

`track(items, total, description)` reports a loop over images: a record at
most every `_INTERVAL_SECONDS` and one at the end, each carrying a
`Progress` (in the record's `progress` attribute) a console can draw as a bar.
A loop that ends within its first interval reports nothing: a bar is for the
loops a person waits on. `Tracker` does the same for a loop driven from
elsewhere (a Beam DoFn's elements), through `advance`.
"""
import logging
import time
from typing import Iterable, Iterator, NamedTuple, Optional, TypeVar

_T = TypeVar('_T')

logger = logging.getLogger('captioner.progress')

# Seconds between two progress records of one loop: a live bar without
# flooding a log file.
_INTERVAL_SECONDS = 1.0


class Progress(NamedTuple):
  """The state of one loop, attached to its log records."""
  description: str
  done: int
  total: Optional[int]  # None when the loop's length is not known up front
  elapsed: float  # seconds since the loop began
  unit: str
  finished: bool  # True on the loop's last record only


class Tracker:
  """Reports a loop that something else drives: `advance` as items are handled.

  For loops that are not a Python iterable here, e.g. a Beam DoFn that sees
  one element at a time. A record at most every `_INTERVAL_SECONDS`, and the
  last one (`finished`) when `total` items are done or at `finish()`, unless
  the loop ended before its first record.
  """

  def __init__(self, total: Optional[int], description: str, unit: str = 'image'):
    self._total, self._description, self._unit = total, description, unit
    self._start = self._last_report = time.monotonic()
    self._done = 0
    self._reported = False
    self._finished = False

  def advance(self, count: int = 1) -> None:
    self._done += count
    now = time.monotonic()
    if self._total is not None and self._done >= self._total:
      self.finish()
    elif now - self._last_report >= _INTERVAL_SECONDS:
      self._last_report = now
      self._reported = True
      self._report(finished=False)

  def finish(self) -> None:
    if self._reported and not self._finished:
      self._report(finished=True)
    self._finished = True

  def _report(self, finished: bool) -> None:
    state = Progress(self._description, self._done, self._total, time.monotonic() - self._start,
                     self._unit, finished)
    logger.info('%s: %d%s %ss in %.1f s', self._description, self._done,
                f'/{self._total}' if self._total is not None else '', self._unit, state.elapsed,
                extra={'progress': state})


def track(items: Iterable[_T], total: Optional[int], description: str,
          unit: str = 'image') -> Iterator[_T]:
  """Yields `items`, reporting how many have been handled and for how long.

  An item counts as handled when the loop asks for the next one; the last
  record (`finished`) comes when `items` ends, also for a loop of unknown
  length (`total=None`), unless the loop ended before its first record.
  """
  tracker = Tracker(total, description, unit)
  for item in items:
    yield item
    tracker.advance()
  tracker.finish()
