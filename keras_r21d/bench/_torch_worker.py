"""torchvision side of `keras-r21d bench`: a worker process answering JSON commands on stdin.

Run as a script by the benchmark, never imported: torch and TensorFlow must
not share a process. The protocol is in `_protocol.py`.
"""

import sys

from _protocol import serve  # the sibling file: this script's folder is on sys.path


def main(threads):
    import numpy as np
    import torch
    import torchvision
    from torchvision.models import video

    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)

    def setup(command):
        model = getattr(video, command["model"])(num_classes=400)
        rng = np.random.default_rng(0)
        x = torch.from_numpy(rng.standard_normal(
            (command["batch"], 3, command["frames"], command["size"], command["size"])).astype("float32"))
        y = torch.from_numpy(rng.integers(0, 400, command["batch"]))
        if command["mode"] == "infer":
            model.eval()

            def run():
                with torch.inference_mode():
                    model(x)
        else:
            model.train()
            optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
            loss_fn = torch.nn.CrossEntropyLoss()

            def run():
                optimizer.zero_grad(set_to_none=True)
                loss_fn(model(x), y).backward()
                optimizer.step()

        return run, {"ok": True}

    def gemm(n):
        a, b = torch.randn(n, n), torch.randn(n, n)
        return lambda: torch.mm(a, b)

    def profile(run, steps):
        import time

        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as torch_profile

        with torch_profile(activities=[ProfilerActivity.CPU]) as trace:
            start = time.perf_counter()
            for _ in range(steps):
                run()
            wall = (time.perf_counter() - start) / steps
        # Self time: each operator's own time, without the operators it calls (no double counting).
        ops = {event.key: event.self_cpu_time_total / 1e6 / steps for event in trace.key_averages()}
        return {"ops": {name: t for name, t in ops.items() if t > 0}, "wall_s": wall}

    serve({"torch": torch.__version__, "torchvision": torchvision.__version__}, setup, gemm, profile=profile)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2)
