"""CaptionTrainer: TFX's Trainer with one more input, the ImageFeatureGen's artifact.

TFX's standard Trainer takes a fixed set of input channels, none of which can
carry an ImageFeatures artifact (`base_model` and `hyperparameters` are typed
Model and HyperParameters). Passing the features' path through `custom_config`
instead would hide the dependency from the DAG and from TFX's cache, whose key
is the input artifacts plus the execution properties. So this component is the
standard Trainer's spec with an optional names.IMAGE_FEATURES_KEY channel,
run by the standard GenericExecutor, which hands run_fn the artifact's uri as
one more typed field of its `FnArgs` (`CaptionFnArgs.image_features_uri`), so
the custom_config stays the TrainerConfig alone. Everything else, the other
`FnArgs` fields and the `model` / `model_run` outputs, is the standard Trainer's.

A cached ImageFeatures artifact (same examples, same encoder settings) with
changed training settings retrains from the same features; new features
retrain the Trainer.
"""
from typing import Any, Dict, List, Optional

import attr
from tfx import types
from tfx.components.trainer import executor as trainer_executor
from tfx.components.trainer import fn_args_utils
from tfx.dsl.components.base import base_component
from tfx.dsl.components.base import executor_spec
from tfx.proto import trainer_pb2
from tfx.types import artifact_utils
from tfx.types import component_spec
from tfx.types import standard_artifacts
from tfx.types import standard_component_specs
from tfx.utils import json_utils

from components import names
from components.artifacts import ImageFeatures


@attr.s
class CaptionFnArgs(fn_args_utils.FnArgs):
  """The standard FnArgs plus the ImageFeatures artifact's uri (None without one)."""
  image_features_uri = attr.ib(type=Optional[str], default=None)


class CaptionTrainerSpec(types.ComponentSpec):
  """The standard TrainerSpec plus an optional ImageFeatures input."""
  PARAMETERS = standard_component_specs.TrainerSpec.PARAMETERS
  INPUTS = {
      **standard_component_specs.TrainerSpec.INPUTS,
      names.IMAGE_FEATURES_KEY: component_spec.ChannelParameter(type=ImageFeatures, optional=True),
  }
  OUTPUTS = standard_component_specs.TrainerSpec.OUTPUTS


class Executor(trainer_executor.GenericExecutor):
  """The standard Trainer executor; run_fn gets CaptionFnArgs (see the module docstring)."""

  def _GetFnArgs(self, input_dict: Dict[str, List[types.Artifact]],
                 output_dict: Dict[str, List[types.Artifact]],
                 exec_properties: Dict[str, Any]):
    fn_args = super()._GetFnArgs(input_dict, output_dict, exec_properties)
    image_features = input_dict.get(names.IMAGE_FEATURES_KEY)
    return CaptionFnArgs(**attr.asdict(fn_args, recurse=False),
                         image_features_uri=artifact_utils.get_single_uri(image_features)
                         if image_features else None)


class CaptionTrainer(base_component.BaseComponent):
  """Trains with `run_fn` on Transform output and, optionally, cached image features.

  Outputs, as the standard Trainer's: `model` (Model) and `model_run` (ModelRun).
  """
  SPEC_CLASS = CaptionTrainerSpec
  EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)

  def __init__(self, run_fn: str, examples: types.BaseChannel, transform_graph: types.BaseChannel,
               schema: types.BaseChannel, train_args: trainer_pb2.TrainArgs,
               eval_args: trainer_pb2.EvalArgs, custom_config: Dict[str, Any],
               image_features: Optional[types.BaseChannel] = None):
    """As tfx.components.Trainer's arguments of the same names; `image_features`: ImageFeatures."""
    super().__init__(spec=CaptionTrainerSpec(
        run_fn=run_fn, examples=examples, transform_graph=transform_graph, schema=schema,
        train_args=train_args, eval_args=eval_args, custom_config=json_utils.dumps(custom_config),
        image_features=image_features,
        model=types.Channel(type=standard_artifacts.Model),
        model_run=types.Channel(type=standard_artifacts.ModelRun)))
