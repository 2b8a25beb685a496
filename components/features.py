"""The one place for feature names, split names and special tokens.

Every module that reads or writes a feature, a split or a special token
imports it from here; no feature-key or token string literal appears anywhere
else (a stray-space end-token literal that never matched is the classic bug
this prevents).
"""

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
