"""Flickr8k at its real size through ingestion and the feature pass: nothing lost, and how fast.

Generates a folder in the official Flickr8k layout with Flickr8k's numbers:
`--num_images` ids (default 8,091, all in Flickr8k.token.txt) as 500x375
JPEGs (the shapes generator's scenes), and split files holding 6000:1000:1000
of every 8,091 ids, so that the rest are in no split, as in the real dataset
(the ExampleGen rejects them, reconciled). Then, as the local runner runs
them (pipeline/beam_args.py: the ExampleGen on DirectRunner threads, the
feature pass in-process; `--mode processes` runs the pass on worker processes
instead, for comparison):
  * the ExampleGen executor on the folder;
  * the ImageFeatureGen executor on its examples: the paper's encoder, VGG16's
    fc2 at 224 px, with random weights (none can be downloaded here), in
    `--precision` (default `auto`, resolved as the runners resolve it);
  * bare single-process `model.predict` loops over `--sample` train images,
    decoding included: with the pass's encoder in its precision and in
    float32, each timed before and after the pass (mean), so that load which
    comes and goes hits all of them.
Prints one JSON line: per split the images the pass read (records in the
examples) and the feature vectors it wrote (ids in its files, read back),
which must be equal; the pass's images/s (its Beam pass, model loading
included) against its precision's bare loop and against float32's;
ingestion and generation seconds.

Usage: .venv/bin/python -m bench.real_scale [--num_images 8091] [--sample 128]
           [--mode in_process] [--workers 2] [--precision auto]
At ~5 images/s (float32, 2 cores) the full size takes about 30 minutes; in
bfloat16 on a CPU with AMX-BF16 about a quarter of that.
"""
import argparse
import dataclasses
import json
import multiprocessing
import os
import tempfile
from typing import Dict

from tfx.types import artifact_utils

from components import artifacts
from components import config as config_lib
from components import features
from components import names
from components import records
from components.encoder import features_artifact
from components.encoder import backbone_handler
from components.encoder import feature_gen
from components.encoder import image_features
from components.encoder import precision as precision_lib
from components.ingestion import flickr8k
from components.ingestion import shapes_dataset
from pipeline import beam_args
from testing import executors
from testing import feature_pass
from testing import timing

FLICKR8K_IDS = 8091
# Ids per split file out of every FLICKR8K_IDS (the official split files).
FLICKR8K_SPLIT_IDS = {features.TRAIN_SPLIT: 6000, features.EVAL_SPLIT: 1000, features.DEMO_SPLIT: 1000}
JPEG_SIZE = (500, 375)
_MODES = {'in_process': lambda workers: beam_args.direct_node_beam_args(workers)[names.FEATURE_GEN],
          'processes': beam_args.direct_beam_args}


def generate_flickr8k(data_dir: str, num_images: int) -> None:
  """The shapes dataset in the official layout at Flickr8k's image size, its
  split files cut to Flickr8k's proportions (module docstring)."""
  shapes_dataset.generate(data_dir, num_images=num_images, image_size=JPEG_SIZE[0],
                          image_height=JPEG_SIZE[1], layout=shapes_dataset.OFFICIAL,
                          processes=multiprocessing.cpu_count())
  for split, file_name in flickr8k.SPLIT_FILES.items():
    path = os.path.join(data_dir, file_name)
    with open(path, encoding='utf-8') as f:
      ids = f.read().splitlines()
    with open(path, 'w', encoding='utf-8', newline='\n') as f:
      f.writelines(line + '\n' for line in ids[:num_images * FLICKR8K_SPLIT_IDS[split] // FLICKR8K_IDS])


_ENCODER = config_lib.EncoderConfig(backbone_weights=None, image_size=224, pooling='fc2')


def _feature_pass(examples, out_dir: str, options, precision: str) -> artifacts.ImageFeatures:
  encoder = dataclasses.replace(_ENCODER, precision=precision)
  return executors.run_executor(
      feature_gen.ImageFeatureGen.EXECUTOR_SPEC.executor_class(executors.beam_context(options)),
      {'examples': examples}, {features.IMAGE_FEATURES_KEY: artifacts.ImageFeatures},
      {key: value for key, value in feature_gen.parameters(encoder, seed=0).items() if value is not None},
      out_dir)[features.IMAGE_FEATURES_KEY]


def _bare_rate(backbones, sample) -> Dict[str, float]:
  """precision -> images/s of a bare predict loop over `sample` with that backbone."""
  return {precision: feature_pass.predict_rate(backbone, sample, backbone_handler.DEFAULT_BATCH_SIZE)
          for precision, backbone in backbones.items()}


def _counts(examples, features_uri: str) -> Dict[str, Dict[str, int]]:
  """Per split: records the pass read and feature vectors it wrote (ids read back)."""
  return {split: {
      'read': len(features_artifact.image_ids(records.split_files(examples, split))),
      'written': len(features_artifact.image_ids(features_artifact.feature_files(features_uri, split)))}
      for split in artifact_utils.decode_split_names(examples.split_names)}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--num_images', type=int, default=FLICKR8K_IDS,
                      help='Image ids (default %(default)s, Flickr8k).')
  parser.add_argument('--sample', type=int, default=128, help='Images of the bare predict loop.')
  parser.add_argument('--mode', choices=sorted(_MODES), default='in_process',
                      help='How the DirectRunner runs the feature pass (default: as the local runner).')
  parser.add_argument('--workers', type=int, default=2, help='Beam workers (threads or processes).')
  parser.add_argument('--precision', choices=config_lib.PRECISIONS, default='auto',
                      help="The feature pass's precision (default %(default)s: as the runners resolve it).")
  args = parser.parse_args()
  precision = precision_lib.resolve(args.precision)

  with tempfile.TemporaryDirectory(prefix='real_scale_bench_') as tmp:
    data_dir = os.path.join(tmp, 'Flickr8k')
    with timing.Stopwatch() as generation:
      generate_flickr8k(data_dir, args.num_images)
    with timing.Stopwatch() as ingestion:
      examples, _ = executors.run_example_gen(
          data_dir, os.path.join(tmp, 'ingestion'),
          beam_args=beam_args.direct_node_beam_args(args.workers)[names.EXAMPLE_GEN])
    sample = [example.image for example, _ in zip(records.iter_split_examples(examples, 'train'),
                                                   range(args.sample))]
    # The pass's encoder as the pass builds it (random weights), and in float32.
    backbones = {p: image_features.build_feature_extractor(dataclasses.replace(_ENCODER, precision=p))
                 for p in {precision, precision_lib.FLOAT32}}
    before = _bare_rate(backbones, sample)
    image_features_artifact = _feature_pass(examples, os.path.join(tmp, 'features'),
                                            _MODES[args.mode](args.workers), precision)
    counts = _counts(examples, image_features_artifact.uri)
    after = _bare_rate(backbones, sample)
  passes = image_features_artifact.get_int_custom_property(names.BACKBONE_PASSES_PROPERTY)
  rate = passes / image_features_artifact.mlmd_artifact.custom_properties[
      features_artifact.FEATURE_PASS_SECONDS_PROPERTY].double_value
  bare = (before[precision] + after[precision]) / 2
  float32 = (before[precision_lib.FLOAT32] + after[precision_lib.FLOAT32]) / 2
  print(json.dumps({
      'num_images': args.num_images, 'jpeg_size': '%dx%d' % JPEG_SIZE, 'encoder': 'vgg16 fc2 224',
      'precision': precision, 'mode': args.mode, 'workers': args.workers, 'cores': multiprocessing.cpu_count(),
      'per_split': counts,
      'all_written': all(c['read'] == c['written'] for c in counts.values()),
      'feature_pass_images_per_second': round(rate, 2),
      'bare_predict_images_per_second': round(bare, 2),
      'ratio_feature_pass_to_bare_predict': round(rate / bare, 2),
      'float32_bare_predict_images_per_second': round(float32, 2),
      'ratio_feature_pass_to_float32_bare_predict': round(rate / float32, 2),
      'ingestion_seconds': round(ingestion.seconds, 1),
      'generation_seconds': round(generation.seconds, 1),
  }))


if __name__ == '__main__':
  main()
