"""The start of `python -m serving.server`: the server's output set up before TensorFlow is imported.

TensorFlow's C++ logging (a warning per failed op call, and lines about CUDA
plugins and CPU instructions as it loads), libjpeg's messages about broken
JPEGs and absl write straight to file descriptor 2, which no Python setting
reaches; a thousand bad requests once wrote 1,420 such lines. They go, in
full, to a debug log instead, and the terminal keeps the server's own log: one
line per failed request (serving.errors). Descriptor 2 must point at the debug
log before the first import of TensorFlow, which is why this module imports
only the standard library until then, and serving.server (the server and the
rest of its command line) after.
"""
import argparse
import contextlib
import logging
import os
import sys
import tempfile

_LOG = logging.getLogger(__name__)

# The one flag needed before TensorFlow loads; serving.server.parse_args takes it as a parent parser.
DEBUG_LOG_FLAG = argparse.ArgumentParser(add_help=False)
DEBUG_LOG_FLAG.add_argument(
    '--debug_log', default='',
    help='File for the output of TensorFlow, libjpeg and absl (default: captioner-serving-<pid>.log in the '
         'temporary folder; - leaves it on stderr).')


def send_library_output_to(path):
  """Points file descriptor 2 at `path`; returns a stream on the terminal's stderr for the server's own log."""
  terminal = os.fdopen(os.dup(2), 'w', buffering=1)
  debug_log = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
  os.dup2(debug_log, 2)
  os.close(debug_log)
  return terminal


def main(argv=None):
  debug_log = DEBUG_LOG_FLAG.parse_known_args(argv)[0].debug_log or os.path.join(
      tempfile.gettempdir(), f'captioner-serving-{os.getpid()}.log')
  terminal = sys.stderr if debug_log == '-' else send_library_output_to(debug_log)
  from serving import server  # pylint: disable=import-outside-toplevel; it imports TensorFlow: see above
  with contextlib.redirect_stderr(terminal):  # usage errors go to the person who typed the command
    args = server.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format='%(asctime)s %(levelname)s %(message)s', stream=terminal)
  if debug_log != '-':
    _LOG.info('TensorFlow\'s and the libraries\' own output goes to %s', debug_log)
  return server.run(args)
