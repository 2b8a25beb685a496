"""The CaptionEvaluator's report (names.EVALUATION_METRICS_FILE), as a type.

The report is read by the gate's text rendering, the DemoGallery, the run
summary, the benches and the next run's people; a dataclass gives all of them
one definition of its fields instead of each looking up string keys in a JSON
object. The file stays what it has always been, a JSON object with these keys
in this order (`write` and `read` convert), so summaries and reports written
before this module still read.
"""
import dataclasses
import json
import os
from typing import Any, Dict, List, Mapping, Optional

import tensorflow as tf
from tfx.utils import io_utils

from components import config as config_lib
from components import names

# Roles of the scored models: the report's keys for them and those of names.EVALUATION_CAPTIONS_FILE.
CAPTIONER = 'captioner'
BASELINE = 'baseline'
LAST_BLESSED = 'last_blessed'
ROLES = (CAPTIONER, BASELINE, LAST_BLESSED)


@dataclasses.dataclass(frozen=True)
class ModelReport:
  """One scored model on the report's split."""
  model_uri: str  # the Model artifact's uri
  model_id: int  # its ML Metadata id
  metrics: Dict[str, float]  # caption_metrics name -> corpus score
  diversity: Dict[str, float]  # diversity.MEASURES name -> value (distinct_words is a count)
  # The training stages of its weights (components/training/stages.py), e.g.
  # ['cross_entropy', 'scst']; None for a model exported before they were recorded.
  stages: Optional[List[str]] = None


@dataclasses.dataclass(frozen=True)
class CaptionReport:
  """What the CaptionEvaluator measured and decided.

  Field order is the order of the keys in names.EVALUATION_METRICS_FILE.
  """
  split: str  # the split captioned and scored
  num_images: int  # images of that split
  tokenizer: str  # caption_metrics' tokenizer of the scores
  skipped_metrics: Dict[str, str]  # metric -> why it was not computed
  captioner: ModelReport  # the candidate
  baseline: Optional[ModelReport]  # the captions-only baseline, None without one
  last_blessed: Optional[ModelReport]  # the last blessed model, None on a first run
  serving_images: Dict[str, int]  # role -> images sent as bytes through serving_default
  thresholds: config_lib.EvaluationConfig  # the gate's thresholds
  blessed: bool
  reasons: List[str]  # one 'PASS: '/'FAIL: '/'NOTE: ' line per check of the gate

  def models(self) -> Dict[str, ModelReport]:
    """role -> ModelReport of the models present, in ROLES order."""
    return {role: getattr(self, role) for role in ROLES if getattr(self, role) is not None}


def to_json_dict(report: CaptionReport) -> Dict[str, Any]:
  """The report as the JSON object of names.EVALUATION_METRICS_FILE."""
  return dataclasses.asdict(report)


def from_json_dict(value: Mapping[str, Any]) -> CaptionReport:
  """A report from the JSON object of names.EVALUATION_METRICS_FILE (or the run summary's copy)."""
  fields = dict(value)
  for role in ROLES:
    fields[role] = ModelReport(**fields[role]) if fields[role] is not None else None
  fields['thresholds'] = config_lib.from_custom_config(config_lib.EvaluationConfig,
                                                       fields['thresholds'])
  return CaptionReport(**fields)


def path(evaluation_uri: str) -> str:
  """The report's file inside a CaptionEvaluation artifact."""
  return os.path.join(evaluation_uri, names.EVALUATION_METRICS_FILE)


def write(report: CaptionReport, evaluation_uri: str) -> None:
  """Writes the report into a CaptionEvaluation artifact's folder."""
  io_utils.write_string_file(path(evaluation_uri), json.dumps(to_json_dict(report), indent=2) + '\n')


def read(evaluation_uri: str) -> CaptionReport:
  """Reads the report of a CaptionEvaluation artifact's folder."""
  with tf.io.gfile.GFile(path(evaluation_uri)) as f:
    return from_json_dict(json.load(f))
