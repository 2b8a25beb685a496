"""captioner: Show-and-Tell image captioning as a TFX pipeline.

Exact versions come from requirements/constraints.txt (`pip install -c ...`),
so every machine resolves the same set; the ranges here only say what the code
needs.
"""
import setuptools

setuptools.setup(
    name='captioner',
    version='0.1.0',
    description='Show-and-Tell image captioning as a TFX pipeline, served by TF Serving.',
    python_requires='>=3.10,<3.11',
    # testing/ too: bench/ builds its data and runs executors with it.
    packages=setuptools.find_packages(include=['pipeline', 'pipeline.*', 'components', 'components.*',
                                               'serving', 'serving.*', 'bench', 'bench.*',
                                               'testing', 'testing.*']),
    # The gallery's stylesheet and script, read with importlib.resources.
    package_data={'components.evaluation': ['gallery_assets/*']},
    install_requires=[
        'tfx[kfp]==1.16.0',
        'tensorflow==2.16.2',
        'tensorflow-text==2.16.1',
        'tf-keras==2.16.0',
        'kfp==2.5.0',
        'apache-beam[gcp]==2.61.0',
        'protobuf>=3.20.3,<4',  # kfp 2.5 needs protobuf 3
        'dill',  # imported by tensorflow-transform, no longer pulled in by apache-beam
        'attrs',  # the CaptionTrainer's FnArgs subclass (components/training/trainer_component.py), as TFX's
        'tensorflow-serving-api==2.16.1',
        'grpcio',
        'aiohttp',  # the local server's REST front end (serving/rest.py)
        'pillow',
        'pycocoevalcap',
        'nltk',
        'tqdm',
        'pyyaml',  # the Kubeflow runner reads and writes pipeline specs
        'google-crc32c',  # the ExampleGen's TFRecord sink
        'psutil',  # bench/ingestion.py's peak-memory sampling
        'ijson',  # streams the large COCO and Karpathy JSON files (components/ingestion/json_stream.py)
    ],
    extras_require={'test': ['pytest', 'pytest-xdist']},
)
