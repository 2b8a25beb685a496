"""The one home of the names and limits shared across the pipeline.

Feature keys, split names and special tokens (no feature-key or token string
literal appears anywhere else: a stray-space end-token literal that never
matched is the classic bug this prevents), the serving contract of the pushed
SavedModel, node ids (what ML Metadata, the Kubeflow spec and the run summary
call each component), the file names inside the custom artifacts (which the
summary and the tests read without importing the components that write them),
the serving model's name, and the limits that ingestion and serving both
enforce.
"""
import os

PIPELINE_NAME = 'captioner'
# TF Serving serves `<serving dir>/<MODEL_NAME>/<version>` under this name.
MODEL_NAME = 'captioner'

# --- Node ids (the local runner numbers them in the order TFX launches them) ---
EXAMPLE_GEN = 'ImageCaptionExampleGen'
STATISTICS_GEN = 'StatisticsGen'
SCHEMA_GEN = 'ImportSchemaGen'
EXAMPLE_VALIDATOR = 'ExampleValidator'
FEATURE_GEN = 'ImageFeatureGen'
TRANSFORM = 'Transform'
CAPTION_TRAINER = 'CaptionTrainer'
BASELINE_TRAINER = 'BaselineTrainer'
LATEST_BLESSED_MODEL_RESOLVER = 'LatestBlessedModelResolver'
CAPTION_EVALUATOR = 'CaptionEvaluator'
PUSHER = 'Pusher'
DEMO_GALLERY = 'DemoGallery'
# The Trainers: the captioner's, then the captions-only baseline's.
TRAINERS = (CAPTION_TRAINER, BASELINE_TRAINER)

# --- The embedded datasets (components/ingestion/shapes_dataset.py; settings in components/config.py) ---
SHAPES_DATASET = 'shapes'  # the quick check: one or two objects, regular wording
SCENES_DATASET = 'scenes'  # harder: 1-4 objects, counts, relations, overlaps, varied wording
EMBEDDED_DATASET_NAMES = (SHAPES_DATASET, SCENES_DATASET)

# --- Module code the TFX executors import ---
PREPROCESSING_FN = 'components.training.transform.preprocessing_fn'
RUN_FN = 'components.training.trainer.run_fn'

# --- The curated raw-data schema, relative to a source checkout or the image's workdir ---
SCHEMA_RELATIVE_PATH = os.path.join('schemas', 'schema.pbtxt')
SCHEMA_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           SCHEMA_RELATIVE_PATH)

# --- Files inside artifacts ---
# IngestionReport (ExampleGen `rejects`)
REJECTS_FILE = 'rejects.jsonl'
INGESTION_SUMMARY_FILE = 'summary.json'
# ImageFeatures (FeatureGen `image_features`): the backbone SavedModel, what it is, the features per split.
BACKBONE_DIR = 'backbone'
ENCODER_FILE = 'encoder.json'
FEATURES_FILE_PREFIX = 'features'
# The serving SavedModel of a captioner trained from an ImageFeatures artifact
# carries a copy of its ENCODER_FILE here (TF Serving ignores assets.extra/), so
# the evaluator can tell whether the cached features are that model's.
SERVING_ENCODER_FILE = os.path.join('assets.extra', ENCODER_FILE)
# The training stages the serving SavedModel went through (components/training/stages.py).
SERVING_STAGES_FILE = os.path.join('assets.extra', 'training_stages.json')
# Trainer `model_run`: vocabulary size, sequence length, the loss history.
TRAINING_REPORT_FILE = 'training_report.json'
# Trainer `model_run`, with self-critical training on: the serving SavedModel as
# cross-entropy left it, before the stage (bench/quality.py compares the two).
CROSS_ENTROPY_MODEL_DIR = 'cross_entropy_model'
# Custom property of the ImageFeatureGen's, the CaptionEvaluator's and the
# DemoGallery's outputs: images the execution ran through a backbone.
BACKBONE_PASSES_PROPERTY = 'backbone_passes'
# CaptionEvaluation (CaptionEvaluator `evaluation`)
EVALUATION_METRICS_FILE = 'metrics.json'
EVALUATION_CAPTIONS_FILE = 'captions.jsonl'
# CaptionGallery (DemoGallery `gallery`)
GALLERY_INDEX_FILE = 'index.html'
GALLERY_THUMBS_DIR = 'thumbs'
GALLERY_METRICS_FILE = 'metrics.json'

# Serving SavedModel: TF Serving's warm-up file (PredictionLog records it
# replays at load), at this fixed path inside the version directory.
WARMUP_REQUESTS_PATH = os.path.join('assets.extra', 'tf_serving_warmup_requests')

# --- Limits that ingestion and serving both enforce ---
# A 50-megapixel photo decodes to 150 MB of RGB; larger images are refused.
MAX_IMAGE_PIXELS = 50_000_000
# gRPC message limit of the local server and the client (TF Serving's own default is larger).
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


# --- Raw features, as written by the ExampleGen (one tf.Example per image) ---
IMAGE_ID_KEY = 'image_id'  # bytes [1]: file name of the image, e.g. b'1000268201_693b08cb0e.jpg'
IMAGE_KEY = 'image'  # bytes [1]: the encoded image file, untouched (JPEG/PNG/GIF/BMP)
CAPTIONS_KEY = 'captions'  # bytes [num_captions]: UTF-8 captions as written by annotators

# --- Splits (Flickr8k: train / validation / test files) ---
TRAIN_SPLIT = 'train'
EVAL_SPLIT = 'eval'
DEMO_SPLIT = 'demo'
SPLITS = (TRAIN_SPLIT, EVAL_SPLIT, DEMO_SPLIT)
# Where the images of a Karpathy split file's 'restval' split go by default (im2txt's choice).
DEFAULT_RESTVAL_SPLIT = TRAIN_SPLIT

# --- Image features (FeatureGen output, one tf.Example per image) ---
# IMAGE_ID_KEY  bytes [1], and:
IMAGE_FEATURES_KEY = 'image_features'  # float32 [feature_dim]: the frozen backbone's output
# The one name of the image features wherever they travel: the feature of the
# ImageFeatures artifact's records above, that artifact's channel (the
# ImageFeatureGen's output, the CaptionTrainer's, the CaptionEvaluator's and the
# DemoGallery's input), the caption model's Keras input and the from_features
# serving signature's input.

# The caption models' other Keras input: int64 [batch, sequence_length - 1], the
# teacher-forcing ids (components/training/model.py, attention.py).
INPUT_IDS_INPUT = 'input_ids'

# --- Special tokens. Their ids are fixed and precede the learned vocabulary so
# that padding is id 0 (what Keras masking and `pad_model_inputs` assume). ---
PAD_TOKEN = '<pad>'
START_TOKEN = '<start>'
END_TOKEN = '<end>'
UNKNOWN_TOKEN = '<unk>'
SPECIAL_TOKENS = (PAD_TOKEN, START_TOKEN, END_TOKEN, UNKNOWN_TOKEN)
PAD_ID = 0
START_ID = 1
END_ID = 2
UNKNOWN_ID = 3
NUM_SPECIAL_TOKENS = len(SPECIAL_TOKENS)

# --- Transformed features (Transform output) ---
VOCABULARY_NAME = 'caption_words'  # tft vocabulary file name, most frequent first
CAPTION_IDS_KEY = 'caption_ids'  # int64 [num_captions * seq_len], flattened, padded
SEQUENCE_LENGTH_KEY = 'sequence_length'  # int64 [1]: seq_len, the same for every example


# --- Serving contract of the pushed SavedModel (TF Serving, client, evaluator) ---
CAPTION_SIGNATURE = 'serving_default'  # encoded image bytes in, caption out
EXAMPLES_SIGNATURE = 'from_examples'  # serialized raw tf.Example in (TFX convention)
FEATURES_SIGNATURE = 'from_features'  # the backbone's features in (captioning from the cached features)
IMAGES_INPUT = 'images'  # string [batch]: encoded JPEG/PNG/GIF/BMP bytes
EXAMPLES_INPUT = 'examples'  # string [batch]: serialized tf.Example with IMAGE_KEY
# FEATURES_SIGNATURE's input is IMAGE_FEATURES_KEY: float32 [batch, feature_dim], as in the ImageFeatures artifact.
CAPTION_OUTPUT = 'caption'  # string [batch]: words joined by single spaces, no special tokens
LOG_PROBABILITY_OUTPUT = 'log_probability'  # float32 [batch]: log p(caption | image), summed over steps
# The k best captions of the beam search, best first (k = the beam width fixed
# at export); [:, 0] is caption / log_probability. Fewer than k finished: the
# rest are '' with -inf.
CAPTIONS_OUTPUT = 'captions'  # string [batch, k]
LOG_PROBABILITIES_OUTPUT = 'log_probabilities'  # float32 [batch, k]
# Attention models only (show_and_tell SavedModels do not have it), in every caption
# signature: row t holds the weights over the backbone's grid at the step that produced
# word t of `caption` (each row sums to 1); rows from the caption's length on are 0.
# grid_h and grid_w are static in the signature.
ATTENTION_OUTPUT = 'attention'  # float32 [batch, max_length, grid_h, grid_w]
# GetModelMetadata's one metadata field (TF Serving's name), the signatures of the served model.
SIGNATURE_DEF_METADATA_FIELD = 'signature_def'
