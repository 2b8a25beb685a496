"""Reading a pipeline run back from ML Metadata: which node an execution is, what its outputs counted.

The components keep their counters (images run through the backbone, ...) as
custom properties of their output artifacts; the end-to-end test and
bench/features.py and bench/real_scale.py read them here, one way.
"""
from typing import List

from ml_metadata.proto import metadata_store_pb2
from tfx import types
from tfx.types import artifact_utils


def node_id(store, execution: metadata_store_pb2.Execution) -> str:
  """The pipeline node id (e.g. names.FEATURE_GEN) that ran `execution`."""
  [context] = [c for c in store.get_contexts_by_execution(execution.id)
               if store.get_context_types_by_id([c.type_id])[0].name == 'node']
  return context.name.split('.', 1)[1]


def latest_execution(store, node: str) -> metadata_store_pb2.Execution:
  """The newest execution of `node` (COMPLETE when it ran, CACHED when it was reused)."""
  [context] = [c for c in store.get_contexts_by_type('node') if c.name.split('.', 1)[1] == node]
  return max(store.get_executions_by_context(context.id), key=lambda e: e.id)


def _outputs(store, execution: metadata_store_pb2.Execution) -> List[metadata_store_pb2.Artifact]:
  events = store.get_events_by_execution_ids([execution.id])
  return store.get_artifacts_by_id([e.artifact_id for e in events if e.type == metadata_store_pb2.Event.OUTPUT])


def output_count(store, execution: metadata_store_pb2.Execution, name: str) -> int:
  """The int custom property `name` summed over the execution's outputs; 0 for an
  execution that did not run (reused from the cache: it counted nothing)."""
  if execution.last_known_state != metadata_store_pb2.Execution.COMPLETE:
    return 0
  return sum(a.custom_properties[name].int_value for a in _outputs(store, execution)
             if name in a.custom_properties)


def outputs(store, execution: metadata_store_pb2.Execution, type_name: str) -> List[types.Artifact]:
  """The execution's output artifacts of type `type_name` (e.g. 'Examples'), as TFX artifacts."""
  artifact_type = store.get_artifact_type(type_name)
  return [artifact_utils.deserialize_artifact(artifact_type, a) for a in _outputs(store, execution)
          if a.type_id == artifact_type.id]


def seconds(execution: metadata_store_pb2.Execution) -> float:
  """From the execution's registration (its start) to its last update (its end, once finished)."""
  return (execution.last_update_time_since_epoch - execution.create_time_since_epoch) / 1000
