"""Request validation shared by the gRPC and REST front ends (TF Serving's predict_util).

A PredictRequest, whether it came over gRPC or was built from REST JSON by
serving.tensors, is checked here against the served SignatureDef, with TF
Serving's status codes and messages, before anything runs the model:

  INVALID_ARGUMENT    wrong input names, dtype or shape; an unknown output in
                      output_filter; more images than --max_images_per_request
  FAILED_PRECONDITION an unknown signature name
  RESOURCE_EXHAUSTED  an image over --max_image_pixels, refused from its header
                      before anything decodes it (a decompression bomb is a
                      small file that decodes to gigabytes)
"""

import grpc
import tensorflow as tf
from google.protobuf import message
from tensorflow.core.example import example_pb2

from components import names
from components import image_limits
from serving import tensors
from serving.errors import ServingError

# Images one Predict request may hold. Larger requests are refused, not run:
# 2,000 images in one request once took 4 GB and stalled every other client
# for a minute. TF Serving's own limit is its max_batch_size (32 in
# serving/deploy/batching_parameters.txt); this server runs a request in
# max_batch_size chunks instead, so it can take more at once.
DEFAULT_MAX_IMAGES_PER_REQUEST = 256


def _encoded_images(alias, values):
  """(row, encoded image) for each image inside the input `alias` of the caption signatures."""
  if alias == names.IMAGES_INPUT:
    return list(enumerate(values))
  images = []
  if alias == names.EXAMPLES_INPUT:
    for row, serialized in enumerate(values):
      try:
        feature = example_pb2.Example.FromString(serialized).features.feature[names.IMAGE_KEY]
      except message.DecodeError:
        continue  # the model's parser reports it
      images.extend((row, image) for image in feature.bytes_list.value)
  return images


def require_model_spec(request):
  if not request.HasField('model_spec'):
    raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, 'Missing ModelSpec')


def signature_name(model_spec):
  """The signature a request names ('' means serving_default, as in TF Serving)."""
  return model_spec.signature_name or tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY


def find_signature(servable, name):
  """(SignatureDef, concrete function) of `name` in the servable, or FAILED_PRECONDITION as TF Serving."""
  signature_def = servable.signature_defs.get(name)
  function = servable.functions.get(name)
  if signature_def is None or function is None:
    raise ServingError(grpc.StatusCode.FAILED_PRECONDITION, f'Serving signature key "{name}" not found.')
  return signature_def, function


class RequestValidator:
  """Checks a PredictRequest against a SignatureDef; returns the inputs as numpy arrays."""

  def __init__(self, max_image_pixels, max_images_per_request=DEFAULT_MAX_IMAGES_PER_REQUEST):
    self.max_image_pixels = max_image_pixels
    self.max_images_per_request = max_images_per_request

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
                           f'Expects arg[{index}] to be {tensors.dtype_name(info.dtype)} but '
                           f'{tensors.dtype_name(proto.dtype)} is provided')
      # Batching needs a 0th dimension to merge requests along, whatever the signature says.
      if not tensors.shape_compatible(proto.tensor_shape, info.tensor_shape) or not proto.tensor_shape.dim:
        raise ServingError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f'Input {alias!r} has shape {tensors.shape_string(proto.tensor_shape)}, which does '
            f'not match the signature\'s shape {tensors.shape_string(info.tensor_shape)}.')
      value = tensors.from_proto(alias, proto)  # holds no more values than the request sent
      if len(value) > self.max_images_per_request:
        raise ServingError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f'Input {alias!r} holds {len(value)} images; this server accepts at most '
            f'{self.max_images_per_request} per request (--max_images_per_request). '
            f'Send them in several requests.')
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
    """Refuses images over the pixel limit from their headers, before anything decodes them
    (bytes that are not an image get the model's decoder's error, as from TF Serving)."""
    for row, encoded in _encoded_images(alias, values):
      too_large = image_limits.oversize(encoded, self.max_image_pixels)
      if too_large:
        self._refuse(alias, row, too_large)

  def _refuse(self, alias, row, size):
    raise ServingError(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        f'Image {row} of input {alias!r} is too large ({size}); this server accepts at most '
        f'{self.max_image_pixels} pixels per image (--max_image_pixels). Resize it before sending.')
