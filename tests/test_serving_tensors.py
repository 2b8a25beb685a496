"""serving/tensors.py called directly: TF Serving's REST JSON <-> TensorProto, and its error messages."""
import base64
import json

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import predict_pb2

from serving import tensors
from serving.errors import ServingError

IMAGES = {'images': meta_graph_pb2.TensorInfo(dtype=types_pb2.DT_STRING)}
TWO_INPUTS = {'images': meta_graph_pb2.TensorInfo(dtype=types_pb2.DT_STRING),
              'scale': meta_graph_pb2.TensorInfo(dtype=types_pb2.DT_FLOAT)}


def _b64(data):
  return {'b64': base64.b64encode(data).decode()}


def _fill(document, infos=IMAGES):
  """(format, alias -> numpy array) of a :predict document."""
  request = predict_pb2.PredictRequest()
  request_format = tensors.fill_predict_inputs(document, infos, request)
  return request_format, {alias: tf.make_ndarray(proto) for alias, proto in request.inputs.items()}


def _error(function, *args):
  with pytest.raises(ServingError) as error:
    function(*args)
  assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT
  return error.value.message


def test_row_and_columnar_formats_give_the_same_tensor():
  row_format, rows = _fill({'instances': [_b64(b'\x89PNG'), 'text']})
  columnar, columns = _fill({'inputs': [_b64(b'\x89PNG'), 'text']})

  assert (row_format, columnar) == (tensors.ROW_FORMAT, tensors.COLUMNAR_FORMAT)
  assert rows['images'].tolist() == columns['images'].tolist() == [b'\x89PNG', b'text']


def test_row_format_with_named_inputs_per_instance():
  _, inputs = _fill({'instances': [{'images': 'a', 'scale': [1, 2]}, {'images': 'b', 'scale': [3, 4.5]}]},
                    TWO_INPUTS)
  assert inputs['images'].tolist() == [b'a', b'b']
  assert inputs['scale'].dtype == np.float32 and inputs['scale'].tolist() == [[1, 2], [3, 4.5]]


@pytest.mark.parametrize('body, message', [
    (b'', 'JSON Parse error: The document is empty'),
    (b'{"instances": [}', 'JSON Parse error: Expecting value'),
    (b'\xff\xfe', 'JSON Parse error'),
    (b'[1]', 'JSON Value: [1] Is not object'),
    (b'{"signature_name": 1}', "'signature_name' key must be a string value"),
    (b'[' * 100_000 + b']' * 100_000, 'JSON Parse error: arrays or objects are nested too deeply'),
], ids=['empty', 'not JSON', 'not UTF-8', 'not an object', 'signature not a string', '100,000 deep'])
def test_bad_body_is_refused_with_tf_servings_message(body, message):
  assert message in _error(tensors.parse_predict_body, bytearray(body))


def test_body_gives_its_signature_name():
  assert tensors.parse_predict_body(b'{"signature_name": "from_examples", "inputs": []}')[1] == 'from_examples'
  assert tensors.parse_predict_body(b'{"inputs": []}')[1] == ''


@pytest.mark.parametrize('document, message', [
    ({}, "Missing 'inputs' or 'instances' key"),
    ({'instances': [1], 'inputs': [1]}, "expecting only one of 'inputs' or 'instances' keys"),
    ({'instances': []}, "No values in 'instances' array"),
    ({'instances': 'a'}, "Expecting 'instances' to be an list/array"),
    ({'instances': [3]}, 'JSON Value: 3 Type: Number is not of expected type: string'),
    ({'instances': [{'b64': '%%%'}]}, 'Unable to base64 decode'),
    ({'instances': [[{'b64': 'AA==', 'x': 1}]]}, 'not formatted correctly for base64 data'),
    ({'instances': [['a'], ['b', 'c']]}, 'Expecting shape [1] but got: [2]'),
    ({'inputs': [['a'], 'b']}, 'found at incorrect level'),
], ids=['no key', 'both keys', 'empty instances', 'instances not a list', 'number for bytes', 'bad base64',
        'b64 with another key', 'ragged instances', 'ragged inputs'])
def test_bad_document_is_refused_with_tf_servings_message(document, message):
  assert message in _error(_fill, document)


def test_multiple_inputs_need_objects():
  assert 'expecting list of objects as multiple input tensors' in _error(_fill, {'instances': ['a']}, TWO_INPUTS)
  assert "Missing named input: scale in 'inputs' object" in _error(_fill, {'inputs': {'images': ['a']}},
                                                                     TWO_INPUTS)


def test_rank_over_tensorflows_limit_is_refused_without_deep_recursion():
  deep = 'a'
  for _ in range(tensors.MAX_RANK + 1):
    deep = [deep]
  assert f'a tensor has at most {tensors.MAX_RANK}' in _error(_fill, {'inputs': deep})


def test_tensor_proto_claiming_more_values_than_it_holds_is_refused():
  proto = tf.make_tensor_proto([b'a'], dtype=tf.string)
  proto.tensor_shape.dim[0].size = 10 ** 9  # TF would pad it with the last value: a billion strings
  assert _error(tensors.from_proto, 'images', proto) == 'tensor parsing error: images'
  proto.tensor_shape.dim[0].size = -1
  assert _error(tensors.from_proto, 'images', proto) == 'tensor parsing error: images'


def test_response_json_writes_float32s_as_tf_serving_does():
  outputs = {'caption': np.array([b'a dog', b'\xff'], dtype=object),
             'log_probability': np.array([-6.803214, -np.inf], dtype=np.float32)}

  rows = json.loads(tensors.predict_response_json(outputs, tensors.ROW_FORMAT))
  text = tensors.predict_response_json(outputs, tensors.COLUMNAR_FORMAT)

  assert rows == {'predictions': [{'caption': 'a dog', 'log_probability': -6.803214},
                                  {'caption': '\ufffd', 'log_probability': -np.inf}]}
  assert '-6.803214,' in text and '-Infinity' in text
  assert json.loads(text) == {'outputs': {'caption': ['a dog', '\ufffd'], 'log_probability': [-6.803214, -np.inf]}}
