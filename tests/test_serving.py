"""Serving end to end: a pushed SavedModel, the local server (gRPC and REST) on real sockets, the client.

The model is the tiny random-weight captioner exported by the project's own
exporter (testing.tiny_model, via tests/conftest.py), laid out like the Pusher's base directory
<base>/captioner/<version>/. Every expected caption comes from calling that
SavedModel directly in this process.
"""
import base64
import concurrent.futures
import http.client
import io
import json
import logging
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import types
import zlib

import grpc
import numpy as np
import pytest
import tensorflow as tf
import yaml
from google.protobuf import text_format
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import get_model_metadata_pb2
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.apis import model_service_pb2_grpc
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc
from tensorflow_serving.config import model_server_config_pb2

from components import names
from components import caption_signatures
from components.evaluation import captioning
from serving import batching
from serving import client as client_lib
from serving import model_server as server_lib
from testing.images import block_image

MODEL_NAME = names.MODEL_NAME
MAX_IMAGE_PIXELS = 64 * 64  # the test images are 32x32
MAX_MESSAGE_BYTES = 1024 * 1024
MAX_IMAGES_PER_REQUEST = 40
TOP_K = 2  # testing.tiny_model's beam width
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEPLOY_DIR = os.path.join(REPO, 'serving', 'deploy')
State = get_model_status_pb2.ModelVersionStatus.State
Code = grpc.StatusCode


def _png_start(width, height):
  """The start of a PNG claiming width x height: its header and a first bit of pixel data, nothing more.

  What a decompression bomb looks like to a server that reads only headers.
  """
  def chunk(kind, data):
    return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))

  header = struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
  return b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', header) + chunk(b'IDAT', zlib.compress(bytes(4096)))


def _direct(model, images, signature=names.CAPTION_SIGNATURE):
  """(caption, log_probability) per image, from the SavedModel called in this process."""
  answer = model[signature](images)
  return list(zip(answer.captions, answer.log_probabilities))


def _direct_outputs(model, images):
  """serving_default's raw outputs (alias -> numpy array) for the images, called in this process."""
  signature = tf.saved_model.load(model[names.CAPTION_SIGNATURE].model_dir).signatures[
      names.CAPTION_SIGNATURE]
  return {alias: value.numpy()
          for alias, value in signature(**{names.IMAGES_INPUT: tf.constant(images)}).items()}


def _direct_top(model, images):
  """Per image, the (caption, log_probability) pairs of the k best, best first, missing ones left out."""
  answer = model[names.CAPTION_SIGNATURE](images)
  return [list(zip(captions, log_probs))
          for captions, log_probs in zip(answer.top_captions, answer.top_log_probabilities)]


def _pairs(captions):
  return [(c.caption, c.log_probability) for c in captions]


def _assert_same(got, want):
  """Captions equal; log-probabilities equal up to float32 noise (batch shapes change kernels)."""
  assert [caption for caption, _ in got] == [caption for caption, _ in want]
  np.testing.assert_allclose([lp for _, lp in got], [lp for _, lp in want], rtol=1e-5, atol=1e-5)


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _wait_for(condition, what, timeout_s=120):
  """Polls `condition` until true; fails naming `what` if it never is (a wait, not a timing check)."""
  give_up = time.monotonic() + timeout_s
  while not condition():
    if time.monotonic() > give_up:
      raise AssertionError(f'gave up waiting for {what}')
    time.sleep(0.1)


def _string_tensor(values):
  return tf.make_tensor_proto(values, dtype=tf.string, shape=[len(values)])


@pytest.fixture(scope='module')
def version_dir(tiny_model_dir, tmp_path_factory):
  """<base>/captioner/1 holding the tiny captioner."""
  path = tmp_path_factory.mktemp('serving') / MODEL_NAME / '1'
  shutil.copytree(tiny_model_dir, path)
  return path


@pytest.fixture(scope='module')
def model(version_dir):
  """Signature name -> the SavedModel's caption signature, called in this process."""
  return {signature: captioning.SavedModelCaptioner(str(version_dir), signature)
          for signature in caption_signatures.INPUT_OF_SIGNATURE}


@pytest.fixture(scope='module')
def server(version_dir):
  with server_lib.LocalModelServer(str(version_dir.parent), MODEL_NAME, port=0, rest_port=0,
                                   max_image_pixels=MAX_IMAGE_PIXELS, max_message_bytes=MAX_MESSAGE_BYTES,
                                   max_images_per_request=MAX_IMAGES_PER_REQUEST, poll_wait_seconds=0.2) as running:
    yield running


@pytest.fixture
def client(server):
  # The client accepts more than the server so that oversized requests reach it.
  with client_lib.CaptionClient(f'127.0.0.1:{server.port}', MODEL_NAME, timeout_s=60,
                                max_message_bytes=4 * MAX_MESSAGE_BYTES) as connected:
    yield connected


@pytest.fixture(scope='module')
def channel(server):
  with grpc.insecure_channel(f'127.0.0.1:{server.port}', options=[
          ('grpc.max_send_message_length', 4 * MAX_MESSAGE_BYTES)]) as opened:
    yield opened


def _predict(channel, inputs, name=MODEL_NAME, signature=names.CAPTION_SIGNATURE, version=None, label=None,
             output_filter=()):
  request = predict_pb2.PredictRequest(output_filter=list(output_filter))
  request.model_spec.name = name
  request.model_spec.signature_name = signature
  if version is not None:
    request.model_spec.version.value = version
  if label is not None:
    request.model_spec.version_label = label
  for alias, tensor in inputs.items():
    request.inputs[alias].CopyFrom(tensor)
  return prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=60)


def _model_status(channel, name=MODEL_NAME, version=None):
  request = get_model_status_pb2.GetModelStatusRequest()
  request.model_spec.name = name
  if version is not None:
    request.model_spec.version.value = version
  response = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(request, timeout=60)
  return {s.version: (s.state, s.status.error_code) for s in response.model_version_status}


def test_caption_over_grpc_equals_calling_the_saved_model(client, model):
  images = [block_image(i) for i in range(4)] + [
      block_image(4, image_format='JPEG'), block_image(5, image_format='GIF'), block_image(6, image_format='BMP')]
  want = _direct(model, images)
  assert len(set(want)) == len(want), 'the tiny model should tell these images apart'

  captions = client.caption(images)

  _assert_same(_pairs(captions), want)
  assert {c.model_version for c in captions} == {1}


def test_from_examples_signature_gives_the_same_captions(server, model):
  images = [block_image(i) for i in range(3)]
  with client_lib.CaptionClient(f'127.0.0.1:{server.port}', MODEL_NAME,
                                signature_name=names.EXAMPLES_SIGNATURE) as examples_client:
    captions = examples_client.caption(images)

  _assert_same(_pairs(captions), _direct(model, images, names.EXAMPLES_SIGNATURE))
  _assert_same(_pairs(captions), _direct(model, images))


def test_concurrent_requests_each_get_their_own_caption(client, model):
  """Concurrent requests may be merged into one model call; each still gets its own rows."""
  images = [block_image(i) for i in range(10, 18)]
  bad = b'\x00 not an image'
  with concurrent.futures.ThreadPoolExecutor(len(images) + 1) as pool:
    goods = [pool.submit(client.caption, [image]) for image in images]
    failing = pool.submit(client.caption, [bad])
    results = [future.result() for future in goods]
    with pytest.raises(client_lib.RequestError) as error:
      failing.result()

  for image, result in zip(images, results):
    _assert_same(_pairs(result), _direct(model, [image]))
  assert error.value.code == Code.INVALID_ARGUMENT


def _jsonl(text):
  return [json.loads(line) for line in text.splitlines()]


def test_cli_captions_a_folder_as_json_lines(server, model, tmp_path):
  folder = tmp_path / 'photos'
  (folder / 'more').mkdir(parents=True)
  files = {'a.png': block_image(20), 'b.JPG': block_image(21, image_format='JPEG'),
           'broken.jpg': b'this is not a jpeg', 'more/c.bmp': block_image(22, image_format='BMP'),
           'more/d.gif': block_image(23, image_format='GIF'), 'notes.txt': b'not an image'}
  for name, data in files.items():
    (folder / name).write_bytes(data)
  stdout = io.StringIO()

  status = client_lib.main([str(folder), '--server', f'127.0.0.1:{server.port}', '--format', 'jsonl',
                            '--batch_size', '2', '--no_progress'], stdout=stdout)

  lines = _jsonl(stdout.getvalue())
  assert [os.path.relpath(line['path'], folder) for line in lines] == [
      'a.png', 'b.JPG', 'broken.jpg', os.path.join('more', 'c.bmp'), os.path.join('more', 'd.gif')]
  assert status == 1  # because of broken.jpg
  broken = lines[2]
  assert broken['error']['code'] == 'INVALID_ARGUMENT'
  assert 'Unknown image file format' in broken['error']['message']
  good = [line for line in lines if 'error' not in line]
  want = _direct(model, [files[os.path.relpath(line['path'], folder)] for line in good])
  _assert_same([(line['caption'], line['log_probability']) for line in good], want)
  assert {line['model_version'] for line in good} == {1}


def test_cli_text_output_and_progress_bar(server, model, tmp_path, capsys):
  folder = tmp_path / 'photos'
  folder.mkdir()
  images = [block_image(30), block_image(31)]
  paths = [folder / 'x.png', folder / 'y.png']
  for path, image in zip(paths, images):
    path.write_bytes(image)

  status = client_lib.main([str(folder), '--server', f'127.0.0.1:{server.port}'])

  captured = capsys.readouterr()
  assert status == 0
  rows = [line.split('\t') for line in captured.out.splitlines()]
  assert [row[0] for row in rows] == [str(p) for p in paths]
  _assert_same([(row[1], float(row[2])) for row in rows], _direct(model, images))
  assert '2/2' in captured.err  # tqdm's bar


def test_client_reports_unreadable_and_missing_files(client, model, tmp_path):
  good = tmp_path / 'good.png'
  good.write_bytes(block_image(40))
  unreadable = tmp_path / 'folder.png'
  unreadable.mkdir()

  results = list(client.caption_files([str(good), str(unreadable)], batch_size=8))

  _assert_same(_pairs(results[:1]), _direct(model, [block_image(40)]))
  assert isinstance(results[1], client_lib.Failure) and results[1].code == 'READ_ERROR'
  with pytest.raises(FileNotFoundError, match='nowhere.png'):
    client_lib.find_images([str(tmp_path / 'nowhere.png')])


# Each bad request, the status TF Serving gives it, and a piece of the message.
# An unknown signature is FAILED_PRECONDITION in TF Serving
# (servables/tensorflow/predict_util.cc), not NOT_FOUND. What the validator
# finds from the request alone (dtype, shape, limits) is tested directly in
# tests/test_serving_requests.py; here, what needs the model or the socket.
BAD_REQUESTS = {
    'bytes that are not an image': (
        lambda: dict(inputs={names.IMAGES_INPUT: _string_tensor([b'plain text, not an image'])}),
        Code.INVALID_ARGUMENT, 'Unknown image file format. One of JPEG, PNG, GIF, BMP required.'),
    'unknown model': (
        lambda: dict(inputs={names.IMAGES_INPUT: _string_tensor([block_image(0)])}, name='no_such_model'),
        Code.NOT_FOUND, 'Servable not found for request: Latest(no_such_model)'),
    'unknown version': (
        lambda: dict(inputs={names.IMAGES_INPUT: _string_tensor([block_image(0)])}, version=99),
        Code.NOT_FOUND, f'Servable not found for request: Specific({MODEL_NAME}, 99)'),
    'unknown version label': (
        lambda: dict(inputs={names.IMAGES_INPUT: _string_tensor([block_image(0)])}, label='stable'),
        Code.INVALID_ARGUMENT, 'Unrecognized servable version label: stable'),
    'unknown signature': (
        lambda: dict(inputs={names.IMAGES_INPUT: _string_tensor([block_image(0)])}, signature='no_such_signature'),
        Code.FAILED_PRECONDITION, 'Serving signature key "no_such_signature" not found.'),
    'image over the pixel limit': (
        lambda: dict(inputs={names.IMAGES_INPUT: _string_tensor([block_image(0), block_image(1, (100, 100))])}),
        Code.RESOURCE_EXHAUSTED, 'Image 1 of input \'images\' is too large (100x100 = 10000 pixels)'),
    'bytes that are not a tf.Example, quoted in a message that is not UTF-8': (
        lambda: dict(inputs={names.EXAMPLES_INPUT: _string_tensor([b'\xff\xfe not an example'])},
                     signature=names.EXAMPLES_SIGNATURE),
        Code.INVALID_ARGUMENT, 'Could not parse example input'),
    'message over the size limit': (
        lambda: dict(inputs={names.IMAGES_INPUT: _string_tensor([os.urandom(MAX_MESSAGE_BYTES + 1)])}),
        Code.RESOURCE_EXHAUSTED, 'larger than max'),
}


@pytest.mark.parametrize('case', sorted(BAD_REQUESTS))
def test_bad_request_gets_tf_serving_status_and_server_keeps_serving(case, channel, client, model):
  make_request, code, message = BAD_REQUESTS[case]

  with pytest.raises(grpc.RpcError) as error:
    _predict(channel, **make_request())

  assert error.value.code() == code, error.value.details()
  assert message in error.value.details()
  assert '{{' not in error.value.details()  # no names of the graph's functions or nodes
  good = block_image(50)
  _assert_same(_pairs(client.caption([good])), _direct(model, [good]))


def test_model_metadata_is_the_signature_def_map(channel):
  stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
  request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=['signature_def'])
  request.model_spec.name = MODEL_NAME

  response = stub.GetModelMetadata(request, timeout=60)

  assert response.model_spec.name == MODEL_NAME and response.model_spec.version.value == 1
  signature_map = get_model_metadata_pb2.SignatureDefMap()
  assert response.metadata['signature_def'].Unpack(signature_map)
  caption = signature_map.signature_def[names.CAPTION_SIGNATURE]
  assert dict((k, v.dtype) for k, v in caption.inputs.items()) == {names.IMAGES_INPUT: types_pb2.DT_STRING}
  assert dict((k, v.dtype) for k, v in caption.outputs.items()) == {
      names.CAPTION_OUTPUT: types_pb2.DT_STRING, names.LOG_PROBABILITY_OUTPUT: types_pb2.DT_FLOAT,
      names.CAPTIONS_OUTPUT: types_pb2.DT_STRING, names.LOG_PROBABILITIES_OUTPUT: types_pb2.DT_FLOAT}
  assert set(signature_map.signature_def[names.EXAMPLES_SIGNATURE].inputs) == {names.EXAMPLES_INPUT}

  del request.metadata_field[:]
  with pytest.raises(grpc.RpcError) as error:
    stub.GetModelMetadata(request, timeout=60)
  assert error.value.code() == Code.INVALID_ARGUMENT


def test_model_status(channel):
  assert _model_status(channel) == {1: (State.AVAILABLE, 0)}
  assert _model_status(channel, version=1) == {1: (State.AVAILABLE, 0)}
  for kwargs, message in [(dict(name='no_such_model'), 'Could not find any versions of model no_such_model'),
                          (dict(version=7), f'Could not find version 7 of model {MODEL_NAME}')]:
    with pytest.raises(grpc.RpcError) as error:
      _model_status(channel, **kwargs)
    assert error.value.code() == Code.NOT_FOUND
    assert error.value.details() == message


def test_client_checks_model_and_signature_before_sending_images(server, tmp_path):
  image = tmp_path / 'a.png'
  image.write_bytes(block_image(0))
  target = f'127.0.0.1:{server.port}'
  with client_lib.CaptionClient(target, MODEL_NAME, signature_name='no_such_signature') as wrong_signature:
    with pytest.raises(client_lib.RequestError, match="no signature 'no_such_signature'"):
      list(wrong_signature.caption_files([str(image)]))
  with client_lib.CaptionClient(target, MODEL_NAME, version_label='stable') as wrong_label:
    with pytest.raises(client_lib.RequestError) as error:
      list(wrong_label.caption_files([str(image)]))
  assert error.value.code == Code.INVALID_ARGUMENT


def test_server_loads_a_newly_pushed_version_without_restart(version_dir, model, tmp_path):
  base = tmp_path / MODEL_NAME
  shutil.copytree(version_dir, base / '1')
  with server_lib.LocalModelServer(str(base), MODEL_NAME, port=0, poll_wait_seconds=0.2) as running, \
          grpc.insecure_channel(f'127.0.0.1:{running.port}') as channel, \
          client_lib.CaptionClient(f'127.0.0.1:{running.port}', MODEL_NAME) as connected:
    image = block_image(60)
    assert connected.caption([image])[0].model_version == 1

    shutil.copytree(version_dir, base / 'tmp-upload')  # not a version: ignored
    os.rename(base / 'tmp-upload', base / '2')
    _wait_for(lambda: _model_status(channel).get(2, (None,))[0] == State.AVAILABLE, 'version 2 to load')

    assert _model_status(channel) == {2: (State.AVAILABLE, 0), 1: (State.END, 0)}
    captions = connected.caption([image])
    assert captions[0].model_version == 2
    _assert_same(_pairs(captions), _direct(model, [image]))
    with pytest.raises(grpc.RpcError) as error:
      _predict(channel, {names.IMAGES_INPUT: _string_tensor([image])}, version=1)
    assert error.value.code() == Code.NOT_FOUND


def test_server_keeps_serving_through_a_broken_version_and_loads_it_once_fixed(version_dir, tmp_path):
  base = tmp_path / MODEL_NAME
  shutil.copytree(version_dir, base / '1')
  with server_lib.LocalModelServer(str(base), MODEL_NAME, port=0, poll_wait_seconds=0.2) as running, \
          grpc.insecure_channel(f'127.0.0.1:{running.port}') as channel:
    (base / '3').mkdir()  # e.g. a copy that has only just begun
    (base / '3' / tf.saved_model.SAVED_MODEL_FILENAME_PB).write_bytes(b'not a SavedModel')
    _wait_for(lambda: _model_status(channel).get(3, (None,))[0] == State.END, 'version 3 to fail')

    statuses = _model_status(channel)
    assert statuses[1] == (State.AVAILABLE, 0)
    assert statuses[3] == (State.END, Code.UNKNOWN.value[0])
    response = _predict(channel, {names.IMAGES_INPUT: _string_tensor([block_image(0)])})
    assert response.model_spec.version.value == 1

    shutil.copytree(version_dir, base / '3', dirs_exist_ok=True)  # the copy completes
    _wait_for(lambda: _model_status(channel)[3][0] == State.AVAILABLE, 'version 3 to load once complete')
    response = _predict(channel, {names.IMAGES_INPUT: _string_tensor([block_image(0)])})
    assert response.model_spec.version.value == 3


def test_client_retries_unavailable_until_the_server_is_up(version_dir, model, caplog):
  port = _free_port()
  late_server = server_lib.LocalModelServer(str(version_dir.parent), MODEL_NAME, port=port)
  starter = threading.Timer(1.0, late_server.start)
  image = block_image(70)
  with client_lib.CaptionClient(f'127.0.0.1:{port}', MODEL_NAME, max_attempts=100, initial_backoff_s=0.1,
                                max_backoff_s=0.5) as connected, caplog.at_level(logging.WARNING):
    starter.start()
    try:
      captions = connected.caption([image])
    finally:
      starter.join()
      late_server.stop()

  _assert_same(_pairs(captions), _direct(model, [image]))
  assert any('UNAVAILABLE' in r.getMessage() for r in caplog.records if r.name == client_lib.__name__)


def test_client_retries_only_unavailable(server, caplog):
  with client_lib.CaptionClient(f'127.0.0.1:{_free_port()}', MODEL_NAME, max_attempts=3, initial_backoff_s=0.01,
                                max_backoff_s=0.02) as nobody_listening:
    with pytest.raises(client_lib.RequestError, match=r'after 3 attempts') as error:
      nobody_listening.caption([block_image(0)])
  assert error.value.code == Code.UNAVAILABLE

  caplog.clear()
  with client_lib.CaptionClient(f'127.0.0.1:{server.port}', 'no_such_model', max_attempts=3) as wrong_model, \
          caplog.at_level(logging.WARNING):
    with pytest.raises(client_lib.RequestError) as error:
      wrong_model.caption([block_image(0)])
  assert error.value.code == Code.NOT_FOUND
  assert 'attempts' not in str(error.value)
  assert not [r for r in caplog.records if r.name == client_lib.__name__]


def test_client_deadline(server):
  with client_lib.CaptionClient(f'127.0.0.1:{server.port}', MODEL_NAME, timeout_s=1e-4) as hurried:
    with pytest.raises(client_lib.RequestError) as error:
      hurried.caption([block_image(0)] * 8)
  assert error.value.code == Code.DEADLINE_EXCEEDED


def test_serving_graph_uses_only_core_tensorflow_ops(version_dir):
  """So the stock tensorflow/serving image can load it: no tensorflow-text (or other custom) ops.

  tf.raw_ops lists the ops compiled into TensorFlow itself; ops of add-on
  libraries such as tensorflow-text are registered at runtime and never appear there.
  """
  from tensorflow.core.protobuf import saved_model_pb2
  saved_model = saved_model_pb2.SavedModel.FromString(
      (version_dir / tf.saved_model.SAVED_MODEL_FILENAME_PB).read_bytes())
  graph = saved_model.meta_graphs[0].graph_def
  functions = {f.signature.name for f in graph.library.function}
  ops = {node.op for node in graph.node}
  ops.update(node.op for f in graph.library.function for node in f.node_def)
  ops -= functions  # calls of the graph's own functions
  assert 'DecodeImage' in ops  # the walk found the serving graph's ops
  assert sorted(op for op in ops if not hasattr(tf.raw_ops, op)) == []


# What TensorFlow's C++ side (its own format and absl's), libjpeg and Python write when left on the terminal.
_LIBRARY_LINE = re.compile(r'^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWEF] |^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+ |'
                           r'absl|Traceback|jpeg|cuda|oneDNN|rebuild TensorFlow', re.IGNORECASE)


def test_server_command_line_serves_until_interrupted(version_dir, model, tmp_path):
  """As a person runs it: from start-up on, the terminal gets the server's own log with one line per failed
  request, and TensorFlow's and libjpeg's output goes to the debug log."""
  port, rest_port = _free_port(), _free_port()
  debug_log, output_path = tmp_path / 'debug.log', tmp_path / 'output.txt'
  env = {key: value for key, value in os.environ.items() if key != 'TF_CPP_MIN_LOG_LEVEL'}  # all of TF's lines
  with open(output_path, 'wb') as output_file:
    process = subprocess.Popen(
        [sys.executable, '-m', 'serving.server', '--model_base_path', str(version_dir.parent), '--port', str(port),
         '--rest_api_port', str(rest_port), '--max_batch_size', '4', '--debug_log', str(debug_log)],
        cwd=REPO, stdout=output_file, stderr=subprocess.STDOUT, env=env)
  try:
    with client_lib.CaptionClient(f'127.0.0.1:{port}', MODEL_NAME, max_attempts=200, initial_backoff_s=0.2,
                                  max_backoff_s=0.5) as connected:
      captions = connected.caption([block_image(80)])
      for bad in (block_image(81, image_format='JPEG')[:300], b'not an image'):  # libjpeg and TF complain
        with pytest.raises(client_lib.RequestError):
          connected.caption([bad])
    _wait_for(lambda: 'Exporting HTTP/REST API' in output_path.read_text(), 'the REST port')
    status, _ = _rest(types.SimpleNamespace(rest_port=rest_port), 'POST', f'/v1/models/{MODEL_NAME}:predict',
                      {'instances': [_b64(b'not an image')]})
  finally:
    process.terminate()  # SIGTERM: what docker stop and Kubernetes send
    try:
      process.wait(timeout=60)
    except subprocess.TimeoutExpired:
      process.kill()
      raise
  output = output_path.read_text()
  _assert_same(_pairs(captions), _direct(model, [block_image(80)]))
  assert status == 400
  assert process.returncode == 0, output
  assert re.search(r'Serving version 1 of model captioner', output)
  assert len([line for line in output.splitlines() if 'failed with INVALID_ARGUMENT' in line]) == 3, output
  assert not [line for line in output.splitlines()
              if 'failed with' not in line and _LIBRARY_LINE.search(line)], output
  assert re.search(r'DecodeImage|jpeg', debug_log.read_text(), re.IGNORECASE)


def test_server_command_line_names_a_port_it_cannot_bind(version_dir, tmp_path):
  with socket.socket() as taken:
    taken.bind(('127.0.0.1', 0))
    taken.listen()
    port = taken.getsockname()[1]
    result = subprocess.run(
        [sys.executable, '-m', 'serving.server', '--model_base_path', str(version_dir.parent), '--port', str(port),
         '--rest_api_port', '0', '--debug_log', str(tmp_path / 'debug.log')],
        cwd=REPO, capture_output=True, text=True, timeout=600)
  assert result.returncode == 1
  assert f'The server could not start: Failed to bind to address 127.0.0.1:{port}' in result.stderr
  assert 'Traceback' not in result.stderr + result.stdout


def test_rest_client_needs_no_tensorflow(server, model, tmp_path):
  path = tmp_path / 'photo.png'
  path.write_bytes(block_image(95))
  code = ('import sys\nfrom serving import client\n'
          f'status = client.main([{str(path)!r}, "--protocol", "rest", "--server", "127.0.0.1:{server.rest_port}", '
          '"--format", "jsonl"])\n'
          'print(sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "tensorflow_serving")))\n'
          'sys.exit(status)')

  result = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True, text=True, check=True)

  line, modules = result.stdout.splitlines()
  assert modules == '[]' and result.stderr == ''
  answer = json.loads(line)
  _assert_same([(answer['caption'], answer['log_probability'])], _direct(model, [block_image(95)]))


def test_deploy_files_agree_with_each_other_and_with_the_client():
  with open(os.path.join(DEPLOY_DIR, 'models.config')) as f:
    config = text_format.Parse(f.read(), model_server_config_pb2.ModelServerConfig())
  (model_config,) = config.model_config_list.config
  assert model_config.name == MODEL_NAME
  assert model_config.base_path == f'/models/{MODEL_NAME}'

  with open(os.path.join(DEPLOY_DIR, 'batching_parameters.txt')) as f:
    batching_parameters = dict(re.findall(r'^(\w+) \{ value: (\d+) \}', f.read(), re.MULTILINE))
  # TF Serving refuses requests larger than max_batch_size.
  assert int(batching_parameters['max_batch_size']) >= caption_signatures.DEFAULT_BATCH_SIZE

  with open(os.path.join(DEPLOY_DIR, 'kubernetes.yaml')) as f:
    documents = {d['kind']: d for d in yaml.safe_load_all(f)}
  (container,) = documents['Deployment']['spec']['template']['spec']['containers']
  assert {p['name']: p['containerPort'] for p in container['ports']} == {'grpc': 8500, 'http': 8501}
  assert {p['name']: p['port'] for p in documents['Service']['spec']['ports']} == {'grpc': 8500, 'http': 8501}
  assert container['readinessProbe']['httpGet']['path'] == f'/v1/models/{MODEL_NAME}'
  with open(os.path.join(DEPLOY_DIR, 'docker-run.sh')) as f:
    docker_run = f.read()
  for argument in container['args']:
    flag = argument.split('=')[0]
    assert flag in docker_run, f'{flag} is set in kubernetes.yaml but not in docker-run.sh'


# --- The k best captions ---

def test_k_best_captions_over_grpc_equal_the_saved_models(client, model):
  images = [block_image(i) for i in range(60, 64)]
  outputs = _direct_outputs(model, images)
  assert outputs[names.CAPTIONS_OUTPUT].shape == (len(images), TOP_K)

  captions = client.caption(images)

  for caption, want in zip(captions, _direct_top(model, images)):
    assert list(caption.top_captions) == [c for c, _ in want]
    np.testing.assert_allclose(caption.top_log_probabilities, [p for _, p in want], rtol=1e-5)
    assert caption.top_captions[0] == caption.caption


def test_cli_top_k_in_text_and_json_lines(server, model, tmp_path, capsys):
  path = tmp_path / 'p.png'
  path.write_bytes(block_image(65))
  [want] = _direct_top(model, [block_image(65)])

  assert client_lib.main([str(path), '--server', f'127.0.0.1:{server.port}', '--top_k', str(TOP_K)]) == 0
  assert client_lib.main([str(path), '--server', f'127.0.0.1:{server.port}', '--top_k', str(TOP_K),
                          '--format', 'jsonl']) == 0

  text, jsonl = capsys.readouterr().out.splitlines()
  fields = text.split('\t')
  assert fields[0] == str(path) and len(fields) == 1 + 2 * len(want)
  _assert_same(list(zip(fields[1::2], map(float, fields[2::2]))), want)
  line = json.loads(jsonl)
  _assert_same([(t['caption'], t['log_probability']) for t in line['top_captions']], want)


# --- REST ---

def _rest(server, method, path, body=None, raw=None):
  """(HTTP status, parsed JSON answer) of one REST call to the server."""
  connection = http.client.HTTPConnection('127.0.0.1', server.rest_port, timeout=60)
  try:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    try:
      connection.request(method, path, body=data, headers={'Content-Type': 'application/json'})
    except (BrokenPipeError, ConnectionResetError):
      pass  # the server refused an oversized body from its header and closed before reading it
    response = connection.getresponse()
    return response.status, json.loads(response.read())
  finally:
    connection.close()


def _b64(image):
  return {'b64': base64.b64encode(image).decode('ascii')}


def test_rest_row_format_equals_grpc_and_the_saved_model(server, client, model):
  images = [block_image(i) for i in range(70, 74)]

  status, answer = _rest(server, 'POST', f'/v1/models/{MODEL_NAME}:predict',
                         {'instances': [_b64(image) for image in images]})

  assert status == 200, answer
  rows = answer['predictions']
  want = _direct_outputs(model, images)
  assert sorted(rows[0]) == sorted(want)
  _assert_same([(row[names.CAPTION_OUTPUT], row[names.LOG_PROBABILITY_OUTPUT]) for row in rows],
               _direct(model, images))
  _assert_same([(row[names.CAPTION_OUTPUT], row[names.LOG_PROBABILITY_OUTPUT]) for row in rows],
               _pairs(client.caption(images)))
  for row, captions, log_probs in zip(rows, want[names.CAPTIONS_OUTPUT], want[names.LOG_PROBABILITIES_OUTPUT]):
    assert row[names.CAPTIONS_OUTPUT] == [c.decode('utf-8') for c in captions]
    np.testing.assert_allclose(row[names.LOG_PROBABILITIES_OUTPUT], log_probs, rtol=1e-5)  # -inf too
    # float32s written as TF Serving writes them: the shortest text that reads back as the same float32.
    assert repr(row[names.LOG_PROBABILITY_OUTPUT]) == str(np.float32(row[names.LOG_PROBABILITY_OUTPUT]))


def test_rest_columnar_format_named_signature_and_version(server, model):
  images = [block_image(75), block_image(76)]
  examples = [tf.train.Example(features=tf.train.Features(feature={names.IMAGE_KEY: tf.train.Feature(
      bytes_list=tf.train.BytesList(value=[image]))})).SerializeToString() for image in images]

  status, answer = _rest(server, 'POST', f'/v1/models/{MODEL_NAME}/versions/1:predict',
                         {'signature_name': names.EXAMPLES_SIGNATURE,
                          'inputs': {names.EXAMPLES_INPUT: [_b64(e) for e in examples]}})

  assert status == 200, answer
  outputs = answer['outputs']
  _assert_same(list(zip(outputs[names.CAPTION_OUTPUT], outputs[names.LOG_PROBABILITY_OUTPUT])),
               _direct(model, images))


def test_rest_status_and_metadata(server):
  status, answer = _rest(server, 'GET', f'/v1/models/{MODEL_NAME}')
  assert status == 200
  assert answer == {'model_version_status': [
      {'version': '1', 'state': 'AVAILABLE', 'status': {'error_code': 'OK', 'error_message': ''}}]}

  status, answer = _rest(server, 'GET', f'/v1/models/{MODEL_NAME}/versions/1/metadata')
  assert status == 200
  assert answer['model_spec'] == {'name': MODEL_NAME, 'signature_name': '', 'version': '1'}
  signature = answer['metadata']['signature_def']['signature_def'][names.CAPTION_SIGNATURE]
  assert list(signature['inputs']) == [names.IMAGES_INPUT]
  assert signature['outputs'][names.CAPTIONS_OUTPUT]['dtype'] == 'DT_STRING'


# Each bad REST call that needs the model, the HTTP status TF Serving answers, and a piece of its {"error": ...}
# message (the JSON forms: tests/test_serving_tensors.py; URLs and malformed HTTP: tests/test_serving_rest.py).
_PREDICT = f'/v1/models/{MODEL_NAME}:predict'
BAD_REST_CALLS = {
    'text instead of image bytes': (dict(method='POST', path=_PREDICT, body={'instances': ['a photo']}), 400,
                                    'Unknown image file format'),
    'unknown signature': (dict(method='POST', path=_PREDICT, body={'signature_name': 'x', 'instances': [1]}), 400,
                          'Serving signature name: "x" not found in signature def'),
    'unknown model': (dict(method='POST', path='/v1/models/nope:predict', body={'instances': [1]}), 404,
                      'Servable not found for request: Latest(nope)'),
    'unknown version': (dict(method='POST', path=f'/v1/models/{MODEL_NAME}/versions/7:predict',
                             body={'instances': [1]}), 404, f'Specific({MODEL_NAME}, 7)'),
    'a version label': (dict(method='GET', path=f'/v1/models/{MODEL_NAME}/labels/stable'), 400,
                        'Unrecognized servable version label: stable'),
    'image over the pixel limit': (dict(method='POST', path=_PREDICT, body={'instances': [_b64(block_image(1, size=(100, 100)))]}),
                                   429, '100x100 = 10000 pixels'),
    'decompression bomb header': (dict(method='POST', path=_PREDICT,
                                       body={'instances': [_b64(_png_start(40000, 40000))]}),
                                  429, '(40000x40000 = 1600000000 pixels)'),
    'more images than the per-request limit': (
        dict(method='POST', path=_PREDICT, body={'instances': [_b64(block_image(0))] * (MAX_IMAGES_PER_REQUEST + 1)}),
        400, f'accepts at most {MAX_IMAGES_PER_REQUEST} per request'),
}


@pytest.mark.parametrize('case', sorted(BAD_REST_CALLS))
def test_bad_rest_call_gets_tf_serving_http_status_and_server_keeps_serving(case, server, model):
  call, http_status, message = BAD_REST_CALLS[case]

  status, answer = _rest(server, **call)

  assert status == http_status, answer
  assert message in answer['error']
  status, answer = _rest(server, 'POST', _PREDICT, {'instances': [_b64(block_image(51))]})
  assert status == 200
  _assert_same([(answer['predictions'][0][names.CAPTION_OUTPUT],
                 answer['predictions'][0][names.LOG_PROBABILITY_OUTPUT])], _direct(model, [block_image(51)]))


def test_client_over_rest_equals_grpc(server, client, model, tmp_path):
  images = [block_image(80 + i) for i in range(3)]
  paths = []
  for i, image in enumerate(images):
    paths.append(str(tmp_path / f'{i}.png'))
    (tmp_path / f'{i}.png').write_bytes(image)
  paths.append(str(tmp_path / 'broken.png'))
  (tmp_path / 'broken.png').write_bytes(b'not an image')

  with client_lib.CaptionClient(f'127.0.0.1:{server.rest_port}', MODEL_NAME, protocol='rest') as rest_client:
    results = list(rest_client.caption_files(paths, batch_size=4))

  grpc_captions = client.caption(images)
  _assert_same(_pairs(results[:3]), _pairs(grpc_captions))
  assert [r.top_captions for r in results[:3]] == [c.top_captions for c in grpc_captions]
  assert isinstance(results[3], client_lib.Failure) and results[3].code == 'INVALID_ARGUMENT'
  assert 'Unknown image file format' in results[3].message


def test_curl_commands_of_the_readmes_caption_an_image(server, model, tmp_path):
  """Every :predict curl call README.md and docs/serving.md show, run as printed (host and port aside)."""
  assert shutil.which('curl'), 'curl is needed to check the documented commands'
  photo = tmp_path / 'photo.jpg'
  photo.write_bytes(block_image(90, image_format='JPEG'))
  commands = []
  for readme in (os.path.join(REPO, 'README.md'), os.path.join(REPO, 'docs', 'serving.md')):
    with open(readme) as f:
      found = re.findall(r'^\s*(curl -d .*?:predict)', f.read().replace('\\\n', ''), re.MULTILINE)
    assert found, f'no curl :predict call in {readme}'
    commands.extend(found)

  for command in commands:
    command = command.replace('localhost:8501', f'127.0.0.1:{server.rest_port}')
    answer = json.loads(subprocess.run(['bash', '-c', command], cwd=tmp_path, check=True, capture_output=True,
                                       text=True).stdout)
    [row] = answer['predictions']
    _assert_same([(row[names.CAPTION_OUTPUT], row[names.LOG_PROBABILITY_OUTPUT])],
                 _direct(model, [block_image(90, image_format='JPEG')]))


# --- Warm-up ---

def test_version_is_available_only_after_its_warmup_requests_ran(version_dir, model, tmp_path, caplog):
  base = tmp_path / MODEL_NAME
  shutil.copytree(version_dir, base / '1')
  warmup_file = base / '1' / names.WARMUP_REQUESTS_PATH
  assert warmup_file.exists()  # the exporter wrote it
  caplog.set_level(logging.INFO)

  with server_lib.LocalModelServer(str(base), MODEL_NAME, port=0, poll_wait_seconds=0.2) as running:
    warmed_up = running.manager.current.warmup_records
    log = caplog.text
    with client_lib.CaptionClient(f'127.0.0.1:{running.port}', MODEL_NAME) as connected:
      first = connected.caption([block_image(95)])

  assert warmed_up == 4  # one lone image and one batch of 4, for each of the two signatures
  assert f'Finished reading warmup data for model at {warmup_file}. Number of warmup records read: 4.' in log
  assert log.index('Number of warmup records read') < log.index('Serving version 1 of model captioner')
  assert 'warmed up with 4 requests' in log
  _assert_same(_pairs(first), _direct(model, [block_image(95)]))


def test_version_without_warmup_file_loads_without_warmup(version_dir, tmp_path):
  base = tmp_path / MODEL_NAME
  shutil.copytree(version_dir, base / '1')
  (base / '1' / names.WARMUP_REQUESTS_PATH).unlink()

  with server_lib.LocalModelServer(str(base), MODEL_NAME, port=0, poll_wait_seconds=0.2) as running:
    assert running.manager.current.warmup_records == 0


def test_version_whose_warmup_fails_is_not_served(version_dir, tmp_path):
  base = tmp_path / MODEL_NAME
  shutil.copytree(version_dir, base / '1')
  (base / '1' / names.WARMUP_REQUESTS_PATH).write_bytes(b'not a TFRecord')

  with pytest.raises(server_lib.servables.ModelLoadError, match='tf_serving_warmup_requests'):
    server_lib.LocalModelServer(str(base), MODEL_NAME, port=0).manager.poll()


# --- Robustness ---

def _examples_request(images):
  return dict(inputs={names.EXAMPLES_INPUT: _string_tensor([tf.train.Example(features=tf.train.Features(
      feature={names.IMAGE_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[image]))}))
      .SerializeToString() for image in images])}, signature=names.EXAMPLES_SIGNATURE)


def test_bad_clients_do_not_fail_good_clients_merged_into_the_same_batch(version_dir, model):
  """4 good and 3 bad from_examples clients at once, with batching that merges them: only the bad ones fail."""
  good_images = [block_image(100 + i) for i in range(4)]
  want = {image: _direct(model, [image], names.EXAMPLES_SIGNATURE) for image in good_images}
  options = batching.BatchingOptions(max_batch_size=8, batch_timeout_micros=200_000)  # 0.2 s to merge in
  with server_lib.LocalModelServer(str(version_dir.parent), MODEL_NAME, port=0,
                                   batching_options=options) as running, \
      grpc.insecure_channel(f'127.0.0.1:{running.port}') as channel:

    def good_client(image):
      return [_predict(channel, **_examples_request([image])) for _ in range(3)]

    def bad_client(index):
      codes = []
      for _ in range(3):
        with pytest.raises(grpc.RpcError) as error:
          _predict(channel, inputs={names.EXAMPLES_INPUT: _string_tensor([b'\xff\xfe bad %d' % index])},
                   signature=names.EXAMPLES_SIGNATURE)
        codes.append((error.value.code(), error.value.details()))
      return codes

    with concurrent.futures.ThreadPoolExecutor(7) as pool:
      goods = {image: pool.submit(good_client, image) for image in good_images}
      bads = [pool.submit(bad_client, i) for i in range(3)]
      good_results = {image: future.result() for image, future in goods.items()}
      bad_results = [future.result() for future in bads]

  for image, responses in good_results.items():
    for response in responses:
      got = [(c.decode('utf-8'), float(p)) for c, p in zip(
          tf.make_ndarray(response.outputs[names.CAPTION_OUTPUT]),
          tf.make_ndarray(response.outputs[names.LOG_PROBABILITY_OUTPUT]))]
      _assert_same(got, want[image])
  for codes in bad_results:
    for code, details in codes:
      assert code == Code.INVALID_ARGUMENT and 'Could not parse example input' in details


def test_large_request_runs_in_chunks_and_keeps_its_order(version_dir, model):
  images = [block_image(110 + i) for i in range(7)]
  options = batching.BatchingOptions(max_batch_size=2)
  with server_lib.LocalModelServer(str(version_dir.parent), MODEL_NAME, port=0,
                                   batching_options=options) as running, \
      client_lib.CaptionClient(f'127.0.0.1:{running.port}', MODEL_NAME) as connected:
    captions = connected.caption(images)
  _assert_same(_pairs(captions), _direct(model, images))


def test_bad_requests_are_logged_in_one_line_each_rate_limited(channel, caplog):
  caplog.set_level(logging.INFO)
  caplog.clear()
  for _ in range(40):
    with pytest.raises(grpc.RpcError):
      _predict(channel, {names.IMAGES_INPUT: _string_tensor([b'not an image'])})
  with pytest.raises(grpc.RpcError):
    _predict(channel, {names.IMAGES_INPUT: _string_tensor([b'not an image'])})

  failures = [r for r in caplog.records if 'failed with INVALID_ARGUMENT' in r.getMessage()]
  assert 1 <= len(failures) < 40  # at most a few a second
  assert all('\n' not in r.getMessage() and r.exc_info is None for r in failures)
  assert not [r for r in caplog.records if r.exc_info]  # no tracebacks at all


def test_client_text_output_escapes_a_tab_in_a_file_name(server, model, tmp_path, capsys):
  path = tmp_path / 'tab\there.png'
  path.write_bytes(block_image(125))

  assert client_lib.main([str(path), '--server', f'127.0.0.1:{server.port}']) == 0

  fields = capsys.readouterr().out.rstrip('\n').split('\t')
  assert fields[0] == str(tmp_path / 'tab\\there.png')
  _assert_same([(fields[1], float(fields[2]))], _direct(model, [block_image(125)]))
