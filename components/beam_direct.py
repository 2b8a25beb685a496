"""The DirectRunner mode for Beam stages whose records are images or features.

Why: the DirectRunner's other modes hand a stage's input to their workers
over the Fn API's gRPC data plane, where Beam silently drops chunks of an
input that takes over a second to write
(docs/design-notes/beam-data-plane-loss.md). In memory, buffers pass with no
data plane; one process costs such jobs nothing, as their TensorFlow ops use
every core. The pipeline's runners (pipeline/beam_args.py) and the bulk
captioner (serving/bulk/job.py) both run their image stages this way.
"""

IN_PROCESS_ARGS = ('--direct_running_mode=in_memory', '--direct_num_workers=1')
