"""The bulk captioner (serving.bulk) against the project's server and a bare loop, on Flickr8k-size JPEGs.

Writes --num_images JPEGs of Flickr8k's size (500x375; 256 distinct images,
each written under several names) and, in the same run on the same machine:
  * runs `python -m serving.bulk` (the DirectRunner as it runs here) as a
    subprocess over --rss_images of them and over all --num_images, each
    into a fresh output: images/s of the Beam run (model loading included,
    from the job's summary line) and the process's peak RSS (VmHWM, polled: a
    forked child's ru_maxrss starts at its parent's RSS), which should not
    grow with the number of images; every input must be captioned;
  * serves the same model with the local server (serving.server) and drives
    it with its client (serving.client, CaptionClient.caption_files, its
    default batch) from 1, 2 and 4 concurrent client threads over
    --sample images each time: images/s at the best concurrency;
  * a bare in-process loop over the same SavedModel: read the files, call
    the serving signature --batch_size at a time, over --sample images.
The server and the bare loop are measured before and after the bulk runs and
their mean reported, so that load which comes and goes on a shared machine
hits all three alike. Prints one JSON line: the figures and the ratios bulk /
bare loop and bulk / server.

The model: a pushed one (--model_base_path) or by default a stand-in exported
with the project's exporter (testing.tiny_model) with the paper's encoder cost,
VGG16 fc2 at 224 px, random weights, behind the tiny decoder; its backbone in
--precision, by default resolved on this machine as the main job resolves it
(components/encoder/precision.py), so it computes as the pushed model does.

Usage: bash run.sh bench bulk [--num_images 20000] [--rss_images 5000] [--sample 128] [--model_base_path DIR]
       [--precision {auto,float32,bfloat16}]
"""
import argparse
import concurrent.futures
import json
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
import threading
import time

import tensorflow as tf

from bench import real_scale
from components import config as config_lib
from components import names
from components.encoder import precision as precision_lib
from serving import client as client_lib
from serving import model_server as server_lib
from serving import servables
from testing import tiny_model
from serving.bulk import handler as handler_lib
from serving.bulk import inputs
from testing import images as test_images

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_DISTINCT_IMAGES = 256
_CLIENT_CONCURRENCY = (1, 2, 4)
_STAND_IN_IMAGE_SIZE, _STAND_IN_POOLING = 224, 'fc2'
# Seconds between two reads of the bulk job's high-water RSS.
_RSS_POLL_SECONDS = 0.2
_SUMMARY = re.compile(r'(\d+) captioned, (\d+) rejected, \d+ skipped .*?, ([\d.]+) s, ')


def _write_jpegs(folder, count):
  """`count` Flickr8k-size JPEG paths in `folder` (_DISTINCT_IMAGES distinct images, repeated)."""
  os.makedirs(folder)
  distinct = [test_images.block_image(seed, real_scale.JPEG_SIZE, 'JPEG') for seed in range(_DISTINCT_IMAGES)]
  paths = []
  for index in range(count):
    paths.append(os.path.join(folder, f'{index:06d}.jpg'))
    with open(paths[-1], 'wb') as f:
      f.write(distinct[index % _DISTINCT_IMAGES])
  return paths


def _watch_peak_rss(process, peak_kb):
  """Keeps peak_kb[0] at the process's high-water RSS (kB) until it exits."""
  status = f'/proc/{process.pid}/status'
  while process.poll() is None:
    try:
      with open(status, encoding='ascii') as f:
        for line in f:
          if line.startswith('VmHWM:'):
            peak_kb[0] = max(peak_kb[0], int(line.split()[1]))
    except (OSError, ValueError):
      pass  # exiting
    time.sleep(_RSS_POLL_SECONDS)


def _bulk(paths, base_path, workdir, name, batch_size):
  """(images/s of the Beam run, peak RSS in MB) of `python -m serving.bulk` over `paths`."""
  listing = os.path.join(workdir, f'{name}.txt')
  with open(listing, 'w', encoding='utf-8') as f:
    f.write('\n'.join(paths) + '\n')
  output = os.path.join(workdir, f'{name}-out')
  process = subprocess.Popen(
      [sys.executable, '-m', 'serving.bulk', '--input', listing, '--model', base_path, '--output', output,
       '--batch_size', str(batch_size), '--log_file', os.path.join(workdir, f'{name}.log')],
      cwd=_REPO, stderr=subprocess.PIPE, text=True)
  peak_kb = [0]
  watcher = threading.Thread(target=_watch_peak_rss, args=(process, peak_kb), daemon=True)
  watcher.start()
  terminal = process.stderr.read()
  process.wait()
  watcher.join()
  sys.stderr.write(terminal)
  summary = _SUMMARY.search(terminal)
  if process.returncode or not summary:
    raise SystemExit(f'error: the bulk job over {len(paths)} images failed: {terminal.strip()}')
  captioned, rejected, seconds = int(summary[1]), int(summary[2]), float(summary[3])
  written = sum(1 for _ in inputs.read_lines(inputs.output_files(output, inputs.CAPTIONS_PREFIX)))
  if (captioned, rejected, written) != (len(paths), 0, len(paths)):
    raise SystemExit(f'error: the bulk job captioned {captioned} ({written} lines), rejected {rejected} '
                     f'of {len(paths)} images')
  return len(paths) / seconds, peak_kb[0] / 1024


def _bare_loop(version_dir, paths, batch_size):
  """Images/s of reading the files and calling the serving signature in-process, a batch at a time."""
  signature = tf.saved_model.load(version_dir).signatures[names.CAPTION_SIGNATURE]

  def call(batch):
    encoded = []
    for path in batch:
      with open(path, 'rb') as f:
        encoded.append(f.read())
    signature(**{names.IMAGES_INPUT: tf.constant(encoded)})[names.CAPTION_OUTPUT].numpy()

  call(paths[:batch_size])  # the first call traces and allocates
  start = time.perf_counter()
  for begin in range(0, len(paths), batch_size):
    call(paths[begin:begin + batch_size])
  return len(paths) / (time.perf_counter() - start)


def _server(base_path, paths):
  """{concurrent clients: images/s} of the local server driven by its client over `paths` each time."""
  rates = {}
  with server_lib.LocalModelServer(base_path, port=0) as server:
    target = f'127.0.0.1:{server.port}'

    def run_client(share):
      with client_lib.CaptionClient(target, server.manager.model_name, timeout_s=3600) as client:
        return sum(1 for _ in client.caption_files(share))

    run_client(paths[:4])  # the first call of this server's model
    for clients in _CLIENT_CONCURRENCY:
      shares = [paths[i::clients] for i in range(clients)]
      start = time.perf_counter()
      with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        done = sum(pool.map(run_client, shares))
      rates[clients] = done / (time.perf_counter() - start)
  return rates


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--num_images', type=int, default=20_000, help='Images of the large bulk run (default %(default)s).')
  parser.add_argument('--rss_images', type=int, default=5_000,
                      help='Images of the small bulk run, for the peak RSS comparison (default %(default)s).')
  parser.add_argument('--sample', type=int, default=128,
                      help='Images per server concurrency and for the bare loop (default %(default)s).')
  parser.add_argument('--batch_size', type=int, default=handler_lib.DEFAULT_BATCH_SIZE,
                      help='Images per call of the bulk job and the bare loop (default %(default)s).')
  parser.add_argument('--model_base_path', help='A pushed <serving_dir>/captioner (default: the stand-in).')
  parser.add_argument('--precision', choices=config_lib.PRECISIONS, default=config_lib.AUTO_PRECISION,
                      help="The stand-in backbone's precision (default %(default)s: this machine's).")
  args = parser.parse_args()
  if not 0 < args.rss_images <= args.num_images or args.sample > args.num_images:
    parser.error('need 0 < --rss_images <= --num_images and --sample <= --num_images')

  precision = precision_lib.resolve(args.precision)
  with tempfile.TemporaryDirectory(prefix='bulk_bench_') as tmp:
    base_path = args.model_base_path
    if base_path is None:
      base_path = os.path.join(tmp, 'serving', names.MODEL_NAME)
      tiny_model.export_tiny_model(os.path.join(base_path, '1'), image_size=_STAND_IN_IMAGE_SIZE,
                                   pooling=_STAND_IN_POOLING, precision=precision)
    versions = servables.list_versions(base_path)
    if not versions:
      parser.error(f'no model version under {base_path}')
    version_dir = os.path.join(base_path, str(versions[-1]))
    paths = _write_jpegs(os.path.join(tmp, 'photos'), args.num_images)
    sample = paths[:args.sample]

    bare_before, server_before = _bare_loop(version_dir, sample, args.batch_size), _server(base_path, sample)
    small_rate, small_rss = _bulk(paths[:args.rss_images], base_path, tmp, 'small', args.batch_size)
    large_rate, large_rss = _bulk(paths, base_path, tmp, 'large', args.batch_size)
    bare_after, server_after = _bare_loop(version_dir, sample, args.batch_size), _server(base_path, sample)
  bare = (bare_before + bare_after) / 2
  server = {clients: (server_before[clients] + server_after[clients]) / 2 for clients in server_before}

  best_clients = max(server, key=server.get)
  print(json.dumps({
      'model': base_path if args.model_base_path else
               f'stand-in: testing.tiny_model at {_STAND_IN_IMAGE_SIZE} px VGG16 {_STAND_IN_POOLING} in {precision}, '
               'random weights',
      'jpeg_size': list(real_scale.JPEG_SIZE),
      'cores': multiprocessing.cpu_count(),
      'batch_size': args.batch_size,
      'bulk_images': args.num_images,
      'bulk_images_per_second': round(large_rate, 2),
      'bulk_small_images': args.rss_images,
      'bulk_small_images_per_second': round(small_rate, 2),
      'sample_images': args.sample,
      'bare_loop_images_per_second': round(bare, 2),
      'bare_loop_images_per_second_before_and_after': [round(bare_before, 2), round(bare_after, 2)],
      'server_images_per_second_by_clients': {str(k): round(v, 2) for k, v in server.items()},
      'server_best_clients': best_clients,
      'server_best_images_per_second': round(server[best_clients], 2),
      'ratio_bulk_to_bare_loop': round(large_rate / bare, 3),
      'ratio_bulk_to_server': round(large_rate / server[best_clients], 3),
      f'bulk_peak_rss_mb_at_{args.rss_images}': round(small_rss, 1),
      f'bulk_peak_rss_mb_at_{args.num_images}': round(large_rss, 1),
      'ratio_peak_rss_large_to_small': round(large_rss / small_rss, 3),
  }))


if __name__ == '__main__':
  main()
