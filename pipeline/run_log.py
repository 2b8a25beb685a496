"""The run's log file and its console: everything on record, only progress on screen.

A pipeline run writes thousands of lines nobody watching needs: TensorFlow's
C++ logging, absl INFO/WARNING lines from TFX and Beam, Keras' own epoch
lines, Beam worker processes' output, and the tracebacks TensorFlow 2.16
prints while the interpreter shuts down ("Exception ignored in:
<function AtomicFunction.__del__>"). `capture` sends all of it to
`<output_dir>/logs/run-<UTC time>.log` by pointing the process's file
descriptors 1 and 2 at that file (so C++ code and child processes follow),
and shows on the terminal only the `captioner.progress` lines
(components/progress.py), which the runner and the components emit, plus
whatever the runner prints to `RunLog.console` / `RunLog.errors`.

With `verbose`, descriptors 1 and 2 go through `tee` instead: the terminal
sees the whole log as it is written, and the file still gets all of it.
"""
import contextlib
import dataclasses
import datetime
import io
import logging
import os
import subprocess
import sys
from typing import Iterator, Optional, TextIO

import tqdm

from components import progress

_LOG_FORMAT = '%(asctime)s %(levelname)s %(name)s: %(message)s'
# Width of a progress bar line on the console, in characters.
_BAR_COLUMNS = 80
# Attributes (logging's `extra`) of progress records that share a console line:
# a record with OPEN_LINE=True leaves its line open for the next record's
# CONTINUATION (a string) to complete.
OPEN_LINE = 'open_line'
CONTINUATION = 'continuation'


@dataclasses.dataclass
class RunLog:
  path: str  # the run's log file
  console: TextIO  # the terminal's standard output as it was before `capture`
  errors: TextIO  # the terminal's standard error as it was before `capture`


def _terminal(stream: TextIO) -> TextIO:
  """A stream that keeps writing where `stream` writes now, whatever becomes of fds 1 and 2."""
  try:
    fd = stream.fileno()
  except (AttributeError, io.UnsupportedOperation):
    return stream  # not backed by a descriptor (e.g. pytest's capsys): unaffected by dup2
  return os.fdopen(os.dup(fd), 'w', buffering=1)


class _ConsoleHandler(logging.Handler):
  """Writes `captioner.progress` records to the terminal; loops as tqdm bars.

  On a terminal a loop's bar is redrawn in place and its last state stays;
  elsewhere (a pipe, a CI log) only the last state is written, one line per
  loop. A record marked `OPEN_LINE` leaves its line open; if the next record
  carries a `CONTINUATION`, that completes the line, otherwise the next
  record starts a new one.
  """

  def __init__(self, stream: TextIO):
    super().__init__(logging.INFO)
    self._stream = stream
    self._live = stream.isatty()
    self._open: Optional[str] = None  # 'bar' or 'line' while a line awaits its end

  def emit(self, record: logging.LogRecord) -> None:
    state: Optional[progress.Progress] = getattr(record, 'progress', None)
    continuation = getattr(record, CONTINUATION, None)
    if state is not None:
      if self._live or state.finished:
        bar = tqdm.tqdm.format_meter(state.done, state.total, state.elapsed, ncols=_BAR_COLUMNS,
                                     prefix=f'  {state.description}', unit=state.unit)
        redraw = self._open == 'bar'
        self._write(('\r' if redraw else '') + bar, None if state.finished else 'bar', redraw)
    elif continuation and self._open == 'line':
      self._write(f', {continuation}', None, continues=True)
    else:
      self._write(record.getMessage(), 'line' if getattr(record, OPEN_LINE, False) else None)

  def _write(self, text: str, leave_open: Optional[str], continues: bool = False) -> None:
    """Writes `text`, below the open line unless it `continues` it; ends the line unless `leave_open`."""
    start = '\n' if self._open and not continues else ''
    self._stream.write(start + text + ('' if leave_open else '\n'))
    self._stream.flush()
    self._open = leave_open


def _is_final(record: logging.LogRecord) -> bool:
  """Keeps a loop's intermediate progress records out of the log file."""
  state = getattr(record, 'progress', None)
  return state is None or state.finished


@contextlib.contextmanager
def capture(output_dir: str, verbose: bool = False, restore: bool = True) -> Iterator[RunLog]:
  """Sends everything the process writes to a new log file for the duration.

  Args:
    output_dir: the run's output folder; the log goes to its `logs/`.
    verbose: also show the whole log on the terminal.
    restore: put descriptors 1 and 2 back afterwards. A command-line run
      passes False, so that what the interpreter prints while it shuts down
      still goes to the log, not the terminal.

  Yields:
    the log file's path and the terminal's streams.
  """
  log_dir = os.path.join(output_dir, 'logs')
  os.makedirs(log_dir, exist_ok=True)
  stamp = datetime.datetime.now(datetime.timezone.utc).strftime('%Y%m%d-%H%M%S-%f')
  path = os.path.join(log_dir, f'run-{stamp}.log')
  for stream in (sys.stdout, sys.stderr):
    stream.flush()
  run_log = RunLog(path, _terminal(sys.stdout), _terminal(sys.stderr))
  saved = {fd: os.dup(fd) for fd in (1, 2)}
  tee = None
  if verbose:
    tee = subprocess.Popen(['tee', '-a', path], stdin=subprocess.PIPE, stdout=saved[1])
    target = tee.stdin.fileno()
  else:
    target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
  for fd in (1, 2):
    os.dup2(target, fd)
  if tee is None:
    os.close(target)

  root = logging.getLogger()
  saved_handlers, saved_level = root.handlers[:], root.level
  file_handler = logging.StreamHandler(os.fdopen(os.dup(2), 'w', buffering=1))
  file_handler.setFormatter(logging.Formatter(_LOG_FORMAT))
  file_handler.addFilter(_is_final)
  root.handlers = [file_handler]
  root.setLevel(logging.INFO)
  console_handler = None if verbose else _ConsoleHandler(run_log.console)
  if console_handler:
    progress.logger.addHandler(console_handler)
  try:
    yield run_log
  finally:
    if console_handler:
      progress.logger.removeHandler(console_handler)
    root.handlers, root.level = saved_handlers, saved_level
    file_handler.stream.close()
    for stream in (sys.stdout, sys.stderr):
      stream.flush()
    if restore:
      for fd, copy in saved.items():
        os.dup2(copy, fd)
      if tee:
        tee.stdin.close()
        tee.wait()
    for copy in saved.values():
      os.close(copy)
    for terminal, original in ((run_log.console, sys.stdout), (run_log.errors, sys.stderr)):
      if terminal is not original:
        terminal.close()
