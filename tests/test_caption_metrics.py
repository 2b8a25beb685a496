"""Caption metrics on hand-made cases whose scores are known.

The Java parts (PTBTokenizer, METEOR) run for real: Java is on these machines.
"""
import pytest

from components.evaluation import caption_metrics as cm

# Three images whose captions share no n-gram across all images, so every
# n-gram has a non-zero CIDEr-D idf.
IDENTICAL = {
    'red.png': 'a red square on the left',
    'blue.png': 'a blue circle in the middle',
    'green.png': 'two green triangles at the top',
}

# nltk.translate.bleu_score documentation (the BLEU paper's example 1 plus a
# reordering): corpus_bleu(...) == 0.5920..., and sentence_bleu on the first
# pair == 0.5045...
NLTK_HYP1 = ('It is a guide to action which ensures that the military always obeys '
             'the commands of the party')
NLTK_REFS1 = [
    'It is a guide to action that ensures that the military will forever heed Party commands',
    'It is the guiding principle which guarantees the military forces always being under '
    'the command of the Party',
    'It is the practical guide for the army always to heed the directions of the party',
]
NLTK_HYP2 = 'he read the book because he was interested in world history'
NLTK_REFS2 = ['he was interested in world history because he read the book']


@pytest.fixture(scope='module', autouse=True)
def java():
  assert cm.java_available(), 'these tests expect java (Java 17 is installed here)'


def test_identical_captions_score_perfectly():
  result = cm.score_captions(IDENTICAL, {i: [c] * 5 for i, c in IDENTICAL.items()})

  assert result['tokenizer'] == cm.PTB_TOKENIZER
  assert result['skipped'] == {}
  assert result['num_images'] == 3
  assert list(result['corpus']) == list(cm.METRIC_NAMES)
  for name in cm.BLEU_NAMES + (cm.METEOR, cm.ROUGE_L):
    assert result['corpus'][name] == pytest.approx(1.0, abs=1e-6), name
  # CIDEr-D: cosine 1 for each n-gram order, no length penalty, times 10.
  assert result['corpus'][cm.CIDER_D] == pytest.approx(10.0, abs=1e-6)
  for image_id in IDENTICAL:
    assert result['per_image'][image_id][cm.BLEU_4] == pytest.approx(1.0, abs=1e-6)
    assert result['per_image'][image_id][cm.CIDER_D] == pytest.approx(10.0, abs=1e-6)


def test_disjoint_captions_score_zero():
  hypotheses = {'a': 'zebras graze quietly near tall trees',
                'b': 'an old man reads his newspaper outside'}
  references = {'a': ['a red square on the left', 'one red box at left'],
                'b': ['a blue circle in the middle', 'blue disc centred']}

  result = cm.score_captions(hypotheses, references)

  for name in cm.METRIC_NAMES:
    assert result['corpus'][name] == pytest.approx(0.0, abs=1e-6), name
    for image_id in hypotheses:
      assert result['per_image'][image_id][name] == pytest.approx(0.0, abs=1e-6), name


def test_nltk_documentation_bleu_example():
  result = cm.score_captions({'1': NLTK_HYP1, '2': NLTK_HYP2}, {'1': NLTK_REFS1, '2': NLTK_REFS2})

  assert result['corpus'][cm.BLEU_4] == pytest.approx(0.5920, abs=1e-4)
  assert result['per_image']['1'][cm.BLEU_4] == pytest.approx(0.5045, abs=1e-4)


def test_bleu_paper_modified_precision_example():
  # Papineni et al. 2002, section 2.1: "the the the the the the the" has a
  # modified unigram precision of 2/7; the closest reference has 7 words, so
  # there is no brevity penalty and BLEU-1 is exactly that precision.
  result = cm.score_captions({'x': 'the the the the the the the'},
                        {'x': ['The cat is on the mat.', 'There is a cat on the mat.']})

  assert result['corpus'][cm.BLEU_1] == pytest.approx(2 / 7, abs=1e-6)


def test_rouge_l_hand_computed():
  # LCS('a dog runs on grass', 'a dog is running on the grass') = 'a dog on grass':
  # P = 4/5, R = 4/7, F = (1 + 1.2^2) P R / (R + 1.2^2 P).
  p, r = 4 / 5, 4 / 7
  expected = (1 + 1.2**2) * p * r / (r + 1.2**2 * p)

  result = cm.score_captions({'x': 'A dog runs on grass.'},
                             {'x': ['A dog is running on the grass.']})

  assert result['corpus'][cm.ROUGE_L] == pytest.approx(expected, abs=1e-9)
  assert 0.0 < result['corpus'][cm.METEOR] < 1.0


def test_ptb_tokenisation_ignores_case_and_punctuation():
  result = cm.score_captions({'x': 'A Dog, running!'}, {'x': ['a dog running', 'the dog runs']})

  assert result['per_image']['x'][cm.BLEU_3] == pytest.approx(1.0, abs=1e-6)


def test_empty_hypothesis_scores_zero():
  references = {i: [c] for i, c in IDENTICAL.items()}
  hypotheses = dict(IDENTICAL, **{'blue.png': ''})

  result = cm.score_captions(hypotheses, references)

  for name in cm.METRIC_NAMES:
    assert result['per_image']['blue.png'][name] == pytest.approx(0.0, abs=1e-6), name
  assert result['per_image']['red.png'][cm.BLEU_4] == pytest.approx(1.0, abs=1e-6)


def test_meteor_server_is_restarted_after_it_died():
  dead = cm._meteor_server().meteor_p  # the shared METEOR Java process
  dead.kill()
  dead.wait()
  hypotheses, references = {'x': 'a dog runs'}, {'x': ['a dog runs', 'a dog is running']}

  result = cm.score_captions(hypotheses, references)

  assert result['skipped'] == {}
  assert result['corpus'][cm.METEOR] == pytest.approx(1.0)
  assert cm._meteor_server().meteor_p.pid != dead.pid


def test_simple_tokenize_rule():
  assert cm.simple_tokenize('A Dog, runs.') == 'a dog runs'
  assert cm.simple_tokenize("The dog's red T-shirt -- wet!") == "the dog 's red t-shirt wet"
  assert cm.simple_tokenize('  two\nlines\t ') == 'two lines'


def test_without_java_meteor_is_skipped_not_faked(monkeypatch):
  monkeypatch.setattr(cm.shutil, 'which', lambda name: None)

  result = cm.score_captions({'1': NLTK_HYP1, '2': NLTK_HYP2}, {'1': NLTK_REFS1, '2': NLTK_REFS2})

  assert result['tokenizer'] == cm.SIMPLE_TOKENIZER
  assert 'java' in result['skipped'][cm.METEOR]
  assert cm.METEOR not in result['corpus']
  assert all(cm.METEOR not in scores for scores in result['per_image'].values())
  # The simple rule tokenises these plain sentences exactly as PTB does.
  assert result['corpus'][cm.BLEU_4] == pytest.approx(0.5920, abs=1e-4)


@pytest.mark.parametrize('hypotheses, references, message', [
    ({}, {}, 'empty'),
    ({'a': 'x'}, {'b': ['x']}, 'differ'),
    ({'a': 'x'}, {'a': []}, 'without reference'),
])
def test_bad_inputs_are_rejected(hypotheses, references, message):
  with pytest.raises(ValueError, match=message):
    cm.score_captions(hypotheses, references, use_java=False)
