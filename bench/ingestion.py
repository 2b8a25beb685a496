"""Ingestion throughput: Flickr8kExampleGen against a plain Python loop.

Generates a shapes dataset (official Flickr8k layout) into a temporary folder,
then, in the same run and on the same files, times
  * the Flickr8kExampleGen executor (text pass, image read + decode check,
    tf.Example serialisation, gzipped TFRecord writing) on Beam's DirectRunner
    in multi-processing mode with one worker per core, start-up included, and
  * a single-process Python loop that only reads and decodes every image with
    tf.io.decode_image,
and prints one JSON line: images/s of both and their ratio (> 1: the Beam
executor is faster than the loop). On a small machine the executor's fixed
cost (Beam worker processes importing TensorFlow, ~20 stages, TFX packaging
itself for the workers) dominates at 2,000 images; its marginal throughput
shows with a larger --num_images.

Usage: .venv/bin/python -m bench.ingestion [--num_images 2000] [--image_size 64]
"""

import argparse
import json
import multiprocessing
import os
import tempfile

import tensorflow as tf

from components.ingestion import shapes_dataset
from testing import executors
from testing import timing


def _time_example_gen(data_dir: str, out_dir: str) -> float:
  with timing.Stopwatch() as watch:
    _, report = executors.run_example_gen(data_dir, out_dir, beam_args=[
        '--direct_running_mode=multi_processing', '--direct_num_workers=0'])
  written = report.get_int_custom_property('written_images')
  if written != report.get_int_custom_property('input_images'):
    raise RuntimeError(f'ExampleGen rejected images of a clean dataset: '
                       f'{written} written')
  return watch.seconds


def _time_python_loop(image_dir: str) -> float:
  paths = sorted(os.path.join(image_dir, n) for n in os.listdir(image_dir))
  with open(paths[0], 'rb') as f:  # load the decoder before timing
    tf.io.decode_image(f.read(), channels=3, expand_animations=False)
  with timing.Stopwatch() as watch:
    for path in paths:
      with open(path, 'rb') as f:
        tf.io.decode_image(f.read(), channels=3, expand_animations=False)
  return watch.seconds


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--num_images', type=int, default=2000,
                      help='Images to generate, >= 2000 (default %(default)s).')
  parser.add_argument('--image_size', type=int, default=64,
                      help='Image side in pixels (default %(default)s).')
  args = parser.parse_args()
  if args.num_images < 2000:
    parser.error('--num_images must be at least 2000')

  with tempfile.TemporaryDirectory(prefix='ingestion_bench_') as tmp:
    data_dir = os.path.join(tmp, 'data')
    shapes_dataset.generate(data_dir, args.num_images, args.image_size)
    beam_seconds = _time_example_gen(data_dir, os.path.join(tmp, 'out'))
    loop_seconds = _time_python_loop(
        os.path.join(data_dir, shapes_dataset.OFFICIAL_IMAGE_DIR))

  beam_rate = args.num_images / beam_seconds
  loop_rate = args.num_images / loop_seconds
  print(json.dumps({
      'images': args.num_images,
      'image_size': args.image_size,
      'cores': multiprocessing.cpu_count(),
      'example_gen_seconds': round(beam_seconds, 2),
      'python_loop_seconds': round(loop_seconds, 2),
      'example_gen_images_per_second': round(beam_rate, 1),
      'python_loop_images_per_second': round(loop_rate, 1),
      'ratio_example_gen_to_loop': timing.ratio(beam_rate, loop_rate),
  }))


if __name__ == '__main__':
  main()
