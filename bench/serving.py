"""Serving costs on the pushed model: gRPC and REST against in-process calls, warm-up, and batching.

Serves the model the main job pushes (the newest version under
outputs/serving/captioner, or --model_base_path; --tiny exports the tiny
random captioner of testing.tiny_model instead) with the local server
(serving.server) on free ports of 127.0.0.1 and measures, in the same run on
the same JPEG images:
  * latency at batch 1: p50 and p99 over --requests sequential calls through
    gRPC, through REST, and in-process (the serving signature called
    directly), alternating the three ways call by call so that load that comes
    and goes on a shared machine hits all of them alike;
  * throughput at batch 32: images/s over --batches sequential calls, the same way;
  * the first request after a version loads, with its warm-up file and
    without (each in a fresh server process, timed from the moment GetModelStatus
    says AVAILABLE);
  * throughput under 16 concurrent clients sending one image per request, with
    the server's batching on (its defaults) and off (max_batch_size 1).
Prints one JSON line: the figures and the ratios (gRPC or REST / in-process,
first request without / with warm-up, batching on / off).

Usage: bash run.sh bench serving [--requests 100] [--batches 10] [--model_base_path DIR | --tiny]
"""
import argparse
import concurrent.futures
import json
import multiprocessing
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import grpc
import tensorflow as tf
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.apis import model_service_pb2_grpc

from components import names
from serving import batching
from serving import client as client_lib
from serving import model_server as server_lib
from serving import servables
from testing import tiny_model
from testing import images as test_images
from testing import timing

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_MODEL_BASE_PATH = os.path.join(_REPO, 'outputs', 'serving', names.MODEL_NAME)
_WARMUP_CALLS = 5
_BATCH = 32
_CONCURRENT_CLIENTS = 16
_AVAILABLE = get_model_status_pb2.ModelVersionStatus.State.AVAILABLE


def _latency_and_throughput(calls, images, requests, batches):
  """{name: (p50 ms, p99 ms) at batch 1, images/s at batch 32} for each way of calling the model."""
  singles = timing.alternating_seconds(
      calls, {name: [[images[i % len(images)]] for i in range(requests)] for name in calls})
  fulls = timing.alternating_seconds(calls, {name: [images[:_BATCH]] * batches for name in calls})
  return {name: (timing.percentile_ms(singles[name], 50), timing.percentile_ms(singles[name], 99),
                 _BATCH * batches / fulls[name].sum()) for name in calls}


def _concurrent_throughput(base_path, options, images, requests_per_client):
  """Images/s of _CONCURRENT_CLIENTS clients each sending single-image requests at once."""
  with server_lib.LocalModelServer(base_path, port=0, batching_options=options) as server:
    target = f'127.0.0.1:{server.port}'

    def run_client(index):
      with client_lib.CaptionClient(target, server.manager.model_name, timeout_s=600) as client:
        for i in range(requests_per_client):
          client.caption([images[(index + i) % len(images)]])

    run_client(0)  # the first call of this server's model
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(_CONCURRENT_CLIENTS) as pool:
      list(pool.map(run_client, range(_CONCURRENT_CLIENTS)))
    return _CONCURRENT_CLIENTS * requests_per_client / (time.perf_counter() - start)


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _first_request_seconds(version_dir, with_warmup, image, workdir):
  """Seconds of the first Predict on a fresh server process, once the version is AVAILABLE."""
  base = os.path.join(workdir, 'warm' if with_warmup else 'cold', names.MODEL_NAME)
  shutil.copytree(version_dir, os.path.join(base, '1'))
  warmup_file = os.path.join(base, '1', names.WARMUP_REQUESTS_PATH)
  if not with_warmup and os.path.exists(warmup_file):
    os.remove(warmup_file)
  elif with_warmup and not os.path.exists(warmup_file):
    raise SystemExit(f'error: {version_dir} has no {names.WARMUP_REQUESTS_PATH}; push a model exported by '
                     f'this version of components/training/exporter.py (bash run.sh pipeline).')
  port = _free_port()
  process = subprocess.Popen(
      [sys.executable, '-m', 'serving.server', '--model_base_path', base, '--port', str(port),
       '--rest_api_port', '0'], cwd=_REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'))
  try:
    with grpc.insecure_channel(f'127.0.0.1:{port}') as channel:
      status = model_service_pb2_grpc.ModelServiceStub(channel)
      request = get_model_status_pb2.GetModelStatusRequest()
      request.model_spec.name = names.MODEL_NAME
      give_up = time.monotonic() + 600
      while True:
        try:
          if any(s.state == _AVAILABLE for s in status.GetModelStatus(request, timeout=5).model_version_status):
            break
        except grpc.RpcError:
          pass  # not listening yet: the server opens its port once the version is loaded
        if process.poll() is not None or time.monotonic() > give_up:
          raise SystemExit(f'error: the server on {base} did not come up')
        time.sleep(0.05)
    with client_lib.CaptionClient(f'127.0.0.1:{port}', names.MODEL_NAME, timeout_s=600) as client:
      start = time.perf_counter()
      client.caption([image])
      return time.perf_counter() - start
  finally:
    process.terminate()
    process.wait(timeout=60)


def _base_path(args, tmp, parser):
  """The base directory to serve: the tiny model exported into tmp, or a pushed one."""
  if args.tiny:
    base_path = os.path.join(tmp, 'tiny', names.MODEL_NAME)
    tiny_model.export_tiny_model(os.path.join(base_path, '1'))
    return base_path
  base_path = args.model_base_path or DEFAULT_MODEL_BASE_PATH
  if not servables.list_versions(base_path):
    parser.error(f'no pushed model (a version directory with a SavedModel) under {base_path}; '
                 f'run `bash run.sh pipeline` to push one, or pass --tiny for the tiny random model.')
  return base_path


def _protocols(base_path, version_dir, options, images, args):
  """_latency_and_throughput of gRPC and REST through the local server and of in-process
  calls of the loaded SavedModel, which is released on return."""
  signature = tf.saved_model.load(version_dir).signatures[names.CAPTION_SIGNATURE]

  def in_process(batch):
    outputs = signature(**{names.IMAGES_INPUT: tf.constant(batch)})
    return {alias: tensor.numpy() for alias, tensor in outputs.items()}

  with server_lib.LocalModelServer(base_path, port=0, rest_port=0, batching_options=options) as server, \
      client_lib.CaptionClient(f'127.0.0.1:{server.port}', server.manager.model_name, timeout_s=600) as grpc_client, \
      client_lib.CaptionClient(f'127.0.0.1:{server.rest_port}', server.manager.model_name, protocol='rest',
                               timeout_s=600) as rest_client:
    return _latency_and_throughput(
        {'grpc': grpc_client.caption, 'rest': rest_client.caption, 'in_process': in_process},
        images, args.requests, args.batches)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--requests', type=int, default=100, help='Batch-1 calls per way (default %(default)s).')
  parser.add_argument('--batches', type=int, default=10, help='Batch-32 calls per way (default %(default)s).')
  parser.add_argument('--requests_per_client', type=int, default=8,
                      help='Single-image requests of each of the 16 concurrent clients (default %(default)s).')
  parser.add_argument('--image_size', type=int, default=128, help='Side of the JPEGs (default %(default)s).')
  source = parser.add_mutually_exclusive_group()
  source.add_argument('--model_base_path', help=f'A pushed <serving_dir>/<model_name> (default: '
                                                f'{os.path.relpath(DEFAULT_MODEL_BASE_PATH, _REPO)}).')
  source.add_argument('--tiny', action='store_true', help='Export and serve the tiny random model instead.')
  args = parser.parse_args()
  images = [test_images.block_image(seed, (args.image_size, args.image_size), 'JPEG') for seed in range(_BATCH)]

  with tempfile.TemporaryDirectory(prefix='serving_bench_') as tmp:
    base_path = _base_path(args, tmp, parser)
    version = servables.list_versions(base_path)[-1]
    version_dir = os.path.join(base_path, str(version))
    options = batching.BatchingOptions()
    figures = _protocols(base_path, version_dir, options, images, args)

    first_cold = _first_request_seconds(version_dir, False, images[0], tmp)
    first_warm = _first_request_seconds(version_dir, True, images[0], tmp)
    batching_on = _concurrent_throughput(base_path, options, images, args.requests_per_client)
    batching_off = _concurrent_throughput(
        base_path, batching.BatchingOptions(max_batch_size=1, batch_timeout_micros=0), images,
        args.requests_per_client)

  result = {
      'model': 'tiny (testing.tiny_model)' if args.tiny else base_path,
      'model_version': version,
      'image_size': args.image_size,
      'cores': multiprocessing.cpu_count(),
      'requests_batch_1': args.requests,
      'calls_batch_32': args.batches,
      'server_max_batch_size': options.max_batch_size,
      'server_batch_timeout_micros': options.batch_timeout_micros,
  }
  for name, (p50, p99, rate) in figures.items():
    result.update({f'{name}_batch_1_p50_ms': round(p50, 2), f'{name}_batch_1_p99_ms': round(p99, 2),
                   f'{name}_batch_32_images_per_second': round(rate, 1)})
  local_p50, local_p99, local_rate = figures['in_process']
  for name in ('grpc', 'rest'):
    p50, p99, rate = figures[name]
    result.update({f'ratio_{name}_to_in_process_p50': round(p50 / local_p50, 3),
                   f'ratio_{name}_to_in_process_p99': round(p99 / local_p99, 3),
                   f'ratio_{name}_to_in_process_throughput': round(rate / local_rate, 3)})
  result.update({
      'first_request_ms_without_warmup': round(first_cold * 1000, 1),
      'first_request_ms_with_warmup': round(first_warm * 1000, 1),
      'ratio_first_request_without_to_with_warmup': round(first_cold / first_warm, 2),
      'concurrent_clients': _CONCURRENT_CLIENTS,
      'concurrent_images_per_second_batching_on': round(batching_on, 1),
      'concurrent_images_per_second_batching_off': round(batching_off, 1),
      'ratio_batching_on_to_off_throughput': round(batching_on / batching_off, 2),
  })
  print(json.dumps(result))


if __name__ == '__main__':
  main()
