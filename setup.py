"""Install the copy-move forgery pipeline: preprocessing (Beam), trainer (TF), serving.

    pip install .               # light: screening and the matcher (no TensorFlow, no Beam)
    pip install ".[pipeline]"   # everything: the Beam job, training, network scoring, synthetic data
    pip install -e ".[test]"    # everything plus the test tools (what `make test` installs)
"""
import os
import re

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))

TF_VERSION = "2.17.1"
BEAM_VERSION = "2.77.0"  # also the SDK image the Dockerfile builds on (tests/test_packaging.py checks)


def read(path: str) -> str:
    with open(os.path.join(HERE, path), encoding="utf-8") as f:
        return f.read()


def version() -> str:
    """preprocessing/version.py's ``__version__``, read as text: installing must not import the package."""
    return re.search(r'^__version__ = "([^"]+)"$', read("preprocessing/version.py"), re.M).group(1)


LIGHT = [
    "numpy>=1.26,<2",  # TF 2.17 is built against numpy 1.x
    "pandas",
    "opencv-python-headless",
    "absl-py",
    "scipy",
    "pillow",
    "pypdfium2",  # images embedded in PDFs, at native resolution, and rendered pages (serving.documents)
    "tqdm",
]
PIPELINE = [
    f"tensorflow=={TF_VERSION}",
    "tensorflow-io==0.37.1",  # its compiled ops load on TF 2.17; they fail on TF 2.21
    f"apache-beam=={BEAM_VERSION}",
    "google-crc32c",  # Beam's TFRecord sink needs a CRC32C implementation
    "scikit-image",  # the synthetic generator's photographs
    "matplotlib",  # the synthetic figures' font and the dataset report's plots
]

setup(
    name="copymove",
    version=version(),
    description="Copy-move forgery segmentation for scientific images (Beam + TensorFlow)",
    long_description=read("README.md"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["preprocessing", "preprocessing.*", "trainer", "trainer.*", "serving",
                                    "serving.*"]),
    # The base install is light: screening (``copymove screen`` / ``python -m serving.screen``) and the
    # matcher need only these, never TensorFlow or Beam.
    install_requires=LIGHT,
    entry_points={"console_scripts": ["copymove = preprocessing.console:main"]},
    extras_require={
        "pipeline": PIPELINE,  # the Beam job, training, network scoring, synthetic data
        "gpu": [f"tensorflow[and-cuda]=={TF_VERSION}"],
        "gcp": [f"apache-beam[gcp]=={BEAM_VERSION}"],  # gs:// in the Beam job, Dataflow
        "test": PIPELINE + ["pytest", "pytest-timeout", "ruff==0.17.6"],  # what `make test` installs: everything
    },
)
