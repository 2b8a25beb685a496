"""The terminal's side of a run: `captioner.progress` records as lines and bars.

pipeline/local/run_log.py sends everything a run writes to its log file; this
handler is what the person watching sees instead. Python's logging has no
handler that redraws a line in place or joins two records on one line, and
tqdm draws a bar only for a loop it drives itself, while ours are driven by
library code (components/progress.py) that reports through logging.
"""
import contextlib
import logging
from typing import Iterator, Optional, TextIO

import tqdm

from components import progress

# Width of a progress bar line on the console, in characters.
_BAR_COLUMNS = 80
# Attributes (logging's `extra`) of progress records that share a console line:
# a record with OPEN_LINE=True leaves its line open for the next record's
# CONTINUATION (a string) to complete.
OPEN_LINE = 'open_line'
CONTINUATION = 'continuation'


class ConsoleHandler(logging.Handler):
  """Writes `captioner.progress` records to the terminal; loops as tqdm bars.

  On a terminal (`live`) a loop's bar is redrawn in place from every
  record, its DEBUG bar updates included (`showing_progress` enables them),
  and its last state stays; elsewhere (a file, a pipe, a CI log) a loop's
  INFO records are plain lines, one at most every
  progress.LINE_INTERVAL_SECONDS, and its last state a bar. A record marked
  `OPEN_LINE` leaves its line open; if the next record carries a
  `CONTINUATION`, that completes the line, otherwise the next record starts
  a new one.
  """

  def __init__(self, stream: TextIO):
    self.live = stream.isatty()
    super().__init__(logging.DEBUG if self.live else logging.INFO)
    self._stream = stream
    self._open: Optional[str] = None  # 'bar' or 'line' while a line awaits its end

  def emit(self, record: logging.LogRecord) -> None:
    state: Optional[progress.Progress] = getattr(record, 'progress', None)
    continuation = getattr(record, CONTINUATION, None)
    if state is not None:
      if not (self.live or state.finished):
        self._write(f'  {record.getMessage()}', None)
      else:
        bar = tqdm.tqdm.format_meter(state.done, state.total, state.elapsed, ncols=_BAR_COLUMNS,
                                     prefix=f'  {state.description}', unit=state.unit)
        redraw = self._open == 'bar'
        self._write(('\r' if redraw else '') + bar, None if state.finished else 'bar', redraw)
    elif continuation and self._open == 'line':
      self._write(f', {continuation}', None, continues=True)
    else:
      self._write(record.getMessage(), 'line' if getattr(record, OPEN_LINE, False) else None)

  def _write(self, text: str, leave_open: Optional[str], continues: bool = False) -> None:
    """Writes `text` below the open line (or after it, if it `continues` it).

    Ends the line unless `leave_open`.
    """
    start = '\n' if self._open and not continues else ''
    self._stream.write(start + text + ('' if leave_open else '\n'))
    self._stream.flush()
    self._open = leave_open


@contextlib.contextmanager
def showing_progress(stream: TextIO) -> Iterator[ConsoleHandler]:
  """`captioner.progress` on `stream` for the duration; on a terminal, with
  the loops' bar updates (DEBUG records) enabled on that logger alone."""
  handler = ConsoleHandler(stream)
  saved_level = progress.logger.level
  if handler.live:
    progress.logger.setLevel(logging.DEBUG)
  progress.logger.addHandler(handler)
  try:
    yield handler
  finally:
    progress.logger.removeHandler(handler)
    progress.logger.setLevel(saved_level)
