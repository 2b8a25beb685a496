"""The services behind both front ends: Predict, GetModelMetadata, GetModelStatus, and warm-up.

TF Serving's prediction_service_impl, get_model_metadata_impl and
get_model_status_impl: they take and return the tensorflow-serving-api
protos, whichever front end the request came through (serving.grpc_service
passes them through, serving.rest builds them from URLs and JSON), and raise
ServingError with TF Serving's status code and message.
"""
import concurrent.futures
import logging
import os
import time

import grpc
import tensorflow as tf
from google.protobuf import message
from tensorflow_serving.apis import get_model_metadata_pb2
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_log_pb2

from components import names
from serving import batching
from serving import requests
from serving import servables
from serving import tensors
from serving.errors import ServingError

_LOG = logging.getLogger(__name__)


class Service:
  """Resolves a request's model spec and signature, validates it, and runs it through the batcher."""

  def __init__(self, manager, batcher, validator):
    self._manager = manager
    self._batcher = batcher
    self._validator = validator

  def predict(self, request, deadline=None, on_done=None):
    """PredictRequest -> PredictResponse.

    deadline: time.monotonic() after which the caller stops waiting.
    on_done: called with a function that cancels the model call, for a front
      end to run when its client goes away (gRPC's context.add_callback).
    """
    requests.require_model_spec(request)
    servable = self._manager.servable(request.model_spec)
    name = requests.signature_name(request.model_spec)
    signature_def, function = requests.find_signature(servable, name)
    inputs = self._validator.inputs(signature_def, request)
    output_aliases = self._validator.output_aliases(signature_def, request)
    future = self._batcher.submit(function, inputs, deadline=deadline)
    if on_done is not None:
      on_done(future.cancel)
    try:
      outputs = future.result(timeout=None if deadline is None else max(0.0, deadline - time.monotonic()))
    except concurrent.futures.TimeoutError:
      future.cancel()
      raise ServingError(grpc.StatusCode.DEADLINE_EXCEEDED, 'Deadline Exceeded') from None
    except concurrent.futures.CancelledError:
      raise ServingError(grpc.StatusCode.CANCELLED, 'Cancelled') from None

    response = predict_pb2.PredictResponse()
    response.model_spec.name = servable.model_name
    response.model_spec.version.value = servable.version
    response.model_spec.signature_name = name
    for alias in output_aliases:
      response.outputs[alias].CopyFrom(tensors.to_proto(outputs[alias], signature_def.outputs[alias].dtype))
    return response

  def signature_inputs(self, model_spec):
    """The input TensorInfos of the signature a REST request names (TF Serving's GetInfoMap)."""
    servable = self._manager.servable(model_spec)
    name = requests.signature_name(model_spec)
    if name not in servable.signature_defs:
      raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                         f'Serving signature name: "{name}" not found in signature def')
    return servable.signature_defs[name].inputs

  def model_metadata(self, request):
    """GetModelMetadataRequest -> GetModelMetadataResponse (the SignatureDefMap, packed in an Any)."""
    requests.require_model_spec(request)
    if not request.metadata_field:
      raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                         'GetModelMetadataRequest must specify at least one metadata_field')
    for field in request.metadata_field:
      if field != names.SIGNATURE_DEF_METADATA_FIELD:
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f'Metadata field {field} is not supported')
    servable = self._manager.servable(request.model_spec)
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = servable.model_name
    response.model_spec.version.value = servable.version
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    for name, signature_def in servable.signature_defs.items():
      signature_map.signature_def[name].CopyFrom(signature_def)
    response.metadata[names.SIGNATURE_DEF_METADATA_FIELD].Pack(signature_map)
    return response

  def model_status(self, request):
    """GetModelStatusRequest -> GetModelStatusResponse: the state of each version seen."""
    requests.require_model_spec(request)
    response = get_model_status_pb2.GetModelStatusResponse()
    for state in self._manager.version_states(request.model_spec):
      status = response.model_version_status.add(version=state.version, state=state.state)
      status.status.error_code = state.error_code.value[0]
      status.status.error_message = state.error_message
    return response

  def warm_up(self, servable):
    """Replays the version's warm-up requests, as TF Serving does before a version is AVAILABLE.

    The file is TF Serving's (<version>/assets.extra/tf_serving_warmup_requests:
    a TFRecord of PredictionLog, each holding a PredictRequest); every record
    runs once, straight on the model, so the graph's first-call costs are paid
    before any client arrives. Returns the number of records; raises
    servables.ModelLoadError naming the file if one fails (TF Serving then
    does not load the version).
    """
    path = os.path.join(servable.path, names.WARMUP_REQUESTS_PATH)
    if not tf.io.gfile.exists(path):
      return 0
    count = 0
    try:
      for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
        log = prediction_log_pb2.PredictionLog.FromString(record)
        if log.WhichOneof('log_type') != 'predict_log':
          raise ServingError(grpc.StatusCode.UNIMPLEMENTED,
                             f'Unsupported log_type for warmup: {log.WhichOneof("log_type")}')
        request = log.predict_log.request
        signature_def, function = requests.find_signature(servable, requests.signature_name(request.model_spec))
        batching.run_model(function, self._validator.inputs(signature_def, request))
        count += 1
    except (ServingError, tf.errors.OpError, message.DecodeError) as e:
      raise servables.ModelLoadError(f'Warm-up request {count} of {path} failed: {e}') from e
    _LOG.info('Finished reading warmup data for model at %s. Number of warmup records read: %d.', path, count)
    return count
