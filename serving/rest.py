"""The REST front end: TF Serving's REST API (g3doc/api_rest.md) over serving.service.

  POST /v1/models/<name>[/versions/<n>|/labels/<l>]:predict   body in the row
       ({"instances": ...}) or columnar ({"inputs": ...}) format, optional
       "signature_name"; answers {"predictions": ...} or {"outputs": ...}
  GET  /v1/models/<name>[/versions/<n>]            GetModelStatus as JSON
  GET  /v1/models/<name>[/versions/<n>]/metadata   GetModelMetadata as JSON

As in TF Serving's http_rest_api_handler.cc, each call is turned into the gRPC
request proto (the JSON body via serving.tensors) and run by the same Service
as gRPC, so both protocols share one validation path, one set of limits and
one error vocabulary. A failure answers {"error": "<message>"} with the HTTP
status TF Serving maps its code to (http_server.cc: INVALID_ARGUMENT and
FAILED_PRECONDITION 400, NOT_FOUND 404, RESOURCE_EXHAUSTED 429, UNAVAILABLE
503, DEADLINE_EXCEEDED 504, ...). A body over --max_message_bytes is refused
with 429 before it is read.
"""
import http
import http.server
import json
import logging
import re
import threading
import time
import urllib.parse

import grpc
from google.protobuf import json_format
from tensorflow_serving.apis import get_model_metadata_pb2
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.apis import predict_pb2

from components import features
from serving import errors
from serving import tensors
from serving.errors import ServingError

_LOG = logging.getLogger(__name__)

DEFAULT_PORT = 8501
DEFAULT_TIMEOUT_MS = 30_000  # tensorflow_model_server's --rest_api_timeout_in_ms

# URL forms, from tensorflow_serving/model_servers/http_rest_api_util.cc.
_API_PATH = re.compile(r'/v1/.*', re.IGNORECASE)
_PREDICTION_PATH = re.compile(
    r'/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)', re.IGNORECASE)
_STATUS_PATH = re.compile(
    r'/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?', re.IGNORECASE)

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
_MAX_INT64 = 2 ** 63 - 1


def http_status(code):
  """The HTTP status TF Serving answers for a gRPC status code (500 for the rest)."""
  return int(_HTTP_STATUS.get(code, http.HTTPStatus.INTERNAL_SERVER_ERROR))


def _fill_model_spec(model_spec, name, version, label):
  """TF Serving's ParseModelInfo + FillModelSpecWithNameVersionAndLabel, on the URL's parts."""
  model_spec.name = urllib.parse.unquote(name or '')
  if version:
    if int(version) > _MAX_INT64:
      raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f'Failed to convert version: {version} to numeric.')
    model_spec.version.value = int(version)
  if label:
    model_spec.version_label = urllib.parse.unquote(label)


class _Handler(http.server.BaseHTTPRequestHandler):
  """One HTTP request; the server attributes `service`, `max_body_bytes` and `timeout_s` configure it."""

  protocol_version = 'HTTP/1.1'  # keep-alive, as TF Serving's HTTP server

  def do_GET(self):  # pylint: disable=invalid-name; http.server's naming
    self._answer(self._get)

  def do_POST(self):  # pylint: disable=invalid-name
    self._answer(self._post)

  def log_message(self, format, *args):  # pylint: disable=redefined-builtin; http.server's signature
    pass  # every request would be a line; failures are logged, rate-limited, in _answer

  def _answer(self, handle):
    path = urllib.parse.urlsplit(self.path).path
    try:
      if not _API_PATH.fullmatch(path):
        raise ServingError(grpc.StatusCode.NOT_FOUND, f'No handler for {self.command} {path}')
      body = handle(path)
      status = http.HTTPStatus.OK
    except Exception as e:  # pylint: disable=broad-except; a bug must answer 500, not drop the connection
      error = e if isinstance(e, ServingError) else ServingError(grpc.StatusCode.INTERNAL,
                                                                 f'{type(e).__name__}: {e}')
      errors.log_request_error(f'REST {self.command} {path}', error)
      body, status = json.dumps({'error': error.message}, indent=2), http_status(error.code)
    data = body.encode('utf-8')
    self.send_response(status)
    self.send_header('Content-Type', 'application/json')
    self.send_header('Content-Length', str(len(data)))
    self.end_headers()
    self.wfile.write(data)

  def _malformed(self, path):
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, f'Malformed request: {self.command} {path}')

  def _read_body(self):
    """The request body; refuses one over the size limit from its Content-Length, unread."""
    length = int(self.headers.get('Content-Length') or 0)
    if length > self.server.max_body_bytes:
      self.close_connection = True  # the unread body must not be taken for the next request
      raise ServingError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                         f'Request body of {length} bytes is larger than max ({self.server.max_body_bytes}) '
                         f'(--max_message_bytes)')
    return self.rfile.read(length)

  def _post(self, path):
    body = self._read_body()
    match = _PREDICTION_PATH.fullmatch(path)
    if not match:
      raise self._malformed(path)
    name, version, label, method = match.groups()
    if method.lower() != 'predict':
      raise ServingError(grpc.StatusCode.UNIMPLEMENTED,
                         f'{method} is not implemented by this server; use :predict')
    request = predict_pb2.PredictRequest()
    _fill_model_spec(request.model_spec, name, version, label)
    document, request.model_spec.signature_name = tensors.parse_predict_body(body)
    request_format = tensors.fill_predict_inputs(
        document, self.server.service.signature_inputs(request.model_spec), request)
    response = self.server.service.predict(request, deadline=time.monotonic() + self.server.timeout_s)
    outputs = {alias: tensors.from_proto(alias, proto) for alias, proto in response.outputs.items()}
    return tensors.predict_response_json(outputs, request_format)

  def _get(self, path):
    match = _STATUS_PATH.fullmatch(path)
    if not match:
      raise self._malformed(path)
    name, version, label, subresource = match.groups()
    if not name:
      raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, 'Missing model name in request.')
    if subresource:
      request = get_model_metadata_pb2.GetModelMetadataRequest(
          metadata_field=[features.SIGNATURE_DEF_METADATA_FIELD])
      _fill_model_spec(request.model_spec, name, version, label)
      return _metadata_json(self.server.service.model_metadata(request))
    request = get_model_status_pb2.GetModelStatusRequest()
    _fill_model_spec(request.model_spec, name, version, label)
    return json_format.MessageToJson(self.server.service.model_status(request),
                                     including_default_value_fields=True)


def _metadata_json(response):
  """GetModelMetadataResponse -> TF Serving's JSON: {"model_spec": ..., "metadata": {"signature_def": ...}}."""
  signature_map = get_model_metadata_pb2.SignatureDefMap()
  response.metadata[features.SIGNATURE_DEF_METADATA_FIELD].Unpack(signature_map)

  def to_dict(proto):
    return json_format.MessageToDict(proto, including_default_value_fields=True,
                                     preserving_proto_field_name=True)

  return json.dumps({'model_spec': to_dict(response.model_spec),
                     'metadata': {features.SIGNATURE_DEF_METADATA_FIELD: to_dict(signature_map)}}, indent=2)


class RestServer:
  """TF Serving's REST API for `service` on host:port, served by a thread per connection."""

  def __init__(self, service, host, port, *, max_body_bytes, timeout_ms=DEFAULT_TIMEOUT_MS):
    self._httpd = http.server.ThreadingHTTPServer((host, port), _Handler)
    self._httpd.daemon_threads = True
    self._httpd.service = service
    self._httpd.max_body_bytes = max_body_bytes
    self._httpd.timeout_s = timeout_ms / 1000
    self.port = self._httpd.server_address[1]
    self._thread = threading.Thread(target=self._httpd.serve_forever, name='rest', daemon=True)

  def start(self):
    self._thread.start()
    return self.port

  def stop(self):
    self._httpd.shutdown()
    self._httpd.server_close()
    self._thread.join()
