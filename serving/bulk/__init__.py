"""Captions a whole photo archive with a Beam batch job over the pushed model.

    python -m serving.bulk --input photos/ --model outputs/serving/captioner --output captions/

inputs.py finds the images, the model version and what earlier runs captioned;
handler.py is RunInference's model handler for the caption signature; job.py
builds and runs the Beam pipeline and accounts for every input; __main__.py is
the command line. docs/bulk.md has the Dataflow and Flink commands.
"""
