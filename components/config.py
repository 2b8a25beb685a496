"""Typed configuration of the captioner pipeline, in one place.

The hyperparameters travel from the runners to the Transform and Trainer
module code through TFX's `custom_config` (a JSON-serialisable dict); both
sides convert with `to_custom_config` / `from_custom_config` so nothing is
passed around as loose strings.
"""
import dataclasses
from typing import Any, Dict, Optional, Type, TypeVar

from components import names

_T = TypeVar('_T')


@dataclasses.dataclass(frozen=True)
class TransformConfig:
  """How captions become token ids (see components/training/transform.py)."""
  # Words seen fewer times than this in the train split map to <unk>. 5 is the
  # published Flickr8k recipe's (RECIPE below): about 2,500 words on Flickr8k.
  min_word_frequency: int = 5
  # Upper bound on the learned vocabulary (special tokens not counted).
  max_vocabulary_size: int = 10000
  # Sequence length (tokens incl. <start> and <end>) is this percentile of the
  # train captions' lengths; longer captions are truncated (keeping <end>).
  length_percentile: float = 95.0
  # A fixed sequence length instead of the percentile, when set.
  sequence_length: Optional[int] = None


# How the learning rate changes over the epochs (TrainerConfig.learning_rate_schedule).
LEARNING_RATE_SCHEDULES = ('constant', 'cosine')

# How the frozen backbone's output becomes one vector per image (components/encoder/image_features.py).
POOLINGS = ('fc2', 'avg', 'flatten')
# The frozen backbone's arithmetic (components/encoder/precision.py): 'auto' is
# bfloat16 where the hardware has bfloat16 units (AMX/AVX512-BF16 CPUs, GPUs of
# compute capability 8.0+), float32 elsewhere; resolved when the pipeline is built.
AUTO_PRECISION = 'auto'
RESOLVED_PRECISIONS = ('float32', 'bfloat16')
PRECISIONS = (AUTO_PRECISION,) + RESOLVED_PRECISIONS


# The backbones (components/encoder/image_features.py), each with the square
# input side in pixels it was trained at, its default image size.
BACKBONE_IMAGE_SIZES = {'vgg16': 224, 'inception_v3': 299}


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
  """The frozen image encoder: every encoder default, written once.

  The flags (pipeline/settings.py) start from these; the pipeline hands them
  to the ImageFeatureGen (components/encoder/feature_gen.py `parameters`),
  whose artifact then records what was built (features_artifact.EncoderInfo):
  downstream, the Trainer, exporter, evaluator and gallery read the encoder
  from that artifact, not from a config.
  """
  # A key of BACKBONE_IMAGE_SIZES; VGG16 is the brief's.
  backbone: str = 'vgg16'
  # 'imagenet' (Keras download), a local .h5 path, or None for random weights
  # (the one spelling of random weights; the flag's 'none' becomes None).
  backbone_weights: Optional[str] = 'imagenet'
  # Square input side in pixels; None means the backbone's own (`input_size`).
  image_size: Optional[int] = None
  # The feature vector (components/encoder/image_features.py): 'fc2' is VGG16's
  # 4,096-d last hidden layer at 224 px, the paper's encoder; 'avg' pools the
  # last conv block (InceptionV3's 2,048-d pool, the paper's for it); 'flatten'
  # keeps its spatial layout (position words need it).
  pooling: str = 'fc2'
  # The frozen backbone's precision, one of PRECISIONS: its features (cached and
  # served) come from this arithmetic.
  precision: str = AUTO_PRECISION
  # The brief's ImageDataGenerator augmentation: the backbone runs inside the
  # Trainer on augmented pixels, so the cached features are not trained on.
  augment: bool = False

  @property
  def input_size(self) -> int:
    """The input side the backbone runs at: `image_size`, or the backbone's own when None."""
    if self.image_size:
      return self.image_size
    if self.backbone not in BACKBONE_IMAGE_SIZES:
      raise ValueError(f'Unknown backbone {self.backbone!r}; choose one of {sorted(BACKBONE_IMAGE_SIZES)}.')
    return BACKBONE_IMAGE_SIZES[self.backbone]


# RECIPE. The real-data defaults (TransformConfig(), TrainerConfig()) follow the
# published Show-and-Tell ("pre-inject": the image as the RNN's first input)
# reproductions on Flickr8k:
#   * danieljl/keras-image-captioning, results/flickr8k/final-model/
#     hyperparams-config.yaml, test BLEU-4 0.1895 with beam 3: words seen at
#     least 5 times (2,536 of them), embedding 300, Adam at 5.05e-4, batch 32;
#   * mtanti/where-image2, config.py, its 'pre' (pre-inject) architecture:
#     min_token_freq 5, dropout 0.5 on the embeddings and the RNN output, Adam,
#     batch 32, beam 3;
#   * tensorflow/models im2txt: minimum word count 4 (on MS COCO), beam 3.
# So: min_word_frequency 5, beam 3, dropout 0.5, and Adam at 5e-4 per batch
# of 32 -- taken here as 1e-3 per batch of 64 (the linear scaling rule): on
# this project's 2-core Xeon an epoch at batch 32 cost 1.2-1.6x one at batch 64
# (per-step overhead), with the same loss after the same captions
# (bench/decoder_speed.py, README "Tests and benchmarks"). Their 3 layers of
# 300 units (danieljl) or a 512-unit GRU (mtanti) differ from the paper's one
# 512-unit LSTM, which this project keeps.


@dataclasses.dataclass(frozen=True)
class TrainerConfig:
  """Model and training hyperparameters (see components/training/trainer.py).

  The defaults are the real-data recipe (RECIPE above); EMBEDDED_TRAINER
  holds the embedded dataset's.
  """
  # The frozen backbone and what it hands the decoder (EncoderConfig above).
  encoder: EncoderConfig = dataclasses.field(default_factory=EncoderConfig)
  # Show and Tell uses 512-unit LSTMs and 512-d embeddings; the brief asks 300-d.
  embedding_dim: int = 300
  lstm_units: int = 512
  num_layers: int = 1  # 1 to 3 stacked LSTMs
  dropout: float = 0.5
  batch_size: int = 64
  epochs: int = 30
  learning_rate: float = 1e-3
  # 'cosine' lowers the learning rate epoch by epoch along a half cosine, from
  # `learning_rate` towards 0 at the end of the `epochs` budget; 'constant' keeps it.
  # The decay is what makes a run repeat across processors: at a constant rate
  # the val_loss plateaus noisily, early stopping picks an epoch by chance, and
  # float noise in the features moved the embedded job's BLEU-4 by 0.07
  # (bench/seeds.py measures the spread over seeds).
  learning_rate_schedule: str = 'cosine'
  early_stopping_patience: int = 3
  # Smaller val_loss gains (nats per caption) count as no gain. Keras'
  # EarlyStopping also restores the last epoch that gained more than this, so a
  # large value throws away the small gains of a converging model's last epochs.
  early_stopping_min_delta: float = 0.0
  # float16 compute on GPUs; ignored without one.
  mixed_precision: bool = False
  # Decoder speed (bench/decoder_speed.py, Flickr8k's shape: 30,000 captions,
  # 5,000 words, LSTM 512, on a 2-core Xeon with AMX-BF16). `decoder_precision`,
  # one of PRECISIONS: the arithmetic of the matrix products in the embeddings,
  # the vocabulary projection and a FusedLSTM (states, gates and the softmax stay
  # float32); 'auto' is resolved by the Trainer on the machine it trains on, as
  # components/encoder/precision.py resolves it (emulated bfloat16 is several
  # times slower). `fused_training`: the training path built for CPUs
  # (model.build_models): FusedLSTM layers, logits only at the steps that have a
  # target, and Adam's fused kernel. The README gives their measured epoch times
  # against the float32 tf_keras LSTM. XLA (`jit_compile`) was slower; it stays off.
  decoder_precision: str = AUTO_PRECISION
  fused_training: bool = True
  jit_compile: bool = False
  # Self-critical sequence training (Rennie et al. 2017, components/training/scst.py)
  # after cross-entropy: epochs of it (0: none), captions sampled per image (the
  # model's greedy caption is their reward baseline) and Adam's learning rate
  # (Rennie et al.'s 5e-5). It trains from the cached features, so it needs
  # use_image and no augment. Off by default: bench/quality.py measured its
  # effect on the embedded dataset (README, "Self-critical training").
  scst_epochs: int = 0
  scst_samples: int = 5
  scst_learning_rate: float = 5e-5
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
  # Distinct captions over images captioned (components/evaluation/diversity.py).
  # One sentence under all 1,000 Flickr8k eval images scores 0.001 and can still
  # beat the baseline's BLEU-4; 0.1 (ten images per caption on average) is a
  # hundred times that, and leaves room for a beam-search Show and Tell, which
  # repeats its likeliest sentences across similar photos (not yet measured on
  # real Flickr8k: the data is not in this repository's environments).
  min_distinct_caption_share: float = 0.1


@dataclasses.dataclass(frozen=True)
class EmbeddedDataset:
  """A generated dataset the local runner uses without --data_dir, with the
  settings it is trained and judged with there (and in bench/quality.py).

  Small and synthetic, so a CPU learns it in minutes; see
  components/ingestion/shapes_dataset.py. Its seed is TrainerConfig.seed.
  """
  name: str  # one of names.EMBEDDED_DATASET_NAMES
  num_images: int
  transform: 'TransformConfig'
  trainer: 'TrainerConfig'
  evaluation: 'EvaluationConfig'

  @property
  def image_size(self) -> int:
    """The generated images' side in pixels: the encoder's input side, so nothing is resized."""
    return self.trainer.encoder.input_size


# The shapes dataset's 32 words are all frequent; 2 is what its figures were measured with.
EMBEDDED_TRANSFORM = TransformConfig(min_word_frequency=2)
# Training on the embedded dataset: random backbone weights (no download), its
# own small image size with the conv block flattened (its captions say where the
# shapes are, and fc2 needs 224 px), a smaller LSTM, and the training settings its
# figures were measured with (a small, noise-free dataset learns faster than the
# recipe's rate allows in 25 epochs; float32 and tf_keras' LSTM, as its 36-word
# softmax gains little from bfloat16 or the fused path). Real data uses TrainerConfig().
EMBEDDED_ENCODER = EncoderConfig(backbone_weights=None, image_size=64, pooling='flatten')
EMBEDDED_TRAINER = TrainerConfig(encoder=EMBEDDED_ENCODER, lstm_units=256, epochs=25, dropout=0.3,
                                 batch_size=64, learning_rate=1e-3,
                                 decoder_precision='float32', fused_training=False)
# The embedded dataset's captions follow from the pixels: a good model must score high.
# Its eval split has 150 distinct scenes in 250 images, so one wording per scene
# gives 0.6 distinct captions per image; the main job's captioner measured 0.632
# (bash run.sh pipeline, eval split), its one-sentence baseline 0.004. At 0.3, a
# captioner that loses position or colour, not only one saying a single sentence, fails.
EMBEDDED_EVALUATION = EvaluationConfig(min_bleu4=0.7, min_cider=2.0, min_baseline_ratio=2.0,
                                       min_distinct_caption_share=0.3)

# The scenes dataset (components/ingestion/scenes.py) is trained exactly as shapes is, at 128 px:
# VGG16's last pool is then 4x4 (flatten: 8,192-d), its block5_conv3 an 8x8 grid to attend over.
SCENES_TRAINER = dataclasses.replace(EMBEDDED_TRAINER, encoder=dataclasses.replace(EMBEDDED_ENCODER, image_size=128))
# Its captions follow from the pixels, but Show and Tell says little of what a scene holds
# (docs/datasets.md has its measured BLEU-4 and the baseline's): the gate asks for a clear
# win over the baseline; CIDEr-D and caption diversity keep the real-data thresholds.
SCENES_EVALUATION = EvaluationConfig(min_bleu4=0.15, min_baseline_ratio=1.5)

# The embedded datasets by name; `shapes` is the default everywhere.
EMBEDDED_DATASETS = {
    names.SHAPES_DATASET: EmbeddedDataset(names.SHAPES_DATASET, num_images=2000, transform=EMBEDDED_TRANSFORM,
                                          trainer=EMBEDDED_TRAINER, evaluation=EMBEDDED_EVALUATION),
    names.SCENES_DATASET: EmbeddedDataset(names.SCENES_DATASET, num_images=3000, transform=EMBEDDED_TRANSFORM,
                                          trainer=SCENES_TRAINER, evaluation=SCENES_EVALUATION),
}
EMBEDDED_DATASET = EMBEDDED_DATASETS[names.SHAPES_DATASET]


def to_custom_config(config: Any) -> Dict[str, Any]:
  return dataclasses.asdict(config)


def from_custom_config(cls: Type[_T], custom_config: Optional[Dict[str, Any]]) -> _T:
  """Rebuilds a config from `custom_config`, refusing unknown keys; nested
  configs (TrainerConfig.encoder) come back as their dataclasses."""
  custom_config = dict(custom_config or {})
  fields = {f.name: f.type for f in dataclasses.fields(cls)}
  unknown = sorted(set(custom_config) - set(fields))
  if unknown:
    raise ValueError(f'Unknown {cls.__name__} keys {unknown}; known: {sorted(fields)}')
  return cls(**{name: from_custom_config(fields[name], value)
                if dataclasses.is_dataclass(fields[name]) and isinstance(value, dict) else value
                for name, value in custom_config.items()})
