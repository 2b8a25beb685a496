"""Which training stages a model went through, written into its SavedModel.

A captioner fine-tuned on CIDEr-D (components/training/scst.py) scores and
captions differently from one trained by cross-entropy alone, so whoever reads
its metrics must be able to tell. The Trainer writes the list into the
serving SavedModel (names.SERVING_STAGES_FILE, in assets.extra/, which TF
Serving ignores): it travels with the model through the Pusher, and the
evaluator and the gallery read it from the model they caption, whatever run
trained it. The training report (names.TRAINING_REPORT_FILE) holds the same
list for the run summary.
"""
import json
import os
from typing import List, Optional

import tensorflow as tf

from components import config as config_lib
from components import names

CROSS_ENTROPY = 'cross_entropy'  # teacher forcing on the next word (model.summed_caption_loss)
SCST = 'scst'  # self-critical sequence training on CIDEr-D (scst.py)


def of(config: config_lib.TrainerConfig) -> List[str]:
  """The stages `config` trains through, in order."""
  return [CROSS_ENTROPY] + ([SCST] if config.scst_epochs else [])


def write(model_dir: str, stages: List[str]) -> None:
  path = os.path.join(model_dir, names.SERVING_STAGES_FILE)
  tf.io.gfile.makedirs(os.path.dirname(path))
  with tf.io.gfile.GFile(path, 'w') as f:
    json.dump(stages, f)


def read(model_dir: str) -> Optional[List[str]]:
  """The stages of the SavedModel in `model_dir`; None for a model exported before they were recorded."""
  path = os.path.join(model_dir, names.SERVING_STAGES_FILE)
  if not tf.io.gfile.exists(path):
    return None
  with tf.io.gfile.GFile(path) as f:
    return json.load(f)


def describe(stages: Optional[List[str]]) -> str:
  """'cross_entropy, then scst', or 'not recorded' for an older model."""
  return ', then '.join(stages) if stages else 'not recorded'
