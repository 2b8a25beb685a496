(function () {
  var grid = document.getElementById('grid');
  var cards = Array.prototype.slice.call(grid.children);
  var scores = cards.map(function (card) { return JSON.parse(card.dataset.scores); });
  var metric = document.getElementById('metric');
  var order = document.getElementById('order');
  var minScore = document.getElementById('min-score');
  var maxScore = document.getElementById('max-score');
  var shown = document.getElementById('shown');

  function update() {
    var m = metric.value;
    var lo = minScore.value === '' ? -Infinity : parseFloat(minScore.value);
    var hi = maxScore.value === '' ? Infinity : parseFloat(maxScore.value);
    var index = cards.map(function (card, i) { return i; });
    index.sort(function (a, b) {
      if (order.value === 'id') { return cards[a].dataset.id < cards[b].dataset.id ? -1 : 1; }
      var d = scores[a][m] - scores[b][m];
      return order.value === 'asc' ? d : -d;
    });
    var count = 0;
    var fragment = document.createDocumentFragment();
    index.forEach(function (i) {
      var s = scores[i][m];
      cards[i].hidden = !(s >= lo && s <= hi);
      if (!cards[i].hidden) { count += 1; }
      fragment.appendChild(cards[i]);
    });
    grid.appendChild(fragment);
    shown.textContent = count + ' of ' + cards.length + ' images shown';
    var state = new URLSearchParams({metric: m, order: order.value});
    if (minScore.value !== '') { state.set('min', minScore.value); }
    if (maxScore.value !== '') { state.set('max', maxScore.value); }
    history.replaceState(null, '', '#' + state.toString());
  }

  function countImages() {
    var images = document.querySelectorAll('img.thumb');
    var loaded = 0, failed = 0;
    images.forEach(function (img) {
      if (img.complete && img.naturalWidth > 0) { loaded += 1; }
      else if (img.complete) { failed += 1; }
    });
    document.body.dataset.imagesTotal = images.length;
    document.body.dataset.imagesLoaded = loaded;
    document.body.dataset.imagesFailed = failed;
  }

  // Attention maps: a card's data-attention holds per word of its caption a grid of
  // weights (0..255, the word's peak at 255). Each grid is drawn at its own size on a
  // canvas laid over the thumbnail, black with opacity dim * (1 - weight), and the
  // browser's smooth scaling of the canvas upsamples it, as components/attention_maps.py does.
  var dim = parseFloat(grid.dataset.dim);

  function drawMap(canvas, attention, maps, t) {
    var h = attention.grid[0], w = attention.grid[1], cells = h * w;
    canvas.width = w;
    canvas.height = h;
    var context = canvas.getContext('2d');
    var image = context.createImageData(w, h);
    for (var i = 0; i < cells; i++) {
      image.data[4 * i + 3] = Math.round(255 * dim * (1 - maps[t * cells + i] / 255));
    }
    context.putImageData(image, 0, 0);
  }

  function showMaps(card) {
    var attention = JSON.parse(card.dataset.attention);
    var bytes = atob(attention.maps);
    var maps = new Uint8Array(bytes.length);
    for (var i = 0; i < bytes.length; i++) { maps[i] = bytes.charCodeAt(i); }
    var large = card.querySelector('.frame canvas.map');
    var drawn = 0;
    card.querySelectorAll('.wordmap').forEach(function (wordmap) {
      var t = parseInt(wordmap.dataset.t, 10);
      drawMap(wordmap.querySelector('canvas.map'), attention, maps, t);
      drawn += 1;
      function show() {
        drawMap(large, attention, maps, t);
        large.hidden = false;
        wordmap.classList.add('active');
      }
      function hide() {
        large.hidden = true;
        wordmap.classList.remove('active');
      }
      wordmap.addEventListener('mouseenter', show);
      wordmap.addEventListener('focus', show);
      wordmap.addEventListener('mouseleave', hide);
      wordmap.addEventListener('blur', hide);
    });
    return drawn;
  }

  var mapsDrawn = 0;
  cards.forEach(function (card) {
    if (card.dataset.attention) { mapsDrawn += showMaps(card); }
  });
  document.body.dataset.mapsTotal = document.querySelectorAll('.wordmap').length;
  document.body.dataset.mapsDrawn = mapsDrawn;

  // The view can come from the link, e.g. index.html#metric=CIDEr-D&order=asc&min=0.5
  var view = new URLSearchParams(location.hash.slice(1));
  if (view.has('metric')) { metric.value = view.get('metric'); }
  if (!metric.value) { metric.selectedIndex = 0; }
  if (view.has('order')) { order.value = view.get('order'); }
  if (!order.value) { order.selectedIndex = 0; }
  minScore.value = view.get('min') || '';
  maxScore.value = view.get('max') || '';

  [metric, order].forEach(function (el) { el.addEventListener('change', update); });
  [minScore, maxScore].forEach(function (el) { el.addEventListener('input', update); });
  document.querySelectorAll('img.thumb').forEach(function (img) {
    img.addEventListener('load', countImages);
    img.addEventListener('error', countImages);
  });
  window.addEventListener('load', countImages);
  update();
  countImages();
})();
