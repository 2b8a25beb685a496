"""One line as each component of a LocalDagRunner run starts and one as it ends.

  [ 8/12] CaptionTrainer started
    CaptionTrainer epoch 1/25: ...
  [ 8/12] CaptionTrainer ran in 93.2 s (run 2:41)
  [ 2/12] StatisticsGen started, reused from the cache in 0.4 s (run 0:03)

(on the console a component that printed nothing in between gets one line,
see pipeline/local/console.py's OPEN_LINE).

LocalDagRunner has no callback around a node, but it logs, through absl,
'Component %s is running.' before it launches each node and 'Component %s is
finished.' after (tfx/orchestration/local/local_dag_runner.py), and TFX's
launcher logs 'A cached execution %d is used.' in between when it publishes
the cached outputs instead of running the executor
(tfx/orchestration/portable/launcher.py). `NodeProgress` is a logging
handler on the 'absl' logger that turns those records into
`captioner.progress` lines; nothing of TFX is replaced.

Those are INFO records, and absl drops them before any handler sees them
once its verbosity is above INFO. `reporting` sets the verbosity to INFO with
absl's own `set_verbosity`, not on the logger alone: TensorFlow's SavedModel
export (trackable/autotrackable.py) sets absl's verbosity to FATAL while it
looks for functions and then sets it back to the verbosity it read, whose
default is WARNING, so a level set only on the logger would be lost when the
first Trainer exports its model, and no later node would be reported.

A node that started and did not finish is the one that failed or was
interrupted: `NodeProgress.current`.
"""
import contextlib
import logging
import time
from typing import Iterator, Optional, Sequence

from absl import logging as absl_logging

from components import progress
from pipeline.local import console

# LocalDagRunner's and its launcher's log messages (the format strings, before
# the node id or execution id is filled in).
_RUNNING = 'Component %s is running.'
_FINISHED = 'Component %s is finished.'
_CACHED = 'A cached execution %d is used.'


def _clock(seconds: float) -> str:
  minutes, seconds = divmod(int(seconds), 60)
  return f'{minutes}:{seconds:02d}'


class NodeProgress(logging.Handler):
  """Reports the nodes of one run, numbered in the order the pipeline lists them."""

  def __init__(self, node_ids: Sequence[str]):
    super().__init__(logging.INFO)
    self._position = {node_id: n for n, node_id in enumerate(node_ids, 1)}
    self._run_start = time.monotonic()
    self._node_start = self._run_start
    self._cached = False
    self.current: Optional[str] = None  # the node started and not finished yet

  def emit(self, record: logging.LogRecord) -> None:
    if record.msg == _RUNNING:
      self._started(*record.args)
    elif record.msg == _CACHED:
      self._cached = True
    elif record.msg == _FINISHED:
      self._finished(*record.args)

  def _label(self, node_id: str) -> str:
    width = len(str(len(self._position)))
    return f'[{self._position.get(node_id, 0):>{width}}/{len(self._position)}] {node_id}'

  def _started(self, node_id: str) -> None:
    self.current, self._cached, self._node_start = node_id, False, time.monotonic()
    progress.logger.info('%s started', self._label(node_id), extra={console.OPEN_LINE: True})

  def _finished(self, node_id: str) -> None:
    self.current = None
    now = time.monotonic()
    outcome = (f'{"reused from the cache" if self._cached else "ran"} in '
               f'{now - self._node_start:.1f} s (run {_clock(now - self._run_start)})')
    progress.logger.info('%s %s', self._label(node_id), outcome,
                         extra={console.CONTINUATION: outcome})


@contextlib.contextmanager
def reporting(node_ids: Sequence[str]) -> Iterator[NodeProgress]:
  """Reports every node LocalDagRunner runs inside the `with` block."""
  handler = NodeProgress(node_ids)
  absl_logger = absl_logging.get_absl_logger()
  verbosity, level = absl_logging.get_verbosity(), absl_logger.level
  absl_logging.set_verbosity(absl_logging.INFO)
  absl_logger.addHandler(handler)
  try:
    yield handler
  finally:
    absl_logger.removeHandler(handler)
    absl_logging.set_verbosity(verbosity)
    absl_logger.setLevel(level)
