"""Caption diversity (components/evaluation/diversity.py): exact values on tiny inputs.

The training references are read back from a real gzipped TFRecord split
written in the ExampleGen's layout (testing/examples.py).
"""
import pytest

from components import names
from components.evaluation import diversity
from testing import examples as examples_lib


def test_normalize_folds_case_and_punctuation_like_the_transform():
  assert diversity.normalize(['A Dog, running.', "the  dog's ball!", '', 'ÉCOLE']) == [
      ('a', 'dog', 'running'), ('the', "dog's", 'ball'), (), ('école',)]


def test_one_sentence_for_every_image():
  captions = ['a man in a red shirt is standing in the water'] * 4

  assert diversity.caption_diversity(captions, frozenset()) == {
      diversity.DISTINCT_CAPTION_SHARE: 0.25,
      diversity.DISTINCT_WORDS: 9,
      diversity.COPIED_CAPTION_SHARE: 0.0,
  }


def test_captions_that_differ_only_in_case_and_punctuation_are_one_caption():
  captions = ['A red circle.', 'a red circle', 'a blue square', 'A blue square!', 'one dog']
  training = frozenset(diversity.normalize(['a red circle', 'two cats']))

  assert diversity.caption_diversity(captions, training) == {
      diversity.DISTINCT_CAPTION_SHARE: 3 / 5,
      diversity.DISTINCT_WORDS: 7,  # a red circle blue square one dog
      diversity.COPIED_CAPTION_SHARE: 2 / 5,
  }


def test_a_caption_inside_a_longer_reference_is_not_a_copy():
  training = frozenset(diversity.normalize(['a red circle on the left']))

  measures = diversity.caption_diversity(['a red circle', 'a red circle on the left'], training)

  assert measures[diversity.COPIED_CAPTION_SHARE] == 0.5


def test_no_captions_is_an_error():
  with pytest.raises(ValueError, match='No captions'):
    diversity.caption_diversity([], frozenset())


def test_reference_captions_reads_every_reference_of_the_split(tmp_path):
  train = examples_lib.captioned_images(3)
  examples = examples_lib.write_examples(tmp_path / 'examples', {
      names.TRAIN_SPLIT: train, names.EVAL_SPLIT: examples_lib.captioned_images(1)})

  captions = diversity.reference_captions(examples, names.TRAIN_SPLIT)

  assert captions == frozenset(diversity.normalize(
      [reference for _, references in train.values() for reference in references]))
  assert len(captions) == 15  # 3 images x 5 distinct references
  assert ('a', 'red', 'square', 'on', 'a', 'white', 'background') in captions


def test_describe():
  assert diversity.describe({diversity.DISTINCT_CAPTION_SHARE: 0.25, diversity.DISTINCT_WORDS: 9,
                             diversity.COPIED_CAPTION_SHARE: 1.0}) == (
      '0.2500 distinct captions per image, 9 distinct words, 1.0000 of the captions copied '
      'verbatim from the training references')


def test_reference_captions_of_a_missing_split_is_an_error_naming_it(tmp_path):
  examples = examples_lib.write_examples(
      tmp_path / 'examples', {names.EVAL_SPLIT: examples_lib.captioned_images(1)})

  with pytest.raises(ValueError, match='Split does not exist .*: train'):
    diversity.reference_captions(examples, names.TRAIN_SPLIT)
