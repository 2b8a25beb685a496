"""The run summary: what a person looks at after the pipeline finishes.

Reads the newest outputs of the evaluation, push, gallery and ingestion nodes
from ML Metadata (so cached components are reported as well as fresh ones) and
writes them, with the captioner's and the baseline's metrics, as one JSON file.
"""
import collections
import json
import os
from typing import Any, Dict, List, Optional

from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2
from tfx import v1 as tfx

from components import names
from components.evaluation import caption_evaluator, caption_metrics
from components.evaluation import report as report_lib

# The Trainers' reports, labelled with the role of the model each trains.
_TRAINERS = dict(zip((report_lib.CAPTIONER, report_lib.BASELINE), names.TRAINERS))
_DONE = (metadata_store_pb2.Execution.COMPLETE, metadata_store_pb2.Execution.CACHED)


def latest_outputs(store: metadata_store.MetadataStore, pipeline_name: str,
                   node_id: str) -> Dict[str, List[metadata_store_pb2.Artifact]]:
  """Output artifacts by key of the node's newest finished execution."""
  context = store.get_context_by_type_and_name('node', f'{pipeline_name}.{node_id}')
  if context is None:
    return {}
  executions = [e for e in store.get_executions_by_context(context.id)
                if e.last_known_state in _DONE]
  if not executions:
    return {}
  newest = max(executions, key=lambda e: (e.create_time_since_epoch, e.id))
  events = [e for e in store.get_events_by_execution_ids([newest.id])
            if e.type == metadata_store_pb2.Event.OUTPUT]
  artifacts = {a.id: a for a in store.get_artifacts_by_id([e.artifact_id for e in events])}
  outputs = collections.defaultdict(list)
  for event in events:
    outputs[event.path.steps[0].key].append(artifacts[event.artifact_id])
  return dict(outputs)


def _uri(outputs, key: str) -> str:
  return outputs[key][0].uri if outputs.get(key) else ''


def _artifact_json(outputs, key: str, file_name: str) -> Any:
  """The JSON file `file_name` inside output `key`, or None if there is none."""
  path = os.path.join(_uri(outputs, key), file_name) if _uri(outputs, key) else ''
  if not path or not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def _evaluation_report(outputs) -> Optional[Dict[str, Any]]:
  """The CaptionEvaluator's report (read through its type, so a malformed one fails here) as
  the JSON object of its file, or None when the evaluator has not run."""
  uri = _uri(outputs, 'evaluation')
  if not uri or not os.path.exists(report_lib.path(uri)):
    return None
  return report_lib.to_json_dict(report_lib.read(uri))


def write_summary(metadata_path: str, pipeline_name: str, summary_path: str) -> Dict[str, Any]:
  """Collects the run's results from ML Metadata and writes them to `summary_path`."""
  store = metadata_store.MetadataStore(
      tfx.orchestration.metadata.sqlite_metadata_connection_config(metadata_path))
  evaluation = latest_outputs(store, pipeline_name, names.CAPTION_EVALUATOR)
  pushed = latest_outputs(store, pipeline_name, names.PUSHER).get('pushed_model', [])
  gallery_outputs = latest_outputs(store, pipeline_name, names.DEMO_GALLERY)
  gallery_uri = _uri(gallery_outputs, 'gallery')
  ingestion = latest_outputs(store, pipeline_name, names.EXAMPLE_GEN)
  push = pushed[0].custom_properties if pushed else {}
  summary = {
      'evaluation': _evaluation_report(evaluation),
      'demo': _artifact_json(gallery_outputs, 'gallery', names.GALLERY_METRICS_FILE),
      'pushed': bool(push['pushed'].int_value) if 'pushed' in push else False,
      'pushed_model': push['pushed_destination'].string_value if 'pushed_destination' in push else None,
      'gallery': os.path.join(gallery_uri, names.GALLERY_INDEX_FILE) if gallery_uri else None,
      # Vocabulary size and sequence length chosen from the data, loss history.
      'training': {
          role: _artifact_json(latest_outputs(store, pipeline_name, node), 'model_run',
                               names.TRAINING_REPORT_FILE)
          for role, node in _TRAINERS.items()},
      'ingestion': _artifact_json(ingestion, 'rejects', names.INGESTION_SUMMARY_FILE),
      # What computed the features, hardware choices as the feature pass's machine resolved them.
      'encoder': _artifact_json(latest_outputs(store, pipeline_name, names.FEATURE_GEN),
                                names.IMAGE_FEATURES_KEY, names.ENCODER_FILE),
      'reject_report': _uri(ingestion, 'rejects') or None,
  }
  trained = {role: report for role, report in summary['training'].items() if report}
  summary['seed'] = next((report['config'].get('seed') for report in trained.values()), None)
  # Trainers that continued an interrupted training from its backup: role -> epochs restored.
  summary['resumed'] = {role: report['resumed_from_epoch'] for role, report in trained.items()
                        if report.get('resumed_from_epoch')}
  with open(summary_path, 'w') as f:
    json.dump(summary, f, indent=2)
  summary['summary'] = summary_path
  return summary


def render(summary: Dict[str, Any]) -> str:
  """The summary as text for a terminal: both models' metrics, the decision, the paths."""
  lines = []
  if summary.get('evaluation'):
    lines.append(caption_evaluator.format_report(report_lib.from_json_dict(summary['evaluation'])))
  demo = summary.get('demo') or {}
  if demo.get('shown_model'):
    baseline = (demo.get('baseline') or {}).get(caption_metrics.BLEU_4)
    lines.append(f"BLEU-4 on the {demo['split']} split: captioner "
                 f"{demo['shown_model'][caption_metrics.BLEU_4]:.4f}, captions-only baseline "
                 + (f'{baseline:.4f}' if baseline is not None else 'not computed'))
  captioner_training = (summary.get('training') or {}).get('captioner')
  if captioner_training:
    lines.append(f"Vocabulary {captioner_training['vocabulary_size']} ids (4 special tokens), "
                 f"sequence length {captioner_training['sequence_length']} (from the data)")
  encoder = summary.get('encoder')
  if encoder:
    decoder_precision = (captioner_training or {}).get('decoder_precision')
    lines.append(f"Encoder {encoder['backbone']} ({encoder['pooling']}, {encoder['image_size']} px) in "
                 f"{encoder['precision']}" + (f'; decoder in {decoder_precision}' if decoder_precision else ''))
  lines.append(f"Seed {summary['seed']}" + ''.join(
      f"; the {role} resumed its training after epoch {epoch}"
      for role, epoch in sorted(summary['resumed'].items())))
  lines += [
      f"Pushed model:  {summary['pushed_model'] if summary['pushed'] else 'nothing pushed'}",
      f"Gallery:       {summary['gallery']}",
      f"Reject report: {summary['reject_report']}",
      f"Summary JSON:  {summary['summary']}",
  ]
  return '\n'.join(lines)
