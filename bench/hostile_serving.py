"""Hostile clients against the local server: malformed HTTP, half-sent bodies, huge and bad requests: answers, memory and log lines.

Starts `python -m serving.server` (as a person does, in its own process) on
the tiny random captioner (or --model_base_path) with a short REST deadline,
then:
  * sends each malformed REST request (Content-Length -1 with a 200 MiB body,
    Content-Length abc, a chunked body, JSON nested 100,000 deep, bytes that
    are not HTTP, a header line over the limit, two 400 MiB bodies) and checks
    it gets a 4xx with TF Serving's {"error": ...} JSON, and that a good
    request right after it gets the same caption as before; a chunked good
    request, and a good request whose client then half-closes its sending
    side, must get the caption;
  * holds 300 connections that send half a body and checks that the server
    closes each with a 408 after its deadline while good REST and gRPC
    requests keep getting answers;
  * sends failed 60 MiB requests (REST and gRPC) and compares the server's
    RSS after them with its RSS before (the baseline of this run);
  * sends 1,000 bad requests (bytes that are not an image, truncated JPEGs
    that make libjpeg complain, bytes that are not a tf.Example, over REST
    and gRPC) and counts the lines the server wrote to its terminal and the
    tracebacks among them;
  * counts the lines of TensorFlow (its C++ side, absl) the server wrote as it
    started, before any request.
Prints one JSON line: each case's HTTP status, the checks, the RSS ratio and
log lines per bad request.

Usage: bash run.sh bench hostile_serving [--model_base_path DIR]
"""
import argparse
import base64
import concurrent.futures
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time

import grpc
import psutil
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc

from components import caption_signatures
from components import names
from testing import tiny_model
from testing import images as test_images

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_PREDICT = f'/v1/models/{names.MODEL_NAME}:predict'.encode()
_DEADLINE_MS = 20_000
_HALF_SENT = 300
_BAD_REQUESTS = 1000
_LARGE_BYTES = 60 * 1024 * 1024
_MIB = 1024 * 1024
# TensorFlow's own lines (its C++ logging, absl, CUDA and CPU notices as it loads) and libjpeg's.
_LIBRARY_LINE = re.compile(r'tensorflow/|external/|absl|cuda|oneDNN|rebuild TensorFlow|jpeg', re.IGNORECASE)


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _read_response(sock):
  """(status, parsed JSON body or the raw bytes) of one HTTP response; (None, b'') if the server closed first."""
  data = b''
  while b'\r\n\r\n' not in data:
    chunk = sock.recv(65536)
    if not chunk:
      return None, data
    data += chunk
  head, _, body = data.partition(b'\r\n\r\n')
  length = int(re.search(rb'content-length: *(\d+)', head, re.IGNORECASE).group(1))
  while len(body) < length:
    chunk = sock.recv(65536)
    if not chunk:
      break
    body += chunk
  try:
    return int(head.split()[1]), json.loads(body)
  except ValueError:
    return int(head.split()[1]), body


def _send(sock, data):
  view = memoryview(data)
  try:
    for start in range(0, len(view), _MIB):
      sock.sendall(view[start:start + _MIB])
  except OSError:
    pass  # the server answered early (say, refused the body from its header) and closed


def _exchange(port, head, body=b'', timeout=60):
  """Sends a request while reading the answer, which may come before the whole body is sent (HTTP/1.1 allows it)."""
  with socket.create_connection(('127.0.0.1', port), timeout=timeout) as sock:
    sender = threading.Thread(target=_send, args=(sock, head + body if len(body) < _MIB else head))
    sender.start()
    if len(body) >= _MIB:
      sender.join()
      sender = threading.Thread(target=_send, args=(sock, body))
      sender.start()
    try:
      return _read_response(sock)
    except ConnectionResetError:
      return None, b''
    finally:
      try:
        sock.shutdown(socket.SHUT_RDWR)
      except OSError:
        pass  # the server reset the connection after answering (it closes on a malformed request)
      sender.join()


def _half_closed(port, data):
  """Sends a whole request, then shuts the sending side (RFC 9112 section 9.6 allows it) and reads the answer."""
  with socket.create_connection(('127.0.0.1', port), timeout=60) as sock:
    sock.sendall(data)
    sock.shutdown(socket.SHUT_WR)
    return _read_response(sock)


def _post(port, body, headers=b''):
  head = b'POST %s HTTP/1.1\r\nHost: x\r\n%sContent-Length: %d\r\n\r\n' % (_PREDICT, headers, len(body))
  return _exchange(port, head, body)


def _good_body(image):
  return json.dumps({'instances': [{'b64': base64.b64encode(image).decode()}]}).encode()


def _is_error_json(answer):
  return isinstance(answer, dict) and set(answer) == {'error'} and isinstance(answer['error'], str)


class _Probe:
  """The server process and the good request that must keep its answer."""

  def __init__(self, base_path, workdir):
    self.port, self.grpc_port = _free_port(), _free_port()
    self.output_path = os.path.join(workdir, 'server-output.txt')
    self._output = open(self.output_path, 'wb')
    self.process = subprocess.Popen(
        [sys.executable, '-m', 'serving.server', '--model_base_path', base_path, '--port', str(self.grpc_port),
         '--rest_api_port', str(self.port), '--rest_api_timeout_in_ms', str(_DEADLINE_MS),
         '--debug_log', os.path.join(workdir, 'debug.log')],
        cwd=_REPO, stdout=self._output, stderr=subprocess.STDOUT,
        env={key: value for key, value in os.environ.items() if key != 'TF_CPP_MIN_LOG_LEVEL'})  # all TF has to say
    self._wait_until_up()
    self.start_up_lines = self.output_lines()
    self.channel = grpc.insecure_channel(f'127.0.0.1:{self.grpc_port}',
                                         options=[('grpc.max_send_message_length', 2 * _LARGE_BYTES)])
    self.stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
    self.image = test_images.block_image(7, (128, 128), 'JPEG')
    self.want = self.good_rest()

  def _wait_until_up(self):
    give_up = time.monotonic() + 600
    while b'Exporting HTTP/REST API' not in open(self.output_path, 'rb').read():
      if self.process.poll() is not None or time.monotonic() > give_up:
        raise SystemExit(f'error: the server did not come up; its output: {self.output_path}')
      time.sleep(0.2)

  def output_lines(self):
    return open(self.output_path, 'rb').read().decode('utf-8', 'replace').splitlines()

  def rss_mb(self):
    return psutil.Process(self.process.pid).memory_info().rss / _MIB

  def good_rest(self):
    status, answer = _post(self.port, _good_body(self.image))
    return (status, answer['predictions'][0][names.CAPTION_OUTPUT]) if status == 200 else (status, answer)

  def good_grpc(self):
    return self.grpc_predict([self.image]).outputs[names.CAPTION_OUTPUT].string_val[0].decode()

  def grpc_predict(self, values, signature=names.CAPTION_SIGNATURE):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = names.MODEL_NAME
    request.model_spec.signature_name = signature
    alias = caption_signatures.INPUT_OF_SIGNATURE[signature]
    request.inputs[alias].CopyFrom(tf.make_tensor_proto(values, dtype=tf.string, shape=[len(values)]))
    return self.stub.Predict(request, timeout=120)

  def close(self):
    self.channel.close()
    self.process.terminate()
    self.process.wait(timeout=60)
    self._output.close()


def _malformed_cases(probe):
  """{case: (HTTP status, TF Serving's error JSON?, the good request still answered alike?)}."""
  port = probe.port
  good = _good_body(probe.image)
  chunked = b''.join(b'%x\r\n%s\r\n' % (len(good[i:i + 100]), good[i:i + 100])
                     for i in range(0, len(good), 100)) + b'0\r\n\r\n'
  cases = {
      'content_length_minus_1_200mib': lambda: _exchange(
          port, b'POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n' % _PREDICT, bytes(200 * _MIB)),
      'content_length_abc': lambda: _exchange(
          port, b'POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{}' % _PREDICT),
      'chunked_good_request': lambda: _exchange(
          port, b'POST %s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n' % _PREDICT, chunked),
      'json_100000_deep': lambda: _post(port, b'[' * 100_000 + b']' * 100_000),
      'half_closed_good_request': lambda: _half_closed(
          port, b'POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s' % (_PREDICT, len(good), good)),
      'not_http': lambda: _exchange(port, b'\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n'),
      'header_line_20kb': lambda: _exchange(
          port, b'GET /v1/models/captioner HTTP/1.1\r\nHost: x\r\nX-Long: %s\r\n\r\n' % (b'a' * 20_000)),
      'body_400mib_twice': lambda: [_exchange(
          port, b'POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n' % (_PREDICT, 400 * _MIB),
          bytes(400 * _MIB)) for _ in range(2)][-1],
  }
  results = {}
  for name, send in cases.items():
    status, answer = send()
    if name in ('chunked_good_request', 'half_closed_good_request'):
      ok = status == 200 and answer['predictions'][0][names.CAPTION_OUTPUT] == probe.want[1]
    else:
      ok = status is not None and 400 <= status < 500 and _is_error_json(answer)
    results[name] = {'status': status, 'answered_as_tf_serving': ok,
                     'good_request_after': probe.good_rest() == probe.want}
  return results


def _half_sent_bodies(probe):
  """300 connections sending half a body: when each is closed, and whether good requests got through meanwhile."""
  sockets = []
  head = b'POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{"instances": [' % _PREDICT
  start = time.monotonic()
  for _ in range(_HALF_SENT):
    sock = socket.create_connection(('127.0.0.1', probe.port), timeout=_DEADLINE_MS / 1000 * 6)
    sock.sendall(head)
    sockets.append(sock)
  good = [probe.good_rest() == probe.want and probe.good_grpc() == probe.want[1] for _ in range(10)]
  good_seconds = time.monotonic() - start

  def wait_closed(sock):
    status, _ = _read_response(sock)
    sock.close()
    return status, time.monotonic() - start

  with concurrent.futures.ThreadPoolExecutor(32) as pool:
    closed = list(pool.map(wait_closed, sockets))
  return {'half_sent': _HALF_SENT, 'answered_408': sum(status == 408 for status, _ in closed),
          'last_closed_after_s': round(max(seconds for _, seconds in closed), 1), 'deadline_s': _DEADLINE_MS / 1000,
          'good_requests_while_held': f'{sum(good)}/{len(good)}', 'good_requests_seconds': round(good_seconds, 1)}


def _large_failed_requests(probe):
  """RSS before and after three failed 60 MiB REST requests, then a failed 45 MiB gRPC one (the image decoder
  refuses them), each measured a second after its answer."""
  garbage = bytes(_LARGE_BYTES * 3 // 4)  # base64 makes it 60 MiB
  body = json.dumps({'instances': [{'b64': base64.b64encode(garbage).decode()}]}).encode()
  before = probe.rss_mb()
  answers = [_post(probe.port, body)[0] for _ in range(3)]
  time.sleep(1)
  after_rest = probe.rss_mb()
  try:
    probe.grpc_predict([garbage])
  except grpc.RpcError as e:
    answers.append(e.code().name)
  time.sleep(1)
  after_grpc = probe.rss_mb()
  return {'large_request_answers': answers, 'rss_mb_before': round(before), 'rss_mb_after_rest': round(after_rest),
          'rss_mb_after_grpc': round(after_grpc), 'rss_ratio_after_rest': round(after_rest / before, 3),
          'rss_ratio_after_grpc': round(after_grpc / before, 3), 'good_request_after': probe.good_rest() == probe.want}


def _bad_requests(probe):
  """1,000 bad requests of four kinds over both protocols; the lines the server wrote meanwhile."""
  lines_before = len(probe.output_lines())
  truncated_jpeg = test_images.block_image(3, (64, 64), 'JPEG')[:300]
  kinds = [
      lambda: _post(probe.port, _good_body(b'not an image')),
      lambda: _post(probe.port, _good_body(truncated_jpeg)),
      lambda: _grpc_error(probe, [truncated_jpeg]),
      lambda: _grpc_error(probe, [b'\x00\x01 not a tf.Example \xff'], names.EXAMPLES_SIGNATURE),
  ]
  answers = [kinds[i % len(kinds)]() for i in range(_BAD_REQUESTS)]
  time.sleep(1.5)  # the rate limit's count of left-out lines goes out with the next line
  probe.good_rest()
  lines = probe.output_lines()[lines_before:]
  return {'bad_requests': _BAD_REQUESTS, 'answered_4xx_or_invalid_argument': sum(
      a == 'INVALID_ARGUMENT' or (isinstance(a, tuple) and a[0] == 400) for a in answers),
          'client_messages_naming_internals': sum('function_node' in str(a) or '{{node' in str(a) for a in answers),
          'server_lines': len(lines), 'server_lines_per_bad_request': round(len(lines) / _BAD_REQUESTS, 3),
          'tracebacks': sum('Traceback' in line for line in lines),
          'tensorflow_or_libjpeg_lines': _library_lines(lines)}


def _library_lines(lines):
  return sum(bool(_LIBRARY_LINE.search(line)) and 'failed with' not in line for line in lines)


def _start_up(probe):
  """What the server wrote before its first request: its own lines only."""
  return {'server_lines': len(probe.start_up_lines), 'tensorflow_or_absl_lines': _library_lines(probe.start_up_lines),
          'tracebacks': sum('Traceback' in line for line in probe.start_up_lines)}


def _grpc_error(probe, values, signature=names.CAPTION_SIGNATURE):
  try:
    probe.grpc_predict(values, signature)
  except grpc.RpcError as e:
    return e.code().name if 'function_node' not in e.details() else e.details()
  return 'OK'


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--model_base_path', help='A pushed model\'s base directory (default: the tiny model).')
  args = parser.parse_args(argv)
  with tempfile.TemporaryDirectory() as workdir:
    base_path = args.model_base_path
    if not base_path:
      base_path = os.path.join(workdir, 'base', names.MODEL_NAME)
      tiny_model.export_tiny_model(os.path.join(base_path, '1'))
    probe = _Probe(base_path, workdir)
    try:
      result = {'start_up': _start_up(probe), 'malformed': _malformed_cases(probe),
                'half_sent_bodies': _half_sent_bodies(probe), 'large_failed_requests': _large_failed_requests(probe),
                'bad_requests': _bad_requests(probe)}
    finally:
      probe.close()
  print(json.dumps(result))


if __name__ == '__main__':
  main()
