"""Beam RunInference's model handler for the pushed captioner's serving signature.

Follows components/encoder/backbone_handler.py: core `tf.saved_model.load`
(Beam's TFModelHandlerTensor imports tensorflow_hub, which fails with TF 2.16,
and loads with Keras 3), fixed batches, a metrics namespace. RunInference
keeps the loaded model in a shared handle, so each worker process loads it once.
"""
import dataclasses
from typing import Iterable, List, Sequence, Union

from apache_beam.ml.inference import base as inference_base
import tensorflow as tf

from components import caption_signatures
from components import names
from components.ingestion import image_check
from components.ingestion import rules

# Images per signature call (RunInference's batches; the last one of a bundle may be smaller).
DEFAULT_BATCH_SIZE = 32
# RunInference's counters (`num_inferences`, load times) and the job's own, in this namespace.
METRICS_NAMESPACE = 'captioner_bulk'


@dataclasses.dataclass(frozen=True)
class CaptionFailure:
  """An input that gets no caption: a components/ingestion/rules.py image-level reason and its detail."""
  reason: str
  detail: str


class CaptionHandler(inference_base.ModelHandler):
  """Encoded images (bytes) -> PredictionResult(inference: caption_signatures.Captions of one image,
  or CaptionFailure).

  A CaptionFailure in the batch (an input the checks rejected) passes through as
  its own answer, so that every input flows through one stream to the writers.
  A batch the signature refuses (an image that passed the checks but that the
  serving graph cannot decode) is run again image by image, so only the guilty
  image fails and the job goes on.
  """

  def __init__(self, model_dir: str, batch_size: int = DEFAULT_BATCH_SIZE):
    super().__init__()
    self._model_dir = model_dir
    self._batch_size = batch_size

  def load_model(self):
    return tf.saved_model.load(self._model_dir, tags=[tf.saved_model.SERVING])

  def run_inference(self, batch: Sequence[Union[bytes, CaptionFailure]], model, inference_args=None
                    ) -> Iterable[inference_base.PredictionResult]:
    images = [i for i, item in enumerate(batch) if not isinstance(item, CaptionFailure)]
    answers = list(batch)
    for i, answer in zip(images, self._answers(model, [batch[i] for i in images])):
      answers[i] = answer
    return [inference_base.PredictionResult(item, answer, self._model_dir) for item, answer in zip(batch, answers)]

  def _answers(self, model, images: Sequence[bytes]) -> List[Union[caption_signatures.Captions, CaptionFailure]]:
    """One Captions (a batch of one) or CaptionFailure per image."""
    if not images:
      return []
    try:
      outputs = model.signatures[names.CAPTION_SIGNATURE](
          **{names.IMAGES_INPUT: tf.constant(list(images), tf.string)})
    except tf.errors.InvalidArgumentError as error:
      if len(images) == 1:
        return [CaptionFailure(rules.NOT_AN_IMAGE, image_check.op_error_detail(error))]
      return [answer for image in images for answer in self._answers(model, [image])]
    answers = caption_signatures.decode_outputs({k: v.numpy() for k, v in outputs.items()}, len(images),
                                                self._model_dir)
    return [_row(answers, i) for i in range(len(images))]

  def batch_elements_kwargs(self):
    # Fixed batches: BatchElements would otherwise start at one image and grow slowly.
    return {'min_batch_size': self._batch_size, 'max_batch_size': self._batch_size}

  def get_metrics_namespace(self) -> str:
    return METRICS_NAMESPACE


def _row(answers: caption_signatures.Captions, i: int) -> caption_signatures.Captions:
  """The answer for image `i` of a batch, as a batch of one."""
  return caption_signatures.Captions([answers.captions[i]], [answers.log_probabilities[i]],
                                     [answers.top_captions[i]], [answers.top_log_probabilities[i]])
