"""Runs a component's executor in-process on artifacts in a folder, as the TFX launcher would.

No pipeline, orchestrator or ML Metadata: the executor's `Do` gets the input
artifacts it would get in a run and output artifacts whose folders exist
(`<out_dir>/<output key>`, created as the launcher creates them). What it
writes there and the custom properties it sets are what the tests check.
Beam runs on the in-memory DirectRunner with one worker unless a caller asks
otherwise: test data is tiny and worker processes cost more than they save.
A pipeline node's parameters come from pipeline.create_pipeline itself
(`node_parameters`), so a test runs an executor with the pipeline's wiring,
not a second copy of it that could drift.
"""
import os
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Type

from tfx.components.pusher import executor as pusher_executor
from tfx.dsl.components.base import base_beam_executor
from tfx.proto import pusher_pb2
from tfx.types import artifact
from tfx.types import standard_artifacts
from tfx.types import standard_component_specs
from tfx.utils import proto_utils

from components import artifacts as artifacts_lib
from components import config as config_lib
from components import names
from components.evaluation import caption_evaluator
from components.ingestion import example_gen
from pipeline import pipeline as pipeline_lib

IN_MEMORY_BEAM_ARGS = ('--direct_num_workers=1',)


def beam_context(beam_args: Sequence[str] = IN_MEMORY_BEAM_ARGS) -> base_beam_executor.BaseBeamExecutor.Context:
  """The context a Beam executor is constructed with."""
  return base_beam_executor.BaseBeamExecutor.Context(beam_pipeline_args=list(beam_args))


def node_parameters(node_id: str, **pipeline_args: Any) -> Dict[str, Any]:
  """The exec_properties the orchestrator hands node `node_id` of the pipeline.

  Built by pipeline.create_pipeline, called with `pipeline_args` (its
  arguments; defaults for the others), so that every parameter the pipeline
  derives from a config (the encoder's and the thresholds' JSON, ...) is
  derived here by the same code. Parameters left None are
  dropped, as the TFX compiler drops them: the executor then uses the
  component's default.
  """
  args = dict(pipeline_name=names.PIPELINE_NAME, pipeline_root='pipeline_root', data_root='data',
              schema_path=names.SCHEMA_PATH, serving_model_dir='serving',
              transform_config=config_lib.TransformConfig(), encoder_config=config_lib.EncoderConfig(),
              trainer_config=config_lib.TrainerConfig(),
              baseline_config=config_lib.TrainerConfig(use_image=False),
              evaluation_config=config_lib.EvaluationConfig())
  built = pipeline_lib.create_pipeline(**{**args, **pipeline_args})
  [node] = [node for node in built.components if node.id == node_id]
  return {key: value for key, value in node.exec_properties.items() if value is not None}


def run_executor(executor, inputs: Mapping[str, Optional[artifact.Artifact]],
                 outputs: Mapping[str, Type[artifact.Artifact]], exec_properties: Mapping[str, Any],
                 out_dir: str) -> Dict[str, artifact.Artifact]:
  """Calls `executor.Do` with one artifact per input and output key; returns the outputs by key.

  Args:
    executor: an executor instance, e.g. `Component.EXECUTOR_SPEC.executor_class()`.
    inputs: input key -> artifact; None leaves an optional input out.
    outputs: output key -> artifact type; each gets uri `<out_dir>/<key>`, created.
    exec_properties: the component's parameters, as the orchestrator hands them over.
    out_dir: folder for the outputs.
  """
  output_artifacts = {}
  for key, artifact_type in outputs.items():
    output_artifacts[key] = artifact_type()
    output_artifacts[key].uri = os.path.join(str(out_dir), key)
    os.makedirs(output_artifacts[key].uri)
  executor.Do({key: [value] for key, value in inputs.items() if value is not None},
              {key: [value] for key, value in output_artifacts.items()}, dict(exec_properties))
  return output_artifacts


def run_example_gen(data_dir: str, out_dir: str, beam_args: Sequence[str] = IN_MEMORY_BEAM_ARGS,
                    restval_split: str = names.DEFAULT_RESTVAL_SPLIT
                    ) -> Tuple[standard_artifacts.Examples, example_gen.IngestionReport]:
  """Runs the ExampleGen's executor on a dataset folder; returns its (examples, reject report)."""
  outputs = run_executor(
      example_gen.Executor(beam_context(beam_args)), {},
      {example_gen.EXAMPLES_KEY: standard_artifacts.Examples,
       example_gen.REJECTS_KEY: example_gen.IngestionReport},
      node_parameters(names.EXAMPLE_GEN, data_root=str(data_dir), restval_split=restval_split), out_dir)
  return outputs[example_gen.EXAMPLES_KEY], outputs[example_gen.REJECTS_KEY]


def run_caption_evaluator(out_dir: str, examples: standard_artifacts.Examples, model: standard_artifacts.Model,
                          thresholds: config_lib.EvaluationConfig,
                          baseline_model: Optional[standard_artifacts.Model] = None,
                          last_blessed_model: Optional[standard_artifacts.Model] = None,
                          batch_size: int = 5
                          ) -> Tuple[artifact.Artifact, standard_artifacts.ModelBlessing]:
  """Runs CaptionEvaluator with the pipeline's parameters for `thresholds`; returns its (evaluation, blessing)."""
  outputs = run_executor(
      caption_evaluator.CaptionEvaluator.EXECUTOR_SPEC.executor_class(),
      {'examples': examples, 'model': model, 'baseline_model': baseline_model,
       'last_blessed_model': last_blessed_model},
      {'evaluation': artifacts_lib.CaptionEvaluation, 'blessing': standard_artifacts.ModelBlessing},
      {**node_parameters(names.CAPTION_EVALUATOR, evaluation_config=thresholds), 'batch_size': batch_size},
      out_dir)
  return outputs['evaluation'], outputs['blessing']


def run_pusher(out_dir: str, model: standard_artifacts.Model, blessing: standard_artifacts.ModelBlessing,
               serving_dir: str) -> standard_artifacts.PushedModel:
  """Runs the standard Pusher into `serving_dir`; returns its PushedModel (custom property `pushed` 1/0)."""
  destination = pusher_pb2.PushDestination(
      filesystem=pusher_pb2.PushDestination.Filesystem(base_directory=str(serving_dir)))
  outputs = run_executor(
      pusher_executor.Executor(),
      {standard_component_specs.MODEL_KEY: model, standard_component_specs.MODEL_BLESSING_KEY: blessing},
      {standard_component_specs.PUSHED_MODEL_KEY: standard_artifacts.PushedModel},
      {standard_component_specs.PUSH_DESTINATION_KEY: proto_utils.proto_to_json(destination)}, out_dir)
  return outputs[standard_component_specs.PUSHED_MODEL_KEY]
