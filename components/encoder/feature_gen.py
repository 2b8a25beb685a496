"""ImageFeatureGen: the frozen backbone, run once per image of every split, as an artifact.

The backbone is frozen, so without augmentation its output is a pure function
of the image. Computing it inside the Trainer meant computing it again in every
run that retrains (a new `--epochs` recomputed every feature: 50 minutes of
VGG16 on Flickr8k on 2 cores), and again in the evaluator and the gallery.
Here it runs once, in Beam (RunInference: model loading per worker, batching,
metrics; Dataflow fans it out over workers), and its inputs are the examples
and the encoder settings only, so TFX's cache reuses it across every rerun that
changes only decoder or training settings.

Output `image_features` (components.artifacts.ImageFeatures):
  <uri>/names.BACKBONE_DIR/   the frozen feature extractor as a tf_keras
      SavedModel, weights included (random ones too), so that the Trainer
      exports exactly the network that produced the features. Its
      serving_default signature is what the feature pass runs:
        features.IMAGES_INPUT        string [None]  encoded image bytes
        -> features.IMAGE_FEATURES_KEY float32 [None, feature_dim]
      (decode and resize as the serving graph does, then the backbone).
  <uri>/names.ENCODER_FILE    JSON `EncoderInfo`: backbone, weights,
      weights_fingerprint, image_size, pooling, feature_dim, precision.
  <uri>/Split-<split>/names.FEATURES_FILE_PREFIX-*.gz  per split of the
      examples, gzipped TFRecords of tf.Example, one per image:
        features.IMAGE_ID_KEY        bytes [1]
        features.IMAGE_FEATURES_KEY  float [feature_dim]
  Custom properties: the EncoderInfo fields, `split_names`,
  names.BACKBONE_PASSES_PROPERTY (images run through the backbone, from Beam's
  RunInference counter), FEATURE_PASS_SECONDS_PROPERTY and
  PARITY_PASSES_PROPERTY (images re-encoded by the parity check).

Parity, checked once per artifact (not once per model that uses it): after the
Beam pass, the first `parity_sample` images of every split are encoded again
from their bytes the way the exported serving graph encodes them (the saved
backbone loaded as the Trainer loads it, then
image_features.encode_images, the function the exporter puts in front of the
decoder, traced into a graph as the exporter traces it: in bfloat16 TensorFlow's
eager kernels round otherwise than the graph's fused ones), in one batch, and
must equal the cached vectors exactly; otherwise
the component fails with ParityError naming the images. A model trained on the
artifact embeds this backbone; the evaluator and the gallery check that by
comparing its encoder weights with `weights_fingerprint` (no image encoded),
so a rerun that retrains only the decoder runs no backbone at all.

Nothing lost: before the Beam pass the image ids of every split are read
from the examples (only that feature, in C++); after it, the ids in the
written feature files must be exactly those, once each, or the component
fails with MissingFeaturesError naming the split and the ids (`reconcile`).

Progress: the pass reports images done of the total through
components/progress.py (`captioner.progress`), which the local runner's
console draws as a bar with images/s and time left. The local runner runs
this component's Beam work in its own process (pipeline/beam_args.py says
why), so those records reach the terminal; on a runner with remote workers
each worker reports its own share into its log.
"""
import collections
import dataclasses
import hashlib
import itertools
import json
import logging
import os
import time
from typing import Collection, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import apache_beam as beam
from apache_beam.ml.inference import base as inference_base
import numpy as np
import tensorflow as tf
import tf_keras as keras
from tfx import v1 as tfx
from tfx.types import artifact
from tfx.types import artifact_utils

from components import features
from components import names
from components import progress
from components import records
from components.artifacts import ImageFeatures
from components.encoder import image_features as image_features_lib
from components.encoder import precision as precision_lib

# Images per backbone call (RunInference's batches; the last one of a bundle may be smaller).
DEFAULT_BATCH_SIZE = 32
# The progress bar's description on the console.
PROGRESS_DESCRIPTION = 'feature pass'
# Records per tf.data batch when only the ids of a split are read.
_ID_BATCH = 1024
# Ids named in a MissingFeaturesError, per split.
_IDS_SHOWN = 20
# RunInference's counters: `num_inferences` (images run through the backbone) in this namespace.
METRICS_NAMESPACE = 'captioner_backbone'
_INFERENCE_COUNTER = 'num_inferences'
# Custom properties of the output besides the EncoderInfo fields.
FEATURE_PASS_SECONDS_PROPERTY = 'feature_pass_seconds'  # wall time of the Beam pass, start-up included
PARITY_PASSES_PROPERTY = 'parity_backbone_passes'  # images re-encoded by the parity check
# Images per split re-encoded as the serving graph encodes them, compared with the cache.
DEFAULT_PARITY_SAMPLE = 32
_SPLIT_NAMES_PROPERTY = 'split_names'


class ParityError(ValueError):
  """Features of the same image bytes differ between the cache and the serving graph's encoder."""


class MissingFeaturesError(RuntimeError):
  """The feature files of a split do not hold exactly the images the pass read."""


@dataclasses.dataclass(frozen=True)
class EncoderInfo:
  """What produced the features; a SavedModel trained on them carries a copy."""
  backbone: str  # a key of image_features_lib.BACKBONES
  weights: str  # 'imagenet', a weights file path, or 'none' (random)
  weights_fingerprint: str  # sha256 of the backbone's weight values, in layer order
  image_size: int  # square input side in pixels
  pooling: str  # one of config_lib.POOLINGS
  feature_dim: int
  # 'float32' or 'bfloat16' (resolved, components/encoder/precision.py): the
  # backbone's arithmetic. Artifacts from before the setting computed in float32.
  precision: str = precision_lib.FLOAT32


def weights_fingerprint(variables: Sequence[tf.Variable]) -> str:
  """sha256 over weight values in order (a Keras model's `weights`, or the
  `encoder_variables` an exported SavedModel keeps in the same order): equal
  only for the same network and weights."""
  digest = hashlib.sha256()
  for weight in variables:
    digest.update(weight.numpy().tobytes())
  return digest.hexdigest()


def backbone_dir(uri: str) -> str:
  return os.path.join(uri, names.BACKBONE_DIR)


def read_encoder_info(path: str) -> EncoderInfo:
  """Reads an names.ENCODER_FILE (from an ImageFeatures artifact or a serving SavedModel)."""
  with tf.io.gfile.GFile(path) as f:
    return EncoderInfo(**json.load(f))


def write_encoder_info(info: EncoderInfo, path: str) -> None:
  tf.io.gfile.makedirs(os.path.dirname(path))
  with tf.io.gfile.GFile(path, 'w') as f:
    json.dump(dataclasses.asdict(info), f, indent=2)


def save_backbone(feature_extractor: keras.Model, export_dir: str) -> None:
  """Saves the feature extractor with its image-bytes signature (see the module docstring)."""

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=features.IMAGES_INPUT)])
  def encode(images):
    return {features.IMAGE_FEATURES_KEY: image_features_lib.encode_images(feature_extractor, images)}

  feature_extractor.save(export_dir, save_format='tf', include_optimizer=False,
                         signatures={features.CAPTION_SIGNATURE: encode})


def load_backbone(uri: str) -> keras.Model:
  """The artifact's frozen feature extractor as a Keras model (pixels 0..255 -> features)."""
  model = keras.models.load_model(backbone_dir(uri), compile=False)
  model.trainable = False
  return model


class BackboneHandler(inference_base.ModelHandler):
  """Beam RunInference handler: encoded images (bytes) -> PredictionResult(features float32 [dim]).

  Loads the backbone SavedModel with core `tf.saved_model.load` and calls its
  bytes signature on each batch. (Beam's own TFModelHandlerTensor cannot be used
  here: its module imports tensorflow_hub, which fails to import with TF 2.16,
  and it loads models with `tf.keras`, Keras 3 in this environment.)
  """

  def __init__(self, model_dir: str, batch_size: int = DEFAULT_BATCH_SIZE):
    super().__init__()
    self._model_dir = model_dir
    self._batch_size = batch_size

  def load_model(self):
    return tf.saved_model.load(self._model_dir)

  def run_inference(self, batch: Sequence[bytes], model, inference_args=None
                    ) -> Iterable[inference_base.PredictionResult]:
    outputs = model.signatures[features.CAPTION_SIGNATURE](
        **{features.IMAGES_INPUT: tf.constant(list(batch), tf.string)})
    vectors = outputs[features.IMAGE_FEATURES_KEY].numpy()  # float32 [batch, feature_dim]
    return [inference_base.PredictionResult(image, vector, self._model_dir)
            for image, vector in zip(batch, vectors)]

  def batch_elements_kwargs(self):
    # Fixed batches: BatchElements would otherwise start at one image and grow slowly.
    return {'min_batch_size': self._batch_size, 'max_batch_size': self._batch_size}

  def get_metrics_namespace(self) -> str:
    return METRICS_NAMESPACE


class _Progress(beam.DoFn):
  """Passes elements through, reporting images done of `total` (components/progress.py)."""

  def __init__(self, total: int):
    self._total = total

  def setup(self):
    self._tracker = progress.Tracker(self._total, PROGRESS_DESCRIPTION)

  def process(self, element):
    self._tracker.advance()
    yield element


def feature_example(image_id: str, vector: np.ndarray) -> bytes:
  """One serialized record of a features split (layout in the module docstring)."""
  return tf.train.Example(features=tf.train.Features(feature={
      features.IMAGE_ID_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[image_id.encode('utf-8')])),
      features.IMAGE_FEATURES_KEY: tf.train.Feature(
          float_list=tf.train.FloatList(value=np.asarray(vector, np.float32))),
  })).SerializeToString()


def _keyed_image(file_and_record: Tuple[str, bytes], split_of_dir: Mapping[str, str]
                 ) -> Tuple[Tuple[str, str], bytes]:
  """(ExampleGen record file, record) -> ((split, image id), encoded image)."""
  path, serialized = file_and_record
  example = records.parse_image_example(serialized, where=path)
  return (split_of_dir[os.path.dirname(path)], example.image_id), example.image


def split_dir(uri: str, split: str) -> str:
  return os.path.join(uri, f'Split-{split}')


def feature_files(uri: str, split: str) -> List[str]:
  """The gzipped TFRecord files of one split of an ImageFeatures artifact, sorted."""
  return sorted(tf.io.gfile.glob(os.path.join(split_dir(uri, split), '*.gz')))


def read_features(uri: str, split: str, image_ids: Optional[Collection[str]] = None
                  ) -> Dict[str, np.ndarray]:
  """image id -> float32 [feature_dim] for every image of `split` in an ImageFeatures
  artifact, or for those of `image_ids` only.

  Raises:
    FileNotFoundError: if the split has no feature file.
    ValueError: if an image id occurs twice among the records read (every
      record without `image_ids`), naming the file.
  """
  paths = feature_files(uri, split)
  if not paths:
    raise FileNotFoundError(f'No feature file in {split_dir(uri, split)} (split {split!r}).')
  spec = {features.IMAGE_ID_KEY: tf.io.FixedLenFeature([], tf.string),
          features.IMAGE_FEATURES_KEY: tf.io.VarLenFeature(tf.float32)}
  vectors = {}
  for path in paths:
    for record in tf.data.TFRecordDataset(path, compression_type='GZIP').as_numpy_iterator():
      parsed = tf.io.parse_single_example(record, spec)
      image_id = parsed[features.IMAGE_ID_KEY].numpy().decode('utf-8')
      if image_id in vectors:
        raise ValueError(f'Image id {image_id!r} occurs twice in the features of {path}.')
      if image_ids is None or image_id in image_ids:
        vectors[image_id] = parsed[features.IMAGE_FEATURES_KEY].values.numpy()
        if image_ids is not None and len(vectors) == len(image_ids):
          return vectors  # all found: the rest of a large split need not be parsed
  return vectors


def image_ids(paths: Sequence[str]) -> List[str]:
  """The features.IMAGE_ID_KEY of every record in gzipped TFRecord files of
  tf.Example (examples or features), in file order.

  Parses that feature alone, in C++ batches, so that a split of large images
  is read at disk speed.
  """
  if not paths:
    return []
  spec = {features.IMAGE_ID_KEY: tf.io.FixedLenFeature([], tf.string)}
  dataset = tf.data.TFRecordDataset(list(paths), compression_type='GZIP').batch(_ID_BATCH).map(
      lambda batch: tf.io.parse_example(batch, spec)[features.IMAGE_ID_KEY])
  return [image_id.decode('utf-8') for batch in dataset.as_numpy_iterator() for image_id in batch]


def reconcile(uri: str, read: Mapping[str, Sequence[str]]) -> Dict[str, int]:
  """Checks that each split's feature files hold every image id read, once, and no other.

  Args:
    uri: the ImageFeatures artifact.
    read: split -> the image ids the pass read from its examples.

  Returns:
    split -> images with features.

  Raises:
    MissingFeaturesError: naming every split that differs, how many ids are
      missing, duplicated or unexpected, and the first _IDS_SHOWN of each.
  """
  problems, counts = [], {}
  for split, read_ids in read.items():
    written = collections.Counter(image_ids(feature_files(uri, split)))
    missing = sorted(set(read_ids) - set(written))
    twice = sorted(image_id for image_id, count in written.items() if count > 1)
    unexpected = sorted(set(written) - set(read_ids))
    counts[split] = len(written)
    for what, ids in (('missing', missing), ('written more than once', twice),
                      ('not among the examples', unexpected)):
      if ids:
        problems.append(f'split {split!r}: {len(ids)} of {len(read_ids)} images {what}: '
                        f'{ids[:_IDS_SHOWN]}{" ..." if len(ids) > _IDS_SHOWN else ""}')
  if problems:
    raise MissingFeaturesError(f'The feature pass did not write one feature vector per image '
                               f'read, in {uri}: ' + '; '.join(problems))
  return counts


def check_parity(uri: str, examples: artifact.Artifact, splits: Sequence[str], sample: int) -> int:
  """Re-encodes the first `sample` images of each split as the serving graph
  does and compares them with the cached vectors (see the module docstring).

  Returns:
    The number of images re-encoded (backbone passes of the check).

  Raises:
    ParityError: naming the split, the images that differ and the largest difference.
  """
  backbone = load_backbone(uri)

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
  def encode(images):  # a graph, as in the exporter and the saved backbone's signature
    return image_features_lib.encode_images(backbone, images)

  passes = 0
  for split in splits:
    batch = list(itertools.islice(records.iter_split_examples(examples, split), sample))
    if not batch:
      continue
    ids = [example.image_id for example in batch]
    cached = read_features(uri, split, set(ids))
    missing = [image_id for image_id in ids if image_id not in cached]
    if missing:
      raise ParityError(f'Images {missing} of split {split!r} have no features in {uri}.')
    served = encode(tf.constant([example.image for example in batch])).numpy()
    passes += len(batch)
    differing = [image_id for image_id, vector in zip(ids, served)
                 if not np.array_equal(vector, cached[image_id])]
    if differing:
      largest = max(float(np.max(np.abs(vector - cached[image_id])))
                    for image_id, vector in zip(ids, served))
      raise ParityError(
          f'{uri}: the serving graph\'s encoder and the cached features disagree on '
          f'{len(differing)} of {len(ids)} images of split {split!r}: {differing} '
          f'(largest difference {largest:g}).')
  logging.info('Parity: the serving graph\'s encoder reproduces the cached features of %d images.',
               passes)
  return passes


def backbone_passes(image_features_artifact: artifact.Artifact) -> int:
  """Images the feature pass ran through the backbone (its Beam counter, kept in MLMD)."""
  return image_features_artifact.get_int_custom_property(names.BACKBONE_PASSES_PROPERTY)


def weights_file_digest(backbone_weights: Optional[str]) -> Optional[str]:
  """sha256 of a local weights file, None for 'imagenet' (Keras' fixed download) or random weights.

  Passed to ImageFeatureGen as `backbone_weights_sha256`, so that TFX's cache
  keys the features on the file's content: a file replaced at the same path
  recomputes them.
  """
  if backbone_weights in (None, 'imagenet'):
    return None
  digest = hashlib.sha256()
  with tf.io.gfile.GFile(backbone_weights, 'rb') as f:
    for block in iter(lambda: f.read(1 << 24), b''):
      digest.update(block)
  return digest.hexdigest()


def build_encoder(backbone: str, image_size: int, pooling: str, backbone_weights: Optional[str],
                  precision: str = precision_lib.FLOAT32) -> Tuple[keras.Model, EncoderInfo]:
  """The frozen feature extractor for these settings, and its EncoderInfo."""
  extractor = image_features_lib.build_feature_extractor(
      backbone, image_size=image_size, weights=backbone_weights, pooling=pooling, precision=precision)
  return extractor, EncoderInfo(
      backbone=backbone, weights=backbone_weights or 'none',
      weights_fingerprint=weights_fingerprint(extractor.weights),
      image_size=int(extractor.input_shape[1]), pooling=pooling,
      feature_dim=int(extractor.output_shape[-1]), precision=precision)


def write_features(pipeline: beam.Pipeline, split_paths: Mapping[str, Sequence[str]],
                   handler: inference_base.ModelHandler, uri: str, total: int) -> None:
  """Adds the feature pass to `pipeline`: every record of `split_paths`
  (split -> ExampleGen record files) through `handler`, written per split
  into `uri` as the module docstring lays out.

  One read over every split's files (one RunInference, so one model load per
  worker), keyed by (split, image id): the records stream from the files
  through the backbone into the writers, and no image bytes wait in the
  runner's buffers between stages (a Flatten of one read per split did that:
  the whole dataset's JPEGs in memory).

  Args:
    handler: runs a batch of encoded images, giving PredictionResults whose
      `inference` is the feature vector (BackboneHandler; tests pass others).
    total: images in `split_paths`, for the progress bar.
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
             lambda key, result: feature_example(key[1], result.inference))
         | f'Write[{split}]' >> beam.io.WriteToTFRecord(
             os.path.join(split_dir(uri, split), names.FEATURES_FILE_PREFIX),
             file_name_suffix='.gz'))


@tfx.dsl.components.component(use_beam=True)
def ImageFeatureGen(
    examples: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Examples],
    image_features: tfx.dsl.components.OutputArtifact[ImageFeatures],
    backbone: tfx.dsl.components.Parameter[str],
    image_size: tfx.dsl.components.Parameter[int],
    pooling: tfx.dsl.components.Parameter[str],
    seed: tfx.dsl.components.Parameter[int],
    backbone_weights: tfx.dsl.components.Parameter[str] = None,
    backbone_weights_sha256: tfx.dsl.components.Parameter[str] = None,
    batch_size: tfx.dsl.components.Parameter[int] = DEFAULT_BATCH_SIZE,
    parity_sample: tfx.dsl.components.Parameter[int] = DEFAULT_PARITY_SAMPLE,
    precision: tfx.dsl.components.Parameter[str] = precision_lib.FLOAT32,
    beam_pipeline: tfx.dsl.components.BeamComponentParameter[beam.Pipeline] = None,
) -> None:
  """Builds the frozen backbone, saves it, writes every split's features and checks their parity.

  Args:
    examples: ExampleGen output (components/records.py layout); every split.
    image_features: output, laid out as the module docstring says.
    backbone: a key of image_features_lib.BACKBONES.
    image_size: square input side in pixels (resolved: the Trainer gets the same).
    pooling: one of config_lib.POOLINGS.
    seed: initialises random backbone weights (TrainerConfig.seed), so that two
      runs of one command train on the same features.
    backbone_weights: 'imagenet', a local .h5 file, or None for random weights.
    backbone_weights_sha256: `weights_file_digest(backbone_weights)`, so that
      the cache tells weights files at the same path apart; checked here.
    batch_size: images per backbone call.
    parity_sample: images per split re-encoded by `check_parity`.
    precision: the backbone's arithmetic, 'float32' or 'bfloat16': resolved
      (precision_lib.resolve) when the pipeline is built, never 'auto', so that
      TFX's cache, keyed on the parameters, never hands features of one
      precision to a run of the other.
    beam_pipeline: injected by TFX with the pipeline's Beam arguments.
  """
  if backbone_weights_sha256 != weights_file_digest(backbone_weights):
    raise ValueError(f'Backbone weights file {backbone_weights} changed after the pipeline was '
                     f'built (sha256 {backbone_weights_sha256} expected); build it again.')
  if precision not in precision_lib.KERAS_POLICIES:
    raise ValueError(f'ImageFeatureGen takes a resolved precision, one of '
                     f'{sorted(precision_lib.KERAS_POLICIES)}, got {precision!r} (resolve it with '
                     'components.encoder.precision.resolve when building the pipeline).')
  keras.utils.set_random_seed(seed)
  extractor, info = build_encoder(backbone, image_size, pooling, backbone_weights, precision)
  save_backbone(extractor, backbone_dir(image_features.uri))
  del extractor  # the workers load the saved one: what they run is what the Trainer gets
  write_encoder_info(info, os.path.join(image_features.uri, names.ENCODER_FILE))
  logging.info('Feature pass with %s.', info)

  splits = artifact_utils.decode_split_names(examples.split_names)
  split_paths = {split: records.split_files(examples, split) for split in splits}
  read = {split: image_ids(paths) for split, paths in split_paths.items()}
  total = sum(len(ids) for ids in read.values())
  handler = BackboneHandler(backbone_dir(image_features.uri), batch_size=batch_size)
  write_features(beam_pipeline, split_paths, handler, image_features.uri, total)
  start = time.monotonic()
  result = beam_pipeline.run()
  result.wait_until_finish()
  seconds = time.monotonic() - start
  counters = result.metrics().query(
      beam.metrics.MetricsFilter().with_namespace(METRICS_NAMESPACE).with_name(_INFERENCE_COUNTER)
  )['counters']
  passes = int(sum(counter.committed for counter in counters))
  counts = reconcile(image_features.uri, read)
  logging.info('Feature pass: features for every image read, per split %s.', counts)
  progress.logger.info('  feature pass: %d images through %s in %.1f s (%.1f images/s)',
                       passes, backbone, seconds, passes / max(seconds, 1e-9))

  for field, value in dataclasses.asdict(info).items():
    if isinstance(value, int):
      image_features.set_int_custom_property(field, value)
    else:
      image_features.set_string_custom_property(field, value)
  image_features.set_int_custom_property(names.BACKBONE_PASSES_PROPERTY, passes)
  image_features.set_float_custom_property(FEATURE_PASS_SECONDS_PROPERTY, seconds)
  parity_passes = check_parity(image_features.uri, examples, splits, parity_sample)
  progress.logger.info('  parity: the serving graph\'s encoder reproduces %d cached features exactly',
                       parity_passes)
  image_features.set_int_custom_property(PARITY_PASSES_PROPERTY, parity_passes)
  image_features.set_string_custom_property(_SPLIT_NAMES_PROPERTY, examples.split_names)
