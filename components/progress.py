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
loops a person waits on.
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


def track(items: Iterable[_T], total: Optional[int], description: str,
          unit: str = 'image') -> Iterator[_T]:
  """Yields `items`, reporting how many have been handled and for how long.

  An item counts as handled when the loop asks for the next one; the last
  record (`finished`) comes when `items` ends, also for a loop of unknown
  length (`total=None`), unless the loop ended before its first record.
  """
  start = time.monotonic()
  last_report = start
  done = 0
  reported = False

  def report(finished: bool) -> None:
    state = Progress(description, done, total, time.monotonic() - start, unit, finished)
    logger.info('%s: %d%s %ss in %.1f s', description, done,
                f'/{total}' if total is not None else '', unit, state.elapsed,
                extra={'progress': state})

  for item in items:
    yield item
    done += 1
    now = time.monotonic()
    if now - last_report >= _INTERVAL_SECONDS:
      last_report = now
      reported = True
      report(finished=False)
  if reported:
    report(finished=True)
