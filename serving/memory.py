"""Gives the memory of a large request back to the system a moment after the request is done.

Without it, a large failed request leaves the server's RSS above its level
before, though nothing holds the request any more: glibc keeps freed chunks
in the arena of the thread that allocated them (gRPC's receive buffers, the request proto, numpy's and
TensorFlow's copies of the input) and gives back to the system only what is
free at the top of a heap. malloc_trim(0) returns every free page of every
arena (figures: docs/benchmarks.md, `bench hostile_serving`). It walks all
arenas, so it runs only after requests of TRIM_AFTER_BYTES or more, once for
all such requests that end within _DELAY_S of each other, and _DELAY_S after
they end, when the front ends have let go of their buffers too.
"""
import ctypes
import threading

# Typical requests (a few JPEGs of ~100 KB) are far below this; requests above
# it are rare, and each can leave several times its size in freed chunks.
TRIM_AFTER_BYTES = 8 * 1024 * 1024
_DELAY_S = 0.2

_MALLOC_TRIM = getattr(ctypes.CDLL(None), 'malloc_trim', None)  # glibc's; other C libraries need no help
_lock = threading.Lock()
_pending = None  # the Timer that will trim, while one is waiting


def _trim():
  global _pending
  with _lock:
    _pending = None
  _MALLOC_TRIM(0)


def release_after(request_bytes):
  """Returns freed memory to the system shortly, if the request that just ended had `request_bytes` or more."""
  global _pending
  if _MALLOC_TRIM is None or request_bytes < TRIM_AFTER_BYTES:
    return
  with _lock:
    if _pending is None:
      _pending = threading.Timer(_DELAY_S, _trim)
      _pending.daemon = True
      _pending.start()
