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

from components import features
from pipeline import config as config_lib
from pipeline import local_runner

_TINY_RUN = ['--num_images', '48', '--image_size', '32', '--epochs', '1', '--lstm_units', '16',
             '--batch_size', '16', '--beam_width', '2', '--min_bleu4', '0', '--min_cider', '0',
             '--beam_workers', '1']
_NODES = {'Flickr8kExampleGen', 'StatisticsGen', 'ImportSchemaGen', 'ExampleValidator', 'Transform',
          'CaptionTrainer', 'BaselineTrainer', 'CaptionEvaluator', 'Pusher', 'DemoGallery'}


def _executions_by_state(metadata_path):
  store = metadata_store.MetadataStore(
      tfx.orchestration.metadata.sqlite_metadata_connection_config(metadata_path))
  states = {}
  for execution in store.get_executions():
    node = execution.custom_properties.get('__node_id__') or execution.properties.get('component_id')
    name = execution.type  # fall back to the type when no node id is recorded
    if node is not None:
      name = node.string_value
    states.setdefault(execution.last_known_state, []).append(name)
  return states


@pytest.fixture(scope='module')
def pipeline_run(tmp_path_factory):
  output_dir = str(tmp_path_factory.mktemp('run'))
  assert local_runner.main(['--output_dir', output_dir] + _TINY_RUN) == 0
  return output_dir


def test_pipeline_pushes_a_model_that_captions_image_bytes(pipeline_run):
  versions = glob.glob(os.path.join(pipeline_run, 'serving', config_lib.MODEL_NAME, '*', 'saved_model.pb'))
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


def test_rerun_reuses_every_component_from_the_cache(pipeline_run):
  metadata_path = os.path.join(pipeline_run, 'metadata.sqlite')
  before = _executions_by_state(metadata_path)
  assert local_runner.main(['--output_dir', pipeline_run] + _TINY_RUN) == 0
  after = _executions_by_state(metadata_path)
  new_complete = len(after.get(metadata_store_pb2.Execution.COMPLETE, [])) - len(
      before.get(metadata_store_pb2.Execution.COMPLETE, []))
  assert new_complete == 0, after
  cached = after.get(metadata_store_pb2.Execution.CACHED, [])
  assert len(cached) >= len(_NODES) - 1, cached  # ImportSchemaGen may re-import
