"""serving/memory.py: freed memory goes back to the system once after large requests, never after small ones."""
import platform
import threading

from serving import memory


def test_glibc_trim_is_found_where_glibc_is_the_c_library():
  assert (memory._MALLOC_TRIM is not None) == (platform.libc_ver()[0] == 'glibc')


def test_large_requests_ending_together_trim_once_and_small_ones_never(monkeypatch):
  trims = []
  trimmed = threading.Event()
  monkeypatch.setattr(memory, '_MALLOC_TRIM', lambda pad: (trims.append(pad), trimmed.set()))
  monkeypatch.setattr(memory, '_DELAY_S', 3600)

  memory.release_after(memory.TRIM_AFTER_BYTES - 1)
  assert memory._pending is None
  memory.release_after(memory.TRIM_AFTER_BYTES)
  waiting = memory._pending
  for _ in range(2):
    memory.release_after(memory.TRIM_AFTER_BYTES)
  assert waiting is not None and memory._pending is waiting  # one trim for the three
  waiting.cancel()
  monkeypatch.setattr(memory, '_pending', None)

  monkeypatch.setattr(memory, '_DELAY_S', 0)
  memory.release_after(memory.TRIM_AFTER_BYTES)
  assert trimmed.wait(timeout=60)
  assert trims == [0] and memory._pending is None
