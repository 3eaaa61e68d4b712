"""`keras-r21d ARGS...` with one local preset in place of the published ones (tests only: no network).

The preset (`kinetics400` of r2plus1d_10 at 4 frames, Kinetics-400 labels) names a checkpoint that is never
downloaded: the test writes its converted weights into `$KERAS_R21D_CACHE` first, as a first use would.
"""

import sys

from keras_r21d.weights import presets

PRESET = presets.Preset("kinetics400", "r2plus1d", 10, 4, "http://127.0.0.1:9/r2plus1d_10-0123abcd.pth",
                        "0123abcd", 400, "torchvision", "kinetics400")
CACHE_FILE = "r2plus1d10_kinetics400_4f-0123abcd.weights.h5"

if __name__ == "__main__":
    presets.PRESETS[:] = [PRESET]
    from keras_r21d.cli import main

    sys.exit(main(sys.argv[1:]))
