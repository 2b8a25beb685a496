"""The demo gallery, checked in a real headless Chromium, and the DemoGallery component.

The page's own JS writes how many thumbnails loaded into <body> data
attributes; Chromium runs it (file:// URL, virtual time so lazy images and
scripts finish) and `--dump-dom` returns the DOM after it ran. Chromium is
Debian's `chromium` package, which the set-up installs (`.ci/run`; locally
`apt-get install chromium`); without it the browser tests fail saying so.
"""
import base64
import html.parser
import json
import os
import pathlib
import re
import shutil
import subprocess
from typing import Dict, List

import numpy as np
from PIL import Image
from PIL import ImageDraw
from PIL import ImageStat
import pytest

from components import artifacts
from components import attention_maps
from components import config as config_lib
from components import names
from components.evaluation import caption_metrics
from components.evaluation import captioning
from components.evaluation import gallery
from components.training import stages
from testing import examples as examples_lib
from testing import executors
from testing import images as images_lib
from testing import lookup_captioner

CHROMIUM = 'chromium'
NUM_IMAGES = 20
INJECTED = '<b>bold</b> & <script>document.title = "pwned"</script>'
# The good model passes, the bad one ('a cat' for every image) does not.
THRESHOLDS = config_lib.EvaluationConfig(min_bleu4=0.5, min_cider=1.0)


@pytest.fixture(scope='module')
def chromium() -> str:
  """Path of the chromium binary; fails the test, saying what to install, when it is missing."""
  path = shutil.which(CHROMIUM)
  if path is None:
    pytest.fail('The browser tests need Chromium and it is not on the PATH: install Debian\'s package '
                '(`sudo apt-get install chromium`); .ci/run installs it before the tests.', pytrace=False)
  return path


def run_chromium(chromium: str, profile: pathlib.Path, url: str, *args: str) -> str:
  """Runs headless Chromium on `url`; returns its stdout."""
  command = [chromium, '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic',
             '--no-first-run', '--disable-background-networking', '--disable-component-update',
             '--disable-sync', f'--user-data-dir={profile}', '--window-size=1200,900',
             '--virtual-time-budget=10000', *args, url]
  return subprocess.run(command, capture_output=True, text=True, timeout=120,
                        check=True).stdout


class PageDom(html.parser.HTMLParser):
  """What the tests read from a dumped DOM: <body> attributes, cards, images."""

  def __init__(self, text: str):
    super().__init__()
    self.body: Dict[str, str] = {}
    self.cards: List[dict] = []  # {'id', 'hidden', 'caption', 'references', 'img', 'attention', 'wordmaps'}
    self.shown = ''
    self.title = ''
    self._into = None  # (dict, key) receiving text, or None
    self._in_wordmap = False
    self.feed(text)

  def handle_starttag(self, tag, attrs):
    attrs = dict(attrs)
    classes = (attrs.get('class') or '').split()
    if tag == 'body':
      self.body = attrs
    elif tag == 'figure' and 'card' in classes:
      self.cards.append({'id': attrs['data-id'], 'hidden': 'hidden' in attrs, 'caption': '',
                         'references': [], 'img': None, 'attention': attrs.get('data-attention'),
                         'wordmaps': []})
    elif tag == 'figure' and 'wordmap' in classes:
      self._in_wordmap = True
    elif tag == 'figcaption' and self._in_wordmap:
      self.cards[-1]['wordmaps'].append('')
      self._into = (self.cards[-1]['wordmaps'], -1)
    elif tag == 'img' and 'thumb' in classes:
      self.cards[-1]['img'] = attrs
    elif tag == 'p' and 'caption' in classes:
      self._into = (self.cards[-1], 'caption')
    elif tag == 'li' and self.cards:
      self.cards[-1]['references'].append('')
      self._into = (self.cards[-1]['references'], -1)
    elif tag == 'span' and attrs.get('id') == 'shown':
      self._into = (self, 'shown')
    elif tag == 'title':
      self._into = (self, 'title')

  def handle_endtag(self, tag):
    if tag in ('p', 'li', 'span', 'title', 'figcaption'):
      self._into = None
    if tag == 'figcaption':
      self._in_wordmap = False

  def handle_data(self, data):
    if self._into is None:
      return
    target, key = self._into
    if isinstance(target, (list, dict)):
      target[key] += data
    else:
      setattr(target, key, getattr(target, key) + data)


@pytest.fixture(scope='module')
def page(tmp_path_factory):
  """A gallery of NUM_IMAGES 320-pixel-wide images (one caption tries HTML injection)."""
  out_dir = tmp_path_factory.mktemp('page')
  entries = []
  for index, (image_id, (image, references)) in enumerate(
      examples_lib.captioned_images(NUM_IMAGES, image_size=320).items()):
    caption = INJECTED if index == 7 else f'{references[0]} number {index}'
    scores = {caption_metrics.BLEU_4: (index * 7 % NUM_IMAGES) / NUM_IMAGES,
              caption_metrics.CIDER_D: index / 2}
    entries.append(gallery.GalleryEntry(image_id, image, caption, references, scores))
  metrics = {'captioner (eval split)': {caption_metrics.BLEU_4: 0.61, caption_metrics.CIDER_D: 1.9},
             'baseline (eval split)': {caption_metrics.BLEU_4: 0.12}}
  index_path = gallery.render_gallery(iter(entries), metrics, str(out_dir),
                                      notes=['a note'], warnings=['a warning'])
  return {'index': pathlib.Path(index_path), 'entries': entries}


def test_every_thumbnail_loads_and_captions_are_shown_in_chromium(chromium, page, tmp_path):
  dom = PageDom(run_chromium(chromium, tmp_path / 'profile', page['index'].as_uri(),
                             '--dump-dom'))

  assert dom.body['data-images-total'] == str(NUM_IMAGES)
  assert dom.body['data-images-loaded'] == str(NUM_IMAGES)
  assert dom.body['data-images-failed'] == '0'
  assert dom.shown == f'{NUM_IMAGES} of {NUM_IMAGES} images shown'
  by_id = {entry.image_id: entry for entry in page['entries']}
  assert sorted(card['id'] for card in dom.cards) == sorted(by_id)
  for card in dom.cards:
    entry = by_id[card['id']]
    assert not card['hidden']
    assert card['caption'] == entry.caption  # the injected markup shows as text
    assert card['references'] == entry.references
    assert card['img']['loading'] == 'lazy'
  assert dom.title == 'Caption gallery'  # the caption's <script> did not run
  # A model without attention: no maps on the page.
  assert dom.body['data-maps-total'] == dom.body['data-maps-drawn'] == '0'
  assert all(card['attention'] is None and card['wordmaps'] == [] for card in dom.cards)
  # Sorted on load by BLEU-4, best first.
  bleu4 = [by_id[card['id']].scores[caption_metrics.BLEU_4] for card in dom.cards]
  assert bleu4 == sorted(bleu4, reverse=True)


def test_link_sorts_and_filters_by_score_in_chromium(chromium, page, tmp_path):
  url = page['index'].as_uri() + '#metric=CIDEr-D&order=asc&min=2.5&max=7'
  dom = PageDom(run_chromium(chromium, tmp_path / 'profile', url, '--dump-dom'))

  cider = {entry.image_id: entry.scores[caption_metrics.CIDER_D] for entry in page['entries']}
  visible = [card['id'] for card in dom.cards if not card['hidden']]
  assert [cider[i] for i in visible] == [2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 5.5, 6.0, 6.5, 7.0]
  assert dom.shown == f'10 of {NUM_IMAGES} images shown'
  assert [cider[card['id']] for card in dom.cards] == sorted(cider.values())


def test_screenshot_shows_the_page(chromium, page, tmp_path):
  screenshot = tmp_path / 'gallery.png'
  run_chromium(chromium, tmp_path / 'profile', page['index'].as_uri(),
               f'--screenshot={screenshot}')

  with Image.open(screenshot) as shot:
    assert shot.size == (1200, 900)
    # Not a blank page: text, table lines and coloured thumbnails.
    assert max(ImageStat.Stat(shot.convert('RGB')).stddev) > 20


def test_thumbnails_are_small_jpegs(page):
  thumbs = sorted((page['index'].parent / names.GALLERY_THUMBS_DIR).iterdir())

  assert len(thumbs) == NUM_IMAGES
  for path in thumbs:
    with Image.open(path) as thumb:
      assert thumb.format == 'JPEG'
      assert max(thumb.size) == gallery.THUMBNAIL_SIZE  # 320+ pixels shrunk to 160


def test_page_has_metrics_notes_and_no_external_resources(page):
  text = page['index'].read_text()

  assert 'captioner (eval split)' in text and '0.6100' in text and '1.9000' in text
  assert 'baseline (eval split)' in text and '0.1200' in text
  assert '<p class="warning">a warning</p>' in text and '<p>a note</p>' in text
  # Offline machines: every resource is a local thumbnail, nothing else is fetched.
  assert set(re.findall(r'<(?:img|script|link|iframe)\b[^>]*\b(?:src|href)="([^"]*)"', text)) == {
      f'{names.GALLERY_THUMBS_DIR}/{i:06d}.jpg' for i in range(NUM_IMAGES)}
  assert 'http' not in text and 'url(' not in text and '@import' not in text
  assert ' data-attention="' not in text and 'class="wordmap"' not in text
  assert 'Under an attention model' not in text


def test_undecodable_image_gets_a_card_saying_why(tmp_path):
  entry = gallery.GalleryEntry('broken.jpg', b'not an image', 'a caption', ['a reference'],
                               {caption_metrics.BLEU_4: 0.0})

  index_path = gallery.render_gallery([entry], {}, str(tmp_path))

  text = pathlib.Path(index_path).read_text()
  assert 'data-id="broken.jpg"' in text and 'no thumbnail: cannot identify image' in text
  assert os.listdir(tmp_path / names.GALLERY_THUMBS_DIR) == []


def test_card_shows_the_beam_searchs_alternatives_under_the_caption(tmp_path):
  entry = gallery.GalleryEntry('a.png', b'not an image', 'a dog runs', ['a reference'], {},
                               alternatives=['a dog <sits>', 'a cat runs'])

  text = pathlib.Path(gallery.render_gallery([entry], {}, str(tmp_path))).read_text()

  card = text[text.index('data-id="a.png"'):]
  assert '<p class="alternatives">also: a dog &lt;sits&gt; &middot; a cat runs</p>' in card
  assert card.index('a dog runs') < card.index('class="alternatives"') < card.index('a reference')


# --- attention maps --------------------------------------------------------------

MAP_GRID = (14, 14)  # VGG16 conv5 at 224 pixels
MAP_MAX_LENGTH = 12
_SHAPE_COLOURS = {'red': (215, 40, 40), 'blue': (40, 70, 215), 'green': (40, 160, 70), 'yellow': (235, 200, 30)}


def _blob(centre, spread=1.6):
  """A map [grid_h, grid_w] summing to 1, peaked at `centre` (row, column in cells)."""
  rows, columns = np.mgrid[:MAP_GRID[0], :MAP_GRID[1]]
  weights = np.exp(-((rows - centre[0]) ** 2 + (columns - centre[1]) ** 2) / (2 * spread ** 2))
  return weights / weights.sum()


def _two_shapes(index):
  """(PNG bytes, caption, attention): a coloured circle left of a coloured square on grey, with
  the maps an attention model would have: the circle's words on the circle, the square's on the
  square, 'left of' between them, the other words spread over the picture."""
  width, height = 320, 240
  colours = list(_SHAPE_COLOURS)
  first, second = colours[index % 4], colours[(index + 1 + index // 4) % 4]
  if first == second:
    second = colours[(index + 2) % 4]
  image = Image.new('RGB', (width, height), (225, 225, 220))
  draw = ImageDraw.Draw(image)
  circle = (30 + 8 * index, 60 + 6 * index % 90, 40)  # x, y, radius
  square = (230 - 4 * index, 150 - 5 * index % 70, 38)
  draw.ellipse([circle[0] - circle[2], circle[1] - circle[2], circle[0] + circle[2], circle[1] + circle[2]],
               fill=_SHAPE_COLOURS[first])
  draw.rectangle([square[0] - square[2], square[1] - square[2], square[0] + square[2], square[1] + square[2]],
                 fill=_SHAPE_COLOURS[second])
  image.putpixel((0, 0), (index, index, index))

  def cell(x, y):
    return (y / height * MAP_GRID[0] - 0.5, x / width * MAP_GRID[1] - 0.5)

  caption = f'a {first} circle left of a {second} square'
  at_circle, at_square = _blob(cell(*circle[:2])), _blob(cell(*square[:2]))
  between = _blob(cell((circle[0] + square[0]) / 2, (circle[1] + square[1]) / 2), spread=3)
  spread = np.full(MAP_GRID, 1 / np.prod(MAP_GRID))
  rows = [spread, at_circle, at_circle, between, between, spread, at_square, at_square]
  attention = np.zeros((MAP_MAX_LENGTH, *MAP_GRID), np.float32)
  attention[:len(rows)] = rows
  return images_lib.encode(image), caption, attention


@pytest.fixture(scope='module')
def map_page(tmp_path_factory):
  """A gallery of 8 attention-model cards (caption words and maps known) and one undecodable image."""
  out_dir = tmp_path_factory.mktemp('maps')
  entries = []
  for index in range(8):
    image, caption, attention = _two_shapes(index)
    entries.append(gallery.GalleryEntry(f'shapes_{index}.png', image, caption, [caption, 'two shapes'],
                                        {caption_metrics.BLEU_4: index / 8}, attention=attention))
  entries.append(gallery.GalleryEntry('broken.png', b'not an image', 'a cat', ['a cat'],
                                      {caption_metrics.BLEU_4: 0.0}, attention=entries[0].attention))
  index_path = gallery.render_gallery(entries, {'captioner (eval split)': {caption_metrics.BLEU_4: 0.5}},
                                      str(out_dir), title='Attention gallery')
  return {'index': pathlib.Path(index_path), 'entries': entries}


def test_attention_maps_are_drawn_for_every_word_in_chromium(chromium, map_page, tmp_path):
  dom = PageDom(run_chromium(chromium, tmp_path / 'profile', map_page['index'].as_uri(), '--dump-dom'))

  drawn = [entry for entry in map_page['entries'] if entry.image_id != 'broken.png']
  words = sum(len(entry.caption.split()) for entry in drawn)
  assert dom.body['data-maps-total'] == dom.body['data-maps-drawn'] == str(words)
  assert dom.body['data-images-loaded'] == dom.body['data-images-total'] == str(len(drawn))
  by_id = {card['id']: card for card in dom.cards}
  for entry in drawn:
    card = by_id[entry.image_id]
    assert card['wordmaps'] == entry.caption.split() and card['caption'] == entry.caption
    data = json.loads(card['attention'])
    maps = np.frombuffer(base64.b64decode(data['maps']), np.uint8).reshape(-1, *data['grid'])
    assert data['grid'] == list(MAP_GRID) and len(maps) == len(card['wordmaps'])
    # Each word's map peaks (255) where the fixture put its weight.
    for word_map, weights in zip(maps, entry.attention):
      assert word_map.max() == 255
      assert word_map.ravel()[np.argmax(weights)] == 255
  # An image that cannot be shown gets no maps either.
  assert by_id['broken.png']['attention'] is None and by_id['broken.png']['wordmaps'] == []


def test_attention_page_loads_nothing_else_and_explains_the_maps(map_page):
  text = map_page['index'].read_text()

  thumbs = {f'{names.GALLERY_THUMBS_DIR}/{i:06d}.jpg' for i in range(8)}  # the small multiples reuse them
  assert set(re.findall(r'<(?:img|script|link|iframe)\b[^>]*\b(?:src|href)="([^"]*)"', text)) == thumbs
  assert 'url(' not in text and '@import' not in text
  assert "Under an attention model's caption, one small picture per word" in text


def _dark_grey_share(screenshot: pathlib.Path) -> float:
  """The share of a screenshot's pixels inside dark grey areas (5x5 pixels and more): what the maps
  make of the pale background around the shapes; text strokes are thinner, the shapes coloured."""
  with Image.open(screenshot) as shot:
    assert shot.size == (1200, 900)
    pixels = np.asarray(shot.convert('RGB'), np.int32)
  dark = (np.abs(pixels - pixels.mean(axis=2, keepdims=True)).max(axis=2) < 12) & (pixels.mean(axis=2) < 90)
  inside = dark[2:-2, 2:-2].copy()
  for dy in range(5):
    for dx in range(5):
      inside &= dark[dy:dy + dark.shape[0] - 4, dx:dx + dark.shape[1] - 4]
  return float(inside.mean())


def test_screenshot_shows_the_maps(chromium, map_page, tmp_path):
  plain = gallery.render_gallery([entry._replace(attention=None) for entry in map_page['entries']],
                                 {'captioner (eval split)': {caption_metrics.BLEU_4: 0.5}},
                                 str(tmp_path / 'plain'), title='Attention gallery')
  shots = {}
  for name, index in (('maps', map_page['index']), ('plain', pathlib.Path(plain))):
    shots[name] = tmp_path / f'{name}.png'
    run_chromium(chromium, tmp_path / f'profile-{name}', index.as_uri(), f'--screenshot={shots[name]}')

  # The same cards without maps have next to no dark grey; with them, the small multiples do.
  assert _dark_grey_share(shots['maps']) > 0.01 > 10 * _dark_grey_share(shots['plain'])


# Points at a word of the first attention card of the gallery beside it (an iframe of the
# same folder, readable with --allow-file-access-from-files), records what the large
# picture then shows in <body> data attributes, and leaves the pointer there.
_HOVER_PAGE = """<!DOCTYPE html><html><body style="margin:0">
<iframe id="page" src="index.html" width="1200" height="900" style="border:0"></iframe>
<script>
var frame = document.getElementById('page');
frame.addEventListener('load', function () {
  var card = frame.contentDocument.querySelector('.card[data-attention]');
  var word = card.querySelectorAll('.wordmap')[%d];
  var large = card.querySelector('.frame canvas.map');
  document.body.dataset.card = card.dataset.id;
  document.body.dataset.hiddenBefore = large.hidden;
  word.dispatchEvent(new MouseEvent('mouseleave'));
  word.dispatchEvent(new MouseEvent('mouseenter'));
  document.body.dataset.hiddenWhileOver = large.hidden;
  var pixels = large.getContext('2d').getImageData(0, 0, large.width, large.height).data;
  var alpha = [];
  for (var i = 3; i < pixels.length; i += 4) { alpha.push(pixels[i]); }
  document.body.dataset.alpha = JSON.stringify(alpha);
  document.body.dataset.active = card.querySelector('.wordmap.active figcaption').textContent;
});
</script></body></html>
"""


def test_pointing_at_a_word_shows_its_map_on_the_large_picture_in_chromium(chromium, map_page, tmp_path):
  t = 6  # 'a yellow circle left of a blue square': the square's colour
  hover = map_page['index'].parent / 'hover.html'
  hover.write_text(_HOVER_PAGE % t)
  flags = ('--allow-file-access-from-files',)

  dom = PageDom(run_chromium(chromium, tmp_path / 'profile', hover.as_uri(), *flags, '--dump-dom'))
  run_chromium(chromium, tmp_path / 'profile2', hover.as_uri(), *flags,
               f'--screenshot={tmp_path / "pointing.png"}')

  entry = {e.image_id: e for e in map_page['entries']}[dom.body['data-card']]
  assert dom.body['data-hidden-before'] == 'true' and dom.body['data-hidden-while-over'] == 'false'
  assert dom.body['data-active'] == entry.caption.split()[t]
  alpha = np.array(json.loads(dom.body['data-alpha'])).reshape(MAP_GRID)
  # Clear where the word's weight peaks, dimmed by DIM_OPACITY where it has none.
  assert alpha.ravel()[np.argmax(entry.attention[t])] == 0
  assert alpha.max() == round(255 * attention_maps.DIM_OPACITY)
  with Image.open(tmp_path / 'pointing.png') as shot:
    assert shot.size == (1200, 900)


# --- the DemoGallery component on real artifacts -------------------------------


@pytest.fixture(scope='module')
def pipeline_run(tmp_path_factory):
  """Examples (eval + demo), a good and a bad captioner, their evaluations and pushes."""
  root = tmp_path_factory.mktemp('pipeline')
  eval_set = examples_lib.captioned_images(8)
  demo_set = examples_lib.captioned_images(10, image_size=200)
  examples = examples_lib.write_examples(root / 'examples', {
      names.TRAIN_SPLIT: examples_lib.captioned_images(2), names.EVAL_SPLIT: eval_set,
      names.DEMO_SPLIT: demo_set})
  everything = list(eval_set.values()) + list(demo_set.values())
  models = {
      'good': lookup_captioner.export_lookup_captioner(root / 'good', {i: refs[0] for i, refs in everything}, 1,
                                                       stages=[stages.CROSS_ENTROPY, stages.SCST]),
      'bad': lookup_captioner.export_lookup_captioner(root / 'bad', {i: 'a cat' for i, _ in everything}, 2),
      'baseline': lookup_captioner.export_lookup_captioner(root / 'baseline', {i: 'a red square'
                                                                               for i, _ in everything}, 3),
  }
  # An attention model with the good captions, word t looking at cell (t % 4, t // 2 % 4) of a 4x4 grid.
  models['attention'] = lookup_captioner.export_lookup_captioner(
      root / 'attention', {i: refs[0] for i, refs in everything}, 4,
      attention_by_image={i: lookup_captioner.focus_maps(
          refs[0], [(t % 4, t // 2 % 4) for t in range(len(refs[0].split()))], (4, 4), 8)
          for i, refs in everything})
  runs = {'examples': examples, 'demo': demo_set, 'models': models}
  for name in ('good', 'bad', 'attention'):
    model = models[name]
    evaluation, blessing = executors.run_caption_evaluator(str(root / name), examples, model, THRESHOLDS)
    pushed = executors.run_pusher(str(root / name), model, blessing, str(root / name / 'serving'))
    runs[name] = {'evaluation': evaluation, 'pushed': pushed}
  return runs


def run_gallery(tmp_path: pathlib.Path, pipeline_run, name: str, with_baseline: bool):
  """Runs DemoGallery's executor for one model; returns the gallery artifact."""
  outputs = executors.run_executor(
      gallery.DemoGallery.EXECUTOR_SPEC.executor_class(),
      {'examples': pipeline_run['examples'],
       'pushed_model': pipeline_run[name]['pushed'],
       'model': pipeline_run['models'][name],
       'evaluation': pipeline_run[name]['evaluation'],
       'baseline_model': pipeline_run['models']['baseline'] if with_baseline else None},
      {'gallery': artifacts.CaptionGallery},
      {'split': names.DEMO_SPLIT, 'batch_size': 4}, str(tmp_path))
  return outputs['gallery']


def test_component_shows_the_pushed_model(chromium, pipeline_run, tmp_path):
  pushed = pipeline_run['good']['pushed']
  assert pushed.get_int_custom_property('pushed') == 1
  output = run_gallery(tmp_path, pipeline_run, 'good', with_baseline=True)
  index = pathlib.Path(output.uri) / names.GALLERY_INDEX_FILE

  dom = PageDom(run_chromium(chromium, tmp_path / 'profile', index.as_uri(), '--dump-dom'))
  text = index.read_text()

  demo = pipeline_run['demo']
  assert dom.body['data-images-loaded'] == dom.body['data-images-total'] == str(len(demo))
  assert {card['id']: card['caption'] for card in dom.cards} == {
      image_id: refs[0] for image_id, (_, refs) in demo.items()}
  assert pushed.get_string_custom_property('pushed_destination') in text
  assert 'NOT pushed' not in text
  assert 'captioner (eval split)' in text and 'shown model (demo split, this page)' in text
  assert 'Blessed: yes' in text
  assert text.count('<p class="baseline">baseline: a red square</p>') == len(demo)
  with open(pathlib.Path(output.uri) / names.GALLERY_METRICS_FILE) as f:
    metrics = json.load(f)
  assert metrics['split'] == names.DEMO_SPLIT and metrics['pushed'] is True
  assert metrics['pushed_destination'] == pushed.get_string_custom_property('pushed_destination')
  assert metrics['shown_model'][caption_metrics.BLEU_4] == pytest.approx(1.0, abs=1e-6)
  assert metrics['baseline'][caption_metrics.BLEU_4] < 0.1
  assert 'baseline (demo split)' in text
  # The pushed copy of the SavedModel carries its training stages.
  assert metrics['shown_model_stages'] == [stages.CROSS_ENTROPY, stages.SCST]
  assert '<p>Training stages of the shown model: cross_entropy, then scst.</p>' in text


def test_component_labels_a_model_that_was_not_pushed(pipeline_run, tmp_path):
  assert pipeline_run['bad']['pushed'].get_int_custom_property('pushed') == 0
  output = run_gallery(tmp_path, pipeline_run, 'bad', with_baseline=False)
  text = (pathlib.Path(output.uri) / names.GALLERY_INDEX_FILE).read_text()

  assert '<p class="warning">The model was NOT pushed (not blessed)' in text
  assert pipeline_run['models']['bad'].uri in text
  assert 'Blessed: no' in text
  assert text.count('<p class="caption">a cat</p>') == len(pipeline_run['demo'])
  assert 'class="baseline"' not in text
  with open(pathlib.Path(output.uri) / names.GALLERY_METRICS_FILE) as f:
    metrics = json.load(f)
  assert metrics['pushed'] is False and metrics['baseline'] is None
  assert metrics['shown_model_stages'] is None
  assert '<p>Training stages of the shown model: not recorded.</p>' in text
  assert metrics['model_dir'] == captioning.serving_model_dir(pipeline_run['models']['bad'])


def test_component_shows_the_caption_diversity_of_the_evaluation(pipeline_run, tmp_path):
  output = run_gallery(tmp_path, pipeline_run, 'bad', with_baseline=False)
  text = (pathlib.Path(output.uri) / names.GALLERY_INDEX_FILE).read_text()

  # 'a cat' under each of the 8 eval images; no training reference says 'a cat'.
  assert ('<p>Caption diversity of the captioner on the eval split: 0.1250 distinct captions per '
          'image, 2 distinct words, 0.0000 of the captions copied verbatim from the training '
          'references</p>') in text


def test_component_shows_the_attention_maps_of_an_attention_model(chromium, pipeline_run, tmp_path):
  assert pipeline_run['attention']['pushed'].get_int_custom_property('pushed') == 1
  output = run_gallery(tmp_path, pipeline_run, 'attention', with_baseline=False)
  index = pathlib.Path(output.uri) / names.GALLERY_INDEX_FILE

  dom = PageDom(run_chromium(chromium, tmp_path / 'profile', index.as_uri(), '--dump-dom'))

  demo = pipeline_run['demo']
  words = {image_id: refs[0].split() for image_id, (_, refs) in demo.items()}
  assert dom.body['data-maps-total'] == dom.body['data-maps-drawn'] == str(sum(map(len, words.values())))
  for card in dom.cards:
    assert card['wordmaps'] == words[card['id']]
    data = json.loads(card['attention'])
    maps = np.frombuffer(base64.b64decode(data['maps']), np.uint8).reshape(-1, *data['grid'])
    # The model's maps, through serving_default, captioning and the page: word t at its cell.
    assert data['grid'] == [4, 4]
    assert [np.unravel_index(np.argmax(m), (4, 4)) for m in maps] == [
        (t % 4, t // 2 % 4) for t in range(len(words[card['id']]))]
