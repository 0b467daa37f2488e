"""Install the copy-move forgery pipeline: preprocessing (Beam), trainer (TF), serving."""
from setuptools import find_packages, setup

TF_VERSION = "2.17.1"
BEAM_VERSION = "2.77.0"  # also the SDK image the Dockerfile builds on (tests/test_packaging.py checks)

setup(
    name="copymove",
    version="0.1.0",
    description="Copy-move forgery segmentation for scientific images (Beam + TensorFlow)",
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["preprocessing", "preprocessing.*", "trainer", "trainer.*", "serving",
                                    "serving.*"]),
    install_requires=[
        f"tensorflow=={TF_VERSION}",
        "tensorflow-io==0.37.1",  # its compiled ops load on TF 2.17; they fail on TF 2.21
        f"apache-beam=={BEAM_VERSION}",
        "google-crc32c",  # Beam's TFRecord sink needs a CRC32C implementation
        "numpy>=1.26,<2",  # TF 2.17 is built against numpy 1.x
        "pandas",
        "opencv-python-headless",
        "absl-py",
        "scipy",
        "scikit-image",
        "matplotlib",
        "pillow",
        "tqdm",
    ],
    extras_require={
        "gpu": [f"tensorflow[and-cuda]=={TF_VERSION}"],
        "gcp": [f"apache-beam[gcp]=={BEAM_VERSION}"],  # gs:// in the Beam job, Dataflow
        "test": ["pytest", "pytest-timeout", "ruff==0.17.6"],
    },
)
