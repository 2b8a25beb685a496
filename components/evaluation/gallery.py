"""DemoGallery: the demo split, captioned by the pushed model, as one static page.

People judge a captioner by looking at its captions. This component captions
every image of a split (default `demo`) with the model the Pusher pushed,
scores each caption against its references (`caption_metrics`), and writes a
self-contained page into its `gallery` artifact:

  <gallery.uri>/index.html    overall metrics and caption diversity at the
                              top, then one card per image: thumbnail,
                              generated caption, references, per-image
                              scores; sort and filter by score. Under an
                              attention model, per word of the caption a
                              small copy of the thumbnail with the word's
                              attention map over it (components/attention_maps.py),
                              drawn on the large one under the pointer
  <gallery.uri>/thumbs/*.jpg  JPEG thumbnails, at most THUMBNAIL_SIZE pixels
  <gallery.uri>/metrics.json  corpus metrics of the shown model (and of the
                              captions-only baseline, when given) on the split

The page loads nothing from the network (the machines are offline): inline CSS
and a few lines of vanilla JS; thumbnails are lazily loaded, so 1,000 images
stay fast. When the Pusher did not push (the model was not blessed), the
candidate model is captioned instead and the page says so in red. Given the
ImageFeatureGen's artifact, the shown model captions from the cached features
when it embeds their encoder (captioning.caption_split), as in the
CaptionEvaluator: no backbone pass.
"""
import base64
import html
import importlib.resources
import io
import json
import os
from typing import Dict, Iterable, Iterator, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from absl import logging
import numpy as np
from PIL import Image
from PIL import ImageOps
import tensorflow as tf
from tfx import v1 as tfx
from tfx.types import artifact
from tfx.utils import io_utils

from components import attention_maps
from components import names
from components import records
from components.evaluation import caption_metrics
from components.evaluation import captioning
from components.evaluation import diversity
from components.evaluation import report as report_lib
from components.training import stages
from components.artifacts import CaptionEvaluation
from components.artifacts import CaptionGallery
from components.artifacts import ImageFeatures

THUMBNAIL_SIZE = 160  # pixels, the longer side
# The small multiples of an attention model's card: one copy of the thumbnail per word, this
# many pixels on the longer side, four to a row of a card.
WORD_MAP_SIZE = 56
# Per-image scores shown on every card, in this order (when computed).
CARD_METRICS = (caption_metrics.BLEU_4, caption_metrics.CIDER_D, caption_metrics.METEOR,
                caption_metrics.ROUGE_L)
# Stylesheet and script of the page (gallery.js sorts and filters the cards by score, draws
# the attention maps, and records in <body> data attributes how many thumbnails loaded and
# maps it drew, for the browser tests).
_ASSETS_DIR = 'gallery_assets'
# Custom properties the standard Pusher sets on its PushedModel output.
_PUSHED_KEY = 'pushed'
_PUSHED_DESTINATION_KEY = 'pushed_destination'


class GalleryEntry(NamedTuple):
  """One image card of the gallery."""
  image_id: str
  image: bytes  # the encoded image file (JPEG/PNG/GIF/BMP)
  caption: str  # generated caption
  references: List[str]  # reference captions
  scores: Dict[str, float]  # caption_metrics name -> per-image score
  baseline_caption: Optional[str] = None  # the captions-only baseline's, if shown
  alternatives: Sequence[str] = ()  # the beam search's runners-up, best first
  # Where an attention model looked for each word of `caption`
  # (float32 [max_length, grid_h, grid_w], names.ATTENTION_OUTPUT); None for other models.
  attention: Optional[np.ndarray] = None


def make_thumbnail(image: bytes, size: int = THUMBNAIL_SIZE) -> Tuple[bytes, int, int]:
  """Returns (JPEG bytes, width, height) of `image` shrunk to fit size x size.

  Raises:
    PIL.UnidentifiedImageError, OSError: if the bytes are not a decodable image.
  """
  with Image.open(io.BytesIO(image)) as opened:
    thumbnail = ImageOps.exif_transpose(opened).convert('RGB')
  thumbnail.thumbnail((size, size))
  out = io.BytesIO()
  thumbnail.save(out, format='JPEG', quality=85)
  return out.getvalue(), thumbnail.width, thumbnail.height


def _asset(name: str) -> str:
  """A file of gallery_assets/, inlined into the page so that it stays one self-contained file."""
  return importlib.resources.files('components.evaluation').joinpath(_ASSETS_DIR, name).read_text()


def _metrics_table(metrics: Mapping[str, Mapping[str, float]]) -> str:
  """An HTML table: one row per labelled model, one column per metric."""
  names = [n for n in caption_metrics.METRIC_NAMES if any(n in row for row in metrics.values())]
  head = ''.join(f'<th>{html.escape(n)}</th>' for n in names)
  rows = []
  for label, row in metrics.items():
    cells = ''.join(f'<td>{row[n]:.4f}</td>' if n in row else '<td>&mdash;</td>' for n in names)
    rows.append(f'<tr><th>{html.escape(label)}</th>{cells}</tr>')
  return (f'<table class="metrics"><thead><tr><th>model</th>{head}</tr></thead>'
          f'<tbody>{"".join(rows)}</tbody></table>')


def _attention_data(entry: GalleryEntry) -> str:
  """The card's maps for its script: {"grid": [grid_h, grid_w], "maps": base64 of uint8 [words, grid_h, grid_w]}."""
  try:
    maps = attention_maps.quantized_maps(entry.image, entry.caption, entry.attention)
  except ValueError as error:
    raise ValueError(f'Attention of image {entry.image_id!r}: {error}') from error
  return json.dumps({'grid': list(maps.shape[1:]), 'maps': base64.b64encode(maps.tobytes()).decode('ascii')})


def _word_maps(entry: GalleryEntry, path: str, width: int, height: int) -> str:
  """The small multiples: per word of the caption a small copy of the thumbnail, its map drawn over it."""
  scale = WORD_MAP_SIZE / max(width, height)
  small = f'width="{max(1, round(width * scale))}" height="{max(1, round(height * scale))}"'
  return '<div class="wordmaps">' + ''.join(
      f'<figure class="wordmap" data-t="{t}" tabindex="0"><div class="stack">'
      f'<img class="mapthumb" src="{html.escape(path)}" {small} loading="lazy" decoding="async" alt="">'
      f'<canvas class="map"></canvas></div><figcaption>{html.escape(word)}</figcaption></figure>'
      for t, word in enumerate(attention_maps.caption_words(entry.caption))) + '</div>'


def _card(entry: GalleryEntry, thumbnail: Optional[Tuple[str, int, int]], error: str) -> str:
  """One image card; `thumbnail` is (relative path, width, height) or None (see `error`).

  With attention (and a thumbnail), the card carries its maps in `data-attention`,
  a canvas over the thumbnail for the map of the word under the mouse, and the
  small multiples under the caption.
  """
  attention, word_maps = '', ''
  if thumbnail is None:
    picture = f'<div class="nothumb">no thumbnail: {html.escape(error)}</div>'
  else:
    path, width, height = thumbnail
    picture = (f'<img class="thumb" src="{html.escape(path)}" width="{width}" height="{height}" '
               f'loading="lazy" decoding="async" alt="{html.escape(entry.caption)}">')
    if entry.attention is not None:
      attention = f' data-attention="{html.escape(_attention_data(entry))}"'
      picture = f'<div class="stack">{picture}<canvas class="map" hidden></canvas></div>'
      word_maps = _word_maps(entry, path, width, height)
  references = ''.join(f'<li>{html.escape(r)}</li>' for r in entry.references)
  scores = ' &middot; '.join(f'{html.escape(n)} {entry.scores[n]:.3f}'
                             for n in CARD_METRICS if n in entry.scores)
  baseline = ('' if entry.baseline_caption is None else
              f'<p class="baseline">baseline: {html.escape(entry.baseline_caption)}</p>')
  alternatives = ('' if not entry.alternatives else
                  '<p class="alternatives">also: '
                  + ' &middot; '.join(html.escape(a) for a in entry.alternatives) + '</p>')
  return (f'<figure class="card" data-id="{html.escape(entry.image_id)}" '
          f'data-scores="{html.escape(json.dumps(entry.scores))}"{attention}>'
          f'<div class="frame">{picture}</div>'
          f'<figcaption><p class="caption">{html.escape(entry.caption)}</p>{word_maps}'
          f'{alternatives}{baseline}<ol class="refs">{references}</ol><p class="scores">{scores}</p>'
          f'<p class="id">{html.escape(entry.image_id)}</p></figcaption></figure>')


class _Cards(NamedTuple):
  html: List[str]  # one card per entry
  scored: List[str]  # the metrics they score
  with_maps: int  # cards with attention maps


def _write_cards(entries: Iterable[GalleryEntry], out_dir: str) -> _Cards:
  """Writes each entry's thumbnail as it comes; returns the cards.

  One entry at a time, so that a generator keeps memory flat for large splits;
  an image that cannot be decoded gets a card saying why, and a logged warning.
  """
  tf.io.gfile.makedirs(os.path.join(out_dir, names.GALLERY_THUMBS_DIR))
  cards, scored, with_maps = [], [], 0
  for index, entry in enumerate(entries):
    relative_path = f'{names.GALLERY_THUMBS_DIR}/{index:06d}.jpg'
    try:
      jpeg, width, height = make_thumbnail(entry.image)
    except OSError as error:  # PIL.UnidentifiedImageError is an OSError
      logging.warning('No thumbnail for image %r: %s', entry.image_id, error)
      cards.append(_card(entry, None, str(error)))
    else:
      with tf.io.gfile.GFile(os.path.join(out_dir, relative_path), 'wb') as f:
        f.write(jpeg)
      cards.append(_card(entry, (relative_path, width, height), ''))
      with_maps += entry.attention is not None
    scored += [n for n in entry.scores if n not in scored]
  return _Cards(cards, scored, with_maps)


_MAPS_LEGEND = """<p class="legend">Under an attention model's caption, one small picture per word:
lit where the model looked when it said that word, dark where it did not (each word's
brightest spot is its peak). Point at one, or tab to it, to see it on the large picture.</p>"""


def _page(title: str, notes: Sequence[str], warnings: Sequence[str],
          metrics: Mapping[str, Mapping[str, float]], cards: _Cards, sort_metric: str) -> str:
  """The whole page, its stylesheet and script inlined: it loads nothing from the network."""
  options = ''.join(
      f'<option value="{html.escape(n)}"{" selected" if n == sort_metric else ""}>'
      f'{html.escape(n)}</option>' for n in caption_metrics.METRIC_NAMES if n in cards.scored)
  note_lines = ''.join(f'<p>{html.escape(line)}</p>' for line in notes)
  note_lines += ''.join(f'<p class="warning">{html.escape(line)}</p>' for line in warnings)
  return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title><style>{_asset('gallery.css')}</style></head>
<body>
<h1>{html.escape(title)}</h1>
<div class="notes">{note_lines}</div>
{_metrics_table(metrics)}
<div class="controls">
<label>Sort by <select id="metric">{options}</select></label>
<label>Order <select id="order"><option value="desc">best first</option>
<option value="asc">worst first</option><option value="id">image id</option></select></label>
<label>Score from <input id="min-score" type="number" step="any"></label>
<label>to <input id="max-score" type="number" step="any"></label>
<span id="shown"></span>
</div>
<p class="legend">Each card: the generated caption (bold), the captions-only baseline's
(italic, when shown), the reference captions (numbered), the per-image scores of the
generated caption and the image id.</p>
{_MAPS_LEGEND if cards.with_maps else ''}
<div id="grid" data-dim="{attention_maps.DIM_OPACITY}">{''.join(cards.html)}</div>
<script>{_asset('gallery.js')}</script>
</body></html>
"""


def render_gallery(entries: Iterable[GalleryEntry], metrics: Mapping[str, Mapping[str, float]],
                   out_dir: str, *, title: str = 'Caption gallery',
                   notes: Sequence[str] = (), warnings: Sequence[str] = (),
                   sort_metric: str = caption_metrics.BLEU_4) -> str:
  """Writes the gallery page and its thumbnails; returns the path of names.GALLERY_INDEX_FILE.

  Entries are consumed one by one (thumbnails are written as they come), so a
  generator keeps memory flat for large splits. An image that cannot be decoded
  gets a card saying why instead of a thumbnail, and a logged warning.

  Args:
    entries: the image cards, in any order: the page sorts them when it loads
      (by `sort_metric`, best first).
    metrics: overall metrics, row label -> {caption_metrics name: score}.
    out_dir: output directory (local or any tf.io.gfile filesystem).
    title: page title.
    notes: lines shown under the title (e.g. which model, the blessing).
    warnings: lines shown under the title in red (e.g. "NOT pushed").
    sort_metric: the metric the page sorts by initially.
  """
  cards = _write_cards(entries, out_dir)
  index_path = os.path.join(out_dir, names.GALLERY_INDEX_FILE)
  with tf.io.gfile.GFile(index_path, 'w') as f:
    f.write(_page(title, notes, warnings, metrics, cards, sort_metric))
  logging.info('Gallery of %d images (%d with attention maps) written to %s', len(cards.html),
               cards.with_maps, index_path)
  return index_path


class _ShownModel(NamedTuple):
  """The model whose captions the page shows, and what the page says about it."""
  model_dir: str  # its SavedModel
  pushed: bool
  destination: Optional[str]  # where the Pusher pushed it, None when it did not
  notes: List[str]
  warnings: List[str]


def _shown_model(pushed_model: artifact.Artifact, model: artifact.Artifact) -> _ShownModel:
  """The pushed model; the candidate, with a warning, when the Pusher pushed nothing (not
  blessed), so that a rejected model's captions can still be looked at."""
  if pushed_model.get_int_custom_property(_PUSHED_KEY) == 1:
    destination = pushed_model.get_string_custom_property(_PUSHED_DESTINATION_KEY)
    # The Pusher's own output holds a copy identical to what it pushed.
    return _ShownModel(pushed_model.uri, True, destination,
                       [f'Captions by the pushed model, serving from {destination}.'], [])
  return _ShownModel(captioning.serving_model_dir(model), False, None, [], [
      f'The model was NOT pushed (not blessed): these captions come from the candidate '
      f'model {model.uri}, which is not being served.'])


def _evaluation_metrics(report: report_lib.CaptionReport) -> Dict[str, Mapping[str, float]]:
  """The evaluator's corpus metrics of the captioner and the baseline, labelled with their split."""
  return {f'{role} ({report.split} split)': model.metrics
          for role, model in report.models().items()
          if role in (report_lib.CAPTIONER, report_lib.BASELINE)}


def _evaluation_notes(report: report_lib.CaptionReport) -> List[str]:
  """The blessing and its reasons, and each model's caption diversity, from the evaluator's report."""
  return [f"Blessed: {'yes' if report.blessed else 'no'} ({'; '.join(report.reasons)})"] + [
      f'Caption diversity of the {role} on the {report.split} split: '
      f'{diversity.describe(model.diversity)}'
      for role, model in report.models().items()
      if role in (report_lib.CAPTIONER, report_lib.BASELINE)]


def _entries(examples: artifact.Artifact, split: str, shown: captioning.ScoredSplit,
             baseline_captions: Optional[captioning.SplitCaptions]) -> Iterator[GalleryEntry]:
  """The cards, from a second pass over the split for the image bytes: a generator, so that
  the images are never all in memory (the page sorts the cards itself)."""
  split_captions, scores = shown
  for example in records.iter_split_examples(examples, split):
    yield GalleryEntry(example.image_id, example.image, split_captions.captions[example.image_id],
                       example.references, scores['per_image'][example.image_id],
                       baseline_captions.captions[example.image_id] if baseline_captions else None,
                       split_captions.top_captions[example.image_id][1:],
                       split_captions.attention.get(example.image_id))


@tfx.dsl.components.component
def DemoGallery(
    examples: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Examples],
    pushed_model: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.PushedModel],
    model: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Model],
    evaluation: tfx.dsl.components.InputArtifact[CaptionEvaluation],
    gallery: tfx.dsl.components.OutputArtifact[CaptionGallery],
    baseline_model: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Model] = None,
    image_features: tfx.dsl.components.InputArtifact[ImageFeatures] = None,
    split: tfx.dsl.components.Parameter[str] = names.DEMO_SPLIT,
    batch_size: tfx.dsl.components.Parameter[int] = captioning.DEFAULT_BATCH_SIZE,
) -> None:
  """Captions `split` with the pushed model and writes the gallery page.

  Args:
    examples: ExampleGen output.
    pushed_model: the standard Pusher's output (custom property `pushed` 1/0).
    model: the candidate model, captioned only when nothing was pushed.
    evaluation: CaptionEvaluator output; its metrics and caption diversity head the page.
    gallery: output; names.GALLERY_INDEX_FILE, names.GALLERY_THUMBS_DIR and names.GALLERY_METRICS_FILE, a JSON object:
      'split', 'model_dir' (the SavedModel captioned), 'shown_model_stages' (its
      training stages, components/training/stages.py; null if not recorded), 'pushed' (bool),
      'pushed_destination' (str or null), 'skipped_metrics' ({metric: reason}),
      'shown_model' and 'baseline' ({metric: corpus score} on `split`; baseline
      null without `baseline_model`).
    baseline_model: optional captions-only baseline; when given, its caption
      is shown on every card and its metrics on `split` at the top.
    image_features: optional ImageFeatureGen output: the shown model captions
      from its cached features when it embeds their encoder.
    split: the split to show.
    batch_size: images per call of the caption signature.
  """
  shown = _shown_model(pushed_model, model)
  caption_metrics.warm_up()  # METEOR loads while the model captions
  captioned = captioning.caption_and_score(
      shown.model_dir, examples, split, batch_size, image_features.uri if image_features else None)
  gallery.set_int_custom_property(names.BACKBONE_PASSES_PROPERTY, captioned.split_captions.serving_images)
  baseline = None if baseline_model is None else captioning.caption_and_score(
      captioning.serving_model_dir(baseline_model), examples, split, batch_size)
  report = report_lib.read(evaluation.uri)
  metrics = _evaluation_metrics(report)
  metrics[f'shown model ({split} split, this page)'] = captioned.scores['corpus']
  if baseline is not None:
    metrics[f'baseline ({split} split)'] = baseline.scores['corpus']
  shown_stages = stages.read(shown.model_dir)
  notes = (shown.notes + [f'Training stages of the shown model: {stages.describe(shown_stages)}.']
           + _evaluation_notes(report)
           + [f'{name} not computed: {reason}' for name, reason in captioned.scores['skipped'].items()])
  io_utils.write_string_file(os.path.join(gallery.uri, names.GALLERY_METRICS_FILE), json.dumps({
      'split': split, 'model_dir': shown.model_dir, 'pushed': shown.pushed,
      'pushed_destination': shown.destination, 'skipped_metrics': captioned.scores['skipped'],
      'shown_model': captioned.scores['corpus'], 'shown_model_stages': shown_stages,
      'baseline': None if baseline is None else baseline.scores['corpus'],
  }, indent=2) + '\n')
  index_path = render_gallery(
      _entries(examples, split, captioned, baseline.split_captions if baseline else None),
      metrics, gallery.uri, title=f'Captioner demo gallery: split {split!r}',
      notes=notes, warnings=shown.warnings)
  logging.info('Demo gallery: %s', index_path)
