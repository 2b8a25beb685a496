"""The REST front end: TF Serving's REST API (g3doc/api_rest.md) over serving.service, served by aiohttp.

  POST /v1/models/<name>[/versions/<n>|/labels/<l>]:predict   body in the row
       ({"instances": ...}) or columnar ({"inputs": ...}) format, optional
       "signature_name"; answers {"predictions": ...} or {"outputs": ...}
  GET  /v1/models/<name>[/versions/<n>]            GetModelStatus as JSON
  GET  /v1/models/<name>[/versions/<n>]/metadata   GetModelMetadata as JSON

As in TF Serving's http_rest_api_handler.cc, each call is turned into the gRPC
request proto (the JSON body via serving.tensors) and run by the same Service
as gRPC, so both protocols share one validation path, one set of limits and
one error vocabulary. A failure answers {"error": "<message>"} with the HTTP
status TF Serving maps its code to (serving.rest_api).

Why aiohttp: HTTP/1.1 is parsed by its llhttp parser (chunked bodies, invalid
or negative Content-Length, header line, size and count limits), idle
connections are closed after DEFAULT_IDLE_TIMEOUT_S (keepalive_timeout), and its parse errors
go through one overridable method (RequestHandler.handle_error), so even a
request that is not valid HTTP gets TF Serving's {"error": ...} form and one
log line (docs/design-notes/serving-front-end-and-memory.md compares the
alternatives). What this module adds: the body limit (429 from the header
alone, or as soon as a chunked body passes it), the deadline on reading the
body (408), the bound on open connections (503), running the model calls on
worker threads so the event loop keeps answering, and handing the memory of a
large body back to the system once it is answered (serving.memory).
"""
import asyncio
import concurrent.futures
import http
import json
import re
import threading
import time
import urllib.parse

import aiohttp
import grpc
from aiohttp import web
from aiohttp import web_protocol
from google.protobuf import json_format
from tensorflow_serving.apis import get_model_metadata_pb2
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.apis import predict_pb2

from components import names
from serving import errors
from serving import memory
from serving import rest_api
from serving import tensors
from serving.errors import ServingError

DEFAULT_PORT = 8501
DEFAULT_TIMEOUT_MS = 30_000  # tensorflow_model_server's --rest_api_timeout_in_ms
DEFAULT_MAX_CONNECTIONS = 512  # open REST connections; more are answered 503 and closed
DEFAULT_IDLE_TIMEOUT_S = 30.0  # a connection that sends no request for this long is closed
DEFAULT_WORKERS = 16  # requests whose JSON is parsed or whose model call waits at once
# After answering a request whose body was not read (refused, or timed out),
# what the client still sends is read and dropped for this long, so that it
# gets to read the answer, then the connection is closed (aiohttp's default:
# 10 s, which kept a timed-out connection open 10 s past its deadline).
_LINGERING_S = 1.0

# URL forms, from tensorflow_serving/model_servers/http_rest_api_util.cc.
_API_PATH = re.compile(r'/v1/.*', re.IGNORECASE)
_PREDICTION_PATH = re.compile(
    r'/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)', re.IGNORECASE)
_STATUS_PATH = re.compile(
    r'/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?', re.IGNORECASE)
_MAX_INT64 = 2 ** 63 - 1


class _RequestTimeout(Exception):
  """The client did not send its whole body within the call's deadline."""


def _fill_model_spec(model_spec, name, version, label):
  """TF Serving's ParseModelInfo + FillModelSpecWithNameVersionAndLabel, on the URL's parts."""
  model_spec.name = urllib.parse.unquote(name or '')
  if version:
    if int(version) > _MAX_INT64:
      raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f'Failed to convert version: {version} to numeric.')
    model_spec.version.value = int(version)
  if label:
    model_spec.version_label = urllib.parse.unquote(label)


def _metadata_json(response):
  """GetModelMetadataResponse -> TF Serving's JSON: {"model_spec": ..., "metadata": {"signature_def": ...}}."""
  signature_map = get_model_metadata_pb2.SignatureDefMap()
  response.metadata[names.SIGNATURE_DEF_METADATA_FIELD].Unpack(signature_map)

  def to_dict(proto):
    return json_format.MessageToDict(proto, including_default_value_fields=True,
                                     preserving_proto_field_name=True)

  return json.dumps({'model_spec': to_dict(response.model_spec),
                     rest_api.METADATA_KEY: {names.SIGNATURE_DEF_METADATA_FIELD: to_dict(signature_map)}},
                    indent=2)


def error_response(status, message):
  """TF Serving's error answer: {"error": message} with the HTTP status."""
  return web.Response(status=status, text=json.dumps({rest_api.ERROR_KEY: message}, indent=2),
                      content_type='application/json')


class Api:
  """The blocking part of each call: URL and JSON -> request proto -> Service -> JSON text.

  Runs on worker threads; raises ServingError with TF Serving's code and message.
  """

  def __init__(self, service):
    self._service = service

  def get(self, path):
    match = _STATUS_PATH.fullmatch(path)
    if not match:
      raise _malformed('GET', path)
    name, version, label, subresource = match.groups()
    if not name:
      raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, 'Missing model name in request.')
    if subresource:
      request = get_model_metadata_pb2.GetModelMetadataRequest(
          metadata_field=[names.SIGNATURE_DEF_METADATA_FIELD])
      _fill_model_spec(request.model_spec, name, version, label)
      return _metadata_json(self._service.model_metadata(request))
    request = get_model_status_pb2.GetModelStatusRequest()
    _fill_model_spec(request.model_spec, name, version, label)
    return json_format.MessageToJson(self._service.model_status(request), including_default_value_fields=True)

  def predict_request(self, path, body):
    """The PredictRequest a :predict call asks for, and the format (row or columnar) to answer in."""
    match = _PREDICTION_PATH.fullmatch(path)
    if not match:
      raise _malformed('POST', path)
    name, version, label, method = match.groups()
    if method.lower() != 'predict':
      raise ServingError(grpc.StatusCode.UNIMPLEMENTED, f'{method} is not implemented by this server; use :predict')
    request = predict_pb2.PredictRequest()
    _fill_model_spec(request.model_spec, name, version, label)
    document, request.model_spec.signature_name = tensors.parse_predict_body(body)
    request_format = tensors.fill_predict_inputs(document, self._service.signature_inputs(request.model_spec),
                                                 request)
    return request, request_format

  def post(self, path, body, deadline):
    request, request_format = self.predict_request(path, body)
    del body  # the request proto holds the decoded inputs; let the JSON text go before the model runs
    response = self._service.predict(request, deadline=deadline)
    outputs = {alias: tensors.from_proto(alias, proto) for alias, proto in response.outputs.items()}
    return tensors.predict_response_json(outputs, request_format)


def _malformed(method, path):
  return ServingError(grpc.StatusCode.INVALID_ARGUMENT, f'Malformed request: {method} {path}')


async def read_body(request, max_bytes, deadline):
  """The request body, read into one buffer (no copies of a large body).

  Refuses a body over max_bytes from its Content-Length before reading any of
  it, or, for a chunked body, as soon as it passes the limit (429, as gRPC's
  message limit). Raises _RequestTimeout if it has not all arrived by
  `deadline` (time.monotonic()).
  """
  length = request.content_length
  if length is not None and length > max_bytes:
    raise _too_large(f'Request body of {length} bytes')
  body = bytearray(length) if length is not None else bytearray()
  received = 0
  while True:
    try:
      chunk = await asyncio.wait_for(request.content.readany(), timeout=max(0.0, deadline - time.monotonic()))
    except asyncio.TimeoutError:
      raise _RequestTimeout(f'Timed out reading the request body ({received} of '
                            f'{length if length is not None else "?"} bytes arrived)') from None
    if not chunk:
      return body
    if received + len(chunk) > max_bytes:
      raise _too_large(f'Request body of more than {max_bytes} bytes')
    if length is None:
      body += chunk
    else:
      body[received:received + len(chunk)] = chunk
    received += len(chunk)


def _too_large(what):
  return ServingError(grpc.StatusCode.RESOURCE_EXHAUSTED, f'{what} is larger than max (--max_message_bytes)')


class _Connection(web_protocol.RequestHandler):
  """aiohttp's HTTP/1.1 connection, with TF Serving's error form for requests it cannot parse,
  and a bound on open connections."""

  def __init__(self, manager, *, open_connections, max_connections, **kwargs):
    super().__init__(manager, **kwargs)
    self._open_connections = open_connections
    self._max_connections = max_connections
    self._last_body = None  # the body of the last request parsed
    self._client_done_sending = False

  def connection_made(self, transport):
    super().connection_made(transport)
    self._open_connections.add(self)
    if len(self._open_connections) > self._max_connections:
      errors.log_request_error('REST connection', ServingError(
          grpc.StatusCode.UNAVAILABLE, f'{len(self._open_connections) - 1} connections are open already'))
      body = json.dumps({rest_api.ERROR_KEY: f'Too many open connections (at most {self._max_connections}); '
                                             f'retry later.'}).encode()
      transport.write(b'HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n'
                      b'Connection: close\r\nContent-Length: %d\r\n\r\n%s' % (len(body), body))
      transport.close()

  def connection_lost(self, exc):
    self._open_connections.discard(self)
    super().connection_lost(exc)

  def data_received(self, data):
    super().data_received(data)
    if self._messages:
      self._last_body = self._messages[-1][1]  # only the last request's body can still be arriving

  def eof_received(self):
    """The client half-closed its sending side: answer the requests it sent whole, then close.

    Returning True keeps the socket open for the answers (RFC 9112 section 9.6);
    a connection waiting for its next request, or whose last body was cut
    short (it can never complete), is closed as before.
    """
    waiting = self._waiter is not None and not self._waiter.done()
    if waiting or self._last_body is None or not self._last_body.is_eof():
      return None
    self._client_done_sending = True
    return True

  async def finish_response(self, request, resp, start_time):
    if self._client_done_sending and not self._messages:
      resp.force_close()  # the last request the client sent: nothing more can come
    return await super().finish_response(request, resp, start_time)

  def handle_error(self, request, status=500, exc=None, message=None):
    """A request aiohttp could not parse (status 400), or a bug in the handler (500): one log line, no traceback."""
    code = grpc.StatusCode.INVALID_ARGUMENT if status < 500 else grpc.StatusCode.INTERNAL
    # llhttp's message quotes the bad line over several lines with a caret under the bad byte.
    detail = ' '.join(str(message or exc).replace('^', ' ').split())
    text = f'Malformed HTTP request: {detail}' if status < 500 else f'Internal error: {exc!r}'
    errors.log_request_error('REST', ServingError(code, text))
    response = error_response(status, text)
    response.force_close()
    return response


class RestServer:
  """TF Serving's REST API for `service` on host:port, on an aiohttp event loop in its own thread."""

  def __init__(self, service, host, port, *, max_body_bytes, timeout_ms=DEFAULT_TIMEOUT_MS,
               max_connections=DEFAULT_MAX_CONNECTIONS, idle_timeout_s=DEFAULT_IDLE_TIMEOUT_S,
               workers=DEFAULT_WORKERS):
    self._api = Api(service)
    self._host, self._requested_port = host, port
    self._max_body_bytes = max_body_bytes
    self._timeout_s = timeout_ms / 1000
    self._max_connections = max_connections
    self._idle_timeout_s = idle_timeout_s
    self._workers = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix='rest')
    self._loop = asyncio.new_event_loop()
    self._thread = threading.Thread(target=self._loop.run_forever, name='rest', daemon=True)
    self._server = None
    self._listener = None
    self.port = None

  def start(self):
    """Listens and serves in the background; returns the port."""
    self._thread.start()
    asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result()
    return self.port

  def stop(self):
    if self._thread.is_alive():
      asyncio.run_coroutine_threadsafe(self._close(), self._loop).result()
      self._loop.call_soon_threadsafe(self._loop.stop)
      self._thread.join()
    self._loop.close()
    self._workers.shutdown(wait=True, cancel_futures=True)

  async def _listen(self):
    self._server = web.Server(self._handle, access_log=None)
    open_connections = set()

    def connection():
      return _Connection(self._server, loop=self._loop, open_connections=open_connections,
                         max_connections=self._max_connections, keepalive_timeout=self._idle_timeout_s,
                         lingering_time=_LINGERING_S, access_log=None)

    self._listener = await self._loop.create_server(connection, self._host, self._requested_port)
    self.port = self._listener.sockets[0].getsockname()[1]

  async def _close(self):
    if self._listener is not None:  # None when the port could not be bound
      self._listener.close()
      await self._listener.wait_closed()
      await self._server.shutdown(timeout=1)

  async def _handle(self, request):
    """One HTTP request -> TF Serving's answer; every failure is one log line and {"error": ...}."""
    path = request.path
    deadline = time.monotonic() + self._timeout_s
    try:
      if not _API_PATH.fullmatch(path):
        raise ServingError(grpc.StatusCode.NOT_FOUND, f'No handler for {request.method} {path}')
      if request.method == 'GET':
        text = await self._run(self._api.get, path)
      elif request.method == 'POST':
        body = await read_body(request, self._max_body_bytes, deadline)
        text = await self._run(self._api.post, path, body, deadline)
        del body
      else:
        raise ServingError(grpc.StatusCode.UNIMPLEMENTED, f'No handler for {request.method} {path}')
      return web.Response(text=text, content_type='application/json')
    except ServingError as e:
      return self._failed(request, rest_api.http_status(e.code), errors.detached(e))
    except _RequestTimeout as e:
      return self._failed(request, int(http.HTTPStatus.REQUEST_TIMEOUT),
                          ServingError(grpc.StatusCode.DEADLINE_EXCEEDED, str(e)))
    except (aiohttp.ClientConnectionError, ConnectionError):  # the client hung up mid-body: nobody will read this
      return self._failed(request, rest_api.http_status(grpc.StatusCode.CANCELLED), ServingError(
          grpc.StatusCode.CANCELLED, 'The client closed the connection before sending its whole body.'))
    finally:
      memory.release_after(request.content.total_bytes)

  async def _run(self, function, *args):
    return await self._loop.run_in_executor(self._workers, function, *args)

  @staticmethod
  def _failed(request, status, error):
    errors.log_request_error(f'REST {request.method} {request.path}', error)
    response = error_response(status, error.message)
    if not request.content.is_eof():
      response.force_close()  # the rest of the body is unread: it must not be taken for the next request
    return response
