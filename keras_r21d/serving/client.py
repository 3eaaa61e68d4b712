"""A client for a `keras_r21d` SavedModel served by TF Serving, over REST or gRPC.

>>> client = Client("http://localhost:8501", model_name="r21d")     # REST
>>> client = Client("localhost:8500", model_name="r21d")            # gRPC
>>> client.classify_video(frames)["top_k_classes"]  # doctest: +SKIP

Requests go to the export's signatures (`serving_default`,
`classify_video`, `extract_features`). Every call has a timeout; an
unavailable server is retried a bounded number of times with exponential
backoff; a request larger than `max_message_bytes` (gRPC's default limit is
4 MiB) is refused before it is sent, with the ways out in the message.
"""

import json
import time
import urllib.error
import urllib.request

import numpy as np

GRPC_DEFAULT_LIMIT = 4 * 1024 * 1024
OUTPUT_NAMES = {"extract_features": "features"}
INPUT_NAMES = {"serving_default": "clips", "classify_video": "frames", "extract_features": "clips"}


class ServingError(RuntimeError):
    """A request the server refused or could not answer; the message says why."""


class Unavailable(ServingError):
    """The server could not be reached after every retry."""


def _condense(message):
    """A server's TensorFlow error without the graph-location noise: the lines that say what is wrong."""
    noise = ("Graph execution error", "Detected at node", "<stack traces unavailable>", "[[{{")
    lines = [line.strip() for line in str(message).splitlines()]
    kept = [line for line in lines if line and not any(line.startswith(n) or n in line[:6] for n in noise)]
    return " ".join(kept) or str(message)


def _to_numpy(value):
    array = np.asarray(value)
    if array.dtype.kind in ("U", "O"):
        array = np.vectorize(lambda v: v.decode() if isinstance(v, bytes) else str(v), otypes=[object])(array)
    return array


class Client:
    """TF Serving client for the signatures of `keras_r21d.export_saved_model`.

    Args:
        target: `"http://HOST:PORT"` (REST, port 8501 by default in TF
            Serving) or `"HOST:PORT"` / `"grpc://HOST:PORT"` (gRPC, port 8500).
        model_name: TF Serving's `--model_name`.
        version: a model version to pin, or `None` for the latest.
        timeout: seconds per attempt.
        retries: further attempts when the server is unavailable (connection
            refused, HTTP 503, gRPC `UNAVAILABLE`).
        backoff: seconds before the first retry, doubled each time.
        max_message_bytes: the largest request (and gRPC response) accepted;
            gRPC's default 4 MiB. Raise it when the server and any proxy in
            between accept more (TF Serving's own limit is far higher).
        rest_format: `"inputs"` (columnar) or `"instances"` (row) for REST
            requests of batched signatures; `classify_video` always uses
            `"inputs"`, since its outputs are not per input frame.
    """

    def __init__(self, target, model_name="model", version=None, timeout=30.0, retries=3, backoff=0.5,
                 max_message_bytes=GRPC_DEFAULT_LIMIT, rest_format="inputs"):
        if rest_format not in ("inputs", "instances"):
            raise ValueError(f"`rest_format` must be 'inputs' or 'instances'. Received: {rest_format!r}")
        if int(retries) < 0 or float(timeout) <= 0:
            raise ValueError(f"need retries >= 0 and timeout > 0. Received: retries={retries}, timeout={timeout}")
        self.model_name = model_name
        self.version = version
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.backoff = float(backoff)
        self.max_message_bytes = int(max_message_bytes)
        self.rest_format = rest_format
        self._channel = None
        if target.startswith(("http://", "https://")):
            self.protocol = "rest"
            self.target = target.rstrip("/")
        else:
            self.protocol = "grpc"
            self.target = target[len("grpc://"):] if target.startswith("grpc://") else target

    # -- public API -------------------------------------------------------------------------------------

    def predict(self, clips):
        """`serving_default`: normalized clips `(N, T, H, W, 3)` -> `probabilities`, `top_k_*` per clip."""
        return self.call("serving_default", np.asarray(clips, np.float32))

    def classify_video(self, frames, resize=None):
        """`classify_video`: one video's uint8 frames `(F, H, W, 3)` -> the video's `probabilities`, `top_k_*`.

        `resize=(height, width)` shrinks the frames here before sending (set
        it to the export's pre-crop size, e.g. `(128, 171)`, so the server's
        own resize is the identity); the answer is then that of the rounded
        uint8 frames, within about 1e-2 of the full-size answer.
        """
        frames = np.asarray(frames)
        if frames.dtype != np.uint8:
            raise ValueError(f"frames must be uint8 RGB. Received dtype {frames.dtype}")
        if resize is not None:
            frames = _resize_frames(frames, resize)
        return self.call("classify_video", frames)

    def extract_features(self, clips):
        """`extract_features`: normalized clips -> pooled backbone `features (N, D)`."""
        return self.call("extract_features", np.asarray(clips, np.float32))

    def call(self, signature, value):
        """Calls any signature with its one input; returns `{output name: numpy array}`."""
        if signature not in INPUT_NAMES:
            raise ValueError(f"unknown signature {signature!r}: one of {sorted(INPUT_NAMES)}")
        send = self._rest if self.protocol == "rest" else self._grpc
        return self._with_retries(lambda: send(signature, INPUT_NAMES[signature], value))

    def close(self):
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- transport ----------------------------------------------------------------------------------------

    def _with_retries(self, attempt):
        delay = self.backoff
        for number in range(self.retries + 1):
            try:
                return attempt()
            except Unavailable as error:
                if number == self.retries:
                    raise Unavailable(f"{self.target}: server unavailable after {number + 1} attempts: {error}") \
                        from None
                time.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    def _too_large(self, signature, size):
        mb = 1024 * 1024
        hint = (" For `classify_video`, send smaller frames (`classify_video(frames, resize=(128, 171))`: "
                "the export's pre-crop size)" if signature == "classify_video" else " Send fewer clips per request")
        return ServingError(
            f"the {signature} request is {size / mb:.1f} MiB, above max_message_bytes={self.max_message_bytes} "
            f"({self.max_message_bytes / mb:.1f} MiB; gRPC's default limit is 4 MiB).{hint}, or raise "
            "`max_message_bytes` if the server and any proxy accept larger messages."
        )

    def _rest_url(self):
        version = f"/versions/{self.version}" if self.version is not None else ""
        return f"{self.target}/v1/models/{self.model_name}{version}:predict"

    def _rest(self, signature, key, value):
        fmt = "inputs" if signature == "classify_video" else self.rest_format
        body = {"signature_name": signature}
        body[fmt] = value.tolist() if fmt == "instances" else {key: value.tolist()}
        data = json.dumps(body).encode()
        if len(data) > self.max_message_bytes:
            raise self._too_large(signature, len(data))
        request = urllib.request.Request(self._rest_url(), data=data, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")
            try:
                detail = json.loads(detail).get("error", detail)
            except ValueError:
                pass
            if error.code in (502, 503, 504):
                raise Unavailable(f"HTTP {error.code}: {detail}") from None
            raise ServingError(f"{signature}: HTTP {error.code}: {_condense(detail)}") from None
        except (urllib.error.URLError, ConnectionError, TimeoutError) as error:
            reason = getattr(error, "reason", error)
            if isinstance(reason, TimeoutError) or "timed out" in str(reason):
                raise ServingError(f"{signature}: no answer from {self.target} within {self.timeout} s") from None
            raise Unavailable(str(reason)) from None
        if "error" in answer:
            raise ServingError(f"{signature}: {_condense(answer['error'])}")
        if "outputs" in answer:
            outputs = answer["outputs"]
            if not isinstance(outputs, dict):
                outputs = {OUTPUT_NAMES.get(signature, "output"): outputs}
            return {name: _to_numpy(v) for name, v in outputs.items()}
        rows = answer["predictions"]
        if rows and isinstance(rows[0], dict):
            return {name: _to_numpy([row[name] for row in rows]) for name in rows[0]}
        return {OUTPUT_NAMES.get(signature, "output"): _to_numpy(rows)}

    def _grpc(self, signature, key, value):
        import grpc

        from keras_r21d._tensorflow import tf
        from keras_r21d.serving import protos

        request = protos.PredictRequest()
        request.model_spec.name = self.model_name
        request.model_spec.signature_name = signature
        if self.version is not None:
            request.model_spec.version.value = int(self.version)
        request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
        size = request.ByteSize()
        if size > self.max_message_bytes:
            raise self._too_large(signature, size)
        if self._channel is None:
            options = [("grpc.max_send_message_length", self.max_message_bytes),
                       ("grpc.max_receive_message_length", self.max_message_bytes)]
            self._channel = grpc.insecure_channel(self.target, options=options)
        predict = self._channel.unary_unary(protos.PREDICT_METHOD,
                                            request_serializer=protos.PredictRequest.SerializeToString,
                                            response_deserializer=protos.PredictResponse.FromString)
        try:
            response = predict(request, timeout=self.timeout)
        except grpc.RpcError as error:
            code, details = error.code(), error.details()
            if code == grpc.StatusCode.UNAVAILABLE:
                raise Unavailable(details) from None
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise ServingError(f"{signature}: no answer from {self.target} within {self.timeout} s") from None
            if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise ServingError(f"{signature}: message too large for the server or the client ({details}); "
                                   "see `max_message_bytes` and `classify_video(..., resize=...)`") from None
            raise ServingError(f"{signature}: {code.name}: {_condense(details)}") from None
        return {name: _to_numpy(tf.make_ndarray(tensor)) for name, tensor in response.outputs.items()}


def _resize_frames(frames, size):
    from keras_r21d._tensorflow import tf
    from keras_r21d.data import transforms

    resized = transforms.resize_frames(frames, tuple(size))
    return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8).numpy()
