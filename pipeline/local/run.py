"""One local run, once its log is open: dataset, pipeline, LocalDagRunner, summary.

pipeline/local/runner.py parses the flags and opens the run's log
(pipeline/local/run_log.py) before it imports this module, because importing
TensorFlow and TFX already prints lines that belong in the log.
"""
import argparse
import json
import logging
import os
import shutil
from typing import Dict, List, Tuple

from ml_metadata import metadata_store
from tfx import v1 as tfx

from components import names
from components.ingestion import layouts, shapes_dataset
from components import config as config_lib
from components import progress
from components.encoder import feature_gen
from pipeline import beam_args
from pipeline.local import component_progress
from pipeline.local import interrupted
from pipeline import pipeline as pipeline_lib
from pipeline.local import run_log
from pipeline import settings
from pipeline.local import summary as summary_lib

# Nodes whose output record order the Trainers see and which would write it in
# the order their Beam worker processes finish (see `run`).
_ORDERED_OUTPUT_NODES = (names.TRANSFORM,)


def _ensure_embedded_dataset(data_dir: str, dataset: config_lib.EmbeddedDataset, num_images: int,
                             seed: int) -> None:
  """Generates the embedded `dataset` unless `data_dir` already holds it with these settings.

  The settings are kept beside the folder (`<data_dir>.json`); a folder
  generated with other settings is deleted first, so no image of a larger
  earlier dataset is left without captions.
  """
  settings_path = data_dir + '.json'
  wanted = {'num_images': num_images, 'image_size': dataset.image_size, 'seed': seed,
            'dataset': dataset.name}
  if os.path.exists(settings_path):
    with open(settings_path) as f:
      if json.load(f) == wanted:
        return
  progress.logger.info('Generating the embedded dataset %s (%d images, seed %d) into %s',
                       dataset.name, num_images, seed, data_dir)
  shutil.rmtree(data_dir, ignore_errors=True)
  shapes_dataset.generate(data_dir, **wanted)
  with open(settings_path, 'w') as f:
    json.dump(wanted, f)


def _node_beam_args(num_workers: int) -> Dict[str, List[str]]:
  """The DirectRunner's per-node modes (pipeline/beam_args.py), and one
  worker for the _ORDERED_OUTPUT_NODES: the Transform writes records in the
  order its Beam workers finish, and the Trainers' seeded shuffle starts from
  that order, so with more than one worker two runs of one command would
  train on different batches. (The ExampleGen's threads write the same files
  in the same order on every run.)"""
  return {**beam_args.direct_node_beam_args(num_workers),
          **{node_id: beam_args.direct_beam_args(1) for node_id in _ORDERED_OUTPUT_NODES}}


def run_configs(args: argparse.Namespace) -> Tuple[config_lib.TransformConfig, config_lib.EncoderConfig,
                                                    config_lib.TrainerConfig, config_lib.EvaluationConfig]:
  """(Transform, encoder, captioner, evaluation) settings: the flags over the embedded
  dataset's (--dataset) defaults without --data_dir, over the real-data defaults with it."""
  dataset = config_lib.EMBEDDED_DATASETS[args.dataset] if args.data_dir is None else None
  encoder_defaults, trainer_defaults = config_lib.decoder_defaults(args.decoder, dataset)
  if dataset is not None:
    defaults = (dataset.transform, dataset.evaluation)
  else:
    defaults = (config_lib.TransformConfig(), config_lib.EvaluationConfig())
  return (settings.transform_config(args, defaults[0]), settings.encoder_config(args, encoder_defaults),
          settings.trainer_config(args, trainer_defaults), settings.evaluation_config(args, defaults[1]))


def run(args: argparse.Namespace, output_dir: str, log: run_log.RunLog) -> int:
  """Runs the pipeline the flags describe; see local_runner.main for the exit codes."""
  transform_config, encoder_config, trainer_config, evaluation_config = run_configs(args)
  if args.data_dir is None:
    dataset = config_lib.EMBEDDED_DATASETS[args.dataset]
    data_dir = os.path.join(output_dir, 'data', dataset.name)
    _ensure_embedded_dataset(data_dir, dataset, args.num_images or dataset.num_images, trainer_config.seed)
  else:
    data_dir = os.path.abspath(args.data_dir)
  try:
    layouts.detect_layout(data_dir)  # fail before any component runs
  except layouts.LayoutError as error:
    print(f'error: {error}', file=log.errors)
    return 2

  outputs = RunOutputs(output_dir, args.model_name)
  pipeline = pipeline_lib.create_pipeline(
      pipeline_name=args.pipeline_name,
      pipeline_root=outputs.pipeline_root,
      data_root=data_dir,
      schema_path=names.SCHEMA_PATH,
      serving_model_dir=outputs.serving_model_dir,
      transform_config=transform_config,
      encoder_config=encoder_config,
      trainer_config=trainer_config,
      baseline_config=settings.baseline_config(trainer_config, encoder_config),
      evaluation_config=evaluation_config,
      metadata_connection_config=outputs.connection_config,
      beam_pipeline_args=beam_args.direct_beam_args(args.beam_workers),
      node_beam_pipeline_args=_node_beam_args(args.beam_workers),
      enable_cache=not args.no_cache,
      restval_split=args.restval_split,
      backbone_weights_sha256=feature_gen.weights_file_digest(encoder_config.backbone_weights))
  code = _run_locally(pipeline, args.pipeline_name, outputs, log)
  if code == 0:
    summary = summary_lib.write_summary(outputs.metadata_path, args.pipeline_name, outputs.summary_path)
    print(summary_lib.render(summary), file=log.console)
  return code


class RunOutputs:
  """Where a local run keeps its pipeline root, metadata store, pushed models and summary:
  the one description of the output folder, which the tests and benchmarks read too."""

  def __init__(self, output_dir: str, model_name: str = names.MODEL_NAME):
    self.pipeline_root = os.path.join(output_dir, 'pipeline_root')
    self.metadata_path = os.path.join(output_dir, 'metadata.sqlite')
    self.summary_path = os.path.join(output_dir, 'summary.json')
    self.serving_model_dir = os.path.join(output_dir, 'serving', model_name)
    self.connection_config = tfx.orchestration.metadata.sqlite_metadata_connection_config(
        self.metadata_path)


def _settle(pipeline_name: str, outputs: RunOutputs) -> None:
  """Cancels what an interrupted run left RUNNING and removes folders no artifact owns."""
  store = metadata_store.MetadataStore(outputs.connection_config)
  for line in interrupted.settle_interrupted(store, pipeline_name, outputs.pipeline_root):
    progress.logger.info('  %s', line)


def _run_locally(pipeline: tfx.dsl.Pipeline, pipeline_name: str, outputs: RunOutputs,
                 log: run_log.RunLog) -> int:
  """LocalDagRunner on `pipeline`, with a progress line per node; 0, 1 (failed) or 130 (Ctrl-C)."""
  _settle(pipeline_name, outputs)  # what a killed earlier run left behind
  with component_progress.reporting([c.id for c in pipeline.components]) as nodes:
    try:
      tfx.orchestration.LocalDagRunner().run(pipeline)
    except KeyboardInterrupt:
      _settle(pipeline_name, outputs)
      print(f'interrupted during {nodes.current or "the pipeline"}; run the same command '
            f'again to resume (full log: {log.path})', file=log.errors)
      return 130
    except Exception as error:  # pylint: disable=broad-except
      logging.exception('The pipeline failed in %s', nodes.current)
      _settle(pipeline_name, outputs)  # a failure before the executor ran leaves it RUNNING
      message = str(error).strip().splitlines()
      print(f'error: {nodes.current or "the pipeline"} failed: {type(error).__name__}: '
            f'{message[0] if message else ""} (full log: {log.path})', file=log.errors)
      return 1
  return 0
