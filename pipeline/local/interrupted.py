"""Settles what a killed or interrupted local run left behind, before the next run starts.

LocalDagRunner marks an execution RUNNING in ML Metadata before its executor
starts, and COMPLETE or FAILED when the executor returns or raises. A process
that is killed (or stopped with Ctrl-C, which is not an `Exception` the
launcher catches) leaves its execution RUNNING for ever, beside output
folders (`<pipeline_root>/<node>/<output key>/<execution id>`) that no
artifact in the store points to, half written or empty. The next run would
not reuse them (only published outputs are cached) but the store would claim
a run in progress that is not.

`settle_interrupted` marks every NEW or RUNNING execution of the pipeline
CANCELED and deletes the output and system folders of every execution that
never published its outputs (CANCELED or FAILED), so each folder left under
the pipeline root belongs to an artifact in the store. A Trainer's training
backup (components/training/callbacks.py) lives beside those folders, not in
them, and survives, so the Trainer resumes from it.

Why TFX does not do it: LocalDagRunner registers a new execution for every
node of every run and never looks at earlier ones, and its launcher cleans up
after an executor only when the executor returns or raises in the same
process (tfx/orchestration/portable/launcher.py); a killed process runs
neither, and LocalDagRunner has no step that settles an earlier process's
executions.

Only the local runner calls this, at the start of a run and when a run is
interrupted: the local runner is the only one writing to its metadata store.
"""
import glob
import logging
import os
import shutil
from typing import List

from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2

_ACTIVE = (metadata_store_pb2.Execution.NEW, metadata_store_pb2.Execution.RUNNING)
_UNPUBLISHED = (metadata_store_pb2.Execution.CANCELED, metadata_store_pb2.Execution.FAILED)
# TFX's per-execution system folder, <node>/.system/executor_execution/<id>
# (tfx/orchestration/portable/outputs_utils.py).
_SYSTEM_EXECUTION_DIR = os.path.join('.system', 'executor_execution')


def settle_interrupted(store: metadata_store.MetadataStore, pipeline_name: str,
                       pipeline_root: str) -> List[str]:
  """Cancels the pipeline's unfinished executions and removes unpublished output folders.

  Returns:
    One line per execution it cancelled, naming the node and the execution.
  """
  published = {a.uri for a in store.get_artifacts()}
  cancelled = []
  prefix = f'{pipeline_name}.'
  for context in store.get_contexts_by_type('node'):
    if not context.name.startswith(prefix):
      continue
    node_id = context.name[len(prefix):]
    for execution in store.get_executions_by_context(context.id):
      if execution.last_known_state in _ACTIVE:
        execution.last_known_state = metadata_store_pb2.Execution.CANCELED
        store.put_executions([execution])
        cancelled.append(f'{node_id}: execution {execution.id} was interrupted; '
                         'marked CANCELED, its partial outputs removed')
      if execution.last_known_state in _UNPUBLISHED:
        _remove_folders(os.path.join(pipeline_root, node_id), execution.id, published)
  for line in cancelled:
    logging.warning('%s', line)
  return cancelled


def _remove_folders(node_dir: str, execution_id: int, published: set) -> None:
  """Deletes `<node_dir>/*/<execution_id>` folders no artifact points to."""
  candidates = glob.glob(os.path.join(node_dir, '*', str(execution_id)))
  candidates.append(os.path.join(node_dir, _SYSTEM_EXECUTION_DIR, str(execution_id)))
  for folder in candidates:
    in_use = any(uri == folder or uri.startswith(folder + os.sep) for uri in published)
    if os.path.isdir(folder) and not in_use:
      shutil.rmtree(folder)
      logging.info('Removed %s (execution %d published no outputs)', folder, execution_id)
