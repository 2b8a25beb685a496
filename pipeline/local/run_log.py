"""The run's log file: everything the process writes goes there, only progress to the terminal.

A pipeline run writes thousands of lines nobody watching needs: TensorFlow's
C++ logging, absl INFO/WARNING lines from TFX and Beam, Keras' own epoch
lines, Beam worker processes' output, and the tracebacks TensorFlow 2.16
prints while the interpreter shuts down ("Exception ignored in:
<function AtomicFunction.__del__>"). `capture` sends all of it to
`<output_dir>/logs/run-<UTC time>.log` and shows on the terminal only the
`captioner.progress` lines (pipeline/local/console.py draws them), plus whatever
the runner prints to `RunLog.console` / `RunLog.errors`.

Why file descriptors and not only a logging.FileHandler with sys.stdout and
sys.stderr replaced: TensorFlow's C++ logging writes to descriptor 2 itself,
Beam's worker processes inherit descriptors 1 and 2 and write there, and the
shut-down tracebacks come after any Python-level redirection could be undone.
Neither TFX nor absl redirects them (LocalDagRunner runs in the caller's
process and leaves its streams alone), so `capture` points descriptors 1 and
2 at the file with `os.dup2`; the file handler of the root logger writes to
that same file. With `verbose` the descriptors go through a `tee` process
instead, so the terminal sees the whole log as it is written; a process, not
a Python thread, because it must keep copying while the interpreter shuts
down.
"""
import contextlib
import dataclasses
import datetime
import io
import logging
import os
import subprocess
import sys
from typing import Iterator, TextIO

from pipeline.local import console as console_lib

_LOG_FORMAT = '%(asctime)s %(levelname)s %(name)s: %(message)s'


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


def _new_log_path(output_dir: str) -> str:
  log_dir = os.path.join(output_dir, 'logs')
  os.makedirs(log_dir, exist_ok=True)
  stamp = datetime.datetime.now(datetime.timezone.utc).strftime('%Y%m%d-%H%M%S-%f')
  return os.path.join(log_dir, f'run-{stamp}.log')


@contextlib.contextmanager
def _descriptors_to(path: str, tee: bool, restore: bool) -> Iterator[None]:
  """Points descriptors 1 and 2 at `path` (through `tee` to the terminal too, if `tee`)."""
  for stream in (sys.stdout, sys.stderr):
    stream.flush()
  saved = {fd: os.dup(fd) for fd in (1, 2)}
  copier = None
  if tee:
    copier = subprocess.Popen(['tee', '-a', path], stdin=subprocess.PIPE, stdout=saved[1])
    target = copier.stdin.fileno()
  else:
    target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
  for fd in (1, 2):
    os.dup2(target, fd)
  if copier is None:
    os.close(target)
  try:
    yield
  finally:
    for stream in (sys.stdout, sys.stderr):
      stream.flush()
    if restore:
      for fd, copy in saved.items():
        os.dup2(copy, fd)
      if copier:
        copier.stdin.close()
        copier.wait()
    for copy in saved.values():
      os.close(copy)


@contextlib.contextmanager
def _root_logging_to_descriptor_2() -> Iterator[None]:
  """Every logger's INFO and above, one line each, to what descriptor 2 is now."""
  root = logging.getLogger()
  saved_handlers, saved_level = root.handlers[:], root.level
  file_handler = logging.StreamHandler(os.fdopen(os.dup(2), 'w', buffering=1))
  file_handler.setFormatter(logging.Formatter(_LOG_FORMAT))
  file_handler.setLevel(logging.INFO)  # not the loops' bar updates (components/progress.py)
  root.handlers = [file_handler]
  root.setLevel(logging.INFO)
  try:
    yield
  finally:
    root.handlers, root.level = saved_handlers, saved_level
    file_handler.stream.close()


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
  path = _new_log_path(output_dir)
  run_log = RunLog(path, _terminal(sys.stdout), _terminal(sys.stderr))
  try:
    with contextlib.ExitStack() as stack:
      stack.enter_context(_descriptors_to(path, tee=verbose, restore=restore))
      stack.enter_context(_root_logging_to_descriptor_2())
      if not verbose:
        stack.enter_context(console_lib.showing_progress(run_log.console))
      yield run_log
  finally:
    for terminal, original in ((run_log.console, sys.stdout), (run_log.errors, sys.stderr)):
      if terminal is not original:
        terminal.close()
