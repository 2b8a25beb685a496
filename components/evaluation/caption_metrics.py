"""Caption-quality metrics, computed exactly as the COCO caption toolkit does.

TFMA has no metrics for generated text, so the evaluator and the gallery score
captions here, with the scorers of `pycocoevalcap` (the pip release of the MS
COCO caption evaluation code) rather than formulas of our own:

* Tokenisation: Stanford CoreNLP's PTBTokenizer (the jar shipped with
  `pycocoevalcap`, run with `-preserveLines -lowerCase`), then the toolkit
  drops its punctuation tokens (`. , ? ! : ; - -- ... '' ' `` ` -LRB-` ...).
  Hypotheses and references go through the same tokenizer.
* BLEU-1..4 (`Bleu(4)`): corpus BLEU with the reference length closest to each
  hypothesis for the brevity penalty (`option='closest'`); the per-image values
  are the same formula on one image (with the toolkit's tiny smoothing
  constants, so a per-image BLEU-4 without a matching 4-gram is ~0, not NaN).
* METEOR 1.5 (`Meteor`: `java -jar meteor-1.5.jar - - -stdio -l en -norm`,
  with the paraphrase table shipped in the package; runs offline). The corpus
  value is METEOR over the aggregated statistics, not the mean of per-image
  values.
* ROUGE-L (`Rouge`): LCS F-measure with beta=1.2 against the best reference
  (max precision, max recall), averaged over images.
* CIDEr-D (`Cider`, the toolkit's "CIDEr", which is CIDEr-D: tf-idf n-grams
  1..4, clipped counts, a Gaussian length penalty with sigma=6, times 10). The
  idf comes from the references of the scored set itself, so CIDEr-D values
  are only comparable between runs on the same split, and a set of one image
  scores 0 (every n-gram has idf 0).

All scores are on the toolkit's scales: BLEU, METEOR and ROUGE-L in [0, 1],
CIDEr-D in [0, 10].

PTBTokenizer and METEOR need Java. Without `java` on the PATH, METEOR is
skipped (reported under `skipped` with the reason and logged, never faked) and
tokenisation falls back to `simple_tokenize`, a documented approximation of the
PTB rule; the result records which tokenizer was used. One METEOR process
serves every call in a Python process (see `warm_up`). `PTBTokenizer` writes
its input to a temporary file inside the installed package's directory, so
that directory must be writable (it is in the virtualenv and the pipeline
image).
"""
import atexit
import re
import shutil
import threading
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from absl import logging
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

BLEU_1 = 'BLEU-1'
BLEU_2 = 'BLEU-2'
BLEU_3 = 'BLEU-3'
BLEU_4 = 'BLEU-4'
METEOR = 'METEOR'
ROUGE_L = 'ROUGE-L'
CIDER_D = 'CIDEr-D'
BLEU_NAMES = (BLEU_1, BLEU_2, BLEU_3, BLEU_4)
METRIC_NAMES = BLEU_NAMES + (METEOR, ROUGE_L, CIDER_D)

PTB_TOKENIZER = 'ptb'  # Stanford PTBTokenizer, as the COCO toolkit
SIMPLE_TOKENIZER = 'simple'  # `simple_tokenize`, only when Java is missing

# Words of letters/digits with inner hyphens kept ("t-shirt"), and clitics
# split off with their apostrophe ("dog's" -> "dog 's"), as PTB does.
_SIMPLE_TOKEN_RE = re.compile(r"[^\W_]+(?:-[^\W_]+)*|'[^\W_]+")


def java_available() -> bool:
  """Whether a `java` executable is on the PATH (PTBTokenizer and METEOR)."""
  return shutil.which('java') is not None


def simple_tokenize(caption: str) -> str:
  """The fallback tokenisation used only when Java is missing.

  Rule: lower-case; keep runs of letters and digits, joined through inner
  hyphens ("t-shirt"); split a trailing clitic off with its apostrophe
  ("dog's" -> "dog 's", "don't" -> "don 't" where PTB gives "do n't"); drop
  every other character (punctuation, symbols); join with single spaces. This
  approximates the toolkit's PTB tokenisation plus punctuation removal for
  ordinary English captions; scores may differ slightly from official ones.

  Args:
    caption: raw caption text.

  Returns:
    The tokens joined by single spaces, e.g. 'a dog runs' for 'A dog, runs.'.
  """
  return ' '.join(_SIMPLE_TOKEN_RE.findall(caption.lower()))


# The process-wide METEOR server (a Java process reading stdin). Starting one
# costs seconds, mostly loading the paraphrase table, so every call in this
# process (evaluator, gallery, tests) shares it; `warm_up` starts it early.
_meteor = None  # Optional[Meteor]
_meteor_lock = threading.Lock()
_meteor_stop_registered = False  # whether atexit will stop it


def warm_up() -> None:
  """Starts the METEOR Java process in the background, if Java is available.

  Call it before slow work (captioning a split) so that METEOR has loaded by
  the time `score_captions` needs it.
  """
  if java_available():
    _meteor_server()


def _meteor_server() -> Meteor:
  """Returns the running METEOR server, starting one if none runs."""
  global _meteor, _meteor_stop_registered
  with _meteor_lock:
    if _meteor is None or _meteor.meteor_p.poll() is not None:
      _meteor = Meteor()  # Popen of `java -jar meteor-1.5.jar ... -stdio`
      if not _meteor_stop_registered:
        atexit.register(_stop_meteor)
        _meteor_stop_registered = True
    return _meteor


def _stop_meteor() -> bytes:
  """Stops the METEOR server, if one runs; returns the tail of its stderr."""
  global _meteor
  with _meteor_lock:
    meteor, _meteor = _meteor, None
  if meteor is None:
    return b''
  # Meteor.compute_score holds its lock while it talks to Java; a call that
  # failed half-way leaves it held, and Meteor.__del__ (which takes the lock)
  # would then hang the interpreter. Release it and stop the process here.
  if meteor.lock.locked():
    meteor.lock.release()
  meteor.meteor_p.kill()
  meteor.meteor_p.wait()
  meteor.meteor_p.stdin.close()
  return meteor.meteor_p.stderr.read()[-500:]


def _tokenize(image_ids: List[str], hypotheses: Mapping[str, str],
              references: Mapping[str, Sequence[str]], use_java: bool):
  """Returns (gts, res): id -> tokenised references / [tokenised hypothesis]."""
  if not use_java:
    gts = {i: [simple_tokenize(c) for c in references[i]] for i in image_ids}
    res = {i: [simple_tokenize(hypotheses[i])] for i in image_ids}
    return gts, res
  # One PTBTokenizer run (one JVM start) for hypotheses and references together.
  to_tokenize = {}
  for image_id in image_ids:
    to_tokenize[('hyp', image_id)] = [{'caption': hypotheses[image_id]}]
    to_tokenize[('ref', image_id)] = [{'caption': c} for c in references[image_id]]
  tokenized = PTBTokenizer().tokenize(to_tokenize)
  lost = [key for key, captions in to_tokenize.items()
          if len(tokenized.get(key, ())) != len(captions)]
  if lost:
    raise RuntimeError(f'PTBTokenizer returned no tokens for {len(lost)} caption '
                       f'sets, e.g. {lost[:3]}')
  gts = {i: tokenized[('ref', i)] for i in image_ids}
  res = {i: tokenized[('hyp', i)] for i in image_ids}
  return gts, res


def _meteor_scores(gts, res) -> Tuple[Optional[Tuple[float, List[float]]], Optional[str]]:
  """Returns ((corpus METEOR, per-image list), None), or (None, why it failed)."""
  try:
    return _meteor_server().compute_score(gts, res), None
  except (OSError, ValueError) as error:
    # The Java process died or answered garbage (broken pipe, empty line);
    # stop it, so that the next call starts a fresh one.
    stderr = _stop_meteor()
    return None, (f'METEOR (java -jar meteor-1.5.jar) failed: {error!r}; '
                  f'stderr: {stderr.decode(errors="replace")}')


def _check_inputs(hypotheses: Mapping[str, str],
                  references: Mapping[str, Sequence[str]]) -> List[str]:
  """Returns the sorted image ids after checking both mappings agree."""
  if not hypotheses:
    raise ValueError('No captions to score: `hypotheses` is empty.')
  missing_refs = sorted(set(hypotheses) - set(references))
  missing_hyps = sorted(set(references) - set(hypotheses))
  if missing_refs or missing_hyps:
    raise ValueError(f'Hypotheses and references differ in image ids: no references '
                     f'for {missing_refs[:5]}, no hypothesis for {missing_hyps[:5]}.')
  no_refs = sorted(i for i, refs in references.items() if not refs)
  if no_refs:
    raise ValueError(f'Images without reference captions: {no_refs[:5]}.')
  return sorted(hypotheses)


def _java_choice(use_java: Optional[bool]) -> Tuple[bool, Dict[str, str]]:
  """(whether to run the Java parts, {METEOR: why skipped} when not).

  The COCO toolkit's PTB tokenizer and METEOR are Java; without Java the other
  metrics still run on the simple tokenizer, and the report says METEOR is
  missing instead of failing the evaluation.
  """
  skipped = {}
  if use_java is None:
    use_java = java_available()
    if not use_java:
      skipped[METEOR] = 'no java executable on the PATH'
  elif not use_java:
    skipped[METEOR] = 'Java not used (use_java=False)'
  if not use_java:
    logging.warning('%s: METEOR is skipped and captions are tokenised by the simple '
                    'fallback rule, not PTB.', skipped[METEOR])
  return use_java, skipped


def _compute_metrics(image_ids: Sequence[str], gts: Dict, res: Dict, use_java: bool,
                     skipped: Dict[str, str]) -> Tuple[Dict[str, float], Dict[str, Dict[str, float]]]:
  """(corpus scores, per-image scores) of the tokenised captions, by metric name.

  A METEOR failure is recorded in `skipped` rather than raised: one broken Java
  subprocess should not cost the evaluation its other metrics.
  """
  corpus = {}
  per_image = {image_id: {} for image_id in image_ids}

  def record(name, corpus_score, image_scores):
    corpus[name] = float(corpus_score)
    for image_id, value in zip(image_ids, image_scores):
      per_image[image_id][name] = float(value)

  bleu, bleu_per_image = Bleu(4).compute_score(gts, res, verbose=0)
  for name, corpus_score, image_scores in zip(BLEU_NAMES, bleu, bleu_per_image):
    record(name, corpus_score, image_scores)
  if use_java:
    meteor, failure = _meteor_scores(gts, res)
    if meteor is None:
      logging.warning('METEOR skipped: %s', failure)
      skipped[METEOR] = failure
    else:
      record(METEOR, *meteor)
  record(ROUGE_L, *Rouge().compute_score(gts, res))
  record(CIDER_D, *Cider().compute_score(gts, res))
  return corpus, per_image


def score_captions(hypotheses: Mapping[str, str],
                   references: Mapping[str, Sequence[str]],
                   use_java: Optional[bool] = None) -> Dict:
  """Scores one generated caption per image against its references.

  See the module docstring for exactly what is computed.

  Args:
    hypotheses: image id -> generated caption (raw text; '' is allowed and
      scores 0).
    references: image id -> reference captions (raw text, at least one),
      for exactly the ids of `hypotheses`.
    use_java: whether to run the Java parts (PTBTokenizer, METEOR). None
      (default) means: when `java` is on the PATH.

  Returns:
    A JSON-serialisable dict:
      'corpus': {metric name: float} for every computed metric
        (METRIC_NAMES minus the skipped ones, in that order);
      'per_image': {image id: {metric name: float}};
      'num_images': int;
      'tokenizer': PTB_TOKENIZER or SIMPLE_TOKENIZER;
      'skipped': {metric name: reason} for metrics that could not run.

  Raises:
    ValueError: if the ids differ, the set is empty or an image has no
      reference.
    RuntimeError: if the PTB tokenizer loses captions.
  """
  image_ids = _check_inputs(hypotheses, references)
  use_java, skipped = _java_choice(use_java)
  gts, res = _tokenize(image_ids, hypotheses, references, use_java)
  corpus, per_image = _compute_metrics(image_ids, gts, res, use_java, skipped)
  return {
      'corpus': {name: corpus[name] for name in METRIC_NAMES if name in corpus},
      'per_image': per_image,
      'num_images': len(image_ids),
      'tokenizer': PTB_TOKENIZER if use_java else SIMPLE_TOKENIZER,
      'skipped': skipped,
  }
