"""One line as each component of a LocalDagRunner run starts and one as it ends.

LocalDagRunner runs the nodes one after another, each through
`tfx.orchestration.portable.launcher.Launcher(...).launch()`
(tfx/orchestration/local/local_dag_runner.py). `reporting(node_ids)` swaps
in a Launcher subclass for the duration of a run that reports each launch as
`captioner.progress` lines, and asks ML Metadata whether the execution ran
or was published from the cache:

  [ 6/11] CaptionTrainer started
    CaptionTrainer epoch 1/25: ...
  [ 6/11] CaptionTrainer ran in 93.2 s (run 2:41)
  [ 2/11] StatisticsGen started, reused from the cache in 0.4 s (run 0:03)

(on the console a component that printed nothing in between gets one line,
see run_log's OPEN_LINE).

The launcher is wrapped rather than TFX's "Component %s is running." log
lines read because the libraries a component loads may change absl's log
level (tensorboard's main_lib sets it to WARNING on import; in a run, TFX's
INFO lines stop once the first Trainer has run).

A node that started and did not finish is the one that failed or was
interrupted: `Reporter.current`.
"""
import contextlib
import logging
import time
from typing import Iterator, Optional, Sequence

from ml_metadata.proto import metadata_store_pb2
from tfx.orchestration.portable import launcher

from components import progress
from pipeline import run_log


def _clock(seconds: float) -> str:
  minutes, seconds = divmod(int(seconds), 60)
  return f'{minutes}:{seconds:02d}'


class Reporter:
  """The components of one run, in the order the pipeline lists them."""

  def __init__(self, node_ids: Sequence[str]):
    self._position = {node_id: n for n, node_id in enumerate(node_ids, 1)}
    self._run_start = time.monotonic()
    self.current: Optional[str] = None  # the node started and not finished yet

  def _label(self, node_id: str) -> str:
    width = len(str(len(self._position)))
    return f'[{self._position.get(node_id, 0):>{width}}/{len(self._position)}] {node_id}'

  def started(self, node_id: str) -> None:
    self.current = node_id
    progress.logger.info('%s started', self._label(node_id), extra={run_log.OPEN_LINE: True})

  def finished(self, node_id: str, seconds: float, cached: bool) -> None:
    self.current = None
    outcome = (f'{"reused from the cache" if cached else "ran"} in {seconds:.1f} s '
               f'(run {_clock(time.monotonic() - self._run_start)})')
    progress.logger.info('%s %s', self._label(node_id), outcome,
                         extra={run_log.CONTINUATION: outcome})


@contextlib.contextmanager
def reporting(node_ids: Sequence[str]) -> Iterator[Reporter]:
  """Reports every node LocalDagRunner launches inside the `with` block."""
  reporter = Reporter(node_ids)
  # The run's logging (run_log.capture), restored before every node: saving a
  # tf_keras model raises the 'absl' logger to WARNING, and the full log would
  # lose every later component's TFX INFO lines.
  root, absl_logger = logging.getLogger(), logging.getLogger('absl')
  run_handlers, run_level, absl_level = root.handlers[:], root.level, absl_logger.level

  class ReportingLauncher(launcher.Launcher):
    """TFX's launcher, announcing the node before and after its launch."""

    def launch(self):
      root.handlers, root.level = run_handlers[:], run_level
      absl_logger.setLevel(absl_level)
      node_id = self._pipeline_node.node_info.id
      reporter.started(node_id)
      start = time.monotonic()
      execution_info = super().launch()
      cached = False
      if execution_info is not None and execution_info.execution_id is not None:
        with self._mlmd_connection as m:
          [execution] = m.store.get_executions_by_id([execution_info.execution_id])
        cached = execution.last_known_state == metadata_store_pb2.Execution.CACHED
      reporter.finished(node_id, time.monotonic() - start, cached)
      return execution_info

  original, launcher.Launcher = launcher.Launcher, ReportingLauncher
  try:
    yield reporter
  finally:
    launcher.Launcher = original
