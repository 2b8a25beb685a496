"""CaptionEvaluator: scores the captioner on a split and decides its blessing.

TFMA has no metrics for generated captions, so this custom component replaces
the standard Evaluator for the captioner. It captions every image of a split
(default `eval`) with the candidate's serving signature, exactly as TF Serving
would, scores the captions against the references with `caption_metrics`
(BLEU-1..4, METEOR, ROUGE-L, CIDEr-D as the COCO toolkit computes them), does
the same for the captions-only baseline (recorded, not gated) and for the last
blessed model (re-scored on the same split, so both numbers come from the same
code and data), measures the diversity of each model's captions (`diversity`:
distinct captions per image, distinct words, share copied verbatim from the
train split's references). Given the ImageFeatureGen's artifact, a model that
embeds its encoder (weights checked by fingerprint) is captioned from the
cached features, with no backbone pass (captioning.caption_split); any other
model (an older last blessed one, the baseline) through its serving signature. It writes:

* `evaluation` (CaptionEvaluation): names.EVALUATION_METRICS_FILE, the report (a
  report.CaptionReport) that people, the gallery and the run summary read, and names.EVALUATION_CAPTIONS_FILE, every hypothesis
  with its references and per-image scores.
* `blessing` (the standard ModelBlessing), set as TFX's Evaluator sets it, so
  that the standard Pusher pushes only a blessed model and a Resolver with
  LatestBlessedModelStrategy finds it on the next run: custom properties
  `blessed` (1/0), `current_model` (model uri), `current_model_id` (MLMD id),
  `blessing_message` (the reasons), and an empty BLESSED or NOT_BLESSED file.

The gate (`decide_blessing`): blessed only if BLEU-4 >= min_bleu4, CIDEr-D >=
min_cider, BLEU-4 is at least min_baseline_ratio times the captions-only
baseline's (a captioner that does not beat a model blind to the image is
broken), BLEU-4 is not more than max_regression below the last blessed
model's BLEU-4 on the same split, and at least min_distinct_caption_share of
the images get a caption of their own (one sentence for every image can beat
the baseline's BLEU-4). There are no defaults for the thresholds: forgetting
them must not bless everything.
"""
import json
import os
from typing import Dict, List, Mapping, Optional, Tuple

from absl import logging
import tensorflow as tf
from tfx import v1 as tfx
from tfx.components.evaluator import constants as evaluator_constants
from tfx.types import artifact
from tfx.utils import io_utils

from components.evaluation import caption_metrics
from components.evaluation import captioning
from components.evaluation import diversity
from components.evaluation import report as report_lib
from components.evaluation.report import BASELINE, CAPTIONER, LAST_BLESSED
from components.training import stages
from components import config as config_lib
from components import names
from components.artifacts import CaptionEvaluation
from components.artifacts import ImageFeatures


def decide_blessing(candidate: Mapping[str, float], candidate_diversity: Mapping[str, float],
                    last_blessed: Optional[Mapping[str, float]],
                    baseline: Optional[Mapping[str, float]],
                    thresholds: config_lib.EvaluationConfig) -> Tuple[bool, List[str]]:
  """The gate: returns (blessed, reasons), one 'PASS: ...'/'FAIL: ...' reason per check.

  Args:
    candidate: corpus metrics of the candidate (caption_metrics names).
    candidate_diversity: the diversity of the candidate's captions
      (diversity.caption_diversity).
    last_blessed: corpus metrics of the last blessed model on the same split,
      or None when no model was blessed before (then no regression check).
    baseline: corpus metrics of the captions-only baseline on the same split,
      or None when it was not trained (then no baseline check).
    thresholds: min_bleu4 (0..1), min_cider (0..10), max_regression (largest
      allowed BLEU-4 drop below last_blessed's), min_baseline_ratio (the
      candidate's BLEU-4 over the baseline's) and min_distinct_caption_share
      (0..1, distinct captions over images).
  """
  min_bleu4, min_cider = thresholds.min_bleu4, thresholds.min_cider
  max_regression, min_baseline_ratio = thresholds.max_regression, thresholds.min_baseline_ratio
  checks = []
  bleu4 = candidate[caption_metrics.BLEU_4]
  cider = candidate[caption_metrics.CIDER_D]
  checks.append((bleu4 >= min_bleu4, f'BLEU-4 {bleu4:.4f} vs min_bleu4 {min_bleu4:.4f}'))
  checks.append((cider >= min_cider, f'CIDEr-D {cider:.4f} vs min_cider {min_cider:.4f}'))
  if baseline is not None:
    baseline_bleu4 = baseline[caption_metrics.BLEU_4]
    checks.append((bleu4 >= min_baseline_ratio * baseline_bleu4,
                   f'BLEU-4 {bleu4:.4f} vs {min_baseline_ratio:g} x captions-only baseline '
                   f'{baseline_bleu4:.4f}'))
  if last_blessed is not None:
    last_bleu4 = last_blessed[caption_metrics.BLEU_4]
    change = bleu4 - last_bleu4
    checks.append((-change <= max_regression,
                   f'BLEU-4 {bleu4:.4f} vs last blessed model {last_bleu4:.4f}: change '
                   f'{change:+.4f}, allowed drop max_regression {max_regression:.4f}'))
  distinct_share = candidate_diversity[diversity.DISTINCT_CAPTION_SHARE]
  min_distinct_share = thresholds.min_distinct_caption_share
  checks.append((distinct_share >= min_distinct_share,
                 f'distinct captions per image {distinct_share:.4f} vs '
                 f'min_distinct_caption_share {min_distinct_share:.4f}'))
  reasons = [('PASS: ' if ok else 'FAIL: ') + text for ok, text in checks]
  if last_blessed is None:
    reasons.append('NOTE: no previously blessed model, so no regression check')
  return all(ok for ok, _ in checks), reasons


def format_report(report: report_lib.CaptionReport) -> str:
  """Renders the report as a text table (models side by side) plus the decision."""
  models = report.models()
  lines = [f"Caption metrics on split {report.split!r} ({report.num_images} images, "
           f"tokenizer {report.tokenizer}):",
           f"  {'metric':<9}" + ''.join(f'{role:>14}' for role in models)]
  for name in caption_metrics.METRIC_NAMES:
    if name in report.captioner.metrics:
      lines.append(f'  {name:<9}' + ''.join(
          f"{model.metrics[name]:>14.4f}" for model in models.values()))
  for name, reason in report.skipped_metrics.items():
    lines.append(f'  {name} skipped: {reason}')
  lines.append(f'  {"diversity":<23}' + ''.join(f'{role:>14}' for role in models))
  for name in diversity.MEASURES:
    spec = '>14d' if name == diversity.DISTINCT_WORDS else '>14.4f'  # a count or a share
    lines.append(f'  {name:<23}' + ''.join(
        format(model.diversity[name], spec) for model in models.values()))
  lines.append('Training stages: ' + '; '.join(f'{role} {stages.describe(model.stages)}'
                                                for role, model in models.items()))
  lines.append('Blessed: ' + ('YES' if report.blessed else 'NO'))
  lines += [f'  {reason}' for reason in report.reasons]
  return '\n'.join(lines)


def _caption_and_score(candidates: Mapping[str, Optional[artifact.Artifact]], examples: artifact.Artifact,
                       split: str, batch_size: int, image_features_uri: Optional[str]
                       ) -> Tuple[Dict[str, captioning.SplitCaptions], Dict[str, Dict]]:
  """(captions, scores) by role of every model present in `candidates`.

  A last blessed model that is the candidate itself (a rerun with nothing
  retrained) reuses the candidate's captions and scores: captioning it again
  would cost a pass over the split and give the same numbers.
  """
  split_captions, scores = {}, {}
  caption_metrics.warm_up()  # METEOR loads while the models caption
  for role, role_model in candidates.items():
    if role_model is None:
      continue
    if role == LAST_BLESSED and role_model.uri == candidates[CAPTIONER].uri:
      logging.info('The last blessed model is the candidate itself (%s).', role_model.uri)
      split_captions[role] = split_captions[CAPTIONER]._replace(serving_images=0)
      scores[role] = scores[CAPTIONER]
      continue
    logging.info('Captioning split %r with the %s model %s.', split, role, role_model.uri)
    split_captions[role], scores[role] = captioning.caption_and_score(
        captioning.serving_model_dir(role_model), examples, split, batch_size, image_features_uri)
  return split_captions, scores


def _model_report(model: artifact.Artifact, scores: Dict, measures: Dict[str, float]
                  ) -> report_lib.ModelReport:
  """One model's part of the report."""
  return report_lib.ModelReport(model_uri=model.uri, model_id=model.id, metrics=scores['corpus'],
                                diversity=measures,
                                stages=stages.read(captioning.serving_model_dir(model)))


def _write_captions(evaluation_uri: str, split_captions: Mapping[str, captioning.SplitCaptions],
                    scores: Mapping[str, Dict]) -> None:
  """names.EVALUATION_CAPTIONS_FILE: per image, its references and each model's caption and
  scores, so that a person can see which images a metric punishes."""
  references = split_captions[CAPTIONER].references
  with tf.io.gfile.GFile(os.path.join(evaluation_uri, names.EVALUATION_CAPTIONS_FILE), 'w') as f:
    for image_id in sorted(references):
      line = {'image_id': image_id, 'references': references[image_id]}
      for role in scores:
        line[role] = {'caption': split_captions[role].captions[image_id],
                      'log_probability': split_captions[role].log_probabilities[image_id],
                      'scores': scores[role]['per_image'][image_id]}
      f.write(json.dumps(line) + '\n')


def _record_blessing(blessing: artifact.Artifact, model: artifact.Artifact, blessed: bool,
                     reasons: List[str]) -> None:
  """Marks the ModelBlessing as TFX's Evaluator does: the standard Pusher and
  LatestBlessedModelStrategy read exactly these custom properties and file."""
  blessing.set_string_custom_property(evaluator_constants.ARTIFACT_PROPERTY_CURRENT_MODEL_URI_KEY,
                                      model.uri)
  blessing.set_int_custom_property(evaluator_constants.ARTIFACT_PROPERTY_CURRENT_MODEL_ID_KEY,
                                   model.id)
  blessing.set_string_custom_property(evaluator_constants.ARTIFACT_PROPERTY_BLESSING_MESSAGE_KEY,
                                      '; '.join(reasons))
  blessing.set_int_custom_property(
      evaluator_constants.ARTIFACT_PROPERTY_BLESSED_KEY,
      evaluator_constants.BLESSED_VALUE if blessed else evaluator_constants.NOT_BLESSED_VALUE)
  io_utils.write_string_file(
      os.path.join(blessing.uri, evaluator_constants.BLESSED_FILE_NAME if blessed
                   else evaluator_constants.NOT_BLESSED_FILE_NAME), '')


def _evaluate(candidates: Mapping[str, Optional[artifact.Artifact]], examples: artifact.Artifact,
              split: str, batch_size: int, image_features_uri: Optional[str],
              thresholds: config_lib.EvaluationConfig
              ) -> Tuple[report_lib.CaptionReport, Dict[str, captioning.SplitCaptions], Dict[str, Dict]]:
  """Captions and scores `split` with every model of `candidates` (role -> Model or None),
  measures their diversity and applies the gate; returns (report, captions, scores by role)."""
  split_captions, scores = _caption_and_score(candidates, examples, split, batch_size,
                                              image_features_uri)
  training_captions = diversity.reference_captions(examples, names.TRAIN_SPLIT)
  measures = {role: diversity.caption_diversity(list(split_captions[role].captions.values()),
                                                training_captions) for role in scores}
  blessed, reasons = decide_blessing(
      scores[CAPTIONER]['corpus'], measures[CAPTIONER],
      scores[LAST_BLESSED]['corpus'] if LAST_BLESSED in scores else None,
      scores[BASELINE]['corpus'] if BASELINE in scores else None,
      thresholds)
  models = {role: _model_report(candidates[role], scores[role], measures[role])
            if role in scores else None for role in report_lib.ROLES}
  report = report_lib.CaptionReport(
      split=split, num_images=scores[CAPTIONER]['num_images'],
      tokenizer=scores[CAPTIONER]['tokenizer'], skipped_metrics=scores[CAPTIONER]['skipped'],
      **models,
      serving_images={role: captions.serving_images for role, captions in split_captions.items()},
      thresholds=thresholds, blessed=blessed, reasons=reasons)
  return report, split_captions, scores


@tfx.dsl.components.component
def CaptionEvaluator(
    examples: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Examples],
    model: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Model],
    evaluation: tfx.dsl.components.OutputArtifact[CaptionEvaluation],
    blessing: tfx.dsl.components.OutputArtifact[tfx.types.standard_artifacts.ModelBlessing],
    thresholds: tfx.dsl.components.Parameter[str],
    baseline_model: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Model] = None,
    last_blessed_model: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Model] = None,
    image_features: tfx.dsl.components.InputArtifact[ImageFeatures] = None,
    split: tfx.dsl.components.Parameter[str] = names.EVAL_SPLIT,
    batch_size: tfx.dsl.components.Parameter[int] = captioning.DEFAULT_BATCH_SIZE,
) -> None:
  """Scores the candidate captioner (and baseline, last blessed) and blesses it or not.

  Args:
    examples: ExampleGen output; `split` is captioned, the train split's
      references tell which captions are copied (diversity.reference_captions).
    model: the candidate captioner (Trainer output, SavedModel at Format-Serving).
    evaluation: output; names.EVALUATION_METRICS_FILE holds a report.CaptionReport
      (see `report`), names.EVALUATION_CAPTIONS_FILE one JSON object per image:
      'image_id', 'references', and per present role {'caption',
      'log_probability', 'scores': {metric: per-image score}}. Custom property
      names.BACKBONE_PASSES_PROPERTY: images of the captioner and last blessed model
      sent through serving_default as bytes (the baseline's graph has no backbone).
    blessing: output ModelBlessing for the Pusher and LatestBlessedModelStrategy.
    thresholds: the gate's thresholds, a config.EvaluationConfig as
      `config.to_json` writes it (`decide_blessing`).
    baseline_model: optional captions-only language model (same serving
      contract); scored and recorded, never gated.
    last_blessed_model: optional latest blessed model (Resolver with
      LatestBlessedModelStrategy); absent on the first run.
    image_features: optional ImageFeatureGen output; models that embed its
      encoder are captioned from its cached features (encoder weights checked).
    split: the split to caption and score.
    batch_size: images per call of the caption signature.
  """
  report, split_captions, scores = _evaluate(
      {CAPTIONER: model, BASELINE: baseline_model, LAST_BLESSED: last_blessed_model}, examples,
      split, batch_size, image_features.uri if image_features else None,
      config_lib.from_json(config_lib.EvaluationConfig, thresholds))
  report_lib.write(report, evaluation.uri)
  _write_captions(evaluation.uri, split_captions, scores)
  evaluation.set_int_custom_property(names.BACKBONE_PASSES_PROPERTY, sum(
      split_captions[role].serving_images for role in (CAPTIONER, LAST_BLESSED) if role in split_captions))
  _record_blessing(blessing, model, report.blessed, report.reasons)
  logging.info('%s\nModel %s is %s; report in %s.', format_report(report), model.uri,
               'BLESSED' if report.blessed else 'NOT BLESSED (it will not be pushed)',
               report_lib.path(evaluation.uri))
