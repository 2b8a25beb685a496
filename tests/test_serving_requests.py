"""serving/requests.py and serving/errors.py called directly: what a request alone is refused for, and how."""
import logging
import struct
import zlib

import grpc
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import predict_pb2

from components import caption_signatures
from components import names
from serving import errors
from serving import requests
from serving.errors import ServingError
from testing.images import block_image

Code = grpc.StatusCode
MAX_IMAGE_PIXELS = 64 * 64
MAX_IMAGES_PER_REQUEST = 4


def _signature_def(input_alias):
  """The exported caption signatures' SignatureDef (components/training/exporter.py), by hand."""
  signature = meta_graph_pb2.SignatureDef(method_name='tensorflow/serving/predict')
  signature.inputs[input_alias].dtype = types_pb2.DT_STRING
  signature.inputs[input_alias].tensor_shape.dim.add(size=-1)
  for alias, dtype in ((names.CAPTION_OUTPUT, types_pb2.DT_STRING),
                       (names.LOG_PROBABILITY_OUTPUT, types_pb2.DT_FLOAT)):
    signature.outputs[alias].dtype = dtype
    signature.outputs[alias].tensor_shape.dim.add(size=-1)
  return signature


def _png_start(width, height):
  """The start of a PNG claiming width x height: what a decompression bomb looks like to a header reader."""
  def chunk(kind, data):
    return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))

  header = struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
  return b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', header) + chunk(b'IDAT', zlib.compress(bytes(4096)))


def _strings(values):
  return tf.make_tensor_proto(values, dtype=tf.string, shape=[len(values)])


def _request(inputs, output_filter=()):
  request = predict_pb2.PredictRequest(output_filter=list(output_filter))
  for alias, proto in inputs.items():
    request.inputs[alias].CopyFrom(proto)
  return request


IMAGES = names.IMAGES_INPUT
REFUSED = {
    'wrong dtype': ({IMAGES: tf.make_tensor_proto([1.0, 2.0], dtype=tf.float32)},
                    Code.INVALID_ARGUMENT, 'Expects arg[0] to be string but float is provided'),
    'wrong shape': ({IMAGES: tf.make_tensor_proto([[b'a']], dtype=tf.string)},
                    Code.INVALID_ARGUMENT,
                    "Input 'images' has shape [1,1], which does not match the signature's shape [?]"),
    'a scalar': ({IMAGES: tf.make_tensor_proto(b'a', dtype=tf.string)}, Code.INVALID_ARGUMENT, "has shape []"),
    'more values than the shape holds': (
        {IMAGES: tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, tensor_shape=tf.TensorShape([1]).as_proto(),
                                        string_val=[b'a', b'b'])},
        Code.INVALID_ARGUMENT, 'tensor parsing error: images'),
    'a shape far larger than the values sent': (
        {IMAGES: tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, tensor_shape=tf.TensorShape([10 ** 12]).as_proto(),
                                        string_val=[b'a'])}, Code.INVALID_ARGUMENT, 'tensor parsing error: images'),
    'missing input': ({}, Code.INVALID_ARGUMENT, 'Missing but required: {images}'),
    'unknown input name': ({'pictures': _strings([b'a'])}, Code.INVALID_ARGUMENT, 'Signature input alias: images'),
    'more images than the per-request limit': (
        {IMAGES: _strings([b'a'] * (MAX_IMAGES_PER_REQUEST + 1))}, Code.INVALID_ARGUMENT,
        f'holds {MAX_IMAGES_PER_REQUEST + 1} images; this server accepts at most {MAX_IMAGES_PER_REQUEST} per request'),
    'image over the pixel limit': (
        {IMAGES: _strings([block_image(0), block_image(1, (100, 100))])}, Code.RESOURCE_EXHAUSTED,
        "Image 1 of input 'images' is too large (100x100 = 10000 pixels); this server accepts at most 4096 pixels"),
    'start of a huge image, refused without decoding': (
        {IMAGES: _strings([_png_start(1000, 1000)])}, Code.RESOURCE_EXHAUSTED, '(1000x1000 = 1000000 pixels)'),
    'decompression bomb over PIL\'s own limit': (
        {IMAGES: _strings([_png_start(40000, 40000)])}, Code.RESOURCE_EXHAUSTED,
        "Image 0 of input 'images' is too large (40000x40000 = 1600000000 pixels); this server accepts at most"),
}


@pytest.mark.parametrize('case', sorted(REFUSED))
def test_request_is_refused_with_tf_servings_code_and_message(case):
  inputs, code, message = REFUSED[case]
  validator = requests.RequestValidator(MAX_IMAGE_PIXELS, MAX_IMAGES_PER_REQUEST)

  with pytest.raises(ServingError) as error:
    validator.inputs(_signature_def(IMAGES), _request(inputs))

  assert error.value.code == code and message in error.value.message, error.value.message


def test_image_inside_a_tf_example_is_checked_from_its_header():
  validator = requests.RequestValidator(MAX_IMAGE_PIXELS, MAX_IMAGES_PER_REQUEST)
  _, examples = caption_signatures.signature_inputs(names.EXAMPLES_SIGNATURE,
                                                    [block_image(0), block_image(2, (100, 100))])
  with pytest.raises(ServingError) as error:
    validator.inputs(_signature_def(names.EXAMPLES_INPUT), _request({names.EXAMPLES_INPUT: _strings(examples)}))
  assert error.value.code == Code.RESOURCE_EXHAUSTED
  assert "Image 1 of input 'examples' is too large (100x100" in error.value.message


def test_good_request_gives_its_inputs_and_the_outputs_asked_for():
  validator = requests.RequestValidator(MAX_IMAGE_PIXELS, MAX_IMAGES_PER_REQUEST)
  signature = _signature_def(IMAGES)
  images = [block_image(0), b'not an image: the model says so']

  inputs = validator.inputs(signature, _request({IMAGES: _strings(images)}))

  assert list(inputs) == [IMAGES] and inputs[IMAGES].tolist() == images
  assert validator.output_aliases(signature, _request({})) == sorted(signature.outputs)
  assert validator.output_aliases(signature, _request({}, [names.CAPTION_OUTPUT])) == [names.CAPTION_OUTPUT]
  for output_filter, message in ((['score'], 'output tensor alias not found in signature: score'),
                                 ([names.CAPTION_OUTPUT] * 2, 'duplicate output tensor alias')):
    with pytest.raises(ServingError, match=message):
      validator.output_aliases(signature, _request({}, output_filter))


def test_op_error_reaches_the_client_as_the_ops_own_words():
  message = ('Graph execution error:\n\nDetected at node map/while/decode_image/DecodeImage defined at (most recent '
             'call last):\n<stack traces unavailable>\n{{function_node __inference_signature_wrapper_3402}} Unknown '
             'image file format. One of JPEG, PNG, GIF, BMP required.\n\t '
             '[[{{function_node __inference_map_while_body_2301_652}}'
             '{{node map/while/decode_image/DecodeImage}}]] '
             '[Op:__inference_signature_wrapper_9537]')

  error = errors.from_op_error(tf.errors.InvalidArgumentError(None, None, message))

  assert error.code == Code.INVALID_ARGUMENT
  assert error.message == 'Unknown image file format. One of JPEG, PNG, GIF, BMP required.'


def test_failed_requests_are_logged_one_line_each_at_most_five_a_second(caplog, monkeypatch):
  # A limiter of its own: the process-wide one may have spent this second's
  # lines on requests that earlier tests failed.
  monkeypatch.setattr(errors, '_REQUEST_LOG', errors._RateLimitedLog(errors._LOG_LINES_PER_SECOND))  # pylint: disable=protected-access
  caplog.set_level(logging.INFO)
  error = ServingError(Code.INVALID_ARGUMENT, 'bad\nrequest ' + 'x' * 1000)

  for _ in range(40):
    errors.log_request_error('test', error)

  lines = [r.getMessage() for r in caplog.records]
  assert 1 <= len(lines) <= 10 and all('\n' not in line and len(line) < 400 for line in lines)
