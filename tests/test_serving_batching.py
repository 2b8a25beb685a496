"""serving/batching.py without a model or a socket: merging, isolating the request that breaks a batch, chunks, limits.

The model is an echo function that upper-cases its rows, so every expected
answer follows from the request alone.
"""
import time
import weakref

import grpc
import numpy as np
import pytest
import tensorflow as tf

from serving import batching
from serving.errors import ServingError

Code = grpc.StatusCode


class _EchoModel:
  """Stands in for a signature function: upper-cases each row, fails on a b'bad' row; records calls."""

  def __init__(self):
    self.calls = []

  def __call__(self, images):
    rows = images.numpy().tolist()
    self.calls.append(rows)
    if b'bad' in rows:
      raise tf.errors.InvalidArgumentError(None, None, 'bad row')
    return {'upper': tf.strings.upper(images)}


def _rows(*values):
  return {'images': np.array(values, dtype=object)}


def test_batcher_merges_queued_requests_up_to_max_batch_size():
  echo = _EchoModel()
  batcher = batching.Batcher(batching.BatchingOptions(max_batch_size=4, batch_timeout_micros=0))
  futures = [batcher.submit(echo, _rows(*rows)) for rows in ([b'a'], [b'b', b'c'], [b'd'], [b'e'], [b'f'])]
  batcher.start()  # everything is queued already, so the batches are deterministic
  try:
    results = [future.result(timeout=60)['upper'].tolist() for future in futures]
  finally:
    batcher.stop()

  assert echo.calls == [[b'a', b'b', b'c', b'd'], [b'e', b'f']]
  assert results == [[b'A'], [b'B', b'C'], [b'D'], [b'E'], [b'F']]


def test_batcher_isolates_the_request_that_breaks_a_batch():
  echo = _EchoModel()
  batcher = batching.Batcher(batching.BatchingOptions(max_batch_size=8, batch_timeout_micros=0))
  futures = [batcher.submit(echo, _rows(row)) for row in (b'a', b'bad', b'c')]
  batcher.start()
  try:
    first, third = futures[0].result(timeout=60), futures[2].result(timeout=60)
    with pytest.raises(ServingError) as error:
      futures[1].result(timeout=60)
  finally:
    batcher.stop()

  assert echo.calls == [[b'a', b'bad', b'c'], [b'a'], [b'bad'], [b'c']]
  assert first['upper'].tolist() == [b'A'] and third['upper'].tolist() == [b'C']
  assert error.value.code == Code.INVALID_ARGUMENT and error.value.message == 'bad row'


def test_batcher_refuses_when_full_and_skips_expired_requests():
  echo = _EchoModel()
  batcher = batching.Batcher(batching.BatchingOptions(max_enqueued_requests=2))
  expired = batcher.submit(echo, _rows(b'late'), deadline=time.monotonic() - 1)
  kept = batcher.submit(echo, _rows(b'a'))
  with pytest.raises(ServingError) as error:
    batcher.submit(echo, _rows(b'b'))
  assert error.value.code == Code.UNAVAILABLE
  batcher.start()
  try:
    assert kept.result(timeout=60)['upper'].tolist() == [b'A']
    with pytest.raises(ServingError) as late:
      expired.result(timeout=60)
  finally:
    batcher.stop()
  assert late.value.code == Code.DEADLINE_EXCEEDED
  assert echo.calls == [[b'a']]


def test_batcher_lets_other_requests_in_between_the_chunks_of_a_large_one():
  echo = _EchoModel()
  batcher = batching.Batcher(batching.BatchingOptions(max_batch_size=2, batch_timeout_micros=0))
  large = batcher.submit(echo, _rows(b'a', b'b', b'c', b'd', b'e'))
  small = batcher.submit(echo, _rows(b's'))
  batcher.start()
  try:
    assert large.result(timeout=60)['upper'].tolist() == [b'A', b'B', b'C', b'D', b'E']
    assert small.result(timeout=60)['upper'].tolist() == [b'S']
  finally:
    batcher.stop()
  assert echo.calls == [[b'a', b'b'], [b's'], [b'c', b'd'], [b'e']]


def test_batcher_gives_a_non_serving_error_to_its_own_request_only():
  def model_fn(images):
    if b'boom' in images.numpy().tolist():
      raise UnicodeDecodeError('utf-8', b'\xff bad', 0, 1, 'invalid start byte')
    return {'upper': tf.strings.upper(images)}

  batcher = batching.Batcher(batching.BatchingOptions(max_batch_size=8, batch_timeout_micros=0))
  futures = [batcher.submit(model_fn, _rows(row)) for row in (b'a', b'boom', b'c')]
  batcher.start()
  try:
    assert futures[0].result(timeout=60)['upper'].tolist() == [b'A']
    assert futures[2].result(timeout=60)['upper'].tolist() == [b'C']
    with pytest.raises(ServingError) as error:
      futures[1].result(timeout=60)
  finally:
    batcher.stop()
  assert error.value.code == Code.INVALID_ARGUMENT and error.value.message == '\ufffd bad'


def test_batcher_lets_go_of_a_requests_inputs_once_it_is_answered():
  """Until the next request came, the batch thread kept the last batch: a failed 45 MiB request stayed in memory."""
  echo = _EchoModel()
  batcher = batching.Batcher(batching.BatchingOptions(batch_timeout_micros=0))
  batcher.start()
  try:
    inputs = [_rows(b'bad'), _rows(b'a')]
    held = [weakref.ref(rows['images']) for rows in inputs]
    futures = [batcher.submit(echo, rows) for rows in inputs]
    del inputs
    with pytest.raises(ServingError):
      futures[0].result(timeout=60)
    assert futures[1].result(timeout=60)['upper'].tolist() == [b'A']
    give_up = time.monotonic() + 60  # the batch thread lets go when it returns from the batch it answered
    while any(ref() is not None for ref in held) and time.monotonic() < give_up:
      time.sleep(0.05)
    assert [ref() is None for ref in held] == [True, True]
  finally:
    batcher.stop()
