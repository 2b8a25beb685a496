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
wires them together and has the command line (which starts in serving.server_main,
so that TensorFlow's own output goes to a debug log from its first line).

Run: python -m serving.server --model_base_path <serving_dir>/captioner --port 8500 --rest_api_port 8501
"""
import sys

if __name__ == '__main__':
  # The command line starts in serving.server_main, which points descriptor 2
  # at the debug log before anything imports TensorFlow (whose C++ side writes
  # there as it loads), then comes back here for parse_args and run.
  from serving import server_main
  sys.exit(server_main.main())

# pylint: disable=wrong-import-position
import argparse
import concurrent.futures
import logging
import os
import signal
import threading

import grpc
import tensorflow as tf

from components import names
from serving import batching
from serving import grpc_service
from serving import requests
from serving import rest
from serving import servables
from serving import server_main
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


def parse_args(argv):
  """The command line's flags (tensorflow_model_server's names where it has the flag)."""
  parser = argparse.ArgumentParser(
      prog='python -m serving.server', description=__doc__.split('\n\n')[0],
      parents=[server_main.DEBUG_LOG_FLAG], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  parser.add_argument('--model_base_path', required=True,
                      help='The Pusher\'s <serving_dir>/<model_name>: integer version directories.')
  parser.add_argument('--model_name', help='Name clients ask for (default: the base path\'s last component).')
  parser.add_argument('--host', default=DEFAULT_HOST, help='Address to bind; 0.0.0.0 exposes the server.')
  parser.add_argument('--port', type=int, default=DEFAULT_PORT, help='gRPC port; 0 picks a free one.')
  parser.add_argument('--rest_api_port', type=int, default=rest.DEFAULT_PORT,
                      help='HTTP/REST port; 0 serves no REST (as tensorflow_model_server).')
  parser.add_argument('--rest_api_timeout_in_ms', type=int, default=rest.DEFAULT_TIMEOUT_MS,
                      help='Deadline of each REST call.')
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
  parser.add_argument('--max_images_per_request', type=int, default=requests.DEFAULT_MAX_IMAGES_PER_REQUEST,
                      help='Most images in one request; more get INVALID_ARGUMENT.')
  parser.add_argument('--file_system_poll_wait_seconds', type=float, default=1.0,
                      help='How often the base path is checked for a new version.')
  return parser.parse_args(argv)


def run(args):
  """Serves until SIGTERM or Ctrl-C; returns the exit status. Logging is set up by serving.server_main."""
  server = LocalModelServer(
      args.model_base_path, args.model_name, host=args.host, port=args.port,
      rest_port=args.rest_api_port or None, rest_timeout_ms=args.rest_api_timeout_in_ms,
      grpc_max_threads=args.grpc_max_threads,
      batching_options=batching.BatchingOptions(
          max_batch_size=args.max_batch_size, batch_timeout_micros=args.batch_timeout_micros,
          num_batch_threads=args.num_batch_threads, max_enqueued_requests=args.max_enqueued_requests),
      max_message_bytes=args.max_message_bytes, max_image_pixels=args.max_image_pixels,
      max_images_per_request=args.max_images_per_request, poll_wait_seconds=args.file_system_poll_wait_seconds)
  signal.signal(signal.SIGTERM, signal.default_int_handler)  # docker stop / kubectl: shut down cleanly
  try:
    server.start()
    server.wait()
  except KeyboardInterrupt:
    _LOG.info('Shutting down')
  except servables.ModelLoadError as e:
    _LOG.error('%s', e)
    return 1
  except (OSError, RuntimeError) as e:  # a port taken: gRPC raises RuntimeError, asyncio (REST) OSError
    _LOG.error('The server could not start: %s', e)
    return 1
  finally:
    server.stop(grace=5)
  return 0
