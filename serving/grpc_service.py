"""The gRPC front end: TF Serving's PredictionService and ModelService over serving.service.

Each RPC hands its request proto to the shared Service and returns its
response; a ServingError becomes the RPC's status (code and message), logged
in one rate-limited line, and the server carries on (anything else, a bug,
becomes INTERNAL, logged the same way). After a large request the memory it
left behind goes back to the system (serving.memory).
"""
import functools
import time

import grpc
from tensorflow_serving.apis import model_service_pb2_grpc
from tensorflow_serving.apis import prediction_service_pb2_grpc

from serving import errors
from serving import memory


def _rpc(method):
  """Runs an RPC handler; a ServingError becomes the RPC's status, and the server carries on."""

  @functools.wraps(method)
  def handler(self, request, context):
    try:
      return method(self, request, context)
    except errors.ServingError as e:
      errors.log_request_error(f'gRPC {method.__name__}', errors.detached(e))
      context.abort(e.code, e.message)
    except Exception as e:  # pylint: disable=broad-except; a bug: one line, INTERNAL, not gRPC's traceback
      error = errors.ServingError(grpc.StatusCode.INTERNAL, f'{type(e).__name__}: {e}')
      errors.log_request_error(f'gRPC {method.__name__}', error)
      context.abort(error.code, error.message)
    finally:
      memory.release_after(request.ByteSize())

  return handler


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
  """PredictionService.Predict and GetModelMetadata (Classify, Regress, MultiInference stay UNIMPLEMENTED)."""

  def __init__(self, service):
    self._service = service

  @_rpc
  def Predict(self, request, context):
    remaining = context.time_remaining()
    return self._service.predict(
        request, deadline=None if remaining is None else time.monotonic() + remaining,
        on_done=context.add_callback)  # the client went away: do not run it

  @_rpc
  def GetModelMetadata(self, request, context):
    return self._service.model_metadata(request)


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
  """ModelService.GetModelStatus (HandleReloadConfigRequest stays UNIMPLEMENTED)."""

  def __init__(self, service):
    self._service = service

  @_rpc
  def GetModelStatus(self, request, context):
    return self._service.model_status(request)


def add_to_server(service, server):
  """Registers both gRPC services of `service` on a grpc.Server."""
  prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionServicer(service), server)
  model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(service), server)
