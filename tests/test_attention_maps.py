"""Attention maps: drawn over the image (components/attention_maps.py), and written by the client
(serving/client.py --attention_maps) from an attention model served on real gRPC and REST sockets.

The served model is the lookup captioner of testing/ with attention
(testing/lookup_captioner.py): it answers each test image with a known caption
and all the weight of word t on a known cell of a 4x4 grid, so every PNG's lit
cell is known. The images are plain grey, so a pixel's brightness is the map.
"""
import io
import json
import os

import numpy as np
from PIL import Image
import pytest

from components import attention_maps
from components import names
from serving import client as client_lib
from serving import model_server as server_lib
from testing import lookup_captioner

GRID = (4, 4)
MAX_LENGTH = 6
GREY = 200
# file name -> (size, caption, the cell (row, column) each word looks at)
IMAGES = {
    'one/cat.png': ((96, 72), 'a grey cat', [(0, 0), (1, 2), (3, 3)]),
    'two/cat.png': ((80, 80), 'grey', [(2, 1)]),  # the same stem as one/cat.png
    'big.png': ((1024, 768), 'a big grey dog sits', [(3, 0), (0, 3), (1, 1), (2, 2), (0, 1)]),
}


def _grey_png(size, index):
  image = Image.new('RGB', size, (GREY, GREY, GREY))
  image.putpixel((0, size[1] - 1), (index, index, index))  # distinct bytes per image, far from any test cell
  out = io.BytesIO()
  image.save(out, format='PNG')
  return out.getvalue()


def _cell_brightness(image: Image.Image) -> np.ndarray:
  """Mean grey level of each grid cell of the image, [grid_h, grid_w]."""
  pixels = np.asarray(image.convert('L'), np.float32)
  rows = np.array_split(pixels, GRID[0], axis=0)
  return np.array([[cell.mean() for cell in np.array_split(row, GRID[1], axis=1)] for row in rows])


@pytest.fixture(scope='module')
def image_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp('images')
  for index, name in enumerate(IMAGES):
    (root / name).parent.mkdir(parents=True, exist_ok=True)
    (root / name).write_bytes(_grey_png(IMAGES[name][0], index))
  return root


def _serve(base):
  return server_lib.LocalModelServer(str(base / names.MODEL_NAME), names.MODEL_NAME, port=0, rest_port=0,
                                     max_image_pixels=2048 * 2048, poll_wait_seconds=0.2)


@pytest.fixture(scope='module')
def attention_server(image_dir, tmp_path_factory):
  """The attention captioner of IMAGES, served on gRPC and REST."""
  captions, attention = {}, {}
  for name, (_, caption, cells) in IMAGES.items():
    data = (image_dir / name).read_bytes()
    captions[data] = caption
    attention[data] = lookup_captioner.focus_maps(caption, cells, GRID, MAX_LENGTH)
  base = tmp_path_factory.mktemp('attention')
  lookup_captioner.save_lookup_captioner(str(base / names.MODEL_NAME / '1'), captions, attention)
  with _serve(base) as running:
    yield running


@pytest.fixture(scope='module')
def show_and_tell_server(image_dir, tmp_path_factory):
  """The same captions from a model without the attention output, as a Show-and-Tell model answers."""
  captions = {(image_dir / name).read_bytes(): caption for name, (_, caption, _) in IMAGES.items()}
  base = tmp_path_factory.mktemp('show_and_tell')
  lookup_captioner.save_lookup_captioner(str(base / names.MODEL_NAME / '1'), captions)
  with _serve(base) as running:
    yield running


def _target(server, protocol):
  return f'127.0.0.1:{server.port if protocol == "grpc" else server.rest_port}'


@pytest.mark.parametrize('protocol', client_lib.PROTOCOLS)
def test_client_writes_a_png_per_word_lit_where_the_model_looked(attention_server, image_dir, tmp_path, protocol,
                                                                 capsys):
  out_dir = tmp_path / 'maps'

  status = client_lib.main(['--server', _target(attention_server, protocol), '--protocol', protocol,
                            '--format', 'jsonl', '--no_progress', '--attention_maps', str(out_dir), str(image_dir)])

  assert status == 0, capsys.readouterr().err
  lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
  # find_images' order: big.png, one/cat.png, two/cat.png; the second cat gets stem cat-2.
  expected = {'big.png': 'big', 'one/cat.png': 'cat', 'two/cat.png': 'cat-2'}
  assert [os.path.relpath(line['path'], image_dir) for line in lines] == list(expected)
  written = []
  for line in lines:
    name = os.path.relpath(line['path'], image_dir)
    size, caption, cells = IMAGES[name]
    words = caption.split()
    assert line['caption'] == caption
    assert line['attention_maps'] == [str(out_dir / f'{expected[name]}-{t:02d}-{word}.png')
                                      for t, word in enumerate(words, start=1)]
    scale = min(1.0, client_lib.ATTENTION_MAP_SIZE / max(size))
    for path, cell in zip(line['attention_maps'], cells):
      with Image.open(path) as png:
        assert png.format == 'PNG' and png.size == (round(size[0] * scale), round(size[1] * scale))
        brightness = _cell_brightness(png)
      assert np.unravel_index(np.argmax(brightness), GRID) == cell
      assert brightness[cell] > 0.5 * GREY  # lit where the model looked...
      assert np.sort(brightness.ravel())[:7].max() < 0.25 * GREY  # ...and dimmed away from it
    written += line['attention_maps']
  assert sorted(str(p) for p in out_dir.iterdir()) == sorted(written)


@pytest.mark.parametrize('protocol', client_lib.PROTOCOLS)
def test_client_asked_for_maps_of_a_model_without_attention_says_so(show_and_tell_server, image_dir, tmp_path,
                                                                     protocol, capsys):
  out_dir = tmp_path / 'maps'

  status = client_lib.main(['--server', _target(show_and_tell_server, protocol), '--protocol', protocol,
                            '--attention_maps', str(out_dir), str(image_dir)])

  captured = capsys.readouterr()
  assert status == 1 and captured.out == ''
  assert (f"error: model 'captioner' signature 'serving_default' at {_target(show_and_tell_server, protocol)}"
          + (' (REST)' if protocol == 'rest' else '') + " failed: FAILED_PRECONDITION: signature 'serving_default' "
          "has no output 'attention' (it has ['caption', 'log_probability']): "
          "it is not an attention model\n") == captured.err
  assert list(out_dir.iterdir()) == []


def test_client_without_the_flag_prints_captions_of_an_attention_model_as_before(attention_server, image_dir,
                                                                               capsys):
  status = client_lib.main(['--server', _target(attention_server, 'grpc'), str(image_dir / 'two' / 'cat.png')])

  assert status == 0
  assert capsys.readouterr().out == f'{image_dir / "two" / "cat.png"}\tgrey\t{lookup_captioner.LOG_PROBABILITY:.6f}\n'


def test_writer_names_an_image_it_cannot_draw(tmp_path):
  path = tmp_path / 'broken.png'
  path.write_bytes(b'not an image')
  caption = client_lib.Caption(str(path), 'a cat', -1.0, 1,
                               attention=lookup_captioner.focus_maps('a cat', [(0, 0), (1, 1)], GRID, MAX_LENGTH))

  with pytest.raises(ValueError, match=f'No attention maps for {path}: cannot identify image'):
    client_lib.AttentionMapWriter(str(tmp_path / 'maps')).write(caption)
  with pytest.raises(ValueError, match="the answer has no output 'attention'"):
    client_lib.AttentionMapWriter(str(tmp_path / 'maps')).write(client_lib.Caption(str(path), 'a cat', -1.0, 1))


# --- drawing, without a server ---------------------------------------------------


def test_word_maps_are_each_words_rows_scaled_to_their_peak():
  attention = np.zeros((5, 2, 3), np.float32)
  attention[0] = [[0.5, 0.25, 0.25], [0, 0, 0]]
  attention[1] = np.full((2, 3), 1 / 6)

  maps = attention_maps.word_maps('a dog', attention)

  np.testing.assert_allclose(maps, [[[1, 0.5, 0.5], [0, 0, 0]], np.ones((2, 3))])
  assert attention_maps.word_maps('', attention).shape == (0, 2, 3)
  with pytest.raises(ValueError, match="cannot hold the 6 words of 'a b c d e f'"):
    attention_maps.word_maps('a b c d e f', attention)


def test_maps_of_an_exif_rotated_photo_turn_with_it():
  """A JPEG stored 80x40 with EXIF orientation 6 (shown turned 90 degrees clockwise, 40x80)."""
  stored = Image.new('RGB', (80, 40), (GREY, GREY, GREY))
  exif = Image.Exif()
  exif[0x0112] = 6
  out = io.BytesIO()
  stored.save(out, format='JPEG', exif=exif, quality=95)
  attention = np.zeros((3, 2, 4), np.float32)
  attention[0, 0, 0] = 1.0  # top left of the stored pixels: top right once turned clockwise

  ((word, shown),) = attention_maps.map_images(out.getvalue(), 'cat', attention)

  assert word == 'cat' and shown.size == (40, 80)
  pixels = np.asarray(shown.convert('L'), np.float32)
  assert pixels[:20, 20:].mean() > 0.8 * GREY > 0.5 * GREY > pixels[40:, :].mean()
  assert attention_maps.quantized_maps(out.getvalue(), 'cat', attention).shape == (1, 4, 2)


def test_file_word_keeps_file_names_safe():
  assert attention_maps.file_word('dog') == 'dog'
  assert attention_maps.file_word("don't/../x") == 'don_t____x'
  assert attention_maps.file_word('café') == 'caf_'
