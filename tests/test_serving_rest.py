"""serving/rest.py on a real socket, with hostile HTTP: every answer is TF Serving's {"error": ...} JSON with a 4xx.

The REST front end runs over the real Service, validator and batcher, but the
servable is an echo function with a hand-written SignatureDef instead of a
SavedModel, so what is tested is the HTTP handling alone (tests/test_serving.py
runs the real model through both front ends).
"""
import base64
import json
import logging
import socket

import grpc
import pytest
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.apis import predict_pb2

from serving import batching
from serving import requests
from serving import rest
from serving import servables
from serving import service as service_lib
from serving.errors import ServingError

MODEL = 'echo'
PREDICT = f'/v1/models/{MODEL}:predict'.encode()
MAX_BODY_BYTES = 1024 * 1024
MAX_CONNECTIONS = 40
TIMEOUT_MS = 2000


def _signature_def():
  signature = meta_graph_pb2.SignatureDef(method_name='tensorflow/serving/predict')
  for infos, alias in ((signature.inputs, 'images'), (signature.outputs, 'caption')):
    infos[alias].name = f'{alias}:0'
    infos[alias].dtype = types_pb2.DT_STRING
    infos[alias].tensor_shape.dim.add(size=-1)
  return signature


class _EchoManager:
  """Stands in for servables.ModelManager: one version of `echo`, whose caption is its input upper-cased."""

  def __init__(self):
    self._servable = servables.Servable(
        model_name=MODEL, version=1, path='', signature_defs={'serving_default': _signature_def()},
        functions={'serving_default': lambda images: {'caption': tf.strings.upper(images)}}, root=None)

  def servable(self, model_spec):
    if model_spec.name != MODEL:
      raise ServingError(grpc.StatusCode.NOT_FOUND, f'Servable not found for request: Latest({model_spec.name})')
    return self._servable

  def version_states(self, model_spec):
    return [servables.VersionState(1, get_model_status_pb2.ModelVersionStatus.State.AVAILABLE)]


def _echo_request():
  request = predict_pb2.PredictRequest()
  request.model_spec.name = MODEL
  request.inputs['images'].CopyFrom(tf.make_tensor_proto([b'a'], dtype=tf.string))
  return request


@pytest.fixture(scope='module')
def port():
  batcher = batching.Batcher(batching.BatchingOptions())
  service = service_lib.Service(_EchoManager(), batcher, requests.RequestValidator(max_image_pixels=100))
  server = rest.RestServer(service, '127.0.0.1', 0, max_body_bytes=MAX_BODY_BYTES, timeout_ms=TIMEOUT_MS,
                           max_connections=MAX_CONNECTIONS)
  batcher.start()
  try:
    port = server.start()
    service.predict(_echo_request())  # the echo's first call (TensorFlow's start-up) before any deadline runs
    yield port
  finally:
    server.stop()
    batcher.stop()


def _read_response(sock):
  """(status, headers text, JSON body) of one HTTP response, read to its Content-Length."""
  data = b''
  while b'\r\n\r\n' not in data:
    chunk = sock.recv(65536)
    assert chunk, f'the server closed the connection without answering (got {data!r})'
    data += chunk
  head, _, body = data.partition(b'\r\n\r\n')
  headers = head.decode('latin-1').lower()
  length = int(headers.split('content-length:')[1].split()[0])
  while len(body) < length:
    body += sock.recv(65536)
  return int(head.split()[1]), headers, json.loads(body)


def _exchange(port, data):
  with socket.create_connection(('127.0.0.1', port), timeout=30) as sock:
    sock.sendall(data)
    return _read_response(sock)


def _post(body, headers=b''):
  return b'POST %s HTTP/1.1\r\nHost: x\r\n%sContent-Length: %d\r\n\r\n%s' % (PREDICT, headers, len(body), body)


def _good(port):
  """A good request's answer; every hostile request is followed by one."""
  body = json.dumps({'instances': [{'b64': base64.b64encode(b'abc').decode()}, 'xyz']}).encode()
  status, _, answer = _exchange(port, _post(body))
  assert (status, answer) == (200, {'predictions': ['ABC', 'XYZ']})


def _chunked(body, size=7):
  return b''.join(b'%x\r\n%s\r\n' % (len(body[i:i + size]), body[i:i + size])
                  for i in range(0, len(body), size)) + b'0\r\n\r\n'


HOSTILE = {
    'Content-Length -1': (b'POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n' % PREDICT + b'x' * 1000,
                          400, 'Malformed HTTP request: Invalid character in Content-Length'),
    'Content-Length abc': (b'POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{}' % PREDICT, 400,
                           'Malformed HTTP request'),
    'two Content-Lengths': (b'POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}'
                            % PREDICT, 400, 'Malformed HTTP request'),
    'not HTTP': (b'\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n', 400, 'Malformed HTTP request'),
    'header line over 8 KiB': (b'GET /v1/models/echo HTTP/1.1\r\nHost: x\r\nX: %s\r\n\r\n' % (b'a' * 9000), 400,
                               'Malformed HTTP request'),
    'bad chunk size': (b'POST %s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n'
                       % PREDICT, 400, 'Malformed HTTP request'),
    'JSON 100,000 deep': (_post(b'[' * 100_000 + b']' * 100_000), 400, 'nested too deeply'),
    'body over the limit': (b'POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n' % (PREDICT, 10 ** 10),
                            429, f'Request body of {10 ** 10} bytes is larger than max'),
    'chunked body over the limit': (
        b'POST %s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n' % PREDICT
        + _chunked(b' ' * (MAX_BODY_BYTES + 1), size=4096), 429, 'larger than max'),
    'PUT': (b'PUT /v1/models/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n', 501, 'No handler for PUT'),
    'unknown model': (_post(b'{"instances": ["a"]}').replace(b'/echo:', b'/nope:'), 404,
                      'Servable not found for request: Latest(nope)'),
    'version over int64': (b'GET /v1/models/echo/versions/99999999999999999999 HTTP/1.1\r\nHost: x\r\n\r\n', 400,
                           'Failed to convert version: 99999999999999999999 to numeric.'),
    'no model name': (b'GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n', 400, 'Missing model name in request.'),
    'malformed URL': (_post(b'{}').replace(b'/echo:predict', b'/echo/predict'), 400,
                      'Malformed request: POST /v1/models/echo/predict'),
    'classify': (_post(b'{}').replace(b':predict', b':classify'), 501, 'classify is not implemented'),
    'not under /v1': (b'GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n', 404, 'No handler for GET /metrics'),
}


@pytest.mark.parametrize('case', sorted(HOSTILE))
def test_hostile_request_gets_a_tf_serving_error_and_the_server_keeps_serving(port, case):
  data, want_status, message = HOSTILE[case]

  status, headers, answer = _exchange(port, data)

  assert status == want_status and list(answer) == ['error'] and message in answer['error'], answer
  assert 'content-type: application/json' in headers
  _good(port)


def test_chunked_request_is_answered_like_the_same_request_with_content_length(port):
  body = json.dumps({'signature_name': 'serving_default', 'inputs': ['a', 'bc']}).encode()

  status, _, answer = _exchange(port, b'POST %s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n%s'
                                % (PREDICT, _chunked(body)))

  assert (status, answer) == (200, {'outputs': ['A', 'BC']})
  assert _exchange(port, _post(body))[2] == answer


def test_keep_alive_connection_answers_requests_in_turn(port):
  body = json.dumps({'instances': ['a']}).encode()
  with socket.create_connection(('127.0.0.1', port), timeout=30) as sock:
    for _ in range(3):
      sock.sendall(_post(body))
      assert _read_response(sock)[::2] == (200, {'predictions': ['A']})


@pytest.mark.parametrize('size', [10, 100_000])
def test_a_request_sent_whole_then_half_closed_is_answered(port, size):
  with socket.create_connection(('127.0.0.1', port), timeout=30) as sock:
    sock.sendall(_post(json.dumps({'instances': ['a' * size]}).encode()))
    sock.shutdown(socket.SHUT_WR)  # RFC 9112 section 9.6: the client is done sending, still reading

    status, headers, answer = _read_response(sock)
    assert (status, answer) == (200, {'predictions': ['A' * size]}) and 'connection: close' in headers
    assert sock.recv(1) == b''
  _good(port)


def test_requests_sent_whole_before_a_half_close_are_answered_in_turn_then_the_connection_closes(port):
  with socket.create_connection(('127.0.0.1', port), timeout=30) as sock:
    sock.sendall(_post(b'{"instances": ["a"]}') + _post(b'{"instances": ["b"]}'))
    sock.shutdown(socket.SHUT_WR)  # RFC 9112 section 9.6: the client is done sending, still reading

    assert _read_response(sock)[::2] == (200, {'predictions': ['A']})
    status, headers, answer = _read_response(sock)
    assert (status, answer) == (200, {'predictions': ['B']}) and 'connection: close' in headers
    assert sock.recv(1) == b''
  _good(port)


def test_half_close_mid_body_closes_the_connection_without_waiting_for_the_deadline(port, caplog):
  caplog.set_level(logging.INFO)
  caplog.clear()
  with socket.create_connection(('127.0.0.1', port), timeout=TIMEOUT_MS / 1000 / 2) as sock:
    sock.sendall(b'POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"in' % PREDICT)
    sock.shutdown(socket.SHUT_WR)

    assert sock.recv(1) == b''  # the body can never complete: closed before the 408 deadline
  _good(port)
  # At most one line: the request may be dropped before its handler starts, which logs nothing.
  lines = [r.getMessage() for r in caplog.records if r.name.startswith(('serving', 'aiohttp', 'asyncio'))]
  assert len(lines) <= 1 and not [r for r in caplog.records if r.exc_info], lines


def test_half_sent_bodies_are_closed_by_the_deadline_while_good_requests_are_answered(port):
  held = []
  for _ in range(MAX_CONNECTIONS // 2):
    sock = socket.create_connection(('127.0.0.1', port), timeout=30)
    sock.sendall(b'POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"instan' % PREDICT)
    held.append(sock)

  _good(port)

  for sock in held:
    with sock:
      status, headers, answer = _read_response(sock)
      assert status == 408 and 'connection: close' in headers
      assert answer == {'error': 'Timed out reading the request body (8 of 100 bytes arrived)'}
      assert sock.recv(1) == b''  # closed
  _good(port)


def test_connections_over_the_bound_get_503_and_the_server_recovers(port):
  held = [socket.create_connection(('127.0.0.1', port), timeout=30) for _ in range(MAX_CONNECTIONS)]
  try:
    status, _, answer = _exchange(port, b'GET /v1/models/echo HTTP/1.1\r\nHost: x\r\n\r\n')
    assert status == 503 and 'Too many open connections' in answer['error']
  finally:
    for sock in held:
      sock.close()
  _good(port)


def test_status_and_metadata_in_tf_servings_json(port):
  status, _, answer = _exchange(port, b'GET /v1/models/echo HTTP/1.1\r\nHost: x\r\n\r\n')
  assert status == 200 and answer['model_version_status'][0]['state'] == 'AVAILABLE'
  status, _, answer = _exchange(port, b'GET /v1/models/echo/versions/1/metadata HTTP/1.1\r\nHost: x\r\n\r\n')
  assert status == 200
  assert list(answer['metadata']['signature_def']['signature_def']) == ['serving_default']


def test_failures_are_logged_in_one_line_each_without_tracebacks(port, caplog):
  caplog.set_level(logging.INFO)
  caplog.clear()
  _exchange(port, HOSTILE['Content-Length abc'][0])
  with socket.create_connection(('127.0.0.1', port), timeout=30) as sock:  # hangs up mid-body
    sock.sendall(b'POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"in' % PREDICT)
  _good(port)

  lines = [r.getMessage() for r in caplog.records if r.name.startswith(('serving', 'aiohttp', 'asyncio'))]
  assert any('Malformed HTTP request' in line for line in lines), lines
  assert not [r for r in caplog.records if r.exc_info], 'no tracebacks'
  assert all('\n' not in line for line in lines)
