"""The paper's study at small scale (same as `keras-r21d study`).

Trains every variant of Tran et al. (R2D, f-R2D, R3D, MC2..MC5, rMC2..rMC5,
R(2+1)D) at one depth on the same data with the same recipe, over several
seeds at 8 and 16 frames, then writes a Table-2-style table, the
train-vs-validation error curves of R3D and R(2+1)D at two depths, a
clip-length study and a summary of which findings hold (see
`keras_r21d.study`). The defaults use the synthetic motion dataset, whose
classes differ only by the direction of motion (left/right, up/down), and
take about 70 minutes on 2 CPU cores (`--seeds 0` about halves it); rerun
the same command to resume an interrupted study.

    python examples/paper_study.py --out study_out
    python examples/paper_study.py --data ucf101:/data/UCF101:split=1 --paper-recipe --out study_ucf101
    python examples/paper_study.py --variants fr2d,r2plus1d --seeds 0 --epochs 1 --out toy   # a toy run
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from keras_r21d.study import add_arguments, config_from_args, run_study, study_command  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    config = config_from_args(args)
    command = "python examples/paper_study.py " + study_command(config).split(" ", 2)[2]
    run_study(config, log=lambda line: print(line, flush=True), command=command)
    with open(os.path.join(config.out, "summary.md"), encoding="utf-8") as f:
        print(f.read(), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
