"""pipeline/local/component_progress.py on a real LocalDagRunner run: a line per node, cache reuse seen.

A two-node pipeline whose first node exports a tf_keras SavedModel, as the
Trainers do: TensorFlow's export resets absl's verbosity, and a progress
reader that lost TFX's INFO records there would report no later node.
"""
import io
import logging
import os

from absl import logging as absl_logging
import tf_keras
from tfx import v1 as tfx
from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact
from tfx.dsl.component.experimental.decorators import component
from tfx.types import standard_artifacts

from components import progress
from pipeline.local import component_progress
from pipeline.local import console


@component
def ExportsModel(model: OutputArtifact[standard_artifacts.Model]):  # pylint: disable=invalid-name
  net = tf_keras.Sequential([tf_keras.Input([3]), tf_keras.layers.Dense(2)])
  net.save(os.path.join(model.uri, 'saved_model'), save_format='tf')


@component
def ReadsModel(model: InputArtifact[standard_artifacts.Model],  # pylint: disable=invalid-name
               copy: OutputArtifact[standard_artifacts.Model]):
  os.makedirs(copy.uri, exist_ok=True)
  with open(os.path.join(copy.uri, 'listing'), 'w') as f:
    f.write('\n'.join(sorted(os.listdir(model.uri))))


def _run(tmp_path):
  """Runs the pipeline once under `reporting`; the console's lines and the reporter."""
  exports = ExportsModel().with_id('ExportsModel')
  reads = ReadsModel(model=exports.outputs['model']).with_id('ReadsModel')
  pipeline = tfx.dsl.Pipeline(
      pipeline_name='progress', pipeline_root=str(tmp_path / 'root'),
      components=[exports, reads], enable_cache=True,
      metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
          str(tmp_path / 'metadata.sqlite')))
  stream = io.StringIO()
  handler = console.ConsoleHandler(stream)
  progress.logger.addHandler(handler)
  try:
    with component_progress.reporting([c.id for c in pipeline.components]) as nodes:
      tfx.orchestration.LocalDagRunner().run(pipeline)
  finally:
    progress.logger.removeHandler(handler)
  return stream.getvalue().splitlines(), nodes


def test_every_node_gets_a_line_after_a_savedmodel_export_and_a_rerun_says_cached(tmp_path, caplog):
  caplog.set_level(logging.INFO)  # every logger at INFO, as in a run (pipeline/local/run_log.py)
  absl_logger = absl_logging.get_absl_logger()
  level_before, verbosity_before = absl_logger.level, absl_logging.get_verbosity()
  first, nodes = _run(tmp_path)
  assert len(first) == 2, first
  assert first[0].startswith('[1/2] ExportsModel started, ran in ')
  assert first[1].startswith('[2/2] ReadsModel started, ran in ')
  assert nodes.current is None  # every node finished
  second, _ = _run(tmp_path)
  assert [line.split(' in ')[0] for line in second] == [
      '[1/2] ExportsModel started, reused from the cache',
      '[2/2] ReadsModel started, reused from the cache']
  # absl's verbosity is the caller's again.
  assert (absl_logger.level, absl_logging.get_verbosity()) == (level_before, verbosity_before)
  assert not [h for h in absl_logger.handlers if isinstance(h, component_progress.NodeProgress)]
