"""The CaptionEvaluator gate on real artifacts: TFRecords, SavedModels, Pusher.

The models are real SavedModels honouring the serving contract of
components/features.py; `export_lookup_captioner` makes ones whose captions
are fixed per image (a table keyed by the image bytes), so that "good", "bad"
and "slightly worse" captioners are exact. The component's executor runs
directly on artifacts in tmp dirs, then the standard Pusher executor and
LatestBlessedModelStrategy read the blessing it wrote. One test also exports
a tiny random captioner with the project's components/training/exporter.py.

Helpers here are reused by tests/test_gallery.py.
"""
import io
import json
import os
import pathlib
from typing import Dict, List, Mapping

from PIL import Image
import pytest
import tensorflow as tf
from tfx.components.pusher import executor as pusher_executor
from tfx.dsl.input_resolution.strategies import latest_blessed_model_strategy
from tfx.proto import pusher_pb2
from tfx.types import artifact_utils
from tfx.types import standard_artifacts
from tfx.types import standard_component_specs
from tfx.utils import proto_utils

from components import names
from components.evaluation import caption_evaluator
from components.evaluation import caption_metrics
from components.evaluation import captioning
from components.evaluation import diversity
from components import config as config_lib
from components import features
from pipeline import summary

COLOURS = ('red', 'green', 'blue', 'yellow')
SHAPES = ('square', 'circle', 'triangle')
RGB = {'red': (220, 30, 30), 'green': (30, 180, 60), 'blue': (40, 60, 220),
       'yellow': (240, 220, 40)}
MIN_BLEU4 = 0.5
MIN_CIDER = 1.0
MIN_DISTINCT_CAPTION_SHARE = 0.5
# The diversity of captions that differ for every image (for decide_blessing).
DIVERSE = {diversity.DISTINCT_CAPTION_SHARE: 1.0, diversity.DISTINCT_WORDS: 10,
           diversity.COPIED_CAPTION_SHARE: 0.0}


# --- helpers (also used by tests/test_gallery.py) ------------------------------


def make_dataset(num_images: int = 12, image_size: int = 24) -> Dict[str, tuple]:
  """Returns image id -> (PNG bytes, 5 reference captions); distinct images."""
  dataset = {}
  for index in range(num_images):
    colour, shape = COLOURS[index % len(COLOURS)], SHAPES[index % len(SHAPES)]
    pixels = Image.new('RGB', (image_size + index, image_size * 3 // 4), RGB[colour])
    pixels.putpixel((index, 0), (index, index, index))  # every image distinct
    png = io.BytesIO()
    pixels.save(png, format='PNG')
    dataset[f'img_{index:03d}.png'] = (png.getvalue(), [
        f'a {colour} {shape} on a white background',
        f'one {colour} {shape}',
        f'there is a {colour} {shape} in the picture',
        f'a {shape} coloured {colour}',
        f'a single {colour} {shape} is shown',
    ])
  return dataset


def write_examples(root: pathlib.Path, splits: Mapping[str, Mapping[str, tuple]]):
  """Writes an ExampleGen-style Examples artifact (gzipped TFRecords per split)."""
  examples = standard_artifacts.Examples()
  examples.uri = str(root / 'examples')
  examples.split_names = artifact_utils.encode_split_names(list(splits))
  for split, dataset in splits.items():
    split_dir = os.path.join(examples.uri, f'Split-{split}')
    os.makedirs(split_dir)
    path = os.path.join(split_dir, 'data_tfrecord-00000-of-00001.gz')
    with tf.io.TFRecordWriter(path, options='GZIP') as writer:
      for image_id, (image, captions) in dataset.items():
        writer.write(tf.train.Example(features=tf.train.Features(feature={
            features.IMAGE_ID_KEY: _bytes_feature([image_id.encode()]),
            features.IMAGE_KEY: _bytes_feature([image]),
            features.CAPTIONS_KEY: _bytes_feature([c.encode() for c in captions]),
        })).SerializeToString())
  return examples


def _bytes_feature(values: List[bytes]) -> tf.train.Feature:
  return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))


class LookupCaptioner(tf.Module):
  """A captioner whose caption per image is fixed: a table keyed by the image bytes."""

  def __init__(self, captions_by_image: Mapping[bytes, str]):
    super().__init__()
    keys = list(captions_by_image)
    self.table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(keys, tf.string),
                                            tf.constant([captions_by_image[k] for k in keys])),
        default_value='')

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=features.IMAGES_INPUT)])
  def caption(self, images):
    return {features.CAPTION_OUTPUT: self.table.lookup(images),  # string [batch]
            features.LOG_PROBABILITY_OUTPUT: tf.fill(tf.shape(images), -1.5)}  # float32 [batch]

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=features.EXAMPLES_INPUT)])
  def caption_examples(self, examples):
    parsed = tf.io.parse_example(
        examples, {features.IMAGE_KEY: tf.io.FixedLenFeature([], tf.string)})
    return self.caption(parsed[features.IMAGE_KEY])


def export_lookup_captioner(root: pathlib.Path, name: str, captions_by_image: Mapping[bytes, str],
                            model_id: int):
  """Saves a LookupCaptioner as a Trainer's Model artifact (<uri>/Format-Serving)."""
  model = standard_artifacts.Model()
  model.uri = str(root / name)
  model.id = model_id
  module = LookupCaptioner(captions_by_image)
  tf.saved_model.save(module, captioning.serving_model_dir(model), signatures={
      features.CAPTION_SIGNATURE: module.caption.get_concrete_function(),
      features.EXAMPLES_SIGNATURE: module.caption_examples.get_concrete_function(),
  })
  return model


def run_evaluator(root: pathlib.Path, examples, model, baseline_model=None,
                  last_blessed_model=None, **parameters):
  """Runs CaptionEvaluator's executor; returns (evaluation, blessing) artifacts."""
  evaluation = caption_evaluator.CaptionEvaluation()
  evaluation.uri = str(root / 'evaluation')
  blessing = standard_artifacts.ModelBlessing()
  blessing.uri = str(root / 'blessing')
  for output in (evaluation, blessing):
    os.makedirs(output.uri)  # as the TFX launcher does
  inputs = {'examples': [examples], 'model': [model]}
  if baseline_model is not None:
    inputs['baseline_model'] = [baseline_model]
  if last_blessed_model is not None:
    inputs['last_blessed_model'] = [last_blessed_model]
  exec_properties = {'split': features.EVAL_SPLIT, 'min_bleu4': MIN_BLEU4,
                     'min_cider': MIN_CIDER, 'max_regression': 0.02,
                     'min_baseline_ratio': 1.0,
                     'min_distinct_caption_share': MIN_DISTINCT_CAPTION_SHARE, 'batch_size': 5}
  exec_properties.update(parameters)
  executor = caption_evaluator.CaptionEvaluator.EXECUTOR_SPEC.executor_class()
  executor.Do(inputs, {'evaluation': [evaluation], 'blessing': [blessing]}, exec_properties)
  return evaluation, blessing


def run_pusher(root: pathlib.Path, model, blessing, serving_dir: pathlib.Path):
  """Runs the standard Pusher's executor; returns its PushedModel artifact."""
  pushed = standard_artifacts.PushedModel()
  pushed.uri = str(root / 'pushed_model')
  destination = pusher_pb2.PushDestination(
      filesystem=pusher_pb2.PushDestination.Filesystem(base_directory=str(serving_dir)))
  pusher_executor.Executor().Do(
      {standard_component_specs.MODEL_KEY: [model],
       standard_component_specs.MODEL_BLESSING_KEY: [blessing]},
      {standard_component_specs.PUSHED_MODEL_KEY: [pushed]},
      {standard_component_specs.PUSH_DESTINATION_KEY: proto_utils.proto_to_json(destination)})
  return pushed


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
  dataset = make_dataset()
  examples = write_examples(root, {features.TRAIN_SPLIT: make_dataset(6),
                                   features.EVAL_SPLIT: dataset})
  good = {image: refs[0] for image, refs in dataset.values()}
  worse = dict(good)
  for image, _ in list(dataset.values())[:3]:
    worse[image] = 'a purple hexagon'
  return {
      'root': root,
      'dataset': dataset,
      'examples': examples,
      'good': export_lookup_captioner(root, 'good', good, model_id=2),
      'bad': export_lookup_captioner(root, 'bad', {image: 'a cat sleeps on a sofa'
                                                   for image, _ in dataset.values()}, model_id=1),
      'worse': export_lookup_captioner(root, 'worse', worse, model_id=3),
      'baseline': export_lookup_captioner(root, 'baseline', {
          image: 'a red circle on a white background' for image, _ in dataset.values()},
                                          model_id=4),
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
    pushed = run_pusher(root / name, world[name], blessing, serving_dir)
    runs[name] = {'evaluation': evaluation, 'blessing': blessing, 'pushed': pushed}
  runs['serving_dir'] = serving_dir
  return runs


# --- tests ---------------------------------------------------------------------


def test_model_below_threshold_is_not_blessed_and_not_pushed(world, first_runs):
  run = first_runs['bad']
  blessing, report = run['blessing'], read_report(run['evaluation'])

  assert blessing.get_int_custom_property('blessed') == 0
  assert os.listdir(blessing.uri) == ['NOT_BLESSED']
  assert blessing.get_string_custom_property('current_model') == world['bad'].uri
  assert blessing.get_int_custom_property('current_model_id') == 1
  assert report['blessed'] is False
  assert report['captioner']['metrics'][caption_metrics.BLEU_4] < MIN_BLEU4
  assert any(r.startswith('FAIL: BLEU-4') for r in report['reasons'])
  assert any(r.startswith('FAIL: CIDEr-D') for r in report['reasons'])
  assert 'FAIL' in blessing.get_string_custom_property('blessing_message')
  # The standard Pusher refuses it: nothing was pushed before the good model.
  assert run['pushed'].get_int_custom_property('pushed') == 0


def test_good_model_is_blessed_and_pushed(world, first_runs):
  run = first_runs['good']
  blessing, report = run['blessing'], read_report(run['evaluation'])

  assert blessing.get_int_custom_property('blessed') == 1
  assert os.listdir(blessing.uri) == ['BLESSED']
  assert blessing.get_string_custom_property('current_model') == world['good'].uri
  assert blessing.get_int_custom_property('current_model_id') == 2
  assert report['blessed'] is True
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

  assert report['split'] == features.EVAL_SPLIT
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
  table = caption_evaluator.format_report(report)
  assert 'captioner' in table and 'baseline' in table and 'Blessed: YES' in table


def test_captions_file_has_every_hypothesis_and_reference(world, first_runs):
  lines = read_captions(first_runs['good']['evaluation'])

  assert [line['image_id'] for line in lines] == sorted(world['dataset'])
  for line in lines:
    references = world['dataset'][line['image_id']][1]
    assert line['references'] == references
    assert line['captioner']['caption'] == references[0]
    assert line['captioner']['log_probability'] == pytest.approx(-1.5)
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
  table = caption_evaluator.format_report(report)
  assert '\n'.join(table_lines) in table
  # The run summary prints the evaluator's report.
  text = summary.render({'evaluation': report, 'pushed': False, 'pushed_model': None,
                         'gallery': None, 'reject_report': None, 'summary': 'summary.json',
                         'seed': 0, 'resumed': {}})
  assert '\n'.join(table_lines) in text


def test_one_sentence_for_every_image_is_not_blessed_even_above_the_baseline(tmp_path):
  # Twelve different images that all deserve the same captions: one sentence
  # scores BLEU-4 1.0 and beats the baseline, yet says nothing about the image.
  dataset = make_dataset()
  references = dataset['img_000.png'][1]
  eval_set = {image_id: (image, references) for image_id, (image, _) in dataset.items()}
  examples = write_examples(tmp_path, {features.TRAIN_SPLIT: make_dataset(3),
                                       features.EVAL_SPLIT: eval_set})
  images = [image for image, _ in eval_set.values()]
  candidate = export_lookup_captioner(tmp_path, 'one_sentence',
                                      {image: references[0] for image in images}, model_id=5)
  baseline = export_lookup_captioner(tmp_path, 'baseline',
                                     {image: 'a cat sleeps on a sofa' for image in images},
                                     model_id=6)

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
  assert len(reasons) == 4


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
  assert reasons[2].startswith(('PASS' if blessed else 'FAIL') + ': BLEU-4 0.8000 vs 2 x captions-only')


def test_decide_blessing_absolute_thresholds_without_last_blessed():
  blessed, reasons = caption_evaluator.decide_blessing(
      {caption_metrics.BLEU_4: 0.6, caption_metrics.CIDER_D: 0.9}, DIVERSE, None, None,
      config_lib.EvaluationConfig(min_bleu4=0.5, min_cider=1.0, max_regression=0.02))

  assert blessed is False
  assert reasons[0].startswith('PASS: BLEU-4 0.6000')
  assert reasons[1].startswith('FAIL: CIDEr-D 0.9000')
  assert reasons[3].startswith('NOTE: no previously blessed model')


def test_evaluates_a_savedmodel_from_the_project_exporter(world, tmp_path):
  # Imported here: the model code is another issue's and only this test uses it.
  from components.training import exporter
  from components.encoder import image_features
  from components.training import model as model_lib

  vocabulary = list(features.SPECIAL_TOKENS) + sorted(set(
      word for _, refs in world['dataset'].values() for ref in refs for word in ref.split()))
  extractor = image_features.build_feature_extractor('vgg16', image_size=32, weights=None,
                                                     pooling='avg')
  caption_model = model_lib.build_caption_model(
      len(vocabulary), extractor.output_shape[-1], sequence_length=8, embedding_dim=8,
      lstm_units=8)
  candidate = standard_artifacts.Model()
  candidate.uri = str(tmp_path / 'random_model')
  exporter.export_serving_model(captioning.serving_model_dir(candidate), extractor,
                                model_lib.CaptionDecoder(caption_model), vocabulary,
                                max_length=7, beam_width=2)

  evaluation, blessing = run_evaluator(tmp_path, world['examples'], candidate)

  lines = read_captions(evaluation)
  assert len(lines) == len(world['dataset'])
  for line in lines:
    words = line['captioner']['caption'].split()
    assert len(words) <= 7 and set(words) <= set(vocabulary[features.NUM_SPECIAL_TOKENS:])
    assert line['captioner']['log_probability'] < 0.0
  # Random weights cannot reach the quality bar.
  assert blessing.get_int_custom_property('blessed') == 0
