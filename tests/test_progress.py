"""components/progress.py: when a loop reports, and what its records carry."""
import logging

import pytest

from components import progress


@pytest.fixture
def clock(monkeypatch):
  """progress.py's time.monotonic, advanced by hand."""
  now = [100.0]
  monkeypatch.setattr(progress.time, 'monotonic', lambda: now[0])
  return now


def _states(caplog):
  return [record.progress for record in caplog.records if hasattr(record, 'progress')]


def test_tracker_reports_once_per_interval_and_finishes_at_the_total(clock, caplog):
  caplog.set_level(logging.INFO, logger=progress.logger.name)
  tracker = progress.Tracker(5, 'feature pass')
  tracker.advance()  # at once: no record
  clock[0] += 1.5
  tracker.advance()  # a record: 2/5
  tracker.advance()  # same interval: none
  clock[0] += 1.5
  tracker.advance(2)  # 5/5: the last record
  tracker.finish()  # no second last record
  assert [(s.done, s.total, s.finished) for s in _states(caplog)] == [(2, 5, False), (5, 5, True)]
  assert _states(caplog)[-1].elapsed == pytest.approx(3.0)


def test_a_loop_shorter_than_an_interval_reports_nothing(clock, caplog):
  caplog.set_level(logging.INFO, logger=progress.logger.name)
  assert list(progress.track(range(3), 3, 'quick')) == [0, 1, 2]
  tracker = progress.Tracker(None, 'unknown length')
  tracker.advance(10)
  tracker.finish()
  assert not _states(caplog)


def test_track_ends_with_a_finished_record(clock, caplog):
  caplog.set_level(logging.INFO, logger=progress.logger.name)
  for _ in progress.track(range(4), None, 'slow'):
    clock[0] += 0.6
  assert [(s.done, s.finished) for s in _states(caplog)] == [(2, False), (4, False), (4, True)]
