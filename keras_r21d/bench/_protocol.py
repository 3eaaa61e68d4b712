"""The benchmark workers' shared loop: JSON commands on stdin, JSON answers on stdout.

Imports nothing but the standard library: the torch worker loads it as a
sibling module (it must not import the `keras_r21d` package, which loads
TensorFlow).
"""

import json
import resource
import sys
import time


def timed_median(function, reps):
    """The median wall time of `reps` calls (after one untimed call)."""
    function()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def serve(ready, setup, gemm, extra=None, profile=None):
    """Answers commands until `exit` or end of input.

    `setup(command)` returns `(run, answer)`: the timed callable and the reply
    (`{"op": "run", "calls": k}` times k calls in a row and answers the
    seconds per call);
    `gemm(n)` returns a callable multiplying two `n x n` float32 matrices;
    `extra` maps more op names to `f(command) -> answer`; `profile(run, steps)`
    runs the set-up callable `steps` times under the framework's profiler and
    returns `{"ops": {op name: seconds per step}, "wall_s": seconds per step}`.
    """
    state = {}
    handlers = dict(extra or {})
    sys.stdout.write(json.dumps(dict(ready, ready=True)) + "\n")
    sys.stdout.flush()
    for line in sys.stdin:
        command = json.loads(line)
        op = command["op"]
        if op == "exit":
            break
        try:
            if op == "setup":
                state["run"], answer = setup(command)
            elif op == "run":  # `calls` back-to-back calls; the seconds of one
                calls = int(command.get("calls", 1))
                start = time.perf_counter()
                for _ in range(calls):
                    state["run"]()
                answer = {"seconds": (time.perf_counter() - start) / calls}
            elif op == "gemm":
                answer = {"gflops": 2 * command["n"] ** 3 / timed_median(gemm(command["n"]), command["reps"]) / 1e9}
            elif op == "profile" and profile is not None:
                answer = profile(state["run"], command["steps"])
            elif op == "memory":
                answer = {"max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
            elif op in handlers:
                answer = handlers[op](command)
            else:
                answer = {"error": f"unknown op {op!r}"}
        except Exception as error:  # noqa: BLE001 - reported to the coordinator, which stops
            answer = {"error": f"{op}: {type(error).__name__}: {error}"}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()
