"""Serving overhead: captions through the local gRPC server against the SavedModel called in-process.

Exports the tiny captioner (serving.tiny_model) into a temporary base
directory (or uses --model_base_path, e.g. a real pushed model), starts the
local server (serving.server) on a free port on 127.0.0.1 and, in the same run
on the same JPEG images, measures
  * latency at batch 1: p50 and p99 over --requests sequential calls, through
    gRPC (client -> socket -> server -> batcher -> model) and in-process
    (the serving signature called directly);
  * throughput at batch 32: images/s over --batches sequential calls of 32
    images, both ways;
alternating the two ways call by call, and prints one JSON line with the
figures and the ratios gRPC / in-process (a latency ratio above 1 and a
throughput ratio below 1 are what gRPC costs).

The server batches with its defaults, so a lone request waits up to
batch_timeout_micros for company, as it would in TF Serving.

Usage: .venv/bin/python -m bench.serving [--requests 200] [--batches 20] [--model_base_path DIR]
"""
import argparse
import json
import multiprocessing
import os
import tempfile

from components import names
from components.evaluation import captioning
from serving import batching
from serving import client as client_lib
from serving import server as server_lib
from serving import servables
from serving import tiny_model
from testing import images as test_images
from testing import timing

_BATCH = 32


def _measure(calls, images, requests, batches):
  """{name: (p50 ms, p99 ms) at batch 1, images/s at batch 32} for each way of calling the model."""
  singles = timing.alternating_seconds(
      calls, {name: [[images[i % len(images)]] for i in range(requests)] for name in calls})
  fulls = timing.alternating_seconds(calls, {name: [images[:_BATCH]] * batches for name in calls})
  return {name: (timing.percentile_ms(singles[name], 50), timing.percentile_ms(singles[name], 99),
                 _BATCH * batches / fulls[name].sum()) for name in calls}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--requests', type=int, default=200, help='Batch-1 calls per way (default %(default)s).')
  parser.add_argument('--batches', type=int, default=20, help='Batch-32 calls per way (default %(default)s).')
  parser.add_argument('--image_size', type=int, default=64, help='Side of the JPEGs (default %(default)s).')
  parser.add_argument('--model_base_path', help='A pushed <serving_dir>/<model_name> to use instead of the '
                                               'tiny model.')
  args = parser.parse_args()
  images = [test_images.block_image(seed, (args.image_size, args.image_size), 'JPEG') for seed in range(_BATCH)]

  with tempfile.TemporaryDirectory(prefix='serving_bench_') as tmp:
    base_path = args.model_base_path or os.path.join(tmp, names.MODEL_NAME)
    if not args.model_base_path:
      tiny_model.export_tiny_model(os.path.join(base_path, '1'))
    versions = servables.list_versions(base_path)
    if not versions:
      parser.error(f'no version directory with a SavedModel under {base_path}')
    version = versions[-1]
    in_process = captioning.SavedModelCaptioner(os.path.join(base_path, str(version)))
    options = batching.BatchingOptions()
    with server_lib.LocalModelServer(base_path, port=0, batching_options=options) as server, \
            client_lib.CaptionClient(f'127.0.0.1:{server.port}', server.manager.model_name,
                                     timeout_s=300) as client:
      figures = _measure({'grpc': client.caption, 'in_process': in_process}, images, args.requests,
                         args.batches)
  grpc_p50, grpc_p99, grpc_rate = figures['grpc']
  local_p50, local_p99, local_rate = figures['in_process']

  print(json.dumps({
      'model': args.model_base_path or 'tiny (serving.tiny_model)',
      'model_version': version,
      'image_size': args.image_size,
      'cores': multiprocessing.cpu_count(),
      'requests_batch_1': args.requests,
      'calls_batch_32': args.batches,
      'server_max_batch_size': options.max_batch_size,
      'server_batch_timeout_micros': options.batch_timeout_micros,
      'grpc_batch_1_p50_ms': round(grpc_p50, 2),
      'grpc_batch_1_p99_ms': round(grpc_p99, 2),
      'in_process_batch_1_p50_ms': round(local_p50, 2),
      'in_process_batch_1_p99_ms': round(local_p99, 2),
      'grpc_batch_32_images_per_second': round(grpc_rate, 1),
      'in_process_batch_32_images_per_second': round(local_rate, 1),
      'ratio_grpc_to_in_process_p50': timing.ratio(grpc_p50, local_p50),
      'ratio_grpc_to_in_process_p99': timing.ratio(grpc_p99, local_p99),
      'ratio_grpc_to_in_process_throughput': timing.ratio(grpc_rate, local_rate),
  }))


if __name__ == '__main__':
  main()
