"""Real Transform output for a small generated dataset, for trainer tests and benchmarks.

The Trainer's run_fn must be exercised on what the pipeline really hands it,
not on hand-made records, so this module runs the same executors in-process
and in the pipeline's order:

  components.ingestion.shapes_dataset.generate      -> a Flickr8k-layout folder
  ImageCaptionExampleGen executor         -> raw Examples, Split-{train,eval,demo}/*.gz
  ImageFeatureGen executor (on request)   -> the backbone's features and the backbone
  the stock TFX Transform executor        -> transform_graph + transformed Examples
      (with the parameters pipeline/pipeline.py gives it, see executors.node_parameters;
      statistics disabled, they are not the trainer's input)

and builds the `FnArgs` the TFX Trainer executor would pass to run_fn (file
patterns as `io_utils.all_files_pattern` writes them, custom_config as the
decoded dict). The executors run through testing/executors.py (Beam in memory,
one worker).
"""
import dataclasses
import os
import shutil
from typing import List, Optional

import tensorflow as tf
from tfx.components.transform import executor as transform_executor
from tfx.types import artifact_utils
from tfx.types import standard_artifacts
from tfx.types import standard_component_specs
from tfx.utils import io_utils

from components import artifacts
from components import names
from components.encoder import feature_gen
from components import records
from components.ingestion import shapes_dataset
from components import config as config_lib
from components.training import trainer_component
from testing import executors

# Folder names inside the trainer's work_dir, as the Trainer executor lays out its outputs.
SERVING_MODEL_DIR = 'serving_model_dir'
MODEL_RUN_DIR = 'model_run'


@dataclasses.dataclass(frozen=True)
class TransformedData:
  """Where the ExampleGen and Transform outputs of one generated dataset live."""
  examples_uri: str  # raw Examples artifact: Split-<split>/data_tfrecord-*.gz
  transform_graph_uri: str  # tft.TFTransformOutput directory
  transformed_examples_uri: str  # transformed Examples artifact (train and eval splits)

  def transformed_files(self, split: str) -> List[str]:
    """File patterns of a transformed split, as the Trainer executor builds them."""
    return [io_utils.all_files_pattern(os.path.join(self.transformed_examples_uri, f'Split-{split}'))]

  def raw_examples(self, split: str) -> List[bytes]:
    """Serialized raw tf.Examples of `split`, in file order (the from_examples signature's input)."""
    files = sorted(tf.io.gfile.glob(os.path.join(self.examples_uri, f'Split-{split}', '*')))
    if not files:
      raise FileNotFoundError(f'No raw examples in split {split!r} of {self.examples_uri}')
    return [record.numpy() for record in tf.data.TFRecordDataset(files, compression_type='GZIP')]

  def images(self, split: str) -> List[bytes]:
    """The encoded image files of `split` (JPEG bytes, the serving_default signature's input)."""
    return [records.parse_image_example(serialized, where=f'split {split!r} of {self.examples_uri}').image
            for serialized in self.raw_examples(split)]


def _run_transform(examples: standard_artifacts.Examples, out_dir: str,
                   transform_config: config_lib.TransformConfig) -> TransformedData:
  schema = standard_artifacts.Schema()
  schema.uri = os.path.join(out_dir, 'schema')  # the executor wants the schema file alone in a folder
  tf.io.gfile.makedirs(schema.uri)
  shutil.copy(names.SCHEMA_PATH, schema.uri)
  outputs = executors.run_executor(
      transform_executor.Executor(executors.beam_context()),
      {standard_component_specs.EXAMPLES_KEY: examples, standard_component_specs.SCHEMA_KEY: schema},
      {standard_component_specs.TRANSFORM_GRAPH_KEY: standard_artifacts.TransformGraph,
       standard_component_specs.TRANSFORMED_EXAMPLES_KEY: standard_artifacts.Examples},
      {**executors.node_parameters(names.TRANSFORM, transform_config=transform_config),
       standard_component_specs.DISABLE_STATISTICS_KEY: 1},
      out_dir)
  return TransformedData(
      examples_uri=examples.uri,
      transform_graph_uri=outputs[standard_component_specs.TRANSFORM_GRAPH_KEY].uri,
      transformed_examples_uri=outputs[standard_component_specs.TRANSFORMED_EXAMPLES_KEY].uri)


def build_transformed_data(work_dir: str, num_images: int, image_size: int, seed: int = 0,
                           transform_config: Optional[config_lib.TransformConfig] = None,
                           dataset: str = names.SHAPES_DATASET) -> TransformedData:
  """Generates `num_images` images of the embedded `dataset` and runs ExampleGen and Transform on them.

  Splits are Flickr8k's 6:1:1 (e.g. 40 images -> 30 train, 5 eval, 5 demo).
  `transform_config` defaults to the shapes dataset's (config_lib.EMBEDDED_TRANSFORM).
  """
  data_dir = os.path.join(work_dir, 'dataset')
  shapes_dataset.generate(data_dir, num_images, image_size, seed=seed, dataset=dataset)
  examples, _ = executors.run_example_gen(data_dir, work_dir)
  return _run_transform(examples, work_dir, transform_config or config_lib.EMBEDDED_TRANSFORM)


def build_image_features(examples_uri: str, out_dir: str, encoder_config: config_lib.EncoderConfig,
                         seed: int = 0) -> standard_artifacts.Artifact:
  """Runs the ImageFeatureGen executor on the raw Examples at `examples_uri` (every split)
  with the parameters the pipeline gives it for `encoder_config` and `seed`, on the
  in-process DirectRunner."""
  examples = standard_artifacts.Examples()
  examples.uri = examples_uri
  examples.split_names = artifact_utils.encode_split_names(list(names.SPLITS))
  return executors.run_executor(
      feature_gen.ImageFeatureGen.EXECUTOR_SPEC.executor_class(executors.beam_context()),
      {'examples': examples}, {names.IMAGE_FEATURES_KEY: artifacts.ImageFeatures},
      executors.node_parameters(names.FEATURE_GEN, encoder_config=encoder_config,
                                trainer_config=config_lib.TrainerConfig(seed=seed)),
      out_dir)[names.IMAGE_FEATURES_KEY]


def fn_args(data: TransformedData, work_dir: str, trainer_config: config_lib.TrainerConfig,
            image_features_uri: Optional[str] = None) -> trainer_component.CaptionFnArgs:
  """The FnArgs the CaptionTrainer executor builds for run_fn, outputs under `work_dir`.

  `image_features_uri` (an ImageFeatures artifact, see `build_image_features`)
  is handed over as components/training/trainer_component.py does.
  """
  return trainer_component.CaptionFnArgs(
      train_files=data.transformed_files(names.TRAIN_SPLIT),
      eval_files=data.transformed_files(names.EVAL_SPLIT),
      transform_output=data.transform_graph_uri,
      transform_graph_path=data.transform_graph_uri,
      serving_model_dir=os.path.join(work_dir, SERVING_MODEL_DIR),
      model_run_dir=os.path.join(work_dir, MODEL_RUN_DIR),
      custom_config=config_lib.to_custom_config(trainer_config),
      image_features_uri=image_features_uri)
