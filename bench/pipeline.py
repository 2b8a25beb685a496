"""The main job's wall time and caption quality, as one JSON line.

Runs the local runner exactly as `bash run.sh pipeline` does (embedded
dataset, default settings) into a fresh temporary output folder, then reads
the run summary. Quality is reported as the captioner's BLEU-4 over the
captions-only baseline's on the same split, measured in the same run; time is
the wall time of the whole run (dataset generation included, install not).

  python -m bench.pipeline [--keep_output DIR]
"""
import argparse
import json
import tempfile

from components.evaluation import caption_metrics
from components.evaluation import report as report_lib
from pipeline.local import run as local_run
from pipeline.local import runner as local_runner
from testing import timing


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--keep_output', default=None,
                      help='Write the run here and keep it (default: a temporary folder).')
  args = parser.parse_args()
  with tempfile.TemporaryDirectory() as temp_dir:
    output_dir = args.keep_output or temp_dir
    with timing.Stopwatch() as watch:
      if local_runner.main(['--output_dir', output_dir]) != 0:
        raise SystemExit('the pipeline run failed')
    with open(local_run.RunOutputs(output_dir).summary_path) as f:
      summary = json.load(f)
  evaluation = report_lib.from_json_dict(summary['evaluation'])
  bleu4 = {
      'eval': (evaluation.captioner.metrics[caption_metrics.BLEU_4],
               evaluation.baseline.metrics[caption_metrics.BLEU_4]),
      'demo': (summary['demo']['shown_model'][caption_metrics.BLEU_4],
               summary['demo']['baseline'][caption_metrics.BLEU_4]),
  }
  figures = {'pipeline_seconds': round(watch.seconds, 1), 'pushed': summary['pushed']}
  for split, (captioner, baseline) in bleu4.items():
    figures[f'{split}_captioner_bleu4'] = round(captioner, 4)
    figures[f'{split}_baseline_bleu4'] = round(baseline, 4)
    figures[f'{split}_ratio_captioner_to_baseline'] = timing.ratio(captioner, baseline, 2)
  print(json.dumps(figures))


if __name__ == '__main__':
  main()
