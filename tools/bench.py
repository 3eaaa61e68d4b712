"""keras_r21d against torchvision on this machine, in one run: `python tools/bench.py [--json out.json]`.

The same as `keras-r21d bench`; see `keras_r21d/bench/__init__.py` and BENCHMARKS.md.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from keras_r21d.bench import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
