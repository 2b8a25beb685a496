"""Merges concurrent Predict requests into one model call, like TF Serving's batching.

Where a model call costs about the same for 1 image as for 8, merging
requests that arrive together multiplies throughput; where it does not,
merging costs throughput (a merged beam search runs until its slowest caption
ends). bench/serving.py measures both ways on the model served;
docs/benchmarks.md has the figures. Requests are queued; a batch thread
takes the first one, waits up to `batch_timeout_micros` for more that call
the same function (same model version and signature), up to `max_batch_size`
rows, runs them as one call and hands each request its own rows of the outputs.

Differences from TF Serving's BasicBatchScheduler, on purpose:
  * a request larger than max_batch_size is not refused: it runs in chunks of
    max_batch_size rows, one chunk queued after the other, so requests from
    other clients get in between (TF Serving's enable_large_batch_splitting
    splits too, but queues every chunk at once);
  * when a merged call fails (say one request holds bytes that are not an
    image), every request of the batch is re-run alone, so only the bad
    request gets the error; TF Serving fails the whole batch. Every failure,
    whatever its type, ends as a ServingError on the future of the request
    it belongs to, never on its neighbours'.
"""
import concurrent.futures
import dataclasses
import logging
import queue
import threading
import time
from typing import Callable, Dict, List, Optional

import grpc
import numpy as np
import tensorflow as tf

from serving import errors

_LOG = logging.getLogger(__name__)

_STOP = object()  # queue sentinel: one per batch thread


@dataclasses.dataclass(frozen=True)
class BatchingOptions:
  """The local server's counterpart of TF Serving's --batching_parameters_file."""
  max_batch_size: int = 32  # rows per model call
  batch_timeout_micros: int = 2000  # how long the first request of a batch waits for company
  num_batch_threads: int = 1  # model calls in flight at once (TF already uses every core per call)
  max_enqueued_requests: int = 1000  # waiting requests; beyond that, UNAVAILABLE (clients back off)

  def __post_init__(self):
    for field in dataclasses.fields(self):
      minimum = 0 if field.name == 'batch_timeout_micros' else 1
      if getattr(self, field.name) < minimum:
        raise ValueError(f'BatchingOptions.{field.name} must be at least {minimum}, '
                         f'got {getattr(self, field.name)}.')


@dataclasses.dataclass
class _Task:
  function: Callable[..., Dict[str, tf.Tensor]]  # the signature's concrete function
  inputs: Dict[str, np.ndarray]  # alias -> array [rows, ...]
  rows: int
  deadline: Optional[float]  # time.monotonic() after which nobody waits for the result
  future: concurrent.futures.Future  # -> Dict[str, np.ndarray], alias -> array [rows, ...]


def run_model(function, inputs):
  """Runs the model: {alias: array [n, ...]} -> {alias: array [n, ...]}; raises ServingError."""
  try:
    outputs = function(**{alias: tf.constant(value) for alias, value in inputs.items()})
  except tf.errors.OpError as e:
    raise errors.from_op_error(e) from e
  except UnicodeDecodeError as e:
    raise errors.from_undecodable_message(e) from e
  return {alias: tensor.numpy() for alias, tensor in outputs.items()}


class _ChunkedRequest:
  """A request of more rows than a model call takes, run as chunks queued one after the other.

  `future` gets the outputs of every chunk, concatenated in order, or the
  first chunk's error. Cancelling it drops the chunks not yet run.
  """

  def __init__(self, batcher, function, inputs, rows, deadline):
    self.future = concurrent.futures.Future()
    self._batcher = batcher
    self._function = function
    self._inputs = inputs
    self._starts = list(range(0, rows, batcher.options.max_batch_size))
    self._deadline = deadline
    self._outputs = []  # per chunk done: alias -> array
    self._current = None
    self.future.add_done_callback(self._on_outer_done)
    self._queue_chunk(0)  # a full queue refuses the request now, with UNAVAILABLE

  def _queue_chunk(self, index):
    start = self._starts[index]
    chunk = {alias: value[start:start + self._batcher.options.max_batch_size]
             for alias, value in self._inputs.items()}
    self._current = self._batcher.submit(self._function, chunk, self._deadline)
    self._current.add_done_callback(lambda done: self._on_chunk_done(index, done))

  def _on_chunk_done(self, index, done):
    if self.future.done():  # cancelled by the caller
      return
    try:
      if done.cancelled():
        raise errors.ServingError(grpc.StatusCode.CANCELLED, 'Cancelled')
      if done.exception() is not None:
        raise done.exception()
      self._outputs.append(done.result())
      if index + 1 < len(self._starts):
        self._queue_chunk(index + 1)
        return
      result = {alias: np.concatenate([outputs[alias] for outputs in self._outputs])
                for alias in self._outputs[0]}
    except errors.ServingError as e:
      self._settle(self.future.set_exception, errors.detached(e))
      return
    self._settle(self.future.set_result, result)

  @staticmethod
  def _settle(setter, value):
    try:
      setter(value)
    except concurrent.futures.InvalidStateError:
      pass  # cancelled meanwhile by the caller

  def _on_outer_done(self, outer):
    if outer.cancelled() and self._current is not None:
      self._current.cancel()


class Batcher:
  """Queue plus batch threads; `submit` returns a Future of one request's outputs."""

  def __init__(self, options: BatchingOptions):
    self.options = options
    self._queue = queue.Queue(maxsize=options.max_enqueued_requests)
    self._threads: List[threading.Thread] = []

  def start(self):
    self._threads = [threading.Thread(target=self._loop, name=f'batch-{i}', daemon=True)
                     for i in range(self.options.num_batch_threads)]
    for thread in self._threads:
      thread.start()

  def stop(self):
    """Lets the batch threads finish what they hold, then fails whatever is still queued."""
    for _ in self._threads:
      self._queue.put(_STOP)
    for thread in self._threads:
      thread.join()
    self._threads = []
    while True:
      try:
        task = self._queue.get_nowait()
      except queue.Empty:
        return
      if task is not _STOP and task.future.set_running_or_notify_cancel():
        task.future.set_exception(errors.ServingError(grpc.StatusCode.UNAVAILABLE, 'Server is shutting down.'))

  def submit(self, function, inputs, deadline=None):
    """Queues one request (in chunks if it is larger than max_batch_size); returns its Future.

    inputs: alias -> array with the same number of rows in each. Raises
    ServingError UNAVAILABLE when the queue is full.
    """
    rows = {len(value) for value in inputs.values()}
    if len(rows) != 1:
      raise errors.ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                                'Batching Run() input tensors must have equal 0th-dimension size')
    rows = rows.pop()
    if rows > self.options.max_batch_size:
      return _ChunkedRequest(self, function, inputs, rows, deadline).future
    task = _Task(function, inputs, rows, deadline, concurrent.futures.Future())
    try:
      self._queue.put_nowait(task)
    except queue.Full:
      raise errors.ServingError(grpc.StatusCode.UNAVAILABLE,
                                'The batch scheduling queue to which this task was submitted is full') from None
    return task.future

  def _loop(self):
    carried = None  # a task taken from the queue that could not join the previous batch
    while carried is not _STOP:
      carried = self._run_next_batch(carried)

  def _run_next_batch(self, carried):
    """Gathers a batch (from `carried`, else the queue's next task) and runs it; returns the task that did not fit.

    A method of its own so that the batch, inputs included, is let go when it
    returns: kept in the loop's locals until the next request came, a failed
    45 MiB request's 45 MiB stayed in the server's memory.
    """
    first = carried if carried is not None else self._queue.get()
    if first is _STOP:
      return _STOP
    carried = None
    batch, rows = [first], first.rows
    batch_deadline = time.monotonic() + self.options.batch_timeout_micros / 1e6
    while rows < self.options.max_batch_size:
      remaining = batch_deadline - time.monotonic()
      try:
        task = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
      except queue.Empty:
        break
      if (task is _STOP or task.function is not first.function
              or rows + task.rows > self.options.max_batch_size):
        carried = task
        break
      batch.append(task)
      rows += task.rows
    claimed = [task for task in batch if self._claim(task)]
    try:
      self._run(claimed)
    except Exception as e:  # a bug here must fail these requests, not hang them and kill the thread
      _LOG.error('Batch of %d requests failed: %s: %s', len(claimed), type(e).__name__, e)
      for task in claimed:
        if not task.future.done():
          task.future.set_exception(errors.ServingError(grpc.StatusCode.INTERNAL, str(e)))
    return carried

  @staticmethod
  def _claim(task):
    """Marks a task running; False if its caller gave up (cancelled, or past its deadline)."""
    if not task.future.set_running_or_notify_cancel():
      return False
    if task.deadline is not None and time.monotonic() > task.deadline:
      task.future.set_exception(errors.ServingError(grpc.StatusCode.DEADLINE_EXCEEDED, 'Deadline Exceeded'))
      return False
    return True

  def _run(self, batch):
    if not batch:
      return
    if len(batch) == 1:
      self._run_alone(batch[0])
      return
    merged = {alias: np.concatenate([task.inputs[alias] for task in batch]) for alias in batch[0].inputs}
    try:
      outputs = run_model(batch[0].function, merged)
    except Exception:  # pylint: disable=broad-except; whatever it is, it belongs to some request(s)
      for task in batch:  # find out which request(s) the error belongs to
        self._run_alone(task)
      return
    total = sum(task.rows for task in batch)
    if any(len(value) != total for value in outputs.values()):
      error = errors.ServingError(
          grpc.StatusCode.INTERNAL, 'Batched output tensor\'s 0th dimension does not equal the sum of '
          'the 0th dimension sizes of the input tensors')
      for task in batch:
        task.future.set_exception(error)
      return
    start = 0
    for task in batch:
      task.future.set_result({alias: value[start:start + task.rows] for alias, value in outputs.items()})
      start += task.rows

  @staticmethod
  def _run_alone(task):
    try:
      task.future.set_result(run_model(task.function, task.inputs))
    except errors.ServingError as e:
      task.future.set_exception(errors.detached(e))
    except Exception as e:  # pylint: disable=broad-except; this request's alone: INTERNAL, to its sender
      task.future.set_exception(errors.ServingError(grpc.StatusCode.INTERNAL, f'{type(e).__name__}: {e}'))
