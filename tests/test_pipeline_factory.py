"""pipeline.create_pipeline: what differs per node is an argument, checked against the nodes."""
from kfp.pipeline_spec import pipeline_spec_pb2
import pytest

from components import config as config_lib
from components import names
from pipeline import pipeline as pipeline_lib

_ResourceSpec = pipeline_spec_pb2.PipelineDeploymentConfig.PipelineContainerSpec.ResourceSpec


def _build(**per_node):
  return pipeline_lib.create_pipeline(
      pipeline_name=names.PIPELINE_NAME, pipeline_root='root', data_root='data',
      schema_path=names.SCHEMA_PATH, serving_model_dir='serving',
      transform_config=config_lib.TransformConfig(), trainer_config=config_lib.TrainerConfig(),
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
