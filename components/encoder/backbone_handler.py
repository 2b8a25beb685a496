"""Beam RunInference's model handler for the saved backbone of an ImageFeatures artifact.

The feature pass (components/encoder/feature_gen.py) runs every image through
it; bench/precision.py and the tests run it directly, so what they measure is
what the pass runs.
"""
from typing import Iterable, Sequence

from apache_beam.ml.inference import base as inference_base
import tensorflow as tf

from components import names

# Images per backbone call (RunInference's batches; the last one of a bundle may be smaller).
DEFAULT_BATCH_SIZE = 32
# RunInference's counters: `num_inferences` (images run through the backbone) in this namespace.
METRICS_NAMESPACE = 'captioner_backbone'
INFERENCE_COUNTER = 'num_inferences'


class BackboneHandler(inference_base.ModelHandler):
  """Encoded images (bytes) -> PredictionResult(features float32 [dim]).

  Loads the backbone SavedModel with core `tf.saved_model.load` and calls its
  bytes signature on each batch. (Beam's own TFModelHandlerTensor cannot be used
  here: its module imports tensorflow_hub, which fails to import with TF 2.16,
  and it loads models with `tf.keras`, Keras 3 in this environment.)
  """

  def __init__(self, model_dir: str, batch_size: int = DEFAULT_BATCH_SIZE):
    super().__init__()
    self._model_dir = model_dir
    self._batch_size = batch_size

  def load_model(self):
    return tf.saved_model.load(self._model_dir)

  def run_inference(self, batch: Sequence[bytes], model, inference_args=None
                    ) -> Iterable[inference_base.PredictionResult]:
    outputs = model.signatures[names.CAPTION_SIGNATURE](
        **{names.IMAGES_INPUT: tf.constant(list(batch), tf.string)})
    vectors = outputs[names.IMAGE_FEATURES_KEY].numpy()  # float32 [batch, feature_dim]
    return [inference_base.PredictionResult(image, vector, self._model_dir)
            for image, vector in zip(batch, vectors)]

  def batch_elements_kwargs(self):
    # Fixed batches: BatchElements would otherwise start at one image and grow slowly.
    return {'min_batch_size': self._batch_size, 'max_batch_size': self._batch_size}

  def get_metrics_namespace(self) -> str:
    return METRICS_NAMESPACE
