"""The `scenes` embedded dataset: harder scenes than `shapes`, whose captions still follow from the pixels.

A scene holds 1 to 4 objects (a colour of COLOURS, a shape of SHAPES) on a
light textured background (one of BACKGROUNDS) with grey clutter lines that no
caption mentions. Its kind (KINDS) says what the captions talk about:
  * 'single'   one object, its size word (small / large) and where it is: one
               of the nine cells of a 3x3 grid (POSITIONS);
  * 'group'    two to four objects of one colour and shape, none overlapping:
               their number ("three small blue circles");
  * 'pair'     two objects of different kinds side by side or stacked: their
               relation ("a red star to the left of a green square");
  * 'overlap'  two objects of different colours, the later one drawn over the
               earlier: which is in front ("a red star in front of a blue circle");
  * 'mixture'  three or four objects of two kinds, none overlapping: the count
               of each kind ("two red circles and a yellow cross").
Each image has five captions drawn from its kind's templates without
repetition, with synonyms ("big" / "large", "disc" / "circle") sampled per
caption, so the wording varies between images and has a long tail of rare
words. Every word a caption uses is determined by the Scene it is made from;
the sizes of the size words are separated (small objects' sides are at most
SMALL_MAX of the image side, large ones' at least LARGE_MIN).

Everything here is a pure function of the numpy Generator it is given:
components/ingestion/shapes_dataset.py seeds one per image and writes the files.
"""
import dataclasses
import math
from typing import List, Sequence, Tuple

import numpy as np
from PIL import Image
from PIL import ImageDraw

# Distinct, saturated RGB values (a background pixel's channels differ by at
# most _BACKGROUND_TINT * 2, far below any of these colours').
COLOURS = {
    'red': (215, 30, 30),
    'orange': (245, 140, 15),
    'yellow': (240, 215, 30),
    'green': (30, 160, 50),
    'blue': (35, 65, 215),
    'purple': (135, 45, 185),
    'pink': (250, 120, 200),
}
SHAPES = ('circle', 'square', 'triangle', 'diamond', 'star', 'cross')
BACKGROUNDS = ('plain', 'striped', 'checkered', 'dotted')
KINDS = ('single', 'group', 'pair', 'overlap', 'mixture')
_KIND_WEIGHTS = (0.15, 0.2, 0.2, 0.15, 0.3)

# Cell of a 3x3 grid -> (column, row) centre as fractions of the side.
POSITIONS = {
    'top left': (0.2, 0.2), 'top': (0.5, 0.2), 'top right': (0.8, 0.2),
    'left': (0.2, 0.5), 'center': (0.5, 0.5), 'right': (0.8, 0.5),
    'bottom left': (0.2, 0.8), 'bottom': (0.5, 0.8), 'bottom right': (0.8, 0.8),
}
# Object side / image side. Small and large never come close, so the size word is unambiguous.
SMALL_MAX, LARGE_MIN = 0.16, 0.22
_SINGLE_SIZES = {'small': (0.12, SMALL_MAX), 'large': (0.26, 0.32)}
_PAIR_SIZES = {'small': (0.12, SMALL_MAX), 'large': (LARGE_MIN, 0.27)}
_GROUP_SIZES = {'small': (0.13, SMALL_MAX), 'large': (LARGE_MIN, 0.25)}
_MIXTURE_SIZE = (0.16, 0.22)  # no size words
_OVERLAP_SIZE = (0.24, 0.32)
_JITTER = 0.04  # max offset from a nominal centre, fraction of the side
_BACKGROUND_TINT = 12  # max per-channel offset of the background from grey
_CLUTTER_LINES = (0, 4)  # grey lines behind the objects, fewest and most
_TEXTURE_DEPTH = 20.0  # grey levels between the light and dark parts of a texture

# Words and their sampling weights: the first is the common one, the others the long tail.
SIZE_WORDS = {'small': (('small', 6), ('little', 3), ('tiny', 1)),
              'large': (('large', 5), ('big', 4), ('huge', 1))}
SHAPE_WORDS = {
    'circle': (('circle', 'circles', 8), ('disc', 'discs', 2)),
    'square': (('square', 'squares', 1),),
    'triangle': (('triangle', 'triangles', 1),),
    'diamond': (('diamond', 'diamonds', 9), ('rhombus', 'rhombuses', 1)),
    'star': (('star', 'stars', 1),),
    'cross': (('cross', 'crosses', 8), ('plus sign', 'plus signs', 2)),
}
COUNT_WORDS = {1: (('a', 1),), 2: (('two', 8), ('a pair of', 2)), 3: (('three', 1),), 4: (('four', 1),)}
BACKGROUND_WORDS = {'plain': (('plain', 3), ('blank', 1)), 'striped': (('striped', 1),),
                    'checkered': (('checkered', 3), ('checked', 1)), 'dotted': (('dotted', 3), ('spotted', 1))}
POSITION_WORDS = {cell: ((f'in the {cell} corner', 3), (f'at the {cell}', 1)) for cell in POSITIONS if ' ' in cell}
POSITION_WORDS.update({
    'top': (('at the top', 3), ('near the top', 1)), 'bottom': (('at the bottom', 3), ('near the bottom', 1)),
    'left': (('on the left', 3), ('on the left side', 1)), 'right': (('on the right', 3), ('on the right side', 1)),
    'center': (('in the center', 3), ('in the middle', 2)),
})

# Templates per kind; five distinct ones per image (their fixed words differ, so their captions do). {a}/{b}: the two objects
# (pair: left/upper first; overlap: front first); {g}, {h}: groups; {p}: position;
# {bg}: background word.
TEMPLATES = {
    'single': ('{a} {p}', 'there is {a} {p}', '{p} there is {a}', 'a picture of {a} {p}',
               '{a} {p} on a {bg} background', 'one {a_bare} {p}', 'an image with {a} {p}',
               '{a} {p} of the picture'),
    'group': ('{g}', 'there are {g}', '{g} in the picture', '{g} on a {bg} background', 'an image of {g}',
              '{g} scattered around', 'a picture with {g} on a {bg} background', '{g} on the image'),
    'side by side': ('{a} to the left of {b}', '{b} to the right of {a}', '{a} left of {b}',
                     '{a} on the left and {b} on the right', 'there is {a} and {b} to its right',
                     '{b} on the right of {a}', '{a} to the left of {b} on a {bg} background'),
    'stacked': ('{a} above {b}', '{b} below {a}', '{a} over {b}', '{b} under {a}',
                '{a} at the top and {b} at the bottom', 'there is {a} and {b} beneath it',
                '{a} above {b} on a {bg} background'),
    'overlap': ('{a} in front of {b}', '{b} behind {a}', '{a} partly covering {b}', '{a} overlapping {b}',
                '{b} partly hidden by {a}', 'there is {a} on top of {b}',
                '{a} in front of {b} on a {bg} background'),
    'mixture': ('{g} and {h}', '{g} and {h} in the picture', '{g} together with {h}', 'an image of {g} and {h}',
                '{g} and {h} on a {bg} background', '{h} and {g}', 'a picture with {h} and {g}'),
}
CAPTIONS_PER_IMAGE = 5


@dataclasses.dataclass(frozen=True)
class SceneObject:
  colour: str  # a COLOURS key
  shape: str  # a SHAPES member
  size: float  # side, fraction of the shorter image side
  centre: Tuple[float, float]  # (x, y), fractions of the width and height
  size_word: str = ''  # 'small' / 'large' where the captions say it, else ''


@dataclasses.dataclass(frozen=True)
class Scene:
  """What one image shows, drawn in order (later objects over earlier ones)."""
  kind: str  # a KINDS member
  objects: Tuple[SceneObject, ...]
  background: str  # a BACKGROUNDS member
  position: str = ''  # 'single': a POSITIONS key
  arrangement: str = ''  # 'pair': 'side by side' (left first) or 'stacked' (upper first)

  def groups(self) -> List[Tuple[int, str, str]]:
    """(count, colour, shape) of each kind of object, in order of first appearance."""
    counts = {}
    for obj in self.objects:
      counts[(obj.colour, obj.shape)] = counts.get((obj.colour, obj.shape), 0) + 1
    return [(n, colour, shape) for (colour, shape), n in counts.items()]


def _pick(rng: np.random.Generator, weighted: Sequence[tuple]):
  """One of `weighted`'s entries (their last element is the weight), without the weight."""
  weights = np.array([entry[-1] for entry in weighted], dtype=float)
  entry = weighted[int(rng.choice(len(weighted), p=weights / weights.sum()))]
  return entry[0] if len(entry) == 2 else entry[:-1]


def _with_article(words: str) -> str:
  return ('an ' if words[0] in 'aeiou' else 'a ') + words


def _object_words(rng: np.random.Generator, obj: SceneObject, count: int = 1, size: bool = True) -> str:
  """'a big red star', 'three small blue discs', 'an orange cross': one caption's words for `count` objects."""
  singular, plural = _pick(rng, SHAPE_WORDS[obj.shape])
  words = [obj.colour, singular if count == 1 else plural]
  if size and obj.size_word:
    words.insert(0, _pick(rng, SIZE_WORDS[obj.size_word]))
  bare = ' '.join(words)
  count_word = _pick(rng, COUNT_WORDS[count])
  return _with_article(bare) if count_word == 'a' else f'{count_word} {bare}'


def captions(scene: Scene, rng: np.random.Generator) -> List[str]:
  """Five distinct captions of `scene`, each from a different template of its kind."""
  key = scene.arrangement if scene.kind == 'pair' else scene.kind
  templates = TEMPLATES[key]
  chosen = rng.choice(len(templates), size=CAPTIONS_PER_IMAGE, replace=False)
  result = []
  for index in chosen:
    template = templates[int(index)]
    words = {'bg': _pick(rng, BACKGROUND_WORDS[scene.background])}
    if scene.kind == 'single':
      obj = scene.objects[0]
      words['p'] = _pick(rng, POSITION_WORDS[scene.position])
      words['a'] = _object_words(rng, obj)
      words['a_bare'] = _object_words(rng, obj).split(' ', 1)[1]
    elif scene.kind in ('pair', 'overlap'):
      first, second = scene.objects if scene.kind == 'pair' else scene.objects[::-1]
      words['a'], words['b'] = _object_words(rng, first), _object_words(rng, second)
    else:
      firsts = {}
      for obj in scene.objects:
        firsts.setdefault((obj.colour, obj.shape), obj)
      phrases = [_object_words(rng, firsts[(colour, shape)], count) for count, colour, shape in scene.groups()]
      words['g'] = phrases[0]
      if scene.kind == 'mixture':
        words['h'] = phrases[1]
    result.append(template.format(**words))
  return result


def _place(rng: np.random.Generator, sizes: Sequence[float]) -> List[Tuple[float, float]]:
  """Centres for objects of `sizes`, inside the image and apart (their circumscribed circles do not touch)."""
  while True:  # the sizes leave plenty of room: a few tries at most
    centres = []
    for size in sizes:
      for _ in range(100):
        half = size / 2 * math.sqrt(2)
        centre = tuple(float(v) for v in rng.uniform(size / 2 + 0.02, 1 - size / 2 - 0.02, size=2))
        if all(math.dist(centre, other) > half + other_size / 2 * math.sqrt(2) + 0.03
               for other, other_size in zip(centres, sizes)):
          centres.append(centre)
          break
      else:
        break
    if len(centres) == len(sizes):
      return centres


def _kinds(rng: np.random.Generator, count: int, distinct_colours: bool = False) -> List[Tuple[str, str]]:
  """`count` different (colour, shape) pairs; with `distinct_colours`, of different colours too."""
  colours = list(COLOURS)
  picked = []
  while len(picked) < count:
    kind = (colours[int(rng.integers(len(colours)))], SHAPES[int(rng.integers(len(SHAPES)))])
    if kind not in picked and not (distinct_colours and kind[0] in {c for c, _ in picked}):
      picked.append(kind)
  return picked


def make_scene(rng: np.random.Generator) -> Scene:
  """Draws a random scene description."""
  kind = KINDS[int(rng.choice(len(KINDS), p=_KIND_WEIGHTS))]
  background = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
  jitter = lambda: float(rng.uniform(-_JITTER, _JITTER))
  size_word = lambda: ('small', 'large')[int(rng.integers(2))]
  if kind == 'single':
    (colour, shape), = _kinds(rng, 1)
    position = list(POSITIONS)[int(rng.integers(len(POSITIONS)))]
    word = size_word()
    x, y = POSITIONS[position]
    obj = SceneObject(colour, shape, float(rng.uniform(*_SINGLE_SIZES[word])), (x + jitter(), y + jitter()), word)
    return Scene(kind, (obj,), background, position=position)
  if kind == 'pair':
    arrangement = ('side by side', 'stacked')[int(rng.integers(2))]
    objects = []
    for (colour, shape), along in zip(_kinds(rng, 2), (0.27, 0.73)):
      word = size_word()
      across, along = 0.5 + 2 * jitter(), along + jitter()
      centre = (along, across) if arrangement == 'side by side' else (across, along)
      objects.append(SceneObject(colour, shape, float(rng.uniform(*_PAIR_SIZES[word])), centre, word))
    return Scene(kind, tuple(objects), background, arrangement=arrangement)
  if kind == 'overlap':
    # The back object is the larger one, so that it always shows around the front one.
    sizes = sorted((float(s) for s in rng.uniform(*_OVERLAP_SIZE, size=2)), reverse=True)
    angle = float(rng.uniform(0, 2 * math.pi))
    # Centres 0.35-0.55 of a side apart: the front object hides part of the back one, never all of it.
    offset = float(rng.uniform(0.35, 0.55)) * (sizes[0] + sizes[1]) / 2
    back = (0.5 + jitter(), 0.5 + jitter())
    front = (back[0] + offset * math.cos(angle), back[1] + offset * math.sin(angle))
    objects = tuple(SceneObject(colour, shape, size, centre)
                    for (colour, shape), size, centre in zip(_kinds(rng, 2, distinct_colours=True), sizes,
                                                              (back, front)))
    return Scene(kind, objects, background)
  if kind == 'group':
    (colour, shape), = _kinds(rng, 1)
    count = int(rng.integers(2, 5))
    word = size_word()
    sizes = [float(s) for s in rng.uniform(*_GROUP_SIZES[word], size=count)]
    objects = tuple(SceneObject(colour, shape, size, centre, word)
                    for size, centre in zip(sizes, _place(rng, sizes)))
    return Scene(kind, objects, background)
  total = int(rng.integers(3, 5))
  first_count = int(rng.integers(1, total))
  kinds = _kinds(rng, 2)
  sizes = [float(s) for s in rng.uniform(*_MIXTURE_SIZE, size=total)]
  objects = tuple(SceneObject(*kinds[0 if i < first_count else 1], size, centre)
                  for i, (size, centre) in enumerate(zip(sizes, _place(rng, sizes))))
  return Scene(kind, objects, background)


def _outline(shape: str, cx: float, cy: float, half: float) -> List[Tuple[float, float]]:
  """Polygon of a non-circle shape centred on (cx, cy) with half-side `half`."""
  if shape == 'square':
    corners = [(-1, -1), (1, -1), (1, 1), (-1, 1)]
  elif shape == 'triangle':  # apex up
    corners = [(0, -1), (1, 1), (-1, 1)]
  elif shape == 'diamond':
    corners = [(0, -1), (1, 0), (0, 1), (-1, 0)]
  elif shape == 'cross':  # arms a third of the side wide
    t = 1 / 3
    corners = [(-t, -1), (t, -1), (t, -t), (1, -t), (1, t), (t, t), (t, 1), (-t, 1), (-t, t), (-1, t), (-1, -t),
               (-t, -t)]
  else:  # five-pointed star, inner radius 0.45 of the outer
    corners = [((1 if i % 2 == 0 else 0.45) * math.sin(i * math.pi / 5),
                -(1 if i % 2 == 0 else 0.45) * math.cos(i * math.pi / 5) + 0.1) for i in range(10)]
  return [(cx + x * half, cy + y * half) for x, y in corners]


def _background(width: int, height: int, background: str, rng: np.random.Generator) -> Image.Image:
  """A light, nearly grey background with its texture, and grey clutter lines."""
  grey = rng.uniform(195, 225)
  base = np.array([grey + t for t in rng.uniform(-_BACKGROUND_TINT, _BACKGROUND_TINT, size=3)])
  ys, xs = np.mgrid[0:height, 0:width]
  period = float(rng.uniform(8, 16)) * max(width, height) / 128
  if background == 'striped':
    angle = float(rng.uniform(0, math.pi))
    pattern = (np.floor((xs * math.cos(angle) + ys * math.sin(angle)) / (period / 2)) % 2)
  elif background == 'checkered':
    pattern = (np.floor(xs / period) + np.floor(ys / period)) % 2
  elif background == 'dotted':
    pattern = (((xs % period) - period / 2) ** 2 + ((ys % period) - period / 2) ** 2 < (period / 5) ** 2)
  else:
    pattern = np.zeros((height, width))
  pixels = base[None, None, :] - _TEXTURE_DEPTH * pattern[..., None]
  image = Image.fromarray(np.clip(np.round(pixels), 0, 255).astype(np.uint8))
  draw = ImageDraw.Draw(image)
  for _ in range(int(rng.integers(_CLUTTER_LINES[0], _CLUTTER_LINES[1] + 1))):
    points = rng.uniform(0, 1, size=4) * [width, height, width, height]
    shade = int(rng.integers(120, 175))
    draw.line([tuple(points[:2]), tuple(points[2:])], fill=(shade,) * 3, width=int(rng.integers(1, 3)))
  return image


def draw(rng: np.random.Generator, width: int, height: int) -> Tuple[Scene, List[str], np.ndarray]:
  """A random scene, its five captions and its pixels (uint8 [height, width, 3]), in that order from `rng`."""
  scene = make_scene(rng)
  scene_captions = captions(scene, rng)
  return scene, scene_captions, render(scene, width, height, rng)


def render(scene: Scene, width: int, height: int, rng: np.random.Generator) -> np.ndarray:
  """Renders `scene` as a uint8 [height, width, 3] array (sizes are fractions of the shorter side)."""
  image = _background(width, height, scene.background, rng)
  draw = ImageDraw.Draw(image)
  for obj in scene.objects:
    half = obj.size * min(width, height) / 2
    cx, cy = obj.centre[0] * width, obj.centre[1] * height
    colour = tuple(int(np.clip(v + rng.integers(-12, 13), 0, 255)) for v in COLOURS[obj.colour])
    if obj.shape == 'circle':
      draw.ellipse((cx - half, cy - half, cx + half, cy + half), fill=colour)
    else:
      draw.polygon(_outline(obj.shape, cx, cy, half), fill=colour)
  pixels = np.asarray(image, dtype=np.float32)
  pixels += rng.normal(0.0, 3.0, size=pixels.shape)
  return np.clip(np.round(pixels), 0, 255).astype(np.uint8)
