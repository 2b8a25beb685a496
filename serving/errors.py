"""The error type of the local server: a gRPC status code and message, as TF Serving gives them.

Everything below the front ends raises `ServingError` where TF Serving's
ServerCore or predict_util would return a non-OK Status; the gRPC front end
aborts the RPC with its code and message, the REST front end answers
{"error": message} with the HTTP status TF Serving maps the code to. Clients
therefore see the same codes (and nearly the same messages) from the local
server as from tensorflow_model_server. Each failed request is logged in one
line, at most a few a second.
"""
import logging
import re
import threading
import time

import grpc

_LOG = logging.getLogger('serving')

_CODES_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}

# Eager calls wrap the op's own message in Python-side context that TF Serving
# (which runs the graph from C++) never shows: a preamble, the op's creation
# stack, and the name of the traced function.
_EAGER_PREAMBLE = re.compile(r'^Graph execution error:\s*')
_CREATION_STACK = re.compile(
    r'Detected at node .*? defined at \(most recent call last\):\n'
    r'(?:<stack traces unavailable>\n|(?:  .*\n)*)')
_OP_SUFFIX = re.compile(r'\s*\[Op:[^\]]*\]\s*$')
# Names of the graph's functions and nodes that TF puts around the op's own
# message ("{{function_node __inference_signature_wrapper_3402}}",
# "[[{{node map/while/decode_image/DecodeImage}}]]"): they say where in the
# model the op failed, which is no use to a client.
_FUNCTION_NAME = re.compile(r'\{\{function_node [^}]*\}\}\s*')
_NODE_NAME = re.compile(r'\s*\[\[\{\{node [^}]*\}\}\]\]')


# Bad requests are logged at most this many lines per second; the next line
# logged says how many were left out. Thousands of bad requests once made
# 24,000 log lines, tracebacks included.
_LOG_LINES_PER_SECOND = 5
_MAX_LOGGED_MESSAGE_CHARS = 300


class ServingError(Exception):
  """A request failed with `code` (a grpc.StatusCode) and a message for the client."""

  def __init__(self, code, message):
    super().__init__(f'{code.name}: {message}')
    self.code = code
    self.message = message


def _op_message(message):
  """The op's own message, without the eager-mode context around it."""
  message = _OP_SUFFIX.sub('', _CREATION_STACK.sub('', _EAGER_PREAMBLE.sub('', message)))
  return _NODE_NAME.sub('', _FUNCTION_NAME.sub('', message)).strip()


def from_op_error(error):
  """The ServingError for a failed model call: the op's own status code and message.

  TF's error codes are numbered like gRPC's, which is how TF Serving turns a
  failed Session::Run (e.g. InvalidArgument from DecodeImage on bytes that are
  not an image) into the RPC status.
  """
  return ServingError(_CODES_BY_NUMBER.get(error.error_code, grpc.StatusCode.UNKNOWN), _op_message(error.message))


def from_undecodable_message(error):
  """The ServingError for a model call whose error message is not UTF-8.

  TF raises UnicodeDecodeError instead of the op's error when the message
  quotes bytes of the request (ParseExample on bytes that are not a
  tf.Example does); the op error behind it is the request's fault.
  """
  text = error.object.decode('utf-8', errors='replace') if isinstance(error.object, bytes) else str(error)
  return ServingError(grpc.StatusCode.INVALID_ARGUMENT, _op_message(text))


def detached(error):
  """`error` without its traceback and the exceptions it was raised from, for a request that has failed.

  A traceback holds every frame it passed through and their locals: the
  request, its decoded inputs, the model's input tensors. Stored in a future
  (the batcher's, the REST front end's), it made cycles that kept a failed
  60 MiB request's ~195 MB until the garbage collector ran; a ServingError is
  a message for the client, so nothing of the traceback is needed.
  """
  error.__traceback__ = None
  error.__cause__ = error.__context__ = None
  return error


class _RateLimitedLog:
  """At most `per_second` lines a second; the next line logged counts the ones left out."""

  def __init__(self, per_second):
    self._per_second = per_second
    self._lock = threading.Lock()
    self._second = None
    self._logged = 0
    self._suppressed = 0

  def info(self, line):
    now = int(time.monotonic())
    with self._lock:
      if now != self._second:
        self._second, self._logged = now, 0
      if self._logged >= self._per_second:
        self._suppressed += 1
        return
      self._logged += 1
      suppressed, self._suppressed = self._suppressed, 0
    _LOG.info('%s%s', line, f' ({suppressed} more bad requests not logged)' if suppressed else '')


_REQUEST_LOG = _RateLimitedLog(_LOG_LINES_PER_SECOND)


def log_request_error(what, error):
  """One log line for a request that failed with `error` (a ServingError), rate-limited."""
  message = ' '.join(error.message.split())
  if len(message) > _MAX_LOGGED_MESSAGE_CHARS:
    message = message[:_MAX_LOGGED_MESSAGE_CHARS] + '...'
  _REQUEST_LOG.info(f'{what} failed with {error.code.name}: {message}')
