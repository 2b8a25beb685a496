"""End to end: the local runner on a tiny embedded dataset, then the pushed model called on image bytes.

The whole pipeline runs with LocalDagRunner and SQLite ML Metadata, exactly as
`bash run.sh pipeline` runs it, only smaller (48 images, 32 px, one epoch). A
second run must reuse every component through TFX's cache.
"""
import glob
import json
import os

import pytest
import tensorflow as tf
from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2
from tfx import v1 as tfx

from components import names
from components import features
from components import config as config_lib
from pipeline import local_runner

_TINY_RUN = ['--num_images', '48', '--image_size', '32', '--epochs', '1', '--lstm_units', '16',
             '--batch_size', '16', '--beam_width', '2', '--min_bleu4', '0', '--min_cider', '0',
             '--min_baseline_ratio', '0', '--min_distinct_caption_share', '0',
             '--beam_workers', '1']
_NODES = {names.EXAMPLE_GEN, names.STATISTICS_GEN, names.SCHEMA_GEN, names.EXAMPLE_VALIDATOR, names.TRANSFORM,
          names.FEATURE_GEN,
          names.CAPTION_TRAINER, names.BASELINE_TRAINER, names.CAPTION_EVALUATOR, names.PUSHER, names.DEMO_GALLERY}


def _executions_per_node(metadata_path, state):
  """Node id -> number of its executions in `state` (COMPLETE ran, CACHED reused)."""
  store = metadata_store.MetadataStore(
      tfx.orchestration.metadata.sqlite_metadata_connection_config(metadata_path))
  counts = {}
  for context in store.get_contexts_by_type('node'):
    node_id = context.name.split('.', 1)[1]
    counts[node_id] = sum(e.last_known_state == state
                          for e in store.get_executions_by_context(context.id))
  return counts


@pytest.fixture(scope='module')
def pipeline_run(tmp_path_factory):
  output_dir = str(tmp_path_factory.mktemp('run'))
  assert local_runner.main(['--output_dir', output_dir] + _TINY_RUN) == 0
  return output_dir


def test_pipeline_pushes_a_model_that_captions_image_bytes(pipeline_run):
  versions = glob.glob(os.path.join(pipeline_run, 'serving', names.MODEL_NAME, '*', 'saved_model.pb'))
  assert len(versions) == 1, versions
  model = tf.saved_model.load(os.path.dirname(versions[0]))
  images = sorted(glob.glob(os.path.join(pipeline_run, 'data', 'shapes', 'Flicker8k_Dataset', '*.jpg')))[:3]
  outputs = model.signatures[features.CAPTION_SIGNATURE](
      **{features.IMAGES_INPUT: tf.constant([open(p, 'rb').read() for p in images])})
  assert outputs[features.CAPTION_OUTPUT].shape == (3,)
  assert outputs[features.CAPTION_OUTPUT].dtype == tf.string
  log_probs = outputs[features.LOG_PROBABILITY_OUTPUT].numpy()
  assert log_probs.shape == (3,) and (log_probs <= 0).all()


def test_summary_reports_metrics_push_gallery_and_rejects(pipeline_run):
  with open(os.path.join(pipeline_run, 'summary.json')) as f:
    summary = json.load(f)
  assert summary['pushed'] is True
  assert summary['pushed_model'].startswith(os.path.join(pipeline_run, 'serving'))
  assert os.path.isfile(summary['gallery'])
  assert summary['evaluation']['captioner']
  assert summary['evaluation']['baseline']
  assert os.path.isdir(summary['reject_report'])
  assert summary['ingestion']['reconciled'] is True
  assert summary['ingestion']['images']['total_written'] == 48
  captioner = summary['training']['captioner']
  assert captioner['vocabulary_size'] > len(features.SPECIAL_TOKENS)
  assert captioner['sequence_length'] >= 3
  assert summary['training']['baseline']['config']['use_image'] is False


def test_rerun_reuses_everything_up_to_the_evaluation(pipeline_run):
  metadata_path = os.path.join(pipeline_run, 'metadata.sqlite')
  ran_before = _executions_per_node(metadata_path, metadata_store_pb2.Execution.COMPLETE)
  assert set(ran_before) >= _NODES
  assert local_runner.main(['--output_dir', pipeline_run] + _TINY_RUN) == 0
  ran = _executions_per_node(metadata_path, metadata_store_pb2.Execution.COMPLETE)
  reused = _executions_per_node(metadata_path, metadata_store_pb2.Execution.CACHED)
  rerun = {node for node in ran if ran[node] > ran_before[node]}
  # The first run's blessing is a new input (the last blessed model) to the
  # evaluation, so it and what follows it run again; nothing upstream does.
  assert rerun == {names.LATEST_BLESSED_MODEL_RESOLVER, names.CAPTION_EVALUATOR, names.PUSHER, names.DEMO_GALLERY}
  assert {node for node, count in reused.items() if count == 1} == _NODES - rerun


def test_a_folder_that_is_not_flickr8k_fails_before_any_component_runs(tmp_path, capsys):
  (tmp_path / 'data').mkdir()
  (tmp_path / 'data' / 'notes.txt').write_text('not a dataset')
  assert local_runner.main(['--data_dir', str(tmp_path / 'data'),
                            '--output_dir', str(tmp_path / 'out')]) == 2
  error = capsys.readouterr().err
  assert str(tmp_path / 'data') in error and 'Flickr8k.token.txt' in error
  assert not (tmp_path / 'out' / 'metadata.sqlite').exists()
