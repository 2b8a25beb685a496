"""The CaptionEvaluator gate on real artifacts: TFRecords, SavedModels, Pusher.

The models are real SavedModels honouring the serving contract of
components/names.py; testing/lookup_captioner.py makes ones whose captions
are fixed per image (a table keyed by the image bytes), so that "good", "bad"
and "slightly worse" captioners are exact. The component's executor runs
directly on artifacts in tmp dirs (testing/executors.py), then the standard
Pusher executor and LatestBlessedModelStrategy read the blessing it wrote. One
test also evaluates the tiny random captioner of testing/tiny_model.py, which
has the project's real serving graph.
"""
import dataclasses
import json
import os
import pathlib
import shutil
from typing import List

import pytest
from tfx.dsl.input_resolution.strategies import latest_blessed_model_strategy
from tfx.types import standard_artifacts

from components import names
from components.evaluation import caption_evaluator
from components.evaluation import caption_metrics
from components.evaluation import captioning
from components.evaluation import diversity
from components.evaluation import report as report_lib
from components.training import stages
from components import config as config_lib
from pipeline.local import summary
from testing import tiny_model
from testing import examples as examples_lib
from testing import executors
from testing import lookup_captioner

MIN_BLEU4 = 0.5
MIN_CIDER = 1.0
MIN_DISTINCT_CAPTION_SHARE = 0.5
# The diversity of captions that differ for every image (for decide_blessing).
DIVERSE = {diversity.DISTINCT_CAPTION_SHARE: 1.0, diversity.DISTINCT_WORDS: 10,
           diversity.COPIED_CAPTION_SHARE: 0.0}
# decide_blessing's reason for DIVERSE under the default min_distinct_caption_share.
DIVERSE_REASON = ('PASS: distinct captions per image 1.0000 vs min_distinct_caption_share '
                  f'{config_lib.EvaluationConfig().min_distinct_caption_share:.4f}')
THRESHOLDS = config_lib.EvaluationConfig(min_bleu4=MIN_BLEU4, min_cider=MIN_CIDER, max_regression=0.02,
                                         min_baseline_ratio=1.0,
                                         min_distinct_caption_share=MIN_DISTINCT_CAPTION_SHARE)


# --- helpers -------------------------------------------------------------------


def run_evaluator(root: pathlib.Path, examples, model, baseline_model=None,
                  last_blessed_model=None, **thresholds):
  """Runs CaptionEvaluator's executor with THRESHOLDS (`thresholds` overrides some); returns
  (evaluation, blessing) artifacts."""
  return executors.run_caption_evaluator(
      str(root), examples, model, dataclasses.replace(THRESHOLDS, **thresholds),
      baseline_model=baseline_model, last_blessed_model=last_blessed_model)


def read_report(evaluation) -> dict:
  with open(os.path.join(evaluation.uri, names.EVALUATION_METRICS_FILE)) as f:
    return json.load(f)


def read_captions(evaluation) -> List[dict]:
  with open(os.path.join(evaluation.uri, names.EVALUATION_CAPTIONS_FILE)) as f:
    return [json.loads(line) for line in f]


# --- fixtures ------------------------------------------------------------------


@pytest.fixture(scope='module')
def world(tmp_path_factory):
  """The train and eval splits and four models: good, bad, slightly worse, baseline.

  The 12 eval images show 12 different scenes; the train split's 6 images show
  the first 6 of them, so half of the good model's captions are training references.
  """
  root = tmp_path_factory.mktemp('world')
  dataset = examples_lib.captioned_images()
  examples = examples_lib.write_examples(root / 'examples', {
      names.TRAIN_SPLIT: examples_lib.captioned_images(6), names.EVAL_SPLIT: dataset})
  good = {image: refs[0] for image, refs in dataset.values()}
  worse = dict(good)
  for image, _ in list(dataset.values())[:3]:
    worse[image] = 'a purple hexagon'
  return {
      'root': root,
      'dataset': dataset,
      'examples': examples,
      'good': lookup_captioner.export_lookup_captioner(root / 'good', good, model_id=2,
                                                       stages=[stages.CROSS_ENTROPY, stages.SCST]),
      'bad': lookup_captioner.export_lookup_captioner(
          root / 'bad', {image: 'a cat sleeps on a sofa' for image, _ in dataset.values()}, model_id=1),
      'worse': lookup_captioner.export_lookup_captioner(root / 'worse', worse, model_id=3),
      'baseline': lookup_captioner.export_lookup_captioner(root / 'baseline', {
          image: 'a red circle on a white background' for image, _ in dataset.values()}, model_id=4,
          stages=[stages.CROSS_ENTROPY]),
  }


@pytest.fixture(scope='module')
def first_runs(world, tmp_path_factory):
  """First pipeline runs (no last blessed model): the bad, then the good candidate."""
  root = tmp_path_factory.mktemp('first_runs')
  serving_dir = root / 'serving' / 'captioner'
  runs = {}
  for name in ('bad', 'good'):
    evaluation, blessing = run_evaluator(root / name, world['examples'], world[name],
                                         baseline_model=world['baseline'])
    pushed = executors.run_pusher(str(root / name), world[name], blessing, str(serving_dir))
    runs[name] = {'evaluation': evaluation, 'blessing': blessing, 'pushed': pushed}
  runs['serving_dir'] = serving_dir
  return runs


# --- tests ---------------------------------------------------------------------


def _assert_blessing_recorded(run, model, blessed: bool):
  """The blessing artifact and the report say `blessed` about `model`, as TFX's Evaluator would."""
  blessing, report = run['blessing'], read_report(run['evaluation'])
  assert blessing.get_int_custom_property('blessed') == int(blessed)
  assert os.listdir(blessing.uri) == ['BLESSED' if blessed else 'NOT_BLESSED']
  assert blessing.get_string_custom_property('current_model') == model.uri
  assert blessing.get_int_custom_property('current_model_id') == model.id
  assert report['blessed'] is blessed
  return report


def test_model_below_threshold_is_not_blessed_and_not_pushed(world, first_runs):
  run = first_runs['bad']
  report = _assert_blessing_recorded(run, world['bad'], blessed=False)

  assert report['captioner']['metrics'][caption_metrics.BLEU_4] < MIN_BLEU4
  assert any(r.startswith('FAIL: BLEU-4') for r in report['reasons'])
  assert any(r.startswith('FAIL: CIDEr-D') for r in report['reasons'])
  assert 'FAIL' in run['blessing'].get_string_custom_property('blessing_message')
  # The standard Pusher refuses it: nothing was pushed before the good model.
  assert run['pushed'].get_int_custom_property('pushed') == 0


def test_good_model_is_blessed_and_pushed(world, first_runs):
  run = first_runs['good']
  report = _assert_blessing_recorded(run, world['good'], blessed=True)

  assert all(r.startswith(('PASS', 'NOTE')) for r in report['reasons'])
  assert report['captioner']['metrics'][caption_metrics.BLEU_4] == pytest.approx(1.0, abs=1e-6)

  pushed = run['pushed']
  assert pushed.get_int_custom_property('pushed') == 1
  [version] = os.listdir(first_runs['serving_dir'])
  pushed_dir = first_runs['serving_dir'] / version
  assert pushed.get_string_custom_property('pushed_destination') == str(pushed_dir)
  image, references = world['dataset']['img_005.png']
  captions, _ = captioning.SavedModelCaptioner(str(pushed_dir))([image])
  assert captions == [references[0]]


def test_report_records_baseline_beside_captioner(world, first_runs):
  report = read_report(first_runs['good']['evaluation'])

  assert report['split'] == names.EVAL_SPLIT
  assert report['num_images'] == len(world['dataset'])
  assert report['tokenizer'] == caption_metrics.PTB_TOKENIZER
  assert report['skipped_metrics'] == {}
  assert report['last_blessed'] is None
  assert report['thresholds'] == {'min_bleu4': MIN_BLEU4, 'min_cider': MIN_CIDER,
                                  'max_regression': 0.02, 'min_baseline_ratio': 1.0,
                                  'min_distinct_caption_share': MIN_DISTINCT_CAPTION_SHARE}
  assert report['captioner']['model_uri'] == world['good'].uri
  assert report['baseline']['model_uri'] == world['baseline'].uri
  for role in ('captioner', 'baseline'):
    assert list(report[role]['metrics']) == list(caption_metrics.METRIC_NAMES)
  for name in caption_metrics.METRIC_NAMES:
    assert report['captioner']['metrics'][name] > report['baseline']['metrics'][name], name
  table = caption_evaluator.format_report(report_lib.read(first_runs['good']['evaluation'].uri))
  assert 'captioner' in table and 'baseline' in table and 'Blessed: YES' in table


def test_report_says_which_training_stages_each_model_went_through(world, first_runs, tmp_path):
  """Read from each SavedModel (the Trainer writes them there): recorded, or said to be unknown."""
  report = report_lib.read(first_runs['good']['evaluation'].uri)
  assert report.captioner.stages == [stages.CROSS_ENTROPY, stages.SCST]
  assert report.baseline.stages == [stages.CROSS_ENTROPY]
  assert ('Training stages: captioner cross_entropy, then scst; baseline cross_entropy'
          in caption_evaluator.format_report(report))
  unrecorded = report_lib.read(first_runs['bad']['evaluation'].uri)
  assert unrecorded.captioner.stages is None
  assert 'Training stages: captioner not recorded; baseline cross_entropy' in (
      caption_evaluator.format_report(unrecorded))
  # The run summary prints the evaluator's report, stages included.
  text = summary.render({'evaluation': report_lib.to_json_dict(report), 'pushed': False, 'pushed_model': None,
                         'gallery': None, 'reject_report': None, 'summary': 'summary.json', 'seed': 0,
                         'resumed': {}})
  assert 'Training stages: captioner cross_entropy, then scst; baseline cross_entropy' in text.splitlines()
  # A report written before stages were recorded still reads.
  older = report_lib.to_json_dict(report)
  del older['captioner']['stages']
  assert report_lib.from_json_dict(older).captioner.stages is None


def test_typed_report_reads_the_file_and_writes_the_same_bytes_back(first_runs, tmp_path):
  evaluation = first_runs['good']['evaluation']
  raw = read_report(evaluation)
  typed = report_lib.read(evaluation.uri)

  assert typed.split == raw['split'] and typed.num_images == raw['num_images']
  assert typed.captioner == report_lib.ModelReport(**raw['captioner'])
  assert typed.baseline.metrics == raw['baseline']['metrics']
  assert typed.last_blessed is None
  assert list(typed.models()) == [report_lib.CAPTIONER, report_lib.BASELINE]
  assert typed.thresholds == THRESHOLDS
  assert typed.serving_images == raw['serving_images']
  assert (typed.blessed, typed.reasons) == (raw['blessed'], raw['reasons'])
  report_lib.write(typed, str(tmp_path))
  assert ((tmp_path / names.EVALUATION_METRICS_FILE).read_bytes()
          == pathlib.Path(report_lib.path(evaluation.uri)).read_bytes())


def test_captions_file_has_every_hypothesis_and_reference(world, first_runs):
  lines = read_captions(first_runs['good']['evaluation'])

  assert [line['image_id'] for line in lines] == sorted(world['dataset'])
  for line in lines:
    references = world['dataset'][line['image_id']][1]
    assert line['references'] == references
    assert line['captioner']['caption'] == references[0]
    assert line['captioner']['log_probability'] == pytest.approx(lookup_captioner.LOG_PROBABILITY)
    assert line['captioner']['scores'][caption_metrics.BLEU_4] == pytest.approx(1.0, abs=1e-6)
    assert line['baseline']['caption'] == 'a red circle on a white background'
    assert 'last_blessed' not in line


def test_latest_blessed_model_strategy_finds_the_blessed_model(world, first_runs):
  resolved = latest_blessed_model_strategy.LatestBlessedModelStrategy().resolve_artifacts(
      None, {'model': [world['bad'], world['good']],
             'model_blessing': [first_runs['bad']['blessing'], first_runs['good']['blessing']]})

  assert resolved['model'] == [world['good']]
  assert resolved['model_blessing'] == [first_runs['good']['blessing']]


def test_regression_against_last_blessed_model_is_not_blessed(world, tmp_path):
  evaluation, blessing = run_evaluator(tmp_path, world['examples'], world['worse'],
                                       last_blessed_model=world['good'])
  report = read_report(evaluation)
  worse_bleu4 = report['captioner']['metrics'][caption_metrics.BLEU_4]

  # Above the absolute thresholds, but more than max_regression below the last blessed.
  assert MIN_BLEU4 < worse_bleu4 < 1.0 - 0.02
  assert report['last_blessed']['model_uri'] == world['good'].uri
  assert report['last_blessed']['metrics'][caption_metrics.BLEU_4] == pytest.approx(1.0, abs=1e-6)
  assert report['baseline'] is None
  assert blessing.get_int_custom_property('blessed') == 0
  [failure] = [r for r in report['reasons'] if r.startswith('FAIL')]
  assert 'last blessed model' in failure
  assert read_captions(evaluation)[0]['last_blessed']['caption'] == world['dataset'][
      'img_000.png'][1][0]


def test_last_blessed_model_that_is_the_candidate_is_not_rescored(world, tmp_path):
  evaluation, blessing = run_evaluator(tmp_path, world['examples'], world['good'],
                                       last_blessed_model=world['good'])
  report = read_report(evaluation)

  assert blessing.get_int_custom_property('blessed') == 1
  assert report['last_blessed']['metrics'] == report['captioner']['metrics']


def test_report_and_summary_give_each_models_caption_diversity(first_runs):
  report = read_report(first_runs['good']['evaluation'])

  # Good: 12 different captions of 11 words, the 6 of the train split's scenes copied.
  assert report['captioner']['diversity'] == {
      diversity.DISTINCT_CAPTION_SHARE: 1.0, diversity.DISTINCT_WORDS: 11,
      diversity.COPIED_CAPTION_SHARE: 0.5}
  # Baseline: one training reference ('a red circle ...', train image 4) under every image.
  assert report['baseline']['diversity'] == {
      diversity.DISTINCT_CAPTION_SHARE: 1 / 12, diversity.DISTINCT_WORDS: 6,
      diversity.COPIED_CAPTION_SHARE: 1.0}
  assert ('PASS: distinct captions per image 1.0000 vs min_distinct_caption_share 0.5000'
          in report['reasons'])
  table_lines = [
      '  diversity                   captioner      baseline',
      '  distinct_caption_share         1.0000        0.0833',
      '  distinct_words                     11             6',
      '  copied_caption_share           0.5000        1.0000',
  ]
  table = caption_evaluator.format_report(report_lib.read(first_runs['good']['evaluation'].uri))
  assert '\n'.join(table_lines) in table
  # The run summary prints the evaluator's report.
  text = summary.render({'evaluation': report, 'pushed': False, 'pushed_model': None,
                         'gallery': None, 'reject_report': None, 'summary': 'summary.json',
                         'seed': 0, 'resumed': {}})
  assert '\n'.join(table_lines) in text


def test_one_sentence_for_every_image_is_not_blessed_even_above_the_baseline(tmp_path):
  # Twelve different images that all deserve the same captions: one sentence
  # scores BLEU-4 1.0 and beats the baseline, yet says nothing about the image.
  dataset = examples_lib.captioned_images()
  references = dataset['img_000.png'][1]
  eval_set = {image_id: (image, references) for image_id, (image, _) in dataset.items()}
  examples = examples_lib.write_examples(tmp_path / 'examples', {
      names.TRAIN_SPLIT: examples_lib.captioned_images(3), names.EVAL_SPLIT: eval_set})
  images = [image for image, _ in eval_set.values()]
  candidate = lookup_captioner.export_lookup_captioner(
      tmp_path / 'one_sentence', {image: references[0] for image in images}, model_id=5)
  baseline = lookup_captioner.export_lookup_captioner(
      tmp_path / 'baseline', {image: 'a cat sleeps on a sofa' for image in images}, model_id=6)

  # CIDEr-D gives nothing when every image has the same references: not this test's gate.
  evaluation, blessing = run_evaluator(tmp_path, examples, candidate, baseline_model=baseline,
                                       min_cider=0.0)
  report = read_report(evaluation)

  assert report['captioner']['metrics'][caption_metrics.BLEU_4] == pytest.approx(1.0, abs=1e-6)
  assert report['baseline']['metrics'][caption_metrics.BLEU_4] < 0.01
  assert report['captioner']['diversity'] == {
      diversity.DISTINCT_CAPTION_SHARE: 1 / 12, diversity.DISTINCT_WORDS: 6,
      diversity.COPIED_CAPTION_SHARE: 1.0}
  assert [r for r in report['reasons'] if not r.startswith('PASS')] == [
      'FAIL: distinct captions per image 0.0833 vs min_distinct_caption_share 0.5000',
      'NOTE: no previously blessed model, so no regression check']
  assert report['blessed'] is False
  assert blessing.get_int_custom_property('blessed') == 0
  assert os.listdir(blessing.uri) == ['NOT_BLESSED']
  assert 'FAIL: distinct captions per image 0.0833' in blessing.get_string_custom_property(
      'blessing_message')


@pytest.mark.parametrize('distinct_share, verdict', [
    (0.5, 'PASS'),  # exactly the minimum share
    (0.4999, 'FAIL'),
])
def test_decide_blessing_minimum_share_of_distinct_captions(distinct_share, verdict):
  blessed, reasons = caption_evaluator.decide_blessing(
      {caption_metrics.BLEU_4: 0.8, caption_metrics.CIDER_D: 2.0},
      {diversity.DISTINCT_CAPTION_SHARE: distinct_share, diversity.DISTINCT_WORDS: 3,
       diversity.COPIED_CAPTION_SHARE: 1.0},
      None, {caption_metrics.BLEU_4: 0.1, caption_metrics.CIDER_D: 0.5},
      config_lib.EvaluationConfig(min_bleu4=0.5, min_cider=1.0, max_regression=0.02,
                                  min_baseline_ratio=2.0, min_distinct_caption_share=0.5))

  assert blessed is (verdict == 'PASS')
  assert reasons == [
      'PASS: BLEU-4 0.8000 vs min_bleu4 0.5000',
      'PASS: CIDEr-D 2.0000 vs min_cider 1.0000',
      'PASS: BLEU-4 0.8000 vs 2 x captions-only baseline 0.1000',
      f'{verdict}: distinct captions per image {distinct_share:.4f} vs '
      'min_distinct_caption_share 0.5000',
      'NOTE: no previously blessed model, so no regression check',
  ]


@pytest.mark.parametrize('candidate_bleu4, last_bleu4, blessed', [
    (0.80, 0.82, True),  # a drop of exactly max_regression is allowed
    (0.80, 0.8201, False),
    (0.90, 0.50, True),
])
def test_decide_blessing_regression_margin(candidate_bleu4, last_bleu4, blessed):
  decision, reasons = caption_evaluator.decide_blessing(
      {caption_metrics.BLEU_4: candidate_bleu4, caption_metrics.CIDER_D: 2.0}, DIVERSE,
      {caption_metrics.BLEU_4: last_bleu4, caption_metrics.CIDER_D: 2.0}, None,
      config_lib.EvaluationConfig(min_bleu4=0.5, min_cider=1.0, max_regression=0.02))

  assert decision is blessed
  verdict = 'PASS' if blessed else 'FAIL'
  assert reasons == [
      f'PASS: BLEU-4 {candidate_bleu4:.4f} vs min_bleu4 0.5000',
      'PASS: CIDEr-D 2.0000 vs min_cider 1.0000',
      f'{verdict}: BLEU-4 {candidate_bleu4:.4f} vs last blessed model {last_bleu4:.4f}: '
      f'change {candidate_bleu4 - last_bleu4:+.4f}, allowed drop max_regression 0.0200',
      DIVERSE_REASON,
  ]


@pytest.mark.parametrize('candidate_bleu4, baseline_bleu4, blessed', [
    (0.80, 0.40, True),  # exactly twice the baseline
    (0.80, 0.41, False),
])
def test_decide_blessing_against_the_captions_only_baseline(candidate_bleu4, baseline_bleu4,
                                                           blessed):
  decision, reasons = caption_evaluator.decide_blessing(
      {caption_metrics.BLEU_4: candidate_bleu4, caption_metrics.CIDER_D: 2.0}, DIVERSE, None,
      {caption_metrics.BLEU_4: baseline_bleu4, caption_metrics.CIDER_D: 0.5},
      config_lib.EvaluationConfig(min_bleu4=0.5, min_cider=1.0, max_regression=0.02,
                                  min_baseline_ratio=2.0))

  assert decision is blessed
  assert reasons == [
      'PASS: BLEU-4 0.8000 vs min_bleu4 0.5000',
      'PASS: CIDEr-D 2.0000 vs min_cider 1.0000',
      f"{'PASS' if blessed else 'FAIL'}: BLEU-4 0.8000 vs 2 x captions-only baseline {baseline_bleu4:.4f}",
      DIVERSE_REASON,
      'NOTE: no previously blessed model, so no regression check',
  ]


def test_decide_blessing_absolute_thresholds_without_last_blessed():
  blessed, reasons = caption_evaluator.decide_blessing(
      {caption_metrics.BLEU_4: 0.6, caption_metrics.CIDER_D: 0.9}, DIVERSE, None, None,
      config_lib.EvaluationConfig(min_bleu4=0.5, min_cider=1.0, max_regression=0.02))

  assert blessed is False
  assert reasons == ['PASS: BLEU-4 0.6000 vs min_bleu4 0.5000',
                     'FAIL: CIDEr-D 0.9000 vs min_cider 1.0000',
                     DIVERSE_REASON,
                     'NOTE: no previously blessed model, so no regression check']


def test_evaluates_the_tiny_captioner_with_the_real_serving_graph(world, tiny_model_dir, tmp_path):
  candidate = standard_artifacts.Model()
  candidate.uri = str(tmp_path / 'tiny_model')
  shutil.copytree(tiny_model_dir, captioning.serving_model_dir(candidate))

  evaluation, blessing = run_evaluator(tmp_path, world['examples'], candidate)

  lines = read_captions(evaluation)
  assert [line['image_id'] for line in lines] == sorted(world['dataset'])
  direct = captioning.SavedModelCaptioner(str(tiny_model_dir))(
      [world['dataset'][line['image_id']][0] for line in lines])
  assert [line['captioner']['caption'] for line in lines] == direct.captions
  assert [line['captioner']['log_probability'] for line in lines] == pytest.approx(
      direct.log_probabilities, rel=1e-5)
  for caption in direct.captions:
    assert set(caption.split()) <= set(tiny_model.WORDS)
  # Random weights and a vocabulary without the references' words cannot reach the quality bar.
  assert blessing.get_int_custom_property('blessed') == 0
  reasons = read_report(evaluation)['reasons']
  assert reasons[0].startswith('FAIL: BLEU-4 0.0000 vs min_bleu4') and reasons[1].startswith('FAIL: CIDEr-D')
