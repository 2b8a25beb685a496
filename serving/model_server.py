"""A local stand-in for tensorflow_model_server: TF Serving's gRPC and REST APIs over the Pusher's base directory.

TF Serving's binary is not on PyPI and Docker is not always at hand, so this
server implements the parts of TF Serving's APIs that the captioner uses, from
the protos of tensorflow-serving-api, so that the same client (or any TF
Serving client, or curl) works unchanged against either:

  gRPC (--port)          PredictionService.Predict, GetModelMetadata;
                         ModelService.GetModelStatus
  REST (--rest_api_port) POST /v1/models/<name>:predict, GET /v1/models/<name>[/metadata]

It serves the newest integer version under --model_base_path, replays the
version's warm-up requests before it reports it AVAILABLE, loads a newly
pushed version without a restart (serving.servables), merges concurrent
requests into one model call (serving.batching), and answers bad requests with
the status code and message TF Serving gives, then keeps serving:

  INVALID_ARGUMENT    bytes that are not an image, a wrong dtype or shape, a
                      missing or unknown input, an unknown version label,
                      more than --max_images_per_request images
  NOT_FOUND           an unknown model name or version
  FAILED_PRECONDITION an unknown signature name (TF Serving's code for it)
  RESOURCE_EXHAUSTED  a message over --max_message_bytes, or an image over
                      --max_image_pixels (refused from its header, before decoding)

The work is split as in TF Serving: serving.requests validates,
serving.tensors converts, serving.service runs the calls, and
serving.grpc_service and serving.rest are the two front ends; this module
wires them together. Its command line is serving.server.

Run: python -m serving.server --model_base_path <serving_dir>/captioner --port 8500 --rest_api_port 8501
"""
import concurrent.futures
import logging
import os
import threading

import grpc
import tensorflow as tf

from components import names
from serving import batching
from serving import grpc_service
from serving import requests
from serving import rest
from serving import servables
from serving import service as service_lib

_LOG = logging.getLogger(__name__)

DEFAULT_PORT = 8500
DEFAULT_HOST = '127.0.0.1'
DEFAULT_GRPC_MAX_THREADS = 16


class LocalModelServer:
  """The server: model manager, batcher, gRPC and REST front ends, and a thread polling for new versions.

  Use as a context manager, or call start() and stop(). start() waits until a
  version has loaded and warmed up (like tensorflow_model_server, which opens
  its ports only then), so clients see UNAVAILABLE, which they retry, rather
  than NOT_FOUND. port=0 and rest_port=0 pick free ports (see .port and
  .rest_port after start()); rest_port=None (the default here; the command
  line's is 8501) serves no REST.
  """

  def __init__(self, model_base_path, model_name=None, *, host=DEFAULT_HOST, port=DEFAULT_PORT,
               rest_port=None, rest_timeout_ms=rest.DEFAULT_TIMEOUT_MS,
               grpc_max_threads=DEFAULT_GRPC_MAX_THREADS, batching_options=batching.BatchingOptions(),
               max_message_bytes=names.MAX_MESSAGE_BYTES, max_image_pixels=names.MAX_IMAGE_PIXELS,
               max_images_per_request=requests.DEFAULT_MAX_IMAGES_PER_REQUEST, poll_wait_seconds=1.0):
    model_name = model_name or os.path.basename(os.path.normpath(model_base_path))
    self._batcher = batching.Batcher(batching_options)
    validator = requests.RequestValidator(max_image_pixels, max_images_per_request)
    self.manager = servables.ModelManager(model_name, model_base_path, warm_up=self._warm_up)
    self._service = service_lib.Service(self.manager, self._batcher, validator)
    self._host = host
    self._address = f'[{host}]:{port}' if ':' in host else f'{host}:{port}'
    self._rest_port = rest_port
    self._rest_timeout_ms = rest_timeout_ms
    self._grpc_max_threads = grpc_max_threads
    self._max_message_bytes = max_message_bytes
    self._poll_wait_seconds = poll_wait_seconds
    self._stopping = threading.Event()
    self._server = None
    self._rest = None
    self._poller = None
    self.port = None
    self.rest_port = None

  def start(self):
    """Loads the newest version (waiting for one to appear), then listens; returns the gRPC port."""
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
    grpc_service.add_to_server(self._service, self._server)
    self.port = self._server.add_insecure_port(self._address)
    self._server.start()
    _LOG.info('Running gRPC ModelServer at %s (port %d), model %s', self._address, self.port,
              self.manager.model_name)
    if self._rest_port is not None:
      self._rest = rest.RestServer(self._service, self._host, self._rest_port,
                                   max_body_bytes=self._max_message_bytes, timeout_ms=self._rest_timeout_ms)
      self.rest_port = self._rest.start()
      _LOG.info('Exporting HTTP/REST API at %s:%d', self._host, self.rest_port)
    self._poller = threading.Thread(target=self._poll_loop, name='version-poller', daemon=True)
    self._poller.start()
    return self.port

  def stop(self, grace=None):
    """Stops accepting requests, lets running RPCs finish for up to `grace` seconds, then stops."""
    self._stopping.set()
    if self._rest is not None:
      self._rest.stop()
      self._rest = None
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

  def _warm_up(self, servable):
    """Replays a newly loaded version's warm-up requests (service.Service.warm_up)."""
    return self._service.warm_up(servable)

  def _poll_loop(self):
    while not self._stopping.wait(self._poll_wait_seconds):
      try:
        self.manager.poll()
      except (servables.ModelLoadError, tf.errors.OpError) as e:
        current = self.manager.current
        _LOG.error('%s (still serving version %s)', e, current.version if current else None)
