"""Serving end to end: a pushed SavedModel, the local gRPC server on a real socket, the client.

The model is the tiny random-weight captioner exported by the project's own
exporter (serving.tiny_model, via tests/conftest.py), laid out like the Pusher's base directory
<base>/captioner/<version>/. Every expected caption comes from calling that
SavedModel directly in this process.
"""
import concurrent.futures
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
import zlib

import grpc
import numpy as np
import pytest
import tensorflow as tf
import yaml
from google.protobuf import text_format
from tensorflow.core.framework import tensor_pb2
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import get_model_metadata_pb2
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.apis import model_service_pb2_grpc
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc
from tensorflow_serving.config import model_server_config_pb2

from components import names
from components import features
from components import records
from components.evaluation import captioning
from serving import batching
from serving import client as client_lib
from serving import server as server_lib
from serving.errors import ServingError
from testing.images import block_image

MODEL_NAME = names.MODEL_NAME
MAX_IMAGE_PIXELS = 64 * 64  # the test images are 32x32
MAX_MESSAGE_BYTES = 1024 * 1024
DEPLOY_DIR = os.path.join(os.path.dirname(__file__), os.pardir, 'serving', 'deploy')
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


def _direct(model, images, signature=features.CAPTION_SIGNATURE):
  """(caption, log_probability) per image, from the SavedModel called in this process."""
  answer = model[signature](images)
  return list(zip(answer.captions, answer.log_probabilities))


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
          for signature in captioning.INPUT_OF_SIGNATURE}


@pytest.fixture(scope='module')
def server(version_dir):
  with server_lib.LocalModelServer(str(version_dir.parent), MODEL_NAME, port=0,
                                   max_image_pixels=MAX_IMAGE_PIXELS, max_message_bytes=MAX_MESSAGE_BYTES,
                                   poll_wait_seconds=0.2) as running:
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


def _predict(channel, inputs, name=MODEL_NAME, signature=features.CAPTION_SIGNATURE, version=None, label=None,
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
                                signature_name=features.EXAMPLES_SIGNATURE) as examples_client:
    captions = examples_client.caption(images)

  _assert_same(_pairs(captions), _direct(model, images, features.EXAMPLES_SIGNATURE))
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


def test_client_packs_batches_under_the_message_limit(tmp_path):
  paths = []
  for i, size in enumerate([400, 400, 400, 50]):
    path = tmp_path / f'{i}.png'
    path.write_bytes(b'x' * size)
    paths.append(str(path))

  batches = list(client_lib._batches(paths, batch_size=3, max_message_bytes=4096 + 1000))

  assert [[os.path.basename(p) for p, _ in batch] for batch in batches] == [['0.png', '1.png'], ['2.png', '3.png']]


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
# (servables/tensorflow/predict_util.cc), not NOT_FOUND.
BAD_REQUESTS = {
    'bytes that are not an image': (
        lambda: dict(inputs={features.IMAGES_INPUT: _string_tensor([b'plain text, not an image'])}),
        Code.INVALID_ARGUMENT, 'Unknown image file format. One of JPEG, PNG, GIF, BMP required.'),
    'wrong dtype': (
        lambda: dict(inputs={features.IMAGES_INPUT: tf.make_tensor_proto([1.0, 2.0], dtype=tf.float32)}),
        Code.INVALID_ARGUMENT, 'Expects arg[0] to be string but float is provided'),
    'wrong shape': (
        lambda: dict(inputs={features.IMAGES_INPUT: tf.make_tensor_proto([[block_image(0)]], dtype=tf.string)}),
        Code.INVALID_ARGUMENT, "Input 'images' has shape [1,1]"),
    'more values than the shape holds': (
        lambda: dict(inputs={features.IMAGES_INPUT: tensor_pb2.TensorProto(
            dtype=types_pb2.DT_STRING, tensor_shape=tf.TensorShape([1]).as_proto(), string_val=[b'a', b'b'])}),
        Code.INVALID_ARGUMENT, 'tensor parsing error: images'),
    'a shape far larger than the values sent': (
        lambda: dict(inputs={features.IMAGES_INPUT: tensor_pb2.TensorProto(
            dtype=types_pb2.DT_STRING, tensor_shape=tf.TensorShape([10 ** 12]).as_proto(), string_val=[b'a'])}),
        Code.INVALID_ARGUMENT, 'tensor parsing error: images'),
    'missing input': (
        lambda: dict(inputs={}),
        Code.INVALID_ARGUMENT, 'Missing but required: {images}'),
    'unknown input name': (
        lambda: dict(inputs={'pictures': _string_tensor([block_image(0)])}),
        Code.INVALID_ARGUMENT, 'Signature input alias: images'),
    'unknown output in output_filter': (
        lambda: dict(inputs={features.IMAGES_INPUT: _string_tensor([block_image(0)])}, output_filter=['score']),
        Code.INVALID_ARGUMENT, 'output tensor alias not found in signature: score'),
    'unknown model': (
        lambda: dict(inputs={features.IMAGES_INPUT: _string_tensor([block_image(0)])}, name='no_such_model'),
        Code.NOT_FOUND, 'Servable not found for request: Latest(no_such_model)'),
    'unknown version': (
        lambda: dict(inputs={features.IMAGES_INPUT: _string_tensor([block_image(0)])}, version=99),
        Code.NOT_FOUND, f'Servable not found for request: Specific({MODEL_NAME}, 99)'),
    'unknown version label': (
        lambda: dict(inputs={features.IMAGES_INPUT: _string_tensor([block_image(0)])}, label='stable'),
        Code.INVALID_ARGUMENT, 'Unrecognized servable version label: stable'),
    'unknown signature': (
        lambda: dict(inputs={features.IMAGES_INPUT: _string_tensor([block_image(0)])}, signature='no_such_signature'),
        Code.FAILED_PRECONDITION, 'Serving signature key "no_such_signature" not found.'),
    'image over the pixel limit': (
        lambda: dict(inputs={features.IMAGES_INPUT: _string_tensor([block_image(0), block_image(1, (100, 100))])}),
        Code.RESOURCE_EXHAUSTED, 'Image 1 of input \'images\' is too large (100x100 = 10000 pixels)'),
    'start of a huge image, refused without decoding': (
        lambda: dict(inputs={features.IMAGES_INPUT: _string_tensor([_png_start(1000, 1000)])}),
        Code.RESOURCE_EXHAUSTED, '1000x1000 = 1000000 pixels'),
    'decompression bomb header': (
        lambda: dict(inputs={features.IMAGES_INPUT: _string_tensor([_png_start(40000, 40000)])}),
        Code.RESOURCE_EXHAUSTED, 'could be decompression bomb'),
    'image inside a tf.Example over the pixel limit': (
        lambda: dict(inputs={features.EXAMPLES_INPUT: _string_tensor([records.image_example(
            block_image(2, (100, 100))).SerializeToString()])},
            signature=features.EXAMPLES_SIGNATURE),
        Code.RESOURCE_EXHAUSTED, "input 'examples' is too large (100x100"),
    'message over the size limit': (
        lambda: dict(inputs={features.IMAGES_INPUT: _string_tensor([os.urandom(MAX_MESSAGE_BYTES + 1)])}),
        Code.RESOURCE_EXHAUSTED, 'larger than max'),
}


@pytest.mark.parametrize('case', sorted(BAD_REQUESTS))
def test_bad_request_gets_tf_serving_status_and_server_keeps_serving(case, channel, client, model):
  make_request, code, message = BAD_REQUESTS[case]

  with pytest.raises(grpc.RpcError) as error:
    _predict(channel, **make_request())

  assert error.value.code() == code, error.value.details()
  assert message in error.value.details()
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
  caption = signature_map.signature_def[features.CAPTION_SIGNATURE]
  assert dict((k, v.dtype) for k, v in caption.inputs.items()) == {features.IMAGES_INPUT: types_pb2.DT_STRING}
  assert dict((k, v.dtype) for k, v in caption.outputs.items()) == {
      features.CAPTION_OUTPUT: types_pb2.DT_STRING, features.LOG_PROBABILITY_OUTPUT: types_pb2.DT_FLOAT}
  assert set(signature_map.signature_def[features.EXAMPLES_SIGNATURE].inputs) == {features.EXAMPLES_INPUT}

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
      _predict(channel, {features.IMAGES_INPUT: _string_tensor([image])}, version=1)
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
    response = _predict(channel, {features.IMAGES_INPUT: _string_tensor([block_image(0)])})
    assert response.model_spec.version.value == 1

    shutil.copytree(version_dir, base / '3', dirs_exist_ok=True)  # the copy completes
    _wait_for(lambda: _model_status(channel)[3][0] == State.AVAILABLE, 'version 3 to load once complete')
    response = _predict(channel, {features.IMAGES_INPUT: _string_tensor([block_image(0)])})
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


class _EchoModel:
  """Stands in for a signature function: upper-cases each row, fails on a b'bad' row; records calls."""

  def __init__(self):
    self.calls = []

  def __call__(self, images):
    rows = images.numpy().tolist()
    self.calls.append(rows)
    if b'bad' in rows:
      raise tf.errors.InvalidArgumentError(None, None, 'bad row')
    return {'upper': tf.strings.upper(images)}


def _rows(*values):
  return {'images': np.array(values, dtype=object)}


def test_batcher_merges_queued_requests_up_to_max_batch_size():
  echo = _EchoModel()
  batcher = batching.Batcher(batching.BatchingOptions(max_batch_size=4, batch_timeout_micros=0))
  futures = [batcher.submit(echo, _rows(*rows)) for rows in ([b'a'], [b'b', b'c'], [b'd'], [b'e'], [b'f'])]
  batcher.start()  # everything is queued already, so the batches are deterministic
  try:
    results = [future.result(timeout=60)['upper'].tolist() for future in futures]
  finally:
    batcher.stop()

  assert echo.calls == [[b'a', b'b', b'c', b'd'], [b'e', b'f']]
  assert results == [[b'A'], [b'B', b'C'], [b'D'], [b'E'], [b'F']]


def test_batcher_isolates_the_request_that_breaks_a_batch():
  echo = _EchoModel()
  batcher = batching.Batcher(batching.BatchingOptions(max_batch_size=8, batch_timeout_micros=0))
  futures = [batcher.submit(echo, _rows(row)) for row in (b'a', b'bad', b'c')]
  batcher.start()
  try:
    first, third = futures[0].result(timeout=60), futures[2].result(timeout=60)
    with pytest.raises(ServingError) as error:
      futures[1].result(timeout=60)
  finally:
    batcher.stop()

  assert echo.calls == [[b'a', b'bad', b'c'], [b'a'], [b'bad'], [b'c']]
  assert first['upper'].tolist() == [b'A'] and third['upper'].tolist() == [b'C']
  assert error.value.code == Code.INVALID_ARGUMENT and error.value.message == 'bad row'


def test_batcher_refuses_when_full_and_skips_expired_requests():
  echo = _EchoModel()
  batcher = batching.Batcher(batching.BatchingOptions(max_enqueued_requests=2))
  expired = batcher.submit(echo, _rows(b'late'), deadline=time.monotonic() - 1)
  kept = batcher.submit(echo, _rows(b'a'))
  with pytest.raises(ServingError) as error:
    batcher.submit(echo, _rows(b'b'))
  assert error.value.code == Code.UNAVAILABLE
  batcher.start()
  try:
    assert kept.result(timeout=60)['upper'].tolist() == [b'A']
    with pytest.raises(ServingError) as late:
      expired.result(timeout=60)
  finally:
    batcher.stop()
  assert late.value.code == Code.DEADLINE_EXCEEDED
  assert echo.calls == [[b'a']]


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


def test_server_command_line_serves_until_interrupted(version_dir, model):
  port = _free_port()
  process = subprocess.Popen(
      [sys.executable, '-m', 'serving.server',
       '--model_base_path', str(version_dir.parent), '--port', str(port), '--max_batch_size', '4'],
      cwd=os.path.join(os.path.dirname(__file__), os.pardir), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'))
  try:
    with client_lib.CaptionClient(f'127.0.0.1:{port}', MODEL_NAME, max_attempts=200, initial_backoff_s=0.2,
                                  max_backoff_s=0.5) as connected:
      captions = connected.caption([block_image(80)])
  finally:
    process.terminate()  # SIGTERM: what docker stop and Kubernetes send
    try:
      output = process.communicate(timeout=60)[0].decode()
    except subprocess.TimeoutExpired:
      process.kill()
      raise
  _assert_same(_pairs(captions), _direct(model, [block_image(80)]))
  assert process.returncode == 0, output
  assert re.search(r'Serving version 1 of model captioner', output)


def test_deploy_files_agree_with_each_other_and_with_the_client():
  with open(os.path.join(DEPLOY_DIR, 'models.config')) as f:
    config = text_format.Parse(f.read(), model_server_config_pb2.ModelServerConfig())
  (model_config,) = config.model_config_list.config
  assert model_config.name == MODEL_NAME
  assert model_config.base_path == f'/models/{MODEL_NAME}'

  with open(os.path.join(DEPLOY_DIR, 'batching_parameters.txt')) as f:
    batching_parameters = dict(re.findall(r'^(\w+) \{ value: (\d+) \}', f.read(), re.MULTILINE))
    # TF Serving refuses requests larger than max_batch_size.
  assert int(batching_parameters['max_batch_size']) >= captioning.DEFAULT_BATCH_SIZE

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
