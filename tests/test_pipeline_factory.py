"""pipeline.create_pipeline: what differs per node is an argument, checked against the nodes."""
from kfp.pipeline_spec import pipeline_spec_pb2
import pytest
import tensorflow as tf

from components import config as config_lib
from components import names
from components.encoder import feature_gen
from components.encoder import precision as precision_lib
from pipeline import pipeline as pipeline_lib

_ResourceSpec = pipeline_spec_pb2.PipelineDeploymentConfig.PipelineContainerSpec.ResourceSpec


def _build(**per_node):
  return pipeline_lib.create_pipeline(
      pipeline_name=names.PIPELINE_NAME, pipeline_root='root', data_root='data',
      schema_path=names.SCHEMA_PATH, serving_model_dir='serving',
      transform_config=config_lib.TransformConfig(), encoder_config=config_lib.EncoderConfig(),
      trainer_config=config_lib.TrainerConfig(),
      baseline_config=config_lib.TrainerConfig(use_image=False),
      evaluation_config=config_lib.EvaluationConfig(),
      beam_pipeline_args=['--direct_num_workers=2'], **per_node)


def test_per_node_beam_args_and_platform_configs_reach_only_their_nodes():
  resources = _ResourceSpec(cpu_limit=4.0)
  built = _build(node_beam_pipeline_args={names.FEATURE_GEN: ['--direct_running_mode=in_memory']},
                 node_platform_configs={names.CAPTION_TRAINER: resources})
  nodes = {node.id: node for node in built.components}
  # The pipeline's options first, the node's after them (Beam takes the last of a flag).
  assert nodes[names.FEATURE_GEN].executor_spec.beam_pipeline_args == [
      '--direct_num_workers=2', '--direct_running_mode=in_memory']
  assert nodes[names.EXAMPLE_GEN].executor_spec.beam_pipeline_args == ['--direct_num_workers=2']
  assert nodes[names.CAPTION_TRAINER].platform_config == resources
  assert nodes[names.BASELINE_TRAINER].platform_config is None


@pytest.mark.parametrize('argument, node_id, method', [
    ('node_beam_pipeline_args', names.CAPTION_EVALUATOR, 'with_beam_pipeline_args'),
    ('node_beam_pipeline_args', 'NoSuchNode', 'with_beam_pipeline_args'),
    ('node_platform_configs', 'NoSuchNode', 'with_platform_config'),
])
def test_a_per_node_setting_for_no_such_node_is_refused_by_name(argument, node_id, method):
  with pytest.raises(ValueError, match=f"'{node_id}'.*{method}"):
    _build(**{argument: {node_id: ['--x'] if 'beam' in argument else _ResourceSpec()}})


def test_the_factory_reads_no_file_and_probes_no_hardware(monkeypatch):
  """Built for another machine: a weights path that does not exist here and 'auto' precision
  give a pipeline, and nothing asks this machine's processor, GPUs or files."""
  def refuse(*args, **kwargs):
    raise AssertionError('create_pipeline probed the machine that builds it')
  monkeypatch.setattr(precision_lib, 'hardware_has_bfloat16', refuse)
  monkeypatch.setattr(precision_lib, 'cpu_flags', refuse)
  monkeypatch.setattr(tf.config, 'list_physical_devices', refuse)
  monkeypatch.setattr(feature_gen, 'weights_file_digest', refuse)
  monkeypatch.setattr(tf.io.gfile, 'GFile', refuse)
  encoder = config_lib.EncoderConfig(backbone_weights='/weights/on/the/workers.h5')
  built = pipeline_lib.create_pipeline(
      pipeline_name=names.PIPELINE_NAME, pipeline_root='root', data_root='data',
      schema_path=names.SCHEMA_PATH, serving_model_dir='serving',
      transform_config=config_lib.TransformConfig(), encoder_config=encoder,
      trainer_config=config_lib.TrainerConfig(), baseline_config=config_lib.TrainerConfig(use_image=False),
      evaluation_config=config_lib.EvaluationConfig(), backbone_weights_sha256='ab' * 32)
  [feature_pass] = [node for node in built.components if node.id == names.FEATURE_GEN]
  assert config_lib.from_json(config_lib.EncoderConfig, feature_pass.exec_properties['encoder']) == encoder
  assert feature_pass.exec_properties['backbone_weights_sha256'] == 'ab' * 32
