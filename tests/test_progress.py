"""components/progress.py: when a loop reports, and what its records carry."""
import logging
import threading

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
  caplog.set_level(logging.DEBUG, logger=progress.logger.name)
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
  caplog.set_level(logging.DEBUG, logger=progress.logger.name)
  assert list(progress.track(range(3), 3, 'quick')) == [0, 1, 2]
  tracker = progress.Tracker(None, 'unknown length')
  tracker.advance(10)
  tracker.finish()
  assert not _states(caplog)


def test_track_ends_with_a_finished_record(clock, caplog):
  caplog.set_level(logging.DEBUG, logger=progress.logger.name)
  for _ in progress.track(range(4), None, 'slow'):
    clock[0] += 0.6
  assert [(s.done, s.finished) for s in _states(caplog)] == [(2, False), (4, False), (4, True)]


def test_lines_for_logs_come_every_30_seconds_at_info_with_rate_and_time_left(clock, caplog):
  caplog.set_level(logging.DEBUG, logger=progress.logger.name)
  for _ in progress.track(range(100), 100, 'captioning eval'):
    clock[0] += 1.0
  lines = [(r.getMessage(), r.progress.finished) for r in caplog.records if r.levelno == logging.INFO]
  assert lines == [('captioning eval: 30/100 images in 0:30, 1.0 images/s, about 1:10 left', False),
                   ('captioning eval: 60/100 images in 1:00, 1.0 images/s, about 0:40 left', False),
                   ('captioning eval: 90/100 images in 1:30, 1.0 images/s, about 0:10 left', False),
                   ('captioning eval: 100/100 images in 1:40, 1.0 images/s', True)]
  bar_updates = [r for r in caplog.records if r.levelno == logging.DEBUG]
  assert len(bar_updates) == 100 - 3 - 1  # every second but the three lines' and the last


def test_a_shared_tracker_counts_every_thread_once_and_finishes_once(clock, caplog):
  caplog.set_level(logging.DEBUG, logger=progress.logger.name)

  def work():
    tracker = progress.shared_tracker('run-1', 4000, 'checking images')
    for _ in range(1000):
      clock[0] += 0.01  # racy on purpose: only the count and the last record matter
      tracker.advance()

  threads = [threading.Thread(target=work) for _ in range(4)]
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join()
  progress.release_tracker('run-1')

  finished = [s for s in _states(caplog) if s.finished]
  assert [(s.done, s.total) for s in finished] == [(4000, 4000)]
  assert 'run-1' not in progress._shared  # pylint: disable=protected-access
