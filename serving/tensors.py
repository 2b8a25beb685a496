"""Tensor conversion for both front ends: TensorProto <-> numpy, and TF Serving's REST JSON <-> TensorProto.

The gRPC front end receives TensorProtos; the REST front end turns its JSON
body into the same PredictRequest first (as TF Serving's json_tensor.cc does),
so one validation path (serving.requests) sees every request. Every failure is
a ServingError with the code and message TF Serving gives.

REST request bodies (tensorflow_serving/g3doc/api_rest.md):
  row format       {"signature_name": s, "instances": [v, ...]}  one v per batch row;
                   v is {alias: value, ...} when the signature has several inputs
  columnar format  {"signature_name": s, "inputs": value}  or {"inputs": {alias: value, ...}}
  a DT_STRING value is a JSON string, or {"b64": "<base64>"} for bytes (images).
REST answers: row format -> {"predictions": [row, ...]}, a row being
{alias: value, ...} when there are several outputs; columnar -> {"outputs": ...}.
Floats are written with the shortest text that reads back as the same float32,
and -inf / nan as -Infinity / NaN, as TF Serving writes them.
"""
import base64
import binascii
import json
import math

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2
from tensorflow.core.framework import types_pb2

from serving.errors import ServingError
from serving.rest_api import BASE64_KEY
from serving.rest_api import INPUTS_KEY
from serving.rest_api import INSTANCES_KEY
from serving.rest_api import OUTPUTS_KEY
from serving.rest_api import PREDICTIONS_KEY
from serving.rest_api import SIGNATURE_KEY

# TensorProto field TF Serving writes each dtype's values to (Tensor::AsProtoField).
VALUE_FIELDS = {
    types_pb2.DT_FLOAT: 'float_val',
    types_pb2.DT_DOUBLE: 'double_val',
    types_pb2.DT_INT8: 'int_val',
    types_pb2.DT_INT16: 'int_val',
    types_pb2.DT_INT32: 'int_val',
    types_pb2.DT_UINT8: 'int_val',
    types_pb2.DT_INT64: 'int64_val',
    types_pb2.DT_BOOL: 'bool_val',
    types_pb2.DT_STRING: 'string_val',
}
_INTEGER_TYPES = (types_pb2.DT_INT8, types_pb2.DT_INT16, types_pb2.DT_INT32, types_pb2.DT_UINT8,
                  types_pb2.DT_INT64)
_FLOAT_TYPES = (types_pb2.DT_FLOAT, types_pb2.DT_DOUBLE)

# TensorShape's kMaxDims: a tensor's largest rank.
MAX_RANK = 254
ROW_FORMAT = 'row'
COLUMNAR_FORMAT = 'columnar'


def _invalid(message):
  return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def dtype_name(dtype_enum):
  """TF's DataTypeString: DT_FLOAT -> 'float', as in TF Serving's messages."""
  return types_pb2.DataType.Name(dtype_enum)[len('DT_'):].lower()


def shape_string(shape_proto):
  if shape_proto.unknown_rank:
    return '<unknown>'
  return '[' + ','.join('?' if dim.size < 0 else str(dim.size) for dim in shape_proto.dim) + ']'


def shape_compatible(actual, expected):
  """actual: the request's TensorShapeProto; expected: the signature's (-1 = any size)."""
  if expected.unknown_rank:
    return True
  return len(actual.dim) == len(expected.dim) and all(
      want.size < 0 or want.size == got.size for got, want in zip(actual.dim, expected.dim))


def to_proto(value, dtype_enum):
  """numpy array -> TensorProto with the values in the typed field, as TF Serving answers."""
  field = VALUE_FIELDS.get(dtype_enum)
  if field is None:
    return tf.make_tensor_proto(value)
  proto = tensor_pb2.TensorProto(dtype=dtype_enum, tensor_shape=tf.TensorShape(value.shape).as_proto())
  getattr(proto, field).extend(value.ravel().tolist())
  return proto


def from_proto(alias, proto):
  """TensorProto -> numpy array, or INVALID_ARGUMENT "tensor parsing error" like TF's Tensor::FromProto.

  TF pads a proto holding fewer values than its shape with the last value;
  this server refuses such a proto instead, or a request of a few bytes
  could make it allocate a tensor of any size.
  """
  dims = [dim.size for dim in proto.tensor_shape.dim]
  field = VALUE_FIELDS.get(proto.dtype)
  sent = None if proto.tensor_content or field is None else len(getattr(proto, field))
  if any(size < 0 for size in dims) or (sent is not None and math.prod(dims) > max(sent, 1)):
    raise _invalid(f'tensor parsing error: {alias}')
  try:
    return tf.make_ndarray(proto)
  except (TypeError, ValueError):
    raise _invalid(f'tensor parsing error: {alias}') from None


# --- REST JSON -> TensorProto (FillPredictRequestFromJson) ---

def _debug_string(value, limit=100):
  try:
    text = json.dumps(value)
  except RecursionError:
    text = f'<{_json_type(value)} nested too deeply to show>'
  return text if len(text) <= limit else text[:limit] + '...'


def _json_type(value):
  if value is None:
    return 'Null'
  if isinstance(value, bool):
    return 'True' if value else 'False'
  return {dict: 'Object', list: 'Array', str: 'String'}.get(type(value), 'Number')


def _is_base64_object(value):
  return isinstance(value, dict) and len(value) == 1 and isinstance(value.get(BASE64_KEY), str)


def _dense_shape(value):
  """The shape a nested JSON list claims, from its first elements (GetDenseTensorShape)."""
  shape = []
  while isinstance(value, list):
    shape.append(len(value))
    if not value:
      break
    value = value[0]
  return shape


def _add_value(value, dtype_enum, values):
  """Appends one JSON leaf converted to `dtype_enum` (AddValueToTensor / JsonDecodeBase64Object)."""
  type_error = _invalid(f'JSON Value: {_debug_string(value)} Type: {_json_type(value)} is not of '
                        f'expected type: {dtype_name(dtype_enum)}')
  if isinstance(value, dict):
    if dtype_enum != types_pb2.DT_STRING:
      raise type_error
    if not _is_base64_object(value):
      raise _invalid(f'JSON Value: {_debug_string(value)} not formatted correctly for base64 data')
    try:
      values.append(base64.b64decode(value[BASE64_KEY], validate=True))
    except (binascii.Error, ValueError):
      raise _invalid('Unable to base64 decode') from None
  elif dtype_enum == types_pb2.DT_STRING:
    if not isinstance(value, str):
      raise type_error
    values.append(value.encode('utf-8'))
  elif dtype_enum == types_pb2.DT_BOOL:
    if not isinstance(value, bool):
      raise type_error
    values.append(value)
  elif dtype_enum in _INTEGER_TYPES:
    if isinstance(value, bool) or not isinstance(value, int):
      raise type_error
    values.append(value)
  elif dtype_enum in _FLOAT_TYPES:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      raise type_error
    values.append(float(value))
  else:
    raise ServingError(grpc.StatusCode.UNIMPLEMENTED,
                       f'Conversion of JSON Value: {_debug_string(value)} to type: {dtype_name(dtype_enum)}')


def _fill_values(value, level, shape, dtype_enum, values):
  """Walks a dense nested list of rank len(shape), appending its leaves (FillTensorProto)."""
  if not isinstance(value, list):
    if level != len(shape):
      raise _invalid(f'JSON Value: {_debug_string(value)} found at incorrect level: {level + 1} in the '
                     f'JSON DOM. Expected at level: {len(shape)}')
    _add_value(value, dtype_enum, values)
    return
  if level >= len(shape):
    raise _invalid(f'Encountered list at unexpected level: {level} expected < {len(shape)}')
  if len(value) != shape[level]:
    raise _invalid(f'Encountered list at unexpected size: {len(value)} at level: {level} '
                   f'expected size: {shape[level]}')
  for item in value:
    _fill_values(item, level + 1, shape, dtype_enum, values)


def _tensor(value, dtype_enum):
  """A JSON value -> (TensorProto of dtype_enum, its shape)."""
  shape = _dense_shape(value)
  if len(shape) > MAX_RANK:  # also bounds the recursion of _fill_values
    raise _invalid(f'JSON Value: {_debug_string(value)} has {len(shape)} dimensions; '
                   f'a tensor has at most {MAX_RANK}')
  values = []
  _fill_values(value, 0, shape, dtype_enum, values)
  proto = tensor_pb2.TensorProto(dtype=dtype_enum,
                                 tensor_shape=tf.TensorShape(shape).as_proto())
  getattr(proto, VALUE_FIELDS[dtype_enum]).extend(values)
  return proto, shape


def _inputs_from_instances(instances, input_infos):
  """The row format: one JSON value (or object of them) per batch row -> alias -> TensorProto."""
  def is_object(value):
    return isinstance(value, dict) and not _is_base64_object(value)

  if not isinstance(instances[0], dict) and len(input_infos) > 1:
    raise _invalid('instances is a plain list, but expecting list of objects as multiple input tensors '
                   'required as per tensorinfo_map')
  objects = is_object(instances[0])
  rows = {alias: [] for alias in input_infos}  # alias -> [leaf values]
  shapes = {}
  for index, item in enumerate(instances):
    if objects != is_object(item):
      raise _invalid(f'Expecting object but got list at item {index} of input list' if objects else
                     f'Expecting value/list but got object at item {index} of input list')
    named = item if objects else {next(iter(input_infos)): item}
    for alias, value in named.items():
      if alias not in input_infos:
        raise _invalid(f'Failed to process element: {index} key: {alias} of \'instances\' list. Error: '
                       f'JSON object: does not have named input: {alias}')
      try:
        proto, shape = _tensor(value, input_infos[alias].dtype)
      except ServingError as e:
        raise _invalid(f'Failed to process element: {index} of \'instances\' list. Error: {e}') from None
      if shapes.setdefault(alias, shape) != shape:
        raise _invalid(f'Failed to process element: {index} of \'instances\' list. Error: '
                       f'INVALID_ARGUMENT: Expecting shape {shapes[alias]} but got: {shape}')
      rows[alias].extend(getattr(proto, VALUE_FIELDS[proto.dtype]))
    if objects and set(named) != set(input_infos):
      raise _invalid(f'Failed to process element: {index} of \'instances\' list. JSON object: '
                     f'{_debug_string(item)} keys must be equal to: {",".join(sorted(input_infos))}')
  protos = {}
  for alias, values in rows.items():
    dtype_enum = input_infos[alias].dtype
    protos[alias] = tensor_pb2.TensorProto(
        dtype=dtype_enum, tensor_shape=tf.TensorShape([len(instances)] + shapes[alias]).as_proto())
    getattr(protos[alias], VALUE_FIELDS[dtype_enum]).extend(values)
  return protos


def _inputs_from_columns(inputs, input_infos):
  """The columnar format: a value (one input) or {alias: value} -> alias -> TensorProto."""
  if not isinstance(inputs, dict) or _is_base64_object(inputs):
    if len(input_infos) > 1:
      raise _invalid('inputs is a plain value/list, but expecting an object as multiple input tensors '
                     'required as per tensorinfo_map')
    alias, info = next(iter(input_infos.items()))
    return {alias: _tensor(inputs, info.dtype)[0]}
  protos = {}
  for alias, info in input_infos.items():
    if alias not in inputs:
      raise _invalid(f'Missing named input: {alias} in \'inputs\' object.')
    protos[alias] = _tensor(inputs[alias], info.dtype)[0]
  return protos


def parse_predict_body(body):
  """The JSON document of a :predict body, and its signature name ('' when absent)."""
  if not body:
    raise _invalid('JSON Parse error: The document is empty')
  try:
    document = json.loads(body)
  except (UnicodeDecodeError, ValueError) as e:
    raise _invalid(f'JSON Parse error: {e}') from None
  except RecursionError:
    raise _invalid('JSON Parse error: arrays or objects are nested too deeply') from None
  if not isinstance(document, dict):
    raise _invalid(f'JSON Value: {_debug_string(document)} Is not object')
  signature_name = document.get(SIGNATURE_KEY, '')
  if not isinstance(signature_name, str):
    raise _invalid(f'JSON Value: {_debug_string(document)} not formatted correctly. '
                   f'\'signature_name\' key must be a string value.')
  return document, signature_name


def fill_predict_inputs(document, input_infos, request):
  """Fills request.inputs from a parsed :predict body; returns ROW_FORMAT or COLUMNAR_FORMAT.

  input_infos: the signature's inputs (alias -> TensorInfo), which give each value's dtype.
  """
  if INSTANCES_KEY in document and INPUTS_KEY in document:
    raise _invalid(f'JSON Value: {_debug_string(document)} Not formatted correctly expecting only one of '
                   f'\'{INPUTS_KEY}\' or \'{INSTANCES_KEY}\' keys to exist ')
  infos = dict(sorted(input_infos.items()))
  if INSTANCES_KEY in document:
    instances = document[INSTANCES_KEY]
    if not isinstance(instances, list):
      raise _invalid(f'JSON Value: {_debug_string(document)} Expecting \'{INSTANCES_KEY}\' to be an list/array')
    if not instances:
      raise _invalid(f'JSON Value: {_debug_string(document)} No values in \'{INSTANCES_KEY}\' array')
    protos, request_format = _inputs_from_instances(instances, infos), ROW_FORMAT
  elif INPUTS_KEY in document:
    protos, request_format = _inputs_from_columns(document[INPUTS_KEY], infos), COLUMNAR_FORMAT
  else:
    raise _invalid(f'Missing \'{INPUTS_KEY}\' or \'{INSTANCES_KEY}\' key')
  for alias, proto in protos.items():
    request.inputs[alias].CopyFrom(proto)
  return request_format


# --- numpy outputs -> REST JSON (MakeJsonFromTensors) ---

def _json_values(value):
  """numpy array -> nested lists of JSON-ready leaves.

  Strings are decoded as UTF-8. A float32 becomes the float whose shortest
  text is the float32's own (numpy's), so JSON shows -6.803214, not
  -6.803214073181152, as TF Serving's WriteDecimal does; json writes -inf
  and nan as -Infinity and NaN, as TF Serving does.
  """
  if not value.size:
    return value.tolist()
  if value.dtype == object or value.dtype.kind == 'S':
    return np.vectorize(lambda s: s.decode('utf-8', errors='replace'), otypes=[object])(value).tolist()
  if value.dtype == np.float32:
    return np.vectorize(float, otypes=[object])(value.astype(str)).tolist()  # numpy's shortest float32 text
  return value.tolist()


def predict_response_json(outputs, request_format):
  """alias -> numpy array [batch, ...] -> the JSON text TF Serving answers a :predict with."""
  aliases = sorted(outputs)
  if request_format == ROW_FORMAT:
    sizes = {len(outputs[alias]) for alias in aliases}
    if len(sizes) > 1:
      raise _invalid(f'Tensor name: {aliases[-1]} has inconsistent batch size')
    columns = {alias: _json_values(outputs[alias]) for alias in aliases}
    rows = [{alias: columns[alias][i] for alias in aliases} if len(aliases) > 1 else columns[aliases[0]][i]
            for i in range(sizes.pop() if sizes else 0)]
    return json.dumps({PREDICTIONS_KEY: rows})
  columns = {alias: _json_values(outputs[alias]) for alias in aliases}
  return json.dumps({OUTPUTS_KEY: columns if len(aliases) > 1 else columns[aliases[0]]})
