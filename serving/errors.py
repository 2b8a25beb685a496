"""The error type of the local server: a gRPC status code and message, as TF Serving gives them.

Everything below the gRPC servicers raises `ServingError` where TF Serving's
ServerCore or predict_util would return a non-OK Status; the servicers abort
the RPC with its code and message. Clients therefore see the same codes (and
nearly the same messages) from the local server as from tensorflow_model_server.
"""
import re

import grpc

_CODES_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}

# Eager calls wrap the op's own message in Python-side context that TF Serving
# (which runs the graph from C++) never shows: a preamble, the op's creation
# stack, and the name of the traced function.
_EAGER_PREAMBLE = re.compile(r'^Graph execution error:\s*')
_CREATION_STACK = re.compile(
    r'Detected at node .*? defined at \(most recent call last\):\n'
    r'(?:<stack traces unavailable>\n|(?:  .*\n)*)')
_OP_SUFFIX = re.compile(r'\s*\[Op:[^\]]*\]\s*$')


class ServingError(Exception):
  """A request failed with `code` (a grpc.StatusCode) and a message for the client."""

  def __init__(self, code, message):
    super().__init__(f'{code.name}: {message}')
    self.code = code
    self.message = message


def from_op_error(error):
  """The ServingError for a failed model call: the op's own status code and message.

  TF's error codes are numbered like gRPC's, which is how TF Serving turns a
  failed Session::Run (e.g. InvalidArgument from DecodeImage on bytes that are
  not an image) into the RPC status.
  """
  message = _OP_SUFFIX.sub('', _CREATION_STACK.sub('', _EAGER_PREAMBLE.sub('', error.message)))
  return ServingError(_CODES_BY_NUMBER.get(error.error_code, grpc.StatusCode.UNKNOWN), message.strip())

