"""`python -m serving.server`: the local model server's command line (serving.model_server).

Run: python -m serving.server --model_base_path <serving_dir>/captioner --port 8500 --rest_api_port 8501

TensorFlow's C++ logging (a warning per failed op call, and lines about CUDA
plugins and CPU instructions as it loads), libjpeg's messages about broken
JPEGs and absl write straight to file descriptor 2, which no Python setting
reaches; a thousand bad requests once wrote 1,420 such lines. They go, in
full, to a debug log instead, and the terminal keeps the server's own log: one
line per failed request (serving.errors). Descriptor 2 must point at the debug
log before the first import of TensorFlow, which is why this module imports
only the standard library until then, and serving.model_server (the server)
after; other command lines (serving.bulk) share send_library_output_to.
"""
import argparse
import contextlib
import logging
import os
import signal
import sys
import tempfile

_LOG = logging.getLogger(__name__)

# The one flag needed before TensorFlow loads; parse_args takes it as a parent parser.
DEBUG_LOG_FLAG = argparse.ArgumentParser(add_help=False)
DEBUG_LOG_FLAG.add_argument(
    '--debug_log', default='',
    help='File for the output of TensorFlow, libjpeg and absl (default: captioner-serving-<pid>.log in the '
         'temporary folder; - leaves it on stderr).')


def send_library_output_to(path):
  """Points file descriptor 2 at `path`; returns a stream on the terminal's stderr for the server's own log."""
  terminal = os.fdopen(os.dup(2), 'w', buffering=1)
  debug_log = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
  os.dup2(debug_log, 2)
  os.close(debug_log)
  return terminal


def main(argv=None):
  debug_log = DEBUG_LOG_FLAG.parse_known_args(argv)[0].debug_log or os.path.join(
      tempfile.gettempdir(), f'captioner-serving-{os.getpid()}.log')
  terminal = sys.stderr if debug_log == '-' else send_library_output_to(debug_log)
  with contextlib.redirect_stderr(terminal):  # usage errors go to the person who typed the command
    args = parse_args(argv)
  logging.basicConfig(level=logging.INFO, format='%(asctime)s %(levelname)s %(message)s', stream=terminal)
  if debug_log != '-':
    _LOG.info('TensorFlow\'s and the libraries\' own output goes to %s', debug_log)
  return run(args)


def parse_args(argv):
  """The command line's flags (tensorflow_model_server's names where it has the flag)."""
  # pylint: disable=import-outside-toplevel; they import TensorFlow: see the module docstring
  from components import names
  from serving import batching
  from serving import model_server
  from serving import requests
  from serving import rest
  parser = argparse.ArgumentParser(
      prog='python -m serving.server', description=model_server.__doc__.split('\n\n')[0],
      parents=[DEBUG_LOG_FLAG], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  parser.add_argument('--model_base_path', required=True,
                      help='The Pusher\'s <serving_dir>/<model_name>: integer version directories.')
  parser.add_argument('--model_name', help='Name clients ask for (default: the base path\'s last component).')
  parser.add_argument('--host', default=model_server.DEFAULT_HOST, help='Address to bind; 0.0.0.0 exposes the server.')
  parser.add_argument('--port', type=int, default=model_server.DEFAULT_PORT, help='gRPC port; 0 picks a free one.')
  parser.add_argument('--rest_api_port', type=int, default=rest.DEFAULT_PORT,
                      help='HTTP/REST port; 0 serves no REST (as tensorflow_model_server).')
  parser.add_argument('--rest_api_timeout_in_ms', type=int, default=rest.DEFAULT_TIMEOUT_MS,
                      help='Deadline of each REST call.')
  parser.add_argument('--grpc_max_threads', type=int, default=model_server.DEFAULT_GRPC_MAX_THREADS,
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
  """Serves until SIGTERM or Ctrl-C; returns the exit status."""
  # pylint: disable=import-outside-toplevel; they import TensorFlow: see the module docstring
  from serving import batching
  from serving import model_server
  from serving import servables
  server = model_server.LocalModelServer(
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


if __name__ == '__main__':
  sys.exit(main())
