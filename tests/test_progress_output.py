"""What a long loop shows where a run's output goes: a terminal, a file, the run's log.

A child process runs a loop through components/progress.py inside
pipeline/run_log.capture, as the local runner does, with its standard output
a pseudo-terminal or a file; the loop's clock is progress.py's, advanced by
hand (half a second per image, 200 images: 100 s), so the 30-second lines
come at known points.
"""
import glob
import os
import pty
import subprocess
import sys

import pytest

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_LOOP = '''
import sys, types
from components import progress
from pipeline.local import run_log
now = [1000.0]
progress.time = types.SimpleNamespace(monotonic=lambda: now[0])
with run_log.capture(sys.argv[1]):
  for _ in progress.track(range(200), 200, 'feature pass'):
    now[0] += 0.5
'''
# The plain lines of a 100-second loop of 200 images, at 30, 60 and 90 s.
_LINES = ['feature pass: 60/200 images in 0:30, 2.0 images/s, about 1:10 left',
          'feature pass: 120/200 images in 1:00, 2.0 images/s, about 0:40 left',
          'feature pass: 180/200 images in 1:30, 2.0 images/s, about 0:10 left']


def _run(output_dir, stdout):
  subprocess.run([sys.executable, '-c', _LOOP, str(output_dir)], cwd=_REPO, stdout=stdout,
                 stderr=subprocess.DEVNULL, check=True, timeout=300)


def _log(output_dir):
  [path] = glob.glob(os.path.join(output_dir, 'logs', 'run-*.log'))
  with open(path) as f:
    return [line.rstrip('\n').split(': ', 1)[1] for line in f if 'captioner.progress' in line]


def _read_terminal(output_dir):
  """The child's output on a pseudo-terminal, as a person's terminal receives it."""
  controller, terminal = pty.openpty()
  child = subprocess.Popen([sys.executable, '-c', _LOOP, str(output_dir)], cwd=_REPO, stdout=terminal,
                           stderr=subprocess.DEVNULL)
  os.close(terminal)
  output = b''
  while True:
    try:
      chunk = os.read(controller, 65536)
    except OSError:  # EIO: the child closed the terminal
      break
    if not chunk:
      break
    output += chunk
  os.close(controller)
  assert child.wait(timeout=300) == 0
  return output.decode().replace('\r\n', '\n')  # the terminal's own line ends


def test_a_file_gets_a_plain_line_every_30_seconds_and_the_last_state(tmp_path):
  with open(tmp_path / 'run.txt', 'w') as f:
    _run(tmp_path, f)

  lines = (tmp_path / 'run.txt').read_text().splitlines()

  assert '\r' not in ''.join(lines)
  progress_lines = [line.strip() for line in lines if 'feature pass' in line]
  assert progress_lines[:3] == _LINES
  assert len(progress_lines) == 4 and '200/200' in progress_lines[3] and '100%' in progress_lines[3]


def test_a_terminal_keeps_its_bar_redrawn_in_place(tmp_path):
  output = _read_terminal(tmp_path)

  redraws = output.split('\r')
  assert len(redraws) > 90, output  # a bar update a second, each drawn over the last
  assert 'about' not in output  # no plain lines on a terminal
  assert '200/200' in redraws[-1] and '100%' in redraws[-1]


@pytest.mark.parametrize('console', ['terminal', 'file'])
def test_the_run_log_gets_the_plain_lines_and_not_the_bar_updates(tmp_path, console):
  if console == 'terminal':
    _read_terminal(tmp_path)
  else:
    with open(tmp_path / 'run.txt', 'w') as f:
      _run(tmp_path, f)

  lines = _log(tmp_path)

  assert lines == _LINES + ['feature pass: 200/200 images in 1:40, 2.0 images/s'], lines
