"""Typed configuration of the captioner pipeline, in one place.

The hyperparameters travel from the runners to the Transform and Trainer
module code through TFX's `custom_config` (a JSON-serialisable dict); both
sides convert with `to_custom_config` / `from_custom_config` so nothing is
passed around as loose strings.
"""
import dataclasses
from typing import Any, Dict, Optional, Type, TypeVar

_T = TypeVar('_T')


@dataclasses.dataclass(frozen=True)
class TransformConfig:
  """How captions become token ids (see components/training/transform.py)."""
  # Words seen fewer times than this in the train split map to <unk>.
  min_word_frequency: int = 2
  # Upper bound on the learned vocabulary (special tokens not counted).
  max_vocabulary_size: int = 10000
  # Sequence length (tokens incl. <start> and <end>) is this percentile of the
  # train captions' lengths; longer captions are truncated (keeping <end>).
  length_percentile: float = 95.0
  # A fixed sequence length instead of the percentile, when set.
  sequence_length: Optional[int] = None


@dataclasses.dataclass(frozen=True)
class TrainerConfig:
  """Model and training hyperparameters (see components/training/trainer.py)."""
  # 'vgg16' (the brief's default) or 'inception_v3'.
  backbone: str = 'vgg16'
  # 'imagenet' (Keras download), a local .h5 path, or None for random weights.
  backbone_weights: Optional[str] = 'imagenet'
  # Square input side in pixels; None means the backbone's own (224 / 299).
  image_size: Optional[int] = None
  # 'flatten' keeps the last conv block's spatial layout (position words need
  # it); 'avg' global-average-pools it (smaller, position-blind).
  pooling: str = 'flatten'
  # Show and Tell uses 512-unit LSTMs and 512-d embeddings; the brief asks 300-d.
  embedding_dim: int = 300
  lstm_units: int = 512
  num_layers: int = 1  # 1 to 3 stacked LSTMs
  dropout: float = 0.3
  batch_size: int = 64
  epochs: int = 30
  learning_rate: float = 1e-3
  early_stopping_patience: int = 3
  # Smaller val_loss gains (nats per caption) count as no gain: a plateaued
  # model stops instead of creeping on for its whole epoch budget.
  early_stopping_min_delta: float = 0.05
  # The brief's ImageDataGenerator augmentation; turns off the feature cache.
  augment: bool = False
  # float16 compute on GPUs; ignored without one.
  mixed_precision: bool = False
  # Beam width of the exported caption signature; 1 is greedy decoding.
  beam_width: int = 3
  # False trains the brief's step-2 captions-only language model (baseline).
  use_image: bool = True
  # Seeds weight initialisation, dropout and shuffling (with TensorFlow's op
  # determinism on), and the local runner's embedded dataset: on a CPU the
  # same seed and inputs give the same model and metrics.
  seed: int = 0


@dataclasses.dataclass(frozen=True)
class EvaluationConfig:
  """Blessing thresholds of the CaptionEvaluator.

  The defaults suit real Flickr8k, where Show and Tell scores BLEU-4 around
  0.2 and CIDEr-D around 0.5; the local runner raises them for the embedded
  dataset, whose captions follow from the pixels.
  """
  min_bleu4: float = 0.15
  min_cider: float = 0.3
  # Largest BLEU-4 drop tolerated against the last blessed model.
  max_regression: float = 0.02
  # The captioner's BLEU-4 over the captions-only baseline's: below 1 it does
  # not beat a model that never looks at the image.
  min_baseline_ratio: float = 1.0


@dataclasses.dataclass(frozen=True)
class EmbeddedDataset:
  """The generated shapes dataset the local runner uses without --data_dir.

  Small and synthetic, so a CPU learns it in minutes; see
  components/ingestion/shapes_dataset.py. Its seed is TrainerConfig.seed.
  """
  num_images: int = 2000
  image_size: int = 64


EMBEDDED_DATASET = EmbeddedDataset()
# Training on the embedded dataset: random backbone weights (no download), its
# own small image size, a smaller LSTM. Real data uses TrainerConfig().
EMBEDDED_TRAINER = TrainerConfig(backbone_weights=None, image_size=EMBEDDED_DATASET.image_size,
                                 lstm_units=256, epochs=25)
# The embedded dataset's captions follow from the pixels: a good model must score high.
EMBEDDED_EVALUATION = EvaluationConfig(min_bleu4=0.7, min_cider=2.0, min_baseline_ratio=2.0)


def to_custom_config(config: Any) -> Dict[str, Any]:
  return dataclasses.asdict(config)


def from_custom_config(cls: Type[_T], custom_config: Optional[Dict[str, Any]]) -> _T:
  """Rebuilds a config from `custom_config`, refusing unknown keys."""
  custom_config = dict(custom_config or {})
  known = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(custom_config) - known)
  if unknown:
    raise ValueError(f'Unknown {cls.__name__} keys {unknown}; known: {sorted(known)}')
  return cls(**custom_config)
