"""Typed configuration of the captioner pipeline, in one place.

Each config crosses into its component whole: the Transform's and the
Trainers' as TFX's `custom_config` (`to_custom_config` / `from_custom_config`),
the encoder's and the evaluation's as one JSON parameter (`to_json` /
`from_json`). Adding a setting is one field here (and its flag in
pipeline/settings.py); nothing in between unpacks it. The reasoning behind the
defaults is in docs/model.md.
"""
import dataclasses
import json
from typing import Any, Dict, Optional, Tuple, Type, TypeVar

from components import names

_T = TypeVar('_T')


@dataclasses.dataclass(frozen=True)
class TransformConfig:
  """How captions become token ids (see components/training/transform.py)."""
  # Words seen fewer times than this in the train split map to <unk> (the
  # published Flickr8k recipe's, docs/model.md).
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
# 'grid' keeps the last conv block's spatial grid for the attention decoder.
POOLINGS = ('fc2', 'avg', 'flatten', 'grid')
GRID_POOLING = 'grid'
# The dtype a grid is stored in (components/encoder/features_artifact.py): half of
# float32's bytes; the backbone rounds its grid to it, so every copy holds the same values.
GRID_FEATURE_DTYPE = 'bfloat16'
# The caption decoders (components/training/model.py, components/training/attention.py):
# Show and Tell sees the image once, at t=0; 'attention' (Show, Attend and Tell's soft
# attention) looks at the backbone's grid again at every word, and needs pooling 'grid'.
SHOW_AND_TELL, ATTENTION = 'show_and_tell', 'attention'
DECODERS = (SHOW_AND_TELL, ATTENTION)
# Arithmetic precisions (components/encoder/precision.py): 'auto' is bfloat16
# where the hardware has bfloat16 units, float32 elsewhere, resolved by the
# component that does the work, on the machine it runs on.
AUTO_PRECISION = 'auto'
RESOLVED_PRECISIONS = ('float32', 'bfloat16')
PRECISIONS = (AUTO_PRECISION,) + RESOLVED_PRECISIONS


# The backbones (components/encoder/image_features.py), each with the square
# input side in pixels it was trained at, its default image size.
BACKBONE_IMAGE_SIZES = {'vgg16': 224, 'inception_v3': 299}


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
  """The frozen image encoder: every encoder default, written once.

  The flags (pipeline/settings.py) start from these; the pipeline hands the
  whole config to the ImageFeatureGen as one JSON parameter, and its artifact
  records what was built (features_artifact.EncoderInfo, 'auto' resolved):
  downstream, the Trainer, exporter, evaluator and gallery read the encoder
  from that artifact, not from a config.
  """
  # A key of BACKBONE_IMAGE_SIZES.
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
  # served) come from this arithmetic. 'auto' travels as is and is resolved by
  # the ImageFeatureGen on its worker, which records the result in its artifact.
  precision: str = AUTO_PRECISION

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
# of 32 -- taken here as 1e-3 per batch of 64 (the linear scaling rule; batch
# 64 costs less per epoch on a CPU, docs/benchmarks.md). The paper's one
# 512-unit LSTM is kept.


@dataclasses.dataclass(frozen=True)
class TrainerConfig:
  """Model and training hyperparameters (see components/training/trainer.py).

  The defaults are the real-data recipe (RECIPE above); EMBEDDED_TRAINER
  holds the embedded dataset's.
  """
  # Image augmentation (rotation, shifts, shear, zoom, flip): the backbone runs
  # inside the Trainer on augmented pixels, so the cached features are not read.
  augment: bool = False
  # The serving input side of a model that reads no pixels (use_image False):
  # its graph decodes images of this size and ignores them.
  image_size: int = BACKBONE_IMAGE_SIZES[EncoderConfig.backbone]
  # One of DECODERS; 'attention' needs the encoder's pooling 'grid' (check_decoder)
  # and trains on the plain Keras path (fused_training False): the fused path is Show and Tell's.
  decoder: str = SHOW_AND_TELL
  # The attention decoder's MLP score: the size of its hidden layer (Xu et al.'s
  # attention model f_att); ignored by Show and Tell.
  attention_units: int = 512
  # Show and Tell uses 512-d embeddings; this project's are 300-d.
  embedding_dim: int = 300
  lstm_units: int = 512
  num_layers: int = 1  # 1 to 3 stacked LSTMs
  dropout: float = 0.5
  batch_size: int = 64
  # The budget of each Trainer (captioner and baseline): what val_loss needs on
  # Flickr8k-shaped captions, and short enough that a first real run on 2 cores
  # takes at most about twice a bare float32 backbone pass (docs/real-scale.md).
  epochs: int = 12
  learning_rate: float = 1e-3
  # 'cosine' lowers the learning rate epoch by epoch along a half cosine, from
  # `learning_rate` towards 0 at the end of the `epochs` budget; 'constant' keeps it.
  # The decay makes a run repeat across processors (docs/design-notes/determinism.md).
  learning_rate_schedule: str = 'cosine'
  # Epochs without a val_loss gain before training stops; under the cosine decay
  # val_loss moves smoothly, and each epoch of patience is an epoch trained for nothing.
  early_stopping_patience: int = 2
  # Smaller val_loss gains (nats per caption) count as no gain. Keras'
  # EarlyStopping also restores the last epoch that gained more than this, so a
  # large value throws away the small gains of a converging model's last epochs.
  early_stopping_min_delta: float = 0.0
  # float16 compute on GPUs; ignored without one.
  mixed_precision: bool = False
  # `decoder_precision`, one of PRECISIONS: the arithmetic of the matrix
  # products in the embeddings, the vocabulary projection and a FusedLSTM
  # (states, gates and the softmax stay float32); 'auto' is resolved by the
  # Trainer on the machine it trains on. `fused_training`: the training path
  # built for CPUs (model.build_models; docs/design-notes/fused-lstm.md).
  # XLA (`jit_compile`) was slower on CPUs; it stays off.
  decoder_precision: str = AUTO_PRECISION
  fused_training: bool = True
  jit_compile: bool = False
  # Self-critical sequence training (Rennie et al. 2017, components/training/scst.py)
  # after cross-entropy: epochs of it (0: none), captions sampled per image (the
  # model's greedy caption is their reward baseline) and Adam's learning rate
  # (Rennie et al.'s 5e-5). It trains from the cached features, so it needs
  # use_image and no augment. Off by default: its gain did not exceed the seed
  # spread (bench/quality.py, docs/benchmarks.md).
  scst_epochs: int = 0
  scst_samples: int = 5
  scst_learning_rate: float = 5e-5
  # Beam width of the exported caption signature; 1 is greedy decoding.
  beam_width: int = 3
  # False trains the captions-only language model, the baseline.
  use_image: bool = True
  # Seeds weight initialisation, dropout and shuffling (with TensorFlow's op
  # determinism on), and the local runner's embedded dataset: on a CPU the
  # same seed and inputs give the same model and metrics.
  seed: int = 0

  def __post_init__(self):
    if self.decoder not in DECODERS:
      raise ValueError(f'Unknown decoder {self.decoder!r}; choose one of {DECODERS}.')
    if self.decoder == ATTENTION and self.use_image and self.fused_training:
        raise ValueError('The fused training path (fused_training) is the Show-and-Tell decoder\'s; '
                         'the attention decoder trains on the plain Keras path: set fused_training=False.')


def _threshold(default: float, help_text: str) -> Any:
  """An EvaluationConfig field; pipeline/settings.py makes its flag from `help_text`."""
  return dataclasses.field(default=default, metadata={'help': help_text})


@dataclasses.dataclass(frozen=True)
class EvaluationConfig:
  """Blessing thresholds of the CaptionEvaluator, each with its flag's help.

  The defaults suit real Flickr8k, where Show and Tell scores BLEU-4 around
  0.2 and CIDEr-D around 0.5; the local runner raises them for the embedded
  dataset, whose captions follow from the pixels. A new threshold is a field
  here and its check in components/evaluation/caption_evaluator.py.
  """
  min_bleu4: float = _threshold(0.15, 'Blessing threshold on eval BLEU-4.')
  min_cider: float = _threshold(0.3, 'Blessing threshold on eval CIDEr-D.')
  max_regression: float = _threshold(
      0.02, 'Largest eval BLEU-4 drop tolerated against the last blessed model.')
  # Below 1 the captioner does not beat a model that never looks at the image.
  min_baseline_ratio: float = _threshold(
      1.0, "Blessing threshold on the captioner's eval BLEU-4 over the captions-only baseline's.")
  # One sentence under all 1,000 Flickr8k eval images scores 0.001; 0.1 (ten
  # images per caption on average) leaves room for a beam search that repeats
  # its likeliest sentences across similar photos.
  min_distinct_caption_share: float = _threshold(
      0.1, "Blessing threshold on the share of distinct captions among the captioner's eval "
           'captions, 0..1 (components/evaluation/diversity.py).')


@dataclasses.dataclass(frozen=True)
class EmbeddedDataset:
  """A generated dataset the local runner uses without --data_dir, with the
  settings it is trained and judged with there (and in bench/quality.py).

  Small and synthetic, so a CPU learns it in minutes; see
  components/ingestion/shapes_dataset.py. Its seed is TrainerConfig.seed.
  """
  name: str  # one of names.EMBEDDED_DATASET_NAMES
  num_images: int
  # The generated images' side in pixels, and the encoder's input side, so nothing is resized.
  image_size: int
  transform: 'TransformConfig'
  evaluation: 'EvaluationConfig'


# The shapes dataset's 32 words are all frequent; 2 is what its figures were measured with.
EMBEDDED_TRANSFORM = TransformConfig(min_word_frequency=2)
# Training on an embedded dataset: random backbone weights (no download), its
# own small image size with the conv block flattened (its captions say where the
# shapes are, and fc2 needs 224 px), a smaller LSTM, and the training settings its
# figures were measured with (a small, noise-free dataset learns faster than the
# recipe's rate allows in 25 epochs; float32 and tf_keras' LSTM, as its small
# softmax gains little from bfloat16 or the fused path). Real data uses TrainerConfig().
# The image size is the dataset's (embedded_defaults); these are shapes'.
EMBEDDED_ENCODER = EncoderConfig(backbone_weights=None, image_size=64, pooling='flatten')
EMBEDDED_TRAINER = TrainerConfig(image_size=64, lstm_units=256, epochs=25,
                                 dropout=0.3, batch_size=64, learning_rate=1e-3, early_stopping_patience=3,
                                 decoder_precision='float32', fused_training=False)
# The attention decoder on an embedded dataset: VGG16's block5_conv3 grid (4x4x512 at
# 64 px) and the Show-and-Tell job's training settings, so the two compare on one recipe.
EMBEDDED_ATTENTION_ENCODER = dataclasses.replace(EMBEDDED_ENCODER, pooling=GRID_POOLING)
EMBEDDED_ATTENTION_TRAINER = dataclasses.replace(EMBEDDED_TRAINER, decoder=ATTENTION, attention_units=256)
# The attention decoder on real photos: VGG16's block5_conv3 at 224 px (14x14x512), as
# Xu et al. encode; the recipe's settings otherwise, on the plain Keras path.
ATTENTION_ENCODER = EncoderConfig(pooling=GRID_POOLING)
ATTENTION_TRAINER = TrainerConfig(decoder=ATTENTION, fused_training=False)

# The shapes dataset's captions follow from the pixels: a good model must score high.
# Its eval split has 150 distinct scenes in 250 images, so one wording per scene
# gives 0.6 distinct captions per image. At 0.3, a captioner that loses position
# or colour, not only one saying a single sentence, fails.
EMBEDDED_EVALUATION = EvaluationConfig(min_bleu4=0.7, min_cider=2.0, min_baseline_ratio=2.0,
                                       min_distinct_caption_share=0.3)
# The scenes dataset's captions follow from the pixels too, but Show and Tell says little of
# what a scene holds (docs/datasets.md): the gate asks for a clear win over the baseline;
# CIDEr-D and caption diversity keep the real-data thresholds.
SCENES_EVALUATION = EvaluationConfig(min_bleu4=0.15, min_baseline_ratio=1.5)

# The embedded datasets by name; `shapes` is the default everywhere. Scenes are 128 px:
# VGG16's last pool is then 4x4 (flatten: 8,192-d), its block5_conv3 an 8x8 grid to attend over.
EMBEDDED_DATASETS = {
    names.SHAPES_DATASET: EmbeddedDataset(names.SHAPES_DATASET, num_images=2000, image_size=64,
                                          transform=EMBEDDED_TRANSFORM, evaluation=EMBEDDED_EVALUATION),
    names.SCENES_DATASET: EmbeddedDataset(names.SCENES_DATASET, num_images=3000, image_size=128,
                                          transform=EMBEDDED_TRANSFORM, evaluation=SCENES_EVALUATION),
}
EMBEDDED_DATASET = EMBEDDED_DATASETS[names.SHAPES_DATASET]


def decoder_defaults(decoder: str, dataset: Optional[EmbeddedDataset] = None
                     ) -> Tuple[EncoderConfig, TrainerConfig]:
  """The runners' (EncoderConfig, TrainerConfig) for `decoder`: on the embedded
  `dataset` (at its image size), or on real data when `dataset` is None."""
  if decoder not in DECODERS:
    raise ValueError(f'Unknown decoder {decoder!r}; choose one of {DECODERS}.')
  if dataset is None:
    return (ATTENTION_ENCODER, ATTENTION_TRAINER) if decoder == ATTENTION else (EncoderConfig(), TrainerConfig())
  encoder, trainer = ((EMBEDDED_ATTENTION_ENCODER, EMBEDDED_ATTENTION_TRAINER) if decoder == ATTENTION
                      else (EMBEDDED_ENCODER, EMBEDDED_TRAINER))
  return (dataclasses.replace(encoder, image_size=dataset.image_size),
          dataclasses.replace(trainer, image_size=dataset.image_size))


def check_decoder(encoder: EncoderConfig, trainer: TrainerConfig) -> None:
  """Refuses a decoder the encoder cannot feed: attention needs the backbone's grid.

  Raises:
    ValueError: naming the pooling the decoder needs.
  """
  if trainer.decoder == ATTENTION and trainer.use_image and encoder.pooling != GRID_POOLING:
    raise ValueError(f"The attention decoder attends over the backbone's grid: it needs pooling "
                     f"{GRID_POOLING!r}, got {encoder.pooling!r}.")


def to_custom_config(config: Any) -> Dict[str, Any]:
  return dataclasses.asdict(config)


def from_custom_config(cls: Type[_T], custom_config: Optional[Dict[str, Any]]) -> _T:
  """Rebuilds a config from `custom_config`, refusing unknown keys."""
  custom_config = dict(custom_config or {})
  unknown = sorted(set(custom_config) - {f.name for f in dataclasses.fields(cls)})
  if unknown:
    raise ValueError(f'Unknown {cls.__name__} keys {unknown}; known: '
                     f'{sorted(f.name for f in dataclasses.fields(cls))}')
  return cls(**custom_config)


def to_json(config: Any) -> str:
  """`config` as one component parameter: sorted keys, so equal configs give equal cache keys."""
  return json.dumps(dataclasses.asdict(config), sort_keys=True)


def from_json(cls: Type[_T], text: str) -> _T:
  """Rebuilds a config from `to_json`'s text, refusing unknown keys."""
  return from_custom_config(cls, json.loads(text))
