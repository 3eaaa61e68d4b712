"""Runs several `keras-r21d` command lines in one process, as the console script would, one after another.

    python tests/workers/cli_calls.py CALLS.json  ->  prints a JSON list of {"code", "stdout", "stderr", "safe_mode"}

Each call goes through `keras_r21d.cli.main` with its own captured stdout and stderr; an exception escaping `main`
is recorded as its traceback (the real console script would print it). `safe_mode` is Keras' safe-mode state
after the call: a hostile file must not have switched it off for the calls after it. One process instead of one
per call: the hostile-file checks pay TensorFlow's start-up once.
"""

import contextlib
import io
import json
import sys
import traceback

if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        calls = json.load(f)
    sys.argv = ["keras-r21d"]  # launched as the console script: keras_r21d's import does what the CLI's does
    from keras_r21d.cli import main

    results = []
    for argv in calls:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as exit_:
                code = exit_.code
            except BaseException:  # noqa: BLE001 - recorded for the test to show
                code = "exception"
                err.write(traceback.format_exc())
        from keras.src.saving import serialization_lib

        results.append({"code": code, "stdout": out.getvalue(), "stderr": err.getvalue(),
                        "safe_mode": serialization_lib.in_safe_mode()})
    print(json.dumps(results))
