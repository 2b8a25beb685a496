"""Ingestion throughput and memory: the ExampleGen against a plain decode loop.

Generates a shapes dataset at a real dataset's image size into a temporary
folder (timed apart: generation is not ingestion), then, in the same run and
on the same files:
  * runs the ExampleGen executor (text pass, image header + decode check,
    tf.Example serialisation, gzipped TFRecord writing) on Beam's DirectRunner
    with --workers workers, start-up included, as the local runner runs it
    (--mode threads: threads of one process, pipeline/beam_args.py says why;
    --mode processes: worker processes, as Beam-backed components run
    elsewhere), sampling the resident memory (RSS) of the driver process and
    of each worker process every 0.2 s;
  * the same on the first quarter of the images (a folder generated with
    num_images / 4, whose images are the same bytes), so the memory peaks can
    be compared across dataset sizes: flat memory gives a ratio near 1;
  * a single-process loop that only reads and decodes every image with
    tf.io.decode_image, as the ExampleGen's check does;
and prints one JSON line: images/s of both and their ratio (> 1: the Beam
executor is faster than the loop); the ExampleGen's marginal images/s (the
extra images of the full run over the extra time, i.e. without the fixed
start-up of Beam's worker processes) and its ratio to the loop; the peak RSS
of the driver and of the largest worker at both sizes; and how long
generation took.

Defaults: --layout coco (MS COCO's image size, 640x480 JPEG) with 20,000
images; --layout official uses Flickr8k's (500x375). On a shared machine the
figures are noisy: other processes compete for the same cores.

Usage: .venv/bin/python -m bench.ingestion [--layout coco] [--num_images 20000]
           [--workers 2] [--mode threads] [--processes 2]
"""

import argparse
import json
import multiprocessing
import os
import tempfile
import threading
import time
from typing import Dict, List

import psutil
import tensorflow as tf

from components.ingestion import shapes_dataset
from pipeline import beam_args
from testing import executors
from testing import timing

# Width x height of each benchmarked layout's real images.
# How the DirectRunner runs the ExampleGen's workers.
_MODES = {'threads': beam_args.direct_thread_beam_args, 'processes': beam_args.direct_beam_args}
IMAGE_SIZES = {
    shapes_dataset.COCO: (640, 480),  # the most common MS COCO size
    shapes_dataset.OFFICIAL: (500, 375),  # the most common Flickr8k size
}
_SAMPLE_SECONDS = 0.2


class _PeakMemory:
  """Samples the RSS of this process and of its descendants in a thread."""

  def __init__(self):
    self.driver = 0
    self.worker = 0
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._sample, daemon=True)

  def _sample(self) -> None:
    me = psutil.Process()
    while not self._stop.is_set():
      self.driver = max(self.driver, me.memory_info().rss)
      for child in me.children(recursive=True):
        try:
          self.worker = max(self.worker, child.memory_info().rss)
        except psutil.NoSuchProcess:
          pass
      self._stop.wait(_SAMPLE_SECONDS)

  def __enter__(self) -> '_PeakMemory':
    self._thread.start()
    return self

  def __exit__(self, *exc) -> None:
    self._stop.set()
    self._thread.join()


def _image_paths(data_dir: str) -> List[str]:
  paths = []
  for folder, _, files in os.walk(data_dir):
    paths.extend(os.path.join(folder, f) for f in files if f.endswith('.jpg'))
  return sorted(paths)


def _run_example_gen(data_dir: str, out_dir: str, options: List[str]) -> Dict[str, float]:
  with _PeakMemory() as memory:
    with timing.Stopwatch() as watch:
      _, report = executors.run_example_gen(data_dir, out_dir, beam_args=options)
  written = report.get_int_custom_property('written_images')
  if written != report.get_int_custom_property('input_images'):
    raise RuntimeError(f'ExampleGen rejected images of a clean dataset: {written} written')
  return {'seconds': watch.seconds, 'driver_rss_mb': memory.driver / 2**20,
          'worker_rss_mb': memory.worker / 2**20}


def _time_decode_loop(paths: List[str]) -> float:
  with open(paths[0], 'rb') as f:  # load the decoder before timing
    tf.io.decode_image(f.read(), channels=3, expand_animations=False)
  with timing.Stopwatch() as watch:
    for path in paths:
      with open(path, 'rb') as f:
        tf.io.decode_image(f.read(), channels=3, expand_animations=False)
  return watch.seconds


def _parse_args() -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--layout', choices=sorted(IMAGE_SIZES), default=shapes_dataset.COCO,
                      help='Dataset layout and image size (default %(default)s).')
  parser.add_argument('--num_images', type=int, default=20000,
                      help='Images to generate, >= 400 (default %(default)s).')
  parser.add_argument('--workers', type=int, default=2,
                      help='Beam workers of the ExampleGen (default %(default)s).')
  parser.add_argument('--mode', choices=sorted(_MODES), default='threads',
                      help='Beam workers as threads (the local runner) or processes '
                           '(default %(default)s).')
  parser.add_argument('--processes', type=int, default=multiprocessing.cpu_count(),
                      help='Processes generating the images (default: one per core).')
  args = parser.parse_args()
  if args.num_images < 400:
    parser.error('--num_images must be at least 400')
  return args


def _figures(args: argparse.Namespace, full: Dict, small: Dict, loop_seconds: float) -> Dict:
  """The ExampleGen's rates against the decode loop's, and its memory on the full dataset
  against a quarter of it (flat memory: ratios near 1)."""
  quarter = args.num_images // 4
  beam_rate = args.num_images / full['seconds']
  loop_rate = args.num_images / loop_seconds
  # The images the full run processed beyond the quarter run, over the extra
  # time they took: the ExampleGen's rate without its fixed start-up cost.
  marginal_rate = (args.num_images - quarter) / (full['seconds'] - small['seconds'])
  return {
      'example_gen_seconds': round(full['seconds'], 1),
      'decode_loop_seconds': round(loop_seconds, 1),
      'example_gen_images_per_second': round(beam_rate, 1),
      'decode_loop_images_per_second': round(loop_rate, 1),
      'ratio_example_gen_to_loop': round(beam_rate / loop_rate, 3),
      'quarter_example_gen_seconds': round(small['seconds'], 1),
      'marginal_example_gen_images_per_second': round(marginal_rate, 1),
      'ratio_marginal_example_gen_to_loop': round(marginal_rate / loop_rate, 3),
      'peak_driver_rss_mb': round(full['driver_rss_mb']),
      'peak_worker_rss_mb': round(full['worker_rss_mb']),
      'quarter_peak_driver_rss_mb': round(small['driver_rss_mb']),
      'quarter_peak_worker_rss_mb': round(small['worker_rss_mb']),
      'ratio_driver_rss_full_to_quarter': round(full['driver_rss_mb'] / small['driver_rss_mb'], 3),
      # No worker process in threads mode: null.
      'ratio_worker_rss_full_to_quarter': (round(full['worker_rss_mb'] / small['worker_rss_mb'], 3)
                                           if small['worker_rss_mb'] else None),
  }


def main() -> None:
  args = _parse_args()
  width, height = IMAGE_SIZES[args.layout]
  with tempfile.TemporaryDirectory(prefix='ingestion_bench_') as tmp:
    start = time.perf_counter()
    for name, num_images in (('full', args.num_images), ('quarter', args.num_images // 4)):
      shapes_dataset.generate(os.path.join(tmp, name), num_images, width, layout=args.layout,
                              image_height=height, processes=args.processes)
    generation_seconds = time.perf_counter() - start
    paths = _image_paths(os.path.join(tmp, 'full'))
    megabytes = sum(os.path.getsize(p) for p in paths) / 2**20
    options = _MODES[args.mode](args.workers)
    small = _run_example_gen(os.path.join(tmp, 'quarter'), os.path.join(tmp, 'out_quarter'),
                             options)
    full = _run_example_gen(os.path.join(tmp, 'full'), os.path.join(tmp, 'out_full'), options)
    loop_seconds = _time_decode_loop(paths)
  print(json.dumps({
      'layout': args.layout,
      'images': args.num_images,
      'image_size': f'{width}x{height}',
      'dataset_mb': round(megabytes, 1),
      'cores': multiprocessing.cpu_count(),
      'workers': args.workers,
      'mode': args.mode,
      'generation_seconds': round(generation_seconds, 1),
      **_figures(args, full, small, loop_seconds),
  }))


if __name__ == '__main__':
  main()
