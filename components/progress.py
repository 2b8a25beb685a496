"""Progress of the long-running parts, for a person watching a run or reading its log.

Library code reports through one logger, `captioner.progress`, and never
writes to the terminal itself: the runner decides where the lines go
(pipeline/local/run_log.py shows them on the console and keeps every other log
line in the run's log file). Anywhere else (tests, Kubeflow) they are
ordinary log lines.

`track(items, total, description)` reports a loop over images, at two
levels, each record carrying a `Progress` (in its `progress` attribute):
  * DEBUG at most every `BAR_INTERVAL_SECONDS`: a terminal's bar redrawn in
    place (pipeline/local/console.py enables them only there);
  * INFO at most every `LINE_INTERVAL_SECONDS`, and at the end: a plain line
    (done of total, rate, time left) for anything that is not a terminal, a
    log file, a pipe, a pod's log, which a bar's updates would flood.
A loop that ends within its first bar interval reports nothing: progress is
for the loops a person waits on. `Tracker` does the same for a loop driven
from elsewhere (a Beam DoFn's elements), through `advance`; `shared_tracker`
gives the DoFn instances of one process's threads one Tracker.
"""
import logging
import threading
import time
from typing import Dict, Iterable, Iterator, NamedTuple, Optional, TypeVar

_T = TypeVar('_T')

logger = logging.getLogger('captioner.progress')

# Seconds between two bar updates (DEBUG records) of one loop: a live bar.
BAR_INTERVAL_SECONDS = 1.0
# Seconds between two plain lines (INFO records) of one loop: a log shows the
# loop moving without a line per second.
LINE_INTERVAL_SECONDS = 30.0


class Progress(NamedTuple):
  """The state of one loop, attached to its log records."""
  description: str
  done: int
  total: Optional[int]  # None when the loop's length is not known up front
  elapsed: float  # seconds since the loop began
  unit: str
  finished: bool  # True on the loop's last record only

  def line(self) -> str:
    """'feature pass: 1800/8091 images in 0:30, 60.0 images/s, about 1:45 left'."""
    rate = self.done / self.elapsed if self.elapsed > 0 else 0.0
    left = (f', about {_clock((self.total - self.done) / rate)} left'
            if self.total is not None and rate > 0 and not self.finished else '')
    total = f'/{self.total}' if self.total is not None else ''
    return (f'{self.description}: {self.done}{total} {self.unit}s in {_clock(self.elapsed)}, '
            f'{rate:.1f} {self.unit}s/s{left}')


def _clock(seconds: float) -> str:
  minutes, seconds = divmod(int(round(seconds)), 60)
  hours, minutes = divmod(minutes, 60)
  return f'{hours}:{minutes:02d}:{seconds:02d}' if hours else f'{minutes}:{seconds:02d}'


class Tracker:
  """Reports a loop that something else drives: `advance` as items are handled.

  For loops that are not a Python iterable here, e.g. a Beam DoFn that sees
  one element at a time (thread-safe: a DoFn's instances may run on several
  threads). A bar update at most every BAR_INTERVAL_SECONDS, a line at most
  every LINE_INTERVAL_SECONDS, and the last record (`finished`, a line) when
  `total` items are done or at `finish()`, unless the loop ended before its
  first bar update.
  """

  def __init__(self, total: Optional[int], description: str, unit: str = 'image'):
    self._total, self._description, self._unit = total, description, unit
    self._start = self._last_bar = self._last_line = time.monotonic()
    self._done = 0
    self._reported = False
    self._finished = False
    self._lock = threading.Lock()

  def advance(self, count: int = 1) -> None:
    with self._lock:
      self._done += count
      now = time.monotonic()
      if self._total is not None and self._done >= self._total:
        self._finish()
      elif now - self._last_line >= LINE_INTERVAL_SECONDS:
        self._last_line = self._last_bar = now
        self._report(logging.INFO, finished=False)
      elif now - self._last_bar >= BAR_INTERVAL_SECONDS:
        self._last_bar = now
        self._report(logging.DEBUG, finished=False)

  def finish(self) -> None:
    with self._lock:
      self._finish()

  def _finish(self) -> None:
    if self._reported and not self._finished:
      self._report(logging.INFO, finished=True)
    self._finished = True

  def _report(self, level: int, finished: bool) -> None:
    self._reported = True
    state = Progress(self._description, self._done, self._total, time.monotonic() - self._start,
                     self._unit, finished)
    logger.log(level, '%s', state.line(), extra={'progress': state})


_shared: Dict[str, Tracker] = {}
_shared_lock = threading.Lock()


def shared_tracker(key: str, total: Optional[int], description: str, unit: str = 'image') -> Tracker:
  """The one Tracker of `key` in this process, made on the first call.

  For a DoFn whose instances run on several threads of one process (the
  DirectRunner's multi_threading mode): one count of the whole loop, not one
  per thread. `key` must be unique to the loop (e.g. its work folder).
  """
  with _shared_lock:
    if key not in _shared:
      _shared[key] = Tracker(total, description, unit)
    return _shared[key]


def release_tracker(key: str) -> None:
  """Finishes and forgets `key`'s shared Tracker (after its loop)."""
  with _shared_lock:
    tracker = _shared.pop(key, None)
  if tracker is not None:
    tracker.finish()


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
