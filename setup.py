"""Setup for keras_r21d (metadata lives here; tool settings in pyproject.toml)."""

import re

from setuptools import find_packages, setup

with open("keras_r21d/version.py", encoding="utf-8") as file:
    VERSION = re.search(r'__version__ = "([^"]+)"', file.read()).group(1)

setup(
    name="keras_r21d",
    version=VERSION,
    description=(
        "Keras 3 video action recognition: R(2+1)D, R3D, MCx, rMCx, R2D and f-R2D "
        "from 'A Closer Look at Spatiotemporal Convolutions for Action Recognition'"
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["keras_r21d", "keras_r21d.*"]),
    package_data={"keras_r21d.weights": ["*.txt"]},
    # The Keras convention: the package installs no backend; an extra chooses one. TensorFlow is what the input
    # pipeline, training, export and serving run on (a tested range: 2.21.x); the models and layers alone run on
    # JAX and PyTorch too. Pick one of [cpu] and [gpu]: tensorflow-cpu and tensorflow must not be installed together.
    install_requires=[
        "keras>=3.15,<4",
        "numpy",
        "opencv-python-headless>=4.8",
        "matplotlib",
    ],
    extras_require={
        "cpu": [
            "tensorflow-cpu>=2.21,<2.22; platform_machine == 'x86_64' or platform_machine == 'AMD64'",
            "tensorflow>=2.21,<2.22; platform_machine != 'x86_64' and platform_machine != 'AMD64'",
            "tensorboard",
            "ai-edge-litert>=2.1",
        ],
        "gpu": ["tensorflow[and-cuda]>=2.21,<2.22", "tensorboard", "ai-edge-litert>=2.1"],
        "jax": ["jax"],
        "torch": ["torch>=2.1"],
        # jax: the core is tested on the JAX backend too (tests/test_backends.py; torch comes from the Makefile).
        "test": ["pytest>=8", "pytest-timeout>=2.3", "pytest-xdist>=3.5", "ruff>=0.6", "hypothesis>=6.100", "jax"],
        # [bayesian] brings scipy and scikit-learn, which keras-tuner's BayesianOptimization needs.
        "tune": ["keras-tuner[bayesian]==1.4.8"],
        # Reading PyTorch checkpoints (keras-r21d convert, the first use of a preset); never needed at run time.
        "convert": ["torch>=2.1"],
    },
    entry_points={"console_scripts": ["keras-r21d=keras_r21d.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
