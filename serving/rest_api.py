"""TF Serving's REST API contract: its JSON keys and the HTTP status of each gRPC status code.

Shared by the server's REST front end (serving.rest, serving.tensors) and the
client (serving.client), which must start without importing TensorFlow, so
this module imports nothing heavier than grpc.
"""
import http

import grpc

# JSON keys of TF Serving's REST API (tensorflow_serving/g3doc/api_rest.md, json_tensor.cc).
SIGNATURE_KEY = 'signature_name'
INSTANCES_KEY = 'instances'
INPUTS_KEY = 'inputs'
PREDICTIONS_KEY = 'predictions'
OUTPUTS_KEY = 'outputs'
BASE64_KEY = 'b64'
ERROR_KEY = 'error'
METADATA_KEY = 'metadata'

# TF Serving's ToHTTPStatusCode (model_servers/http_server.cc).
_HTTP_STATUS = {
    grpc.StatusCode.OK: http.HTTPStatus.OK,
    grpc.StatusCode.CANCELLED: 499,  # CLIENT_CLOSED_REQUEST
    grpc.StatusCode.INVALID_ARGUMENT: http.HTTPStatus.BAD_REQUEST,
    grpc.StatusCode.DEADLINE_EXCEEDED: http.HTTPStatus.GATEWAY_TIMEOUT,
    grpc.StatusCode.NOT_FOUND: http.HTTPStatus.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS: http.HTTPStatus.CONFLICT,
    grpc.StatusCode.PERMISSION_DENIED: http.HTTPStatus.FORBIDDEN,
    grpc.StatusCode.RESOURCE_EXHAUSTED: http.HTTPStatus.TOO_MANY_REQUESTS,
    grpc.StatusCode.FAILED_PRECONDITION: http.HTTPStatus.BAD_REQUEST,
    grpc.StatusCode.ABORTED: http.HTTPStatus.CONFLICT,
    grpc.StatusCode.OUT_OF_RANGE: http.HTTPStatus.BAD_REQUEST,
    grpc.StatusCode.UNIMPLEMENTED: http.HTTPStatus.NOT_IMPLEMENTED,
    grpc.StatusCode.UNAVAILABLE: http.HTTPStatus.SERVICE_UNAVAILABLE,
    grpc.StatusCode.UNAUTHENTICATED: http.HTTPStatus.UNAUTHORIZED,
}
# The other way, for clients: the first code mapped to a status (400 reads as INVALID_ARGUMENT).
_CODE_OF_HTTP_STATUS = {}
for _code, _status in _HTTP_STATUS.items():
  _CODE_OF_HTTP_STATUS.setdefault(int(_status), _code)


def http_status(code):
  """The HTTP status TF Serving answers for a gRPC status code (500 for the rest)."""
  return int(_HTTP_STATUS.get(code, http.HTTPStatus.INTERNAL_SERVER_ERROR))


def status_code(http_status_code):
  """The gRPC status code behind TF Serving's HTTP status (UNKNOWN for one it never answers)."""
  return _CODE_OF_HTTP_STATUS.get(http_status_code, grpc.StatusCode.UNKNOWN)
