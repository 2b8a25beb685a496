"""Which training stages a model went through, written into its SavedModel.

A captioner fine-tuned on CIDEr-D (components/training/scst.py) scores and
captions differently from one trained by cross-entropy alone, so whoever reads
its metrics must be able to tell. The Trainer writes the list into the
serving SavedModel (names.SERVING_STAGES_FILE, in assets.extra/, which TF
Serving ignores): it travels with the model through the Pusher, and the
evaluator and the gallery read it from the model they caption, whatever run
trained it. The training report (names.TRAINING_REPORT_FILE) holds the same
list for the run summary.

The same file records the model's decoder (config_lib.DECODERS), as the
serving model's encoder file records its encoder:
  {"stages": ["cross_entropy", ...], "decoder": "show_and_tell"}
(models exported before the decoder was recorded hold the bare list).
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


_STAGES, _DECODER = 'stages', 'decoder'


def write(model_dir: str, stages: List[str], decoder: str) -> None:
  if decoder not in config_lib.DECODERS:
    raise ValueError(f'Unknown decoder {decoder!r}; choose one of {config_lib.DECODERS}.')
  path = os.path.join(model_dir, names.SERVING_STAGES_FILE)
  tf.io.gfile.makedirs(os.path.dirname(path))
  with tf.io.gfile.GFile(path, 'w') as f:
    json.dump({_STAGES: stages, _DECODER: decoder}, f)


def _read(model_dir: str):
  path = os.path.join(model_dir, names.SERVING_STAGES_FILE)
  if not tf.io.gfile.exists(path):
    return None
  with tf.io.gfile.GFile(path) as f:
    recorded = json.load(f)
  return recorded if isinstance(recorded, dict) else {_STAGES: recorded}


def read(model_dir: str) -> Optional[List[str]]:
  """The stages of the SavedModel in `model_dir`; None for a model exported before they were recorded."""
  recorded = _read(model_dir)
  return None if recorded is None else recorded[_STAGES]


def read_decoder(model_dir: str) -> Optional[str]:
  """The decoder of the SavedModel in `model_dir` (one of config_lib.DECODERS); None for a
  model exported before it was recorded."""
  recorded = _read(model_dir)
  return None if recorded is None else recorded.get(_DECODER)


def describe(stages: Optional[List[str]]) -> str:
  """'cross_entropy, then scst', or 'not recorded' for an older model."""
  return ', then '.join(stages) if stages else 'not recorded'
