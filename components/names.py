"""Names and limits shared across the pipeline, defined once.

Node ids (what ML Metadata, the Kubeflow spec and the run summary call each
component), the file names inside the custom artifacts (which the summary and
the tests read without importing the components that write them), the serving
model's name, and the limits that ingestion and serving both enforce.
"""
import os

PIPELINE_NAME = 'captioner'
# TF Serving serves `<serving dir>/<MODEL_NAME>/<version>` under this name.
MODEL_NAME = 'captioner'

# --- Node ids (the local runner numbers them in the order TFX launches them) ---
EXAMPLE_GEN = 'Flickr8kExampleGen'
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
