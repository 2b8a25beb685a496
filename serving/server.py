"""A local stand-in for tensorflow_model_server: TF Serving's gRPC API over the Pusher's base directory.

TF Serving's binary is not on PyPI and Docker is not always at hand, so this
server implements the parts of TF Serving's gRPC API that the captioner uses,
from the protos of tensorflow-serving-api, so that the same client (or any TF
Serving client) works unchanged against either:

  PredictionService.Predict           run a signature on a batch of inputs
  PredictionService.GetModelMetadata  the SignatureDefMap, packed in an Any
  ModelService.GetModelStatus         the state of each version seen

It serves the newest integer version under --model_base_path and loads a newly
pushed version without a restart (serving.servables), merges concurrent
requests into one model call (serving.batching), and answers bad requests with
the status code and message TF Serving gives, then keeps serving:

  INVALID_ARGUMENT    bytes that are not an image, a wrong dtype or shape, a
                      missing or unknown input, an unknown version label
  NOT_FOUND           an unknown model name or version
  FAILED_PRECONDITION an unknown signature name (TF Serving's code for it)
  RESOURCE_EXHAUSTED  a message over --max_message_bytes, or an image over
                      --max_image_pixels (refused from its header, before decoding)

Run: python -m serving.server --model_base_path <serving_dir>/captioner --port 8500
"""
import argparse
import concurrent.futures
import functools
import io
import logging
import math
import os
import signal
import sys
import threading
import time

import grpc
import tensorflow as tf
from google.protobuf import message
from PIL import Image
from tensorflow.core.example import example_pb2
from tensorflow.core.framework import tensor_pb2
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import get_model_metadata_pb2
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.apis import model_service_pb2_grpc
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc

from components import features
from components import names
from serving import batching
from serving import servables
from serving.errors import ServingError

_LOG = logging.getLogger(__name__)

DEFAULT_PORT = 8500
DEFAULT_HOST = '127.0.0.1'
DEFAULT_GRPC_MAX_THREADS = 16

# Formats the model's tf.io.decode_image accepts; PIL reads only their headers here.
_IMAGE_FORMATS = ('JPEG', 'PNG', 'GIF', 'BMP')

# TensorProto field TF Serving writes each dtype's values to (Tensor::AsProtoField).
_VALUE_FIELDS = {
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


def _dtype_name(dtype_enum):
  """TF's DataTypeString: DT_FLOAT -> 'float', as in TF Serving's messages."""
  return types_pb2.DataType.Name(dtype_enum)[len('DT_'):].lower()


def _shape_string(shape_proto):
  if shape_proto.unknown_rank:
    return '<unknown>'
  return '[' + ','.join('?' if dim.size < 0 else str(dim.size) for dim in shape_proto.dim) + ']'


def _shape_compatible(actual, expected):
  """actual: the request's TensorShapeProto; expected: the signature's (-1 = any size)."""
  if expected.unknown_rank:
    return True
  return len(actual.dim) == len(expected.dim) and all(
      want.size < 0 or want.size == got.size for got, want in zip(actual.dim, expected.dim))


def _output_proto(value, dtype_enum):
  """numpy array -> TensorProto with the values in the typed field, as TF Serving answers."""
  field = _VALUE_FIELDS.get(dtype_enum)
  if field is None:
    return tf.make_tensor_proto(value)
  proto = tensor_pb2.TensorProto(dtype=dtype_enum, tensor_shape=tf.TensorShape(value.shape).as_proto())
  getattr(proto, field).extend(value.ravel().tolist())
  return proto


def _parse_tensor(alias, proto):
  """TensorProto -> numpy array, or INVALID_ARGUMENT "tensor parsing error" like TF's Tensor::FromProto.

  TF pads a proto holding fewer values than its shape with the last value;
  this server refuses such a proto instead, or a request of a few bytes
  could make it allocate a tensor of any size.
  """
  dims = [dim.size for dim in proto.tensor_shape.dim]
  field = _VALUE_FIELDS.get(proto.dtype)
  sent = None if proto.tensor_content or field is None else len(getattr(proto, field))
  if any(size < 0 for size in dims) or (sent is not None and math.prod(dims) > max(sent, 1)):
    raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f'tensor parsing error: {alias}')
  try:
    return tf.make_ndarray(proto)
  except (TypeError, ValueError):
    raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f'tensor parsing error: {alias}') from None


def _encoded_images(alias, values):
  """(row, encoded image) for each image inside the input `alias` of the caption signatures."""
  if alias == features.IMAGES_INPUT:
    return list(enumerate(values))
  images = []
  if alias == features.EXAMPLES_INPUT:
    for row, serialized in enumerate(values):
      try:
        feature = example_pb2.Example.FromString(serialized).features.feature[features.IMAGE_KEY]
      except message.DecodeError:
        continue  # the model's parser reports it
      images.extend((row, image) for image in feature.bytes_list.value)
  return images


class RequestValidator:
  """Checks a PredictRequest against a SignatureDef; returns the inputs as numpy arrays."""

  def __init__(self, max_image_pixels):
    self._max_image_pixels = max_image_pixels

  def inputs(self, signature_def, request):
    """alias -> numpy array [rows, ...]; raises ServingError as TF Serving would."""
    wanted, sent = set(signature_def.inputs), set(request.inputs)
    if len(sent) != len(wanted):
      raise ServingError(
          grpc.StatusCode.INVALID_ARGUMENT,
          f'input size does not match signature: {len(sent)}!={len(wanted)} '
          f'len({{{",".join(sorted(sent))}}}) != len({{{",".join(sorted(wanted))}}}). '
          f'Sent extra: {{{",".join(sorted(sent - wanted))}}}. '
          f'Missing but required: {{{",".join(sorted(wanted - sent))}}}.')
    arrays = {}
    for index, alias in enumerate(sorted(wanted)):
      info = signature_def.inputs[alias]
      if alias not in request.inputs:
        raise ServingError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f'Signature input alias: {alias}(feed name: {info.name}) not found in request and no '
            f'default value provided. Inputs expected to be in the request {{{",".join(sorted(sent))}}}, '
            f'or default input alias set: ')
      proto = request.inputs[alias]
      if proto.dtype != info.dtype:
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                           f'Expects arg[{index}] to be {_dtype_name(info.dtype)} but '
                           f'{_dtype_name(proto.dtype)} is provided')
            # Batching needs a 0th dimension to merge requests along, whatever the signature says.
      if not _shape_compatible(proto.tensor_shape, info.tensor_shape) or not proto.tensor_shape.dim:
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                           f'Input {alias!r} has shape {_shape_string(proto.tensor_shape)}, which does '
                           f'not match the signature\'s shape {_shape_string(info.tensor_shape)}.')
      value = _parse_tensor(alias, proto)
      self._check_image_sizes(alias, value)
      arrays[alias] = value
    return arrays

  @staticmethod
  def output_aliases(signature_def, request):
    """The outputs to return: request.output_filter, or all of the signature's."""
    aliases = list(request.output_filter) or sorted(signature_def.outputs)
    for alias in aliases:
      if alias not in signature_def.outputs:
        raise ServingError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f'output tensor alias not found in signature: {alias} Outputs expected to be in the set '
            f'{{{",".join(sorted(signature_def.outputs))}}}.')
    if len(set(aliases)) != len(aliases):
      raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, 'duplicate output tensor alias in output_filter')
    return aliases

  def _check_image_sizes(self, alias, values):
    """Refuses images over the pixel limit from their headers, before anything decodes them."""
    for row, encoded in _encoded_images(alias, values):
      try:
        with Image.open(io.BytesIO(encoded), formats=_IMAGE_FORMATS) as image:  # reads the header only
          width, height = image.size
      except Image.DecompressionBombError as e:  # over PIL's own limit, 2 * Image.MAX_IMAGE_PIXELS
        self._refuse(alias, row, str(e))
      except (OSError, ValueError):
        continue  # not an image PIL knows: the model's decoder gives TF Serving's error for it
      if width * height > self._max_image_pixels:
        self._refuse(alias, row, f'{width}x{height} = {width * height} pixels')

  def _refuse(self, alias, row, size):
    raise ServingError(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        f'Image {row} of input {alias!r} is too large ({size}); this server accepts at most '
        f'{self._max_image_pixels} pixels per image (--max_image_pixels). Resize it before sending.')


def _rpc(method):
  """Runs an RPC handler; a ServingError becomes the RPC's status, and the server carries on."""

  @functools.wraps(method)
  def handler(self, request, context):
    try:
      return method(self, request, context)
    except ServingError as e:
      _LOG.info('%s failed with %s: %s', method.__name__, e.code.name, e.message)
      context.abort(e.code, e.message)

  return handler


def _require_model_spec(request):
  if not request.HasField('model_spec'):
    raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, 'Missing ModelSpec')


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
  """PredictionService.Predict and GetModelMetadata (Classify, Regress, MultiInference stay UNIMPLEMENTED)."""

  def __init__(self, manager, batcher, validator):
    self._manager = manager
    self._batcher = batcher
    self._validator = validator

  @_rpc
  def Predict(self, request, context):
    _require_model_spec(request)
    servable = self._manager.servable(request.model_spec)
    signature_name = request.model_spec.signature_name or tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY
    signature_def = servable.signature_defs.get(signature_name)
    function = servable.functions.get(signature_name)
    if signature_def is None or function is None:
      raise ServingError(grpc.StatusCode.FAILED_PRECONDITION,
                         f'Serving signature key "{signature_name}" not found.')
    inputs = self._validator.inputs(signature_def, request)
    output_aliases = self._validator.output_aliases(signature_def, request)

    remaining = context.time_remaining()
    future = self._batcher.submit(function, inputs,
                                  deadline=None if remaining is None else time.monotonic() + remaining)
    context.add_callback(future.cancel)  # the client went away: do not run it
    try:
      outputs = future.result(timeout=remaining)
    except concurrent.futures.TimeoutError:
      raise ServingError(grpc.StatusCode.DEADLINE_EXCEEDED, 'Deadline Exceeded') from None

    response = predict_pb2.PredictResponse()
    response.model_spec.name = servable.model_name
    response.model_spec.version.value = servable.version
    response.model_spec.signature_name = signature_name
    for alias in output_aliases:
      response.outputs[alias].CopyFrom(_output_proto(outputs[alias], signature_def.outputs[alias].dtype))
    return response

  @_rpc
  def GetModelMetadata(self, request, context):
    _require_model_spec(request)
    if not request.metadata_field:
      raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                         'GetModelMetadataRequest must specify at least one metadata_field')
    for field in request.metadata_field:
      if field != features.SIGNATURE_DEF_METADATA_FIELD:
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f'Metadata field {field} is not supported')
    servable = self._manager.servable(request.model_spec)
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = servable.model_name
    response.model_spec.version.value = servable.version
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    for name, signature_def in servable.signature_defs.items():
      signature_map.signature_def[name].CopyFrom(signature_def)
    response.metadata[features.SIGNATURE_DEF_METADATA_FIELD].Pack(signature_map)
    return response


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
  """ModelService.GetModelStatus (HandleReloadConfigRequest stays UNIMPLEMENTED)."""

  def __init__(self, manager):
    self._manager = manager

  @_rpc
  def GetModelStatus(self, request, context):
    _require_model_spec(request)
    response = get_model_status_pb2.GetModelStatusResponse()
    for state in self._manager.version_states(request.model_spec):
      status = response.model_version_status.add(version=state.version, state=state.state)
      status.status.error_code = state.error_code.value[0]
      status.status.error_message = state.error_message
    return response


class LocalModelServer:
  """The server: model manager, batcher and gRPC server, with a thread polling for new versions.

  Use as a context manager, or call start() and stop(). start() waits until a
  version has loaded (like tensorflow_model_server, which opens its port only
  then), so clients see UNAVAILABLE, which they retry, rather than NOT_FOUND.
  """

  def __init__(self, model_base_path, model_name=None, *, host=DEFAULT_HOST, port=DEFAULT_PORT,
               grpc_max_threads=DEFAULT_GRPC_MAX_THREADS, batching_options=batching.BatchingOptions(),
               max_message_bytes=names.MAX_MESSAGE_BYTES, max_image_pixels=names.MAX_IMAGE_PIXELS,
               poll_wait_seconds=1.0):
    model_name = model_name or os.path.basename(os.path.normpath(model_base_path))
    self.manager = servables.ModelManager(model_name, model_base_path)
    self._address = f'[{host}]:{port}' if ':' in host else f'{host}:{port}'
    self._grpc_max_threads = grpc_max_threads
    self._max_message_bytes = max_message_bytes
    self._batcher = batching.Batcher(batching_options)
    self._validator = RequestValidator(max_image_pixels)
    self._poll_wait_seconds = poll_wait_seconds
    self._stopping = threading.Event()
    self._server = None
    self._poller = None
    self.port = None

  def start(self):
    """Loads the newest version (waiting for one to appear), then listens; returns the bound port."""
    while not self.manager.poll() and self.manager.current is None:
      _LOG.warning('No versions of servable %s found under base path %s', self.manager.model_name,
                   self.manager.base_path)
      if self._stopping.wait(self._poll_wait_seconds):
        raise RuntimeError('Server stopped before any model version loaded.')
    self._batcher.start()
    self._server = grpc.server(
        concurrent.futures.ThreadPoolExecutor(self._grpc_max_threads, thread_name_prefix='grpc'),
        options=[('grpc.max_receive_message_length', self._max_message_bytes),
                 ('grpc.max_send_message_length', self._max_message_bytes)])
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionServicer(self.manager, self._batcher, self._validator), self._server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(self.manager), self._server)
    self.port = self._server.add_insecure_port(self._address)
    self._server.start()
    self._poller = threading.Thread(target=self._poll_loop, name='version-poller', daemon=True)
    self._poller.start()
    _LOG.info('Running gRPC ModelServer at %s (port %d), model %s', self._address, self.port,
              self.manager.model_name)
    return self.port

  def stop(self, grace=None):
    """Stops accepting RPCs, lets running ones finish for up to `grace` seconds, then stops."""
    self._stopping.set()
    if self._server is not None:
      self._server.stop(grace).wait()
      self._server = None
    if self._poller is not None:
      self._poller.join()
      self._poller = None
    self._batcher.stop()

  def wait(self):
    """Blocks until stop() is called (from another thread or a signal handler)."""
    self._stopping.wait()

  def __enter__(self):
    try:
      self.start()
    except BaseException:
      self.stop()  # e.g. the port was taken: release the threads already started
      raise
    return self

  def __exit__(self, *exc_info):
    self.stop()

  def _poll_loop(self):
    while not self._stopping.wait(self._poll_wait_seconds):
      try:
        self.manager.poll()
      except (servables.ModelLoadError, tf.errors.OpError) as e:
        current = self.manager.current
        _LOG.error('%s (still serving version %s)', e, current.version if current else None)


def _parse_args(argv):
  parser = argparse.ArgumentParser(
      prog='python -m serving.server', description=__doc__.split('\n\n')[0],
      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  parser.add_argument('--model_base_path', required=True,
                      help='The Pusher\'s <serving_dir>/<model_name>: integer version directories.')
  parser.add_argument('--model_name', help='Name clients ask for (default: the base path\'s last component).')
  parser.add_argument('--host', default=DEFAULT_HOST, help='Address to bind; 0.0.0.0 exposes the server.')
  parser.add_argument('--port', type=int, default=DEFAULT_PORT, help='gRPC port; 0 picks a free one.')
  parser.add_argument('--grpc_max_threads', type=int, default=DEFAULT_GRPC_MAX_THREADS,
                      help='Worker threads, i.e. RPCs handled at once.')
  defaults = batching.BatchingOptions()
  parser.add_argument('--max_batch_size', type=int, default=defaults.max_batch_size,
                      help='Images merged into one model call.')
  parser.add_argument('--batch_timeout_micros', type=int, default=defaults.batch_timeout_micros,
                      help='How long a request waits for others to merge with.')
  parser.add_argument('--num_batch_threads', type=int, default=defaults.num_batch_threads,
                      help='Model calls in flight at once.')
  parser.add_argument('--max_enqueued_requests', type=int, default=defaults.max_enqueued_requests,
                      help='Requests waiting for the model; more get UNAVAILABLE.')
  parser.add_argument('--max_message_bytes', type=int, default=names.MAX_MESSAGE_BYTES,
                      help='Largest request or response; larger ones get RESOURCE_EXHAUSTED.')
  parser.add_argument('--max_image_pixels', type=int, default=names.MAX_IMAGE_PIXELS,
                      help='Largest image (width*height, from its header); larger get RESOURCE_EXHAUSTED.')
  parser.add_argument('--file_system_poll_wait_seconds', type=float, default=1.0,
                      help='How often the base path is checked for a new version.')
  return parser.parse_args(argv)


def main(argv=None):
  args = _parse_args(argv)
  logging.basicConfig(level=logging.INFO, format='%(asctime)s %(levelname)s %(message)s')
  server = LocalModelServer(
      args.model_base_path, args.model_name, host=args.host, port=args.port,
      grpc_max_threads=args.grpc_max_threads,
      batching_options=batching.BatchingOptions(
          max_batch_size=args.max_batch_size, batch_timeout_micros=args.batch_timeout_micros,
          num_batch_threads=args.num_batch_threads, max_enqueued_requests=args.max_enqueued_requests),
      max_message_bytes=args.max_message_bytes, max_image_pixels=args.max_image_pixels,
      poll_wait_seconds=args.file_system_poll_wait_seconds)
  signal.signal(signal.SIGTERM, signal.default_int_handler)  # docker stop / kubectl: shut down cleanly
  try:
    server.start()
    server.wait()
  except KeyboardInterrupt:
    _LOG.info('Shutting down')
  except servables.ModelLoadError as e:
    _LOG.error('%s', e)
    return 1
  finally:
    server.stop(grace=5)
  return 0


if __name__ == '__main__':
  sys.exit(main())
