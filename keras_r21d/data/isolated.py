"""Decoding in a child process: a decoder that crashes or hangs costs one file, not the caller.

OpenCV's FFmpeg backend is native code: a hostile file could in principle
abort or hang it, which no `try` catches and no thread can interrupt.
`IsolatedDecoder` sends each file to a worker process (OpenCV and NumPy
only) and reads the answer with a deadline; a worker that dies is reported
as "decoder crashed (signal ...)" for that file and one that overruns the
deadline is killed and reported as timed out; either way a fresh worker
takes the next file. `keras-r21d check-videos` uses it by default.
"""

import json
import os
import select
import signal
import subprocess
import sys

from keras_r21d.data.video import MAX_DECODE_PIXELS

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_decode_worker.py")


class IsolatedDecoder:
    """A worker process that decodes videos.

    Args:
        timeout: seconds per file (`None`: no limit).
        max_pixels: refuse videos of more than this many frames x height x
            width before decoding them (`None`: no limit).

    Use as a context manager, or call `close()`.

    Example:

    >>> with IsolatedDecoder(timeout=30) as decoder:  # doctest: +SKIP
    ...     decoder.decode("video.mp4")
    {'ok': True, 'frames': 120, 'reason': None, 'rss_kb': 61234, 'peak_rss_kb': 63012}
    """

    def __init__(self, timeout=60.0, max_pixels=MAX_DECODE_PIXELS):
        self.timeout = timeout
        self.max_pixels = max_pixels
        self.proc = None
        self.restarts = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def _start(self):
        env = dict(os.environ, OPENCV_LOG_LEVEL=os.environ.get("OPENCV_LOG_LEVEL", "ERROR"))
        self.proc = subprocess.Popen([sys.executable, WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, env=env, text=True, bufsize=1)

    def _stop(self):
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            for stream in (self.proc.stdin, self.proc.stdout):
                try:
                    stream.close()
                except OSError:
                    pass
            self.proc = None
            self.restarts += 1

    def close(self):
        """Ends the worker."""
        if self.proc is not None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
            self.proc.stdout.close()
            self.proc = None

    def decode(self, path, mode="check", **options):
        """Decodes one file in the worker.

        Args:
            path: the video file.
            mode: `"check"` (open it, decode its first and last frames, count
                its real frames), `"all"` (decode every frame) or `"jpeg"`
                (`video.write_jpeg_frames` into `options["out"]`, with
                `size`, `quality` and `fps` from `options`).
            options: the mode's values, sent with the request.

        Returns:
            `{"ok", "frames", "reason", "rss_kb", "peak_rss_kb"}` (the
            worker's memory in kB; plus `shape` and `dtype` with
            `mode="all"`; `write_jpeg_frames`' values with `mode="jpeg"`).
            `reason` says why a file failed: the decoder's
            error, "decoder crashed (signal SIGSEGV)", "decoding timed out
            after N s".
        """
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        request = {"path": str(path), "mode": mode, "max_pixels": self.max_pixels, **options}
        try:
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            return self._crashed()
        ready, _, _ = select.select([self.proc.stdout], [], [], self.timeout)
        if not ready:
            self._stop()
            return {"ok": False, "frames": None, "reason": f"decoding timed out after {self.timeout:g} s"}
        line = self.proc.stdout.readline()
        if not line:
            return self._crashed()
        return json.loads(line)

    def _crashed(self):
        code = self.proc.wait()
        self._stop()
        if code < 0:
            try:
                how = f"signal {signal.Signals(-code).name}"
            except ValueError:
                how = f"signal {-code}"
        else:
            how = f"exit status {code}"
        return {"ok": False, "frames": None, "reason": f"decoder crashed ({how})"}
