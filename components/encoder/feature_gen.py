"""ImageFeatureGen: the frozen backbone, run once per image of every split, as an artifact.

The backbone is frozen, so without augmentation its output is a pure function
of the image. Computing it inside the Trainer meant computing it again in every
run that retrains (a new `--epochs` recomputed every feature: 50 minutes of
VGG16 on Flickr8k on 2 cores), and again in the evaluator and the gallery.
Here it runs once, in Beam (RunInference: model loading per worker, batching,
metrics; Dataflow fans it out over workers), and its inputs are the examples
and the encoder settings only, so TFX's cache reuses it across every rerun that
changes only decoder or training settings.

Output `image_features` (components.artifacts.ImageFeatures), laid out as
components/encoder/features_artifact.py says: the saved backbone, its
EncoderInfo, the features of every split. After the pass, the parity check
(components/encoder/parity.py) re-encodes a sample as the serving graph does.

The pipeline hands the executor one config_lib.EncoderConfig as a JSON
parameter (`parameters`), so the encoder's settings have one shape from the
flags to the artifact. Hardware choices are made here, on the worker that runs
the backbone: 'auto' precision travels unresolved, and the precision that
computed the features is recorded in the artifact's EncoderInfo, which every
reader of the features (Trainer, evaluator, gallery) takes it from.

Nothing lost: before the Beam pass the image ids of every split are read
from the examples (only that feature, in C++); after it, the ids in the
written feature files must be exactly those, once each, or the component
fails with MissingFeaturesError naming the split and the ids
(features_artifact.reconcile).

Progress: the pass reports images done of the total through
components/progress.py (`captioner.progress`): a bar on a terminal, a line
with images/s and time left every 30 s in a file or a pod's log. The local runner runs
this component's Beam work in its own process (components/beam_direct.py says
why), so those records reach the terminal; on a runner with remote workers
each worker reports its own share into its log.
"""
import dataclasses
import hashlib
import itertools
import logging
import os
import time
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import apache_beam as beam
from apache_beam.ml.inference import base as inference_base
import tf_keras as keras
import tensorflow as tf
from tfx import v1 as tfx
from tfx.types import artifact_utils

from components import config as config_lib
from components import names
from components import progress
from components import records
from components.artifacts import ImageFeatures
from components.encoder import backbone_handler
from components.encoder import features_artifact
from components.encoder import image_features as image_features_lib
from components.encoder import parity
from components.encoder import precision as precision_lib

# The progress bar's description on the console.
PROGRESS_DESCRIPTION = 'feature pass'


class _Progress(beam.DoFn):
  """Passes elements through, reporting images done of `total` (components/progress.py)."""

  def __init__(self, total: int):
    self._total = total

  def setup(self):
    self._tracker = progress.Tracker(self._total, PROGRESS_DESCRIPTION)

  def process(self, element):
    self._tracker.advance()
    yield element


def _keyed_image(file_and_record: Tuple[str, bytes], split_of_dir: Mapping[str, str]
                 ) -> Tuple[Tuple[str, str], bytes]:
  """(ExampleGen record file, record) -> ((split, image id), encoded image)."""
  path, serialized = file_and_record
  example = records.parse_image_example(serialized, where=path)
  return (split_of_dir[os.path.dirname(path)], example.image_id), example.image


def weights_file_digest(backbone_weights: Optional[str]) -> Optional[str]:
  """sha256 of a local weights file, None for 'imagenet' (Keras' fixed download) or random weights.

  The runners compute it and pass it to ImageFeatureGen as
  `backbone_weights_sha256`, so that TFX's cache keys the features on the
  file's content: a file replaced at the same path recomputes them.
  """
  if backbone_weights in (None, 'imagenet'):
    return None
  digest = hashlib.sha256()
  with tf.io.gfile.GFile(backbone_weights, 'rb') as f:
    for block in iter(lambda: f.read(1 << 24), b''):
      digest.update(block)
  return digest.hexdigest()


def parameters(encoder: config_lib.EncoderConfig, seed: int,
               backbone_weights_sha256: Optional[str] = None) -> Dict[str, Any]:
  """The ImageFeatureGen's parameters for `encoder`, as the pipeline passes them.

  Pure: nothing is resolved or read here. `seed` initialises random backbone
  weights (TrainerConfig.seed), so two runs of one command train on the same
  features; `backbone_weights_sha256` is `weights_file_digest`'s, computed by
  the runner.
  """
  return dict(encoder=config_lib.to_json(encoder), seed=seed,
              backbone_weights_sha256=backbone_weights_sha256)


def build_encoder(encoder: config_lib.EncoderConfig
                  ) -> Tuple[keras.Model, features_artifact.EncoderInfo]:
  """The frozen feature extractor for `encoder` (precision resolved), and its EncoderInfo."""
  extractor = image_features_lib.build_feature_extractor(encoder)
  return extractor, features_artifact.encoder_info(extractor, encoder)


def write_features(pipeline: beam.Pipeline, split_paths: Mapping[str, Sequence[str]],
                   handler: inference_base.ModelHandler, uri: str, total: int,
                   feature_dtype: str = 'float32') -> None:
  """Adds the feature pass to `pipeline`: every record of `split_paths`
  (split -> ExampleGen record files) through `handler`, written per split
  into `uri` as components/encoder/features_artifact.py lays out.

  One read over every split's files (one RunInference, so one model load per
  worker), keyed by (split, image id): the records stream from the files
  through the backbone into the writers, and no image bytes wait in the
  runner's buffers between stages (a Flatten of one read per split did that:
  the whole dataset's JPEGs in memory).

  Args:
    handler: runs a batch of encoded images, giving PredictionResults whose
      `inference` is the feature vector (BackboneHandler; tests pass others).
    total: images in `split_paths`, for the progress bar.
    feature_dtype: the dtype the records store the vectors in (EncoderInfo.feature_dtype).
  """
  splits = list(split_paths)
  split_of_dir = {os.path.dirname(path): split for split, paths in split_paths.items() for path in paths}
  vectors = (pipeline
             | 'ListExampleFiles' >> beam.Create(sorted(itertools.chain(*split_paths.values())))
             | 'ReadExamples' >> beam.io.ReadAllFromTFRecord(
                 compression_type=beam.io.filesystem.CompressionTypes.GZIP, with_filename=True)
             | 'Key' >> beam.Map(_keyed_image, split_of_dir)
             | 'RunBackbone' >> inference_base.RunInference(inference_base.KeyedModelHandler(handler))
             | 'Progress' >> beam.ParDo(_Progress(total)))
  per_split = vectors | 'BySplit' >> beam.Partition(
      lambda keyed, _: splits.index(keyed[0][0]), len(splits))
  for split, split_vectors in zip(splits, per_split):
    _ = (split_vectors
         | f'ToExample[{split}]' >> beam.MapTuple(
             lambda key, result: features_artifact.feature_example(key[1], result.inference,
                                                               feature_dtype))
         | f'Write[{split}]' >> beam.io.WriteToTFRecord(
             features_artifact.split_file_prefix(uri, split), file_name_suffix='.gz'))


def run_feature_pass(pipeline: beam.Pipeline, examples: tfx.types.standard_artifacts.Examples, uri: str,
                     batch_size: int) -> Tuple[int, float]:
  """Runs the Beam feature pass over every split of `examples` into `uri`,
  whose backbone is saved, and reconciles what it wrote with what it read.

  Returns:
    (images run through the backbone, seconds the Beam pass took).
  """
  splits = artifact_utils.decode_split_names(examples.split_names)
  split_paths = {split: records.split_files(examples, split) for split in splits}
  read = {split: features_artifact.image_ids(paths) for split, paths in split_paths.items()}
  handler = backbone_handler.BackboneHandler(features_artifact.backbone_dir(uri), batch_size=batch_size)
  write_features(pipeline, split_paths, handler, uri, sum(len(ids) for ids in read.values()),
                 features_artifact.artifact_encoder_info(uri).feature_dtype)
  start = time.monotonic()
  result = pipeline.run()
  result.wait_until_finish()
  seconds = time.monotonic() - start
  counters = result.metrics().query(
      beam.metrics.MetricsFilter().with_namespace(backbone_handler.METRICS_NAMESPACE)
      .with_name(backbone_handler.INFERENCE_COUNTER))['counters']
  counts = features_artifact.reconcile(uri, read)
  logging.info('Feature pass: features for every image read, per split %s.', counts)
  return int(sum(counter.committed for counter in counters)), seconds


@tfx.dsl.components.component(use_beam=True)
def ImageFeatureGen(
    examples: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Examples],
    image_features: tfx.dsl.components.OutputArtifact[ImageFeatures],
    encoder: tfx.dsl.components.Parameter[str],
    seed: tfx.dsl.components.Parameter[int],
    backbone_weights_sha256: tfx.dsl.components.Parameter[str] = None,
    batch_size: tfx.dsl.components.Parameter[int] = backbone_handler.DEFAULT_BATCH_SIZE,
    parity_sample: tfx.dsl.components.Parameter[int] = parity.DEFAULT_PARITY_SAMPLE,
    beam_pipeline: tfx.dsl.components.BeamComponentParameter[beam.Pipeline] = None,
) -> None:
  """Builds the frozen backbone, saves it, writes every split's features and checks their parity.

  Args:
    examples: ExampleGen output (components/records.py layout); every split.
    image_features: output (components/encoder/features_artifact.py layout).
    encoder: a config_lib.EncoderConfig as `config_lib.to_json` writes it;
      its precision may be 'auto', resolved here for this worker's hardware.
    seed: initialises random backbone weights.
    backbone_weights_sha256: the weights file's digest (None without a
      file), so that the cache tells weights files at the same path apart;
      checked here.
    batch_size: images per backbone call.
    parity_sample: images per split re-encoded by parity.check_parity.
    beam_pipeline: injected by TFX with the pipeline's Beam arguments.
  """
  config = config_lib.from_json(config_lib.EncoderConfig, encoder)
  if backbone_weights_sha256 != weights_file_digest(config.backbone_weights):
    raise ValueError(f'Backbone weights file {config.backbone_weights} changed after the pipeline '
                     f'was built (sha256 {backbone_weights_sha256} expected); build it again.')
  keras.utils.set_random_seed(seed)
  extractor, info = build_encoder(dataclasses.replace(
      config, image_size=config.input_size, precision=precision_lib.resolve(config.precision)))
  uri = image_features.uri
  features_artifact.save_backbone(extractor, features_artifact.backbone_dir(uri))
  del extractor  # the workers load the saved one: what they run is what the Trainer gets
  features_artifact.write_encoder_info(info, os.path.join(uri, names.ENCODER_FILE))
  logging.info('Feature pass with %s.', info)
  passes, seconds = run_feature_pass(beam_pipeline, examples, uri, batch_size)
  progress.logger.info('  feature pass: %d images through %s (%s) in %.1f s (%.1f images/s)',
                       passes, info.backbone, info.precision, seconds, passes / max(seconds, 1e-9))
  features_artifact.set_encoder_properties(image_features, info)
  image_features.set_int_custom_property(names.BACKBONE_PASSES_PROPERTY, passes)
  image_features.set_float_custom_property(features_artifact.FEATURE_PASS_SECONDS_PROPERTY, seconds)
  parity_passes = parity.check_parity(uri, examples, artifact_utils.decode_split_names(examples.split_names),
                                      parity_sample)
  progress.logger.info('  parity: the serving graph\'s encoder reproduces %d cached features exactly',
                       parity_passes)
  image_features.set_int_custom_property(features_artifact.PARITY_PASSES_PROPERTY, parity_passes)
  image_features.set_string_custom_property(features_artifact.SPLIT_NAMES_PROPERTY, examples.split_names)
