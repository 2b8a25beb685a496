"""Timing for the benchmarks: wall time, alternating calls, percentiles and ratios.

Benchmarks report figures as ratios against a baseline measured in the same
run; `alternating_seconds` gives both sides the same machine by taking turns
call by call, so that load which comes and goes on a shared host hits both.
"""
import time
from typing import Any, Callable, Dict, Mapping, Sequence

import numpy as np

WARMUP_CALLS = 5  # untimed calls per side first: tracing, thread pools, caches


class Stopwatch:
  """Wall time of a `with` block: `with Stopwatch() as watch: ...`, then `watch.seconds`."""

  def __init__(self):
    self.seconds = None

  def __enter__(self) -> 'Stopwatch':
    self._start = time.perf_counter()
    return self

  def __exit__(self, *exc_info) -> None:
    self.seconds = time.perf_counter() - self._start


def alternating_seconds(calls: Mapping[str, Callable[[Any], Any]], inputs: Mapping[str, Sequence[Any]],
                        warmup_calls: int = WARMUP_CALLS) -> Dict[str, np.ndarray]:
  """Seconds of each call of `calls[name](inputs[name][i])`, taking turns between the names.

  Args:
    calls: name -> function of one input.
    inputs: name -> its inputs, the same number for every name; the first
      `warmup_calls` of them are also used, untimed, for the warm-up.
    warmup_calls: untimed rounds before timing.

  Returns:
    name -> float64 [len(inputs[name])] seconds per call, in input order.
  """
  counts = {name: len(inputs[name]) for name in calls}
  if len(set(counts.values())) != 1:
    raise ValueError(f'Every call needs the same number of inputs, got {counts}.')
  [count] = set(counts.values())
  for i in range(min(warmup_calls, count)):
    for name, call in calls.items():
      call(inputs[name][i])
  seconds = {name: [] for name in calls}
  for i in range(count):
    for name, call in calls.items():
      with Stopwatch() as watch:
        call(inputs[name][i])
      seconds[name].append(watch.seconds)
  return {name: np.array(values) for name, values in seconds.items()}


def percentile_ms(seconds: np.ndarray, percentile: float) -> float:
  """The `percentile` (0..100) of `seconds`, in milliseconds."""
  return float(np.percentile(np.asarray(seconds) * 1000, percentile))


def ratio(numerator: float, denominator: float, digits: int = 3) -> float:
  """numerator / denominator rounded to `digits`; a benchmark's headline figure."""
  return round(numerator / denominator, digits)
