"""Backbone passes and wall time of a first run and an --epochs-only rerun, as one JSON line.

A Flickr8k-size stand-in: the shapes generator's scenes and five captions per
image, each re-encoded as a `--jpeg_width` x `--jpeg_height` JPEG (Flickr8k's
typical 500x375 by default), `--num_images` of them (8,000 is Flickr8k's size).
The local runner runs the whole pipeline on it twice in one output folder:
first with `--epochs E`, then with `--epochs E+1` and nothing else changed.

From ML Metadata (the runs' executions and their output artifacts) it prints,
per run: the ImageFeatureGen's state (COMPLETE or CACHED), its backbone passes
(Beam's RunInference counter, kept on its artifact) and its parity sample's
(images re-encoded by parity.check_parity), the evaluator's and the
gallery's backbone passes (every image of a model captioned from bytes; none
for a model captioned from the cached features), their sum and the wall time.

Then speed, on the same images (every split of the run's examples):
  * `pipeline_feature_pass_images_per_second`: the first run's pass count over
    its Beam pass's wall time (multi-process DirectRunner, worker start-up
    and model loading included, on a shared machine);
  * `feature_pass_images_per_second`: the ImageFeatureGen executor run again
    in this process (in-process DirectRunner, one worker), its Beam pass timed;
  * `bare_predict_images_per_second`: a loop of `model.predict` over the same
    images, batches of the same size, decoding included as in the feature
    pass, timed once before and once after the feature pass (mean), so that
    load which comes and goes on a shared host hits both;
and `ratio_feature_pass_to_bare_predict` of the last two.

Usage: .venv/bin/python -m bench.features [--num_images 8000] [--image_size 64]
       [--epochs 1] [--jpeg_width 500] [--jpeg_height 375]
--image_size is the model's input side (a random VGG16, conv block flattened);
224 with --pooling fc2 is the paper's encoder, about 3 images/s on 2 cores.
"""
import argparse
import contextlib
import json
import multiprocessing
import os
import sys
import tempfile
import time
from typing import Dict, Set

from PIL import Image
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2
from tfx.types import artifact_utils
from tfx.types import standard_artifacts

from components import artifacts
from components import config as config_lib
from components import names
from components import records
from components.encoder import features_artifact
from components.encoder import backbone_handler
from components.ingestion import flickr8k
from components.ingestion import shapes_dataset
from pipeline.local import runner as local_runner
from testing import feature_pass
from testing import metadata
from testing import transformed_data

_STATES = {metadata_store_pb2.Execution.COMPLETE: 'COMPLETE', metadata_store_pb2.Execution.CACHED: 'CACHED'}


def _stand_in(data_dir: str, num_images: int, width: int, height: int) -> None:
  """Generates the shapes dataset and re-encodes every image as a width x height JPEG."""
  shapes_dataset.generate(data_dir, num_images=num_images, image_size=64)
  image_dir = os.path.join(data_dir, flickr8k.OFFICIAL_IMAGE_DIRS[0])
  for name in os.listdir(image_dir):
    path = os.path.join(image_dir, name)
    with Image.open(path) as image:
      resized = image.convert('RGB').resize((width, height), Image.BILINEAR)
    resized.save(path, format='JPEG', quality=90)


def _run_figures(store, new_ids: Set[int], seconds: float) -> Dict:
  """Backbone passes of the executions in `new_ids` (one pipeline run)."""
  figures = {'seconds': round(seconds, 1)}
  passes = 0
  for execution in store.get_executions_by_id(sorted(new_ids)):
    node = metadata.node_id(store, execution)
    if node == names.FEATURE_GEN:
      figures['feature_gen_state'] = _STATES.get(execution.last_known_state, str(execution.last_known_state))
      for name, key in ((names.BACKBONE_PASSES_PROPERTY, 'feature_pass_backbone_passes'),
                        (features_artifact.PARITY_PASSES_PROPERTY, 'feature_pass_parity_passes')):
        figures[key] = metadata.output_count(store, execution, name)
        passes += figures[key]
    elif node in (names.CAPTION_EVALUATOR, names.DEMO_GALLERY) and (
        execution.last_known_state == metadata_store_pb2.Execution.COMPLETE):
      figures[f'{node}_backbone_passes'] = metadata.output_count(store, execution, names.BACKBONE_PASSES_PROPERTY)
      passes += figures[f'{node}_backbone_passes']
  figures['backbone_passes'] = passes
  return figures


def _config(args) -> config_lib.EncoderConfig:
  """The encoder both runs use: a random VGG16 at --image_size with --pooling."""
  return config_lib.EncoderConfig(backbone_weights=None, image_size=args.image_size, pooling=args.pooling)


def _run(output_dir: str, data_dir: str, args, epochs: int) -> float:
  config = _config(args)
  flags = ['--output_dir', output_dir, '--data_dir', data_dir, '--backbone_weights', 'none',
           '--pooling', config.pooling, '--image_size', str(config.image_size),
           '--epochs', str(epochs),
           '--lstm_units', '64']
  start = time.perf_counter()
  with contextlib.redirect_stdout(sys.stderr):  # the run summary; stdout holds the JSON only
    if local_runner.main(flags) != 0:
      raise SystemExit('the pipeline run failed')
  return time.perf_counter() - start


def _speed(examples_uri: str, image_features_uri: str, config: config_lib.EncoderConfig, work_dir: str) -> Dict:
  examples = _examples(examples_uri)
  images = [record.image for split in names.SPLITS
            for record in records.iter_split_examples(examples, split)]
  backbone = features_artifact.load_backbone(image_features_uri)
  bare_before = feature_pass.predict_rate(backbone, images, backbone_handler.DEFAULT_BATCH_SIZE)
  rerun = transformed_data.build_image_features(examples_uri, work_dir, config)
  bare_after = feature_pass.predict_rate(backbone, images, backbone_handler.DEFAULT_BATCH_SIZE)
  pass_rate = _rate(rerun.mlmd_artifact)
  bare = (bare_before + bare_after) / 2
  return {
      'feature_pass_images_per_second': round(pass_rate, 2),
      'bare_predict_images_per_second': round(bare, 2),
      'ratio_feature_pass_to_bare_predict': round(pass_rate / bare, 2),
  }


def _rate(image_features) -> float:
  """A feature pass's images/s, from its artifact's custom properties."""
  properties = image_features.custom_properties
  return (properties[names.BACKBONE_PASSES_PROPERTY].int_value
          / properties[features_artifact.FEATURE_PASS_SECONDS_PROPERTY].double_value)


def _examples(uri: str) -> standard_artifacts.Examples:
  examples = standard_artifacts.Examples()
  examples.uri = uri
  examples.split_names = artifact_utils.encode_split_names(list(names.SPLITS))
  return examples


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--num_images', type=int, default=8000, help='Images (default %(default)s, Flickr8k).')
  parser.add_argument('--jpeg_width', type=int, default=500)
  parser.add_argument('--jpeg_height', type=int, default=375)
  parser.add_argument('--image_size', type=int, default=64, help='Model input side (default %(default)s).')
  parser.add_argument('--pooling', default='flatten', choices=config_lib.POOLINGS)
  parser.add_argument('--epochs', type=int, default=1, help='First run; the rerun uses one more.')
  args = parser.parse_args()

  with tempfile.TemporaryDirectory(prefix='features_bench_') as tmp:
    data_dir = os.path.join(tmp, 'data')
    _stand_in(data_dir, args.num_images, args.jpeg_width, args.jpeg_height)
    output_dir = os.path.join(tmp, 'run')
    metadata_path = os.path.join(output_dir, 'metadata.sqlite')
    runs = []
    seen: Set[int] = set()
    for epochs in (args.epochs, args.epochs + 1):
      seconds = _run(output_dir, data_dir, args, epochs)
      store = metadata_store.MetadataStore(metadata_store_pb2.ConnectionConfig(
          sqlite=metadata_store_pb2.SqliteMetadataSourceConfig(filename_uri=metadata_path)))
      ids = {e.id for e in store.get_executions()} - seen
      runs.append(_run_figures(store, ids, seconds))
      seen |= ids
    [features_output] = store.get_artifacts_by_type(artifacts.ImageFeatures.TYPE_NAME)
    [examples_artifact] = [a for a in store.get_artifacts_by_type('Examples')
                           if names.EXAMPLE_GEN in a.uri]
    speed = _speed(examples_artifact.uri, features_output.uri, _config(args), os.path.join(tmp, 'rerun'))

  print(json.dumps({
      'num_images': args.num_images,
      'jpeg_size': f'{args.jpeg_width}x{args.jpeg_height}',
      'image_size': args.image_size,
      'pooling': args.pooling,
      'cores': multiprocessing.cpu_count(),
      'first_run': runs[0],
      'rerun_epochs_only': runs[1],
      'pipeline_feature_pass_images_per_second': round(_rate(features_output), 2),
      **speed,
  }))


if __name__ == '__main__':
  main()
