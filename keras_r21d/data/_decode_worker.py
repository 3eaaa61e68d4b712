"""A decoding worker process (`keras_r21d.data.isolated`): JSON requests on stdin, JSON answers on stdout.

Run by file path, not as a package module, so that it imports only OpenCV,
NumPy and `video.py` (no TensorFlow): it starts in a fraction of a second.
"""

import importlib.util
import json
import os
import resource
import sys


def _video_module():
    spec = importlib.util.spec_from_file_location("_keras_r21d_video", os.path.join(os.path.dirname(__file__),
                                                                                     "video.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _memory_kb():
    """`(current, peak)` resident memory of this process in kB (Linux' VmRSS/VmHWM; ru_maxrss elsewhere).

    ru_maxrss alone would mislead: Linux carries it over `execve`, so a worker
    started from a large process reports its parent's peak.
    """
    try:
        with open("/proc/self/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])
    except (OSError, KeyError, ValueError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak, peak


def main():
    video = _video_module()
    out = sys.stdout
    sys.stdout = sys.stderr  # nothing but answers on the protocol stream
    for line in sys.stdin:
        request = json.loads(line)
        answer = {"ok": True, "frames": None, "reason": None}
        try:
            if request.get("mode") == "jpeg":
                size = request["size"]
                answer.update(video.write_jpeg_frames(request["path"], request["out"],
                                                      size if isinstance(size, int) else tuple(size),
                                                      request["quality"], request.get("fps")))
            elif request.get("mode") == "all":
                frames = video.read_video(request["path"], max_pixels=request.get("max_pixels",
                                                                                    video.MAX_DECODE_PIXELS))
                answer.update(frames=int(frames.shape[0]), shape=list(frames.shape),
                              dtype=str(frames.dtype))
            else:
                _, _, count = video.decode_clip(request["path"], lambda n, fps: [0, n - 1])
                answer["frames"] = int(count)
        except video.VideoDecodeError as error:
            answer.update(ok=False, reason=error.reason)
        except Exception as error:  # noqa: BLE001 - cv2.error, MemoryError, ...: reported, never fatal
            answer.update(ok=False, reason=f"{type(error).__name__}: {error}")
        answer["rss_kb"], answer["peak_rss_kb"] = _memory_kb()
        out.write(json.dumps(answer) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
