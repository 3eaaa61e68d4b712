"""Stand-ins for TF Serving (REST and gRPC) on top of a SavedModel, for testing the client.

TF Serving itself ships only as a Docker image, Google's apt repository or a
Bazel build. These implement the documented contracts the client relies on:

- REST (https://www.tensorflow.org/tfx/serving/api_rest): `POST
  /v1/models/NAME[/versions/N]:predict` with `signature_name` and either
  `instances` (row format: the first dimension of every input is the batch,
  answered as `predictions`, one entry per instance, every output split along
  its first dimension, which must equal the batch) or `inputs` (columnar,
  answered as `outputs`; a single output is returned bare); errors as
  `{"error": message}` with HTTP 400; an unknown model gives 404.
- gRPC: `tensorflow.serving.PredictionService/Predict` with the official
  `tensorflow_serving.apis` messages (a wire-compatibility check of the
  client's own message definitions); errors as `INVALID_ARGUMENT`.

Both can be told to answer "unavailable" to the first requests.
"""

import json
import re
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import tensorflow as tf

PREDICT_PATH = re.compile(r"^/v1/models/([^/:]+)(?:/versions/(\d+))?:predict$")


def _jsonable(value):
    value = np.asarray(value)
    if value.dtype.kind in ("O", "S"):
        return np.vectorize(lambda v: v.decode(), otypes=[object])(value).tolist()
    return value.tolist()


class _Model:
    def __init__(self, path, name, version):
        self.loaded = tf.saved_model.load(path)
        self.name = name
        self.version = version
        self.unavailable = 0  # answer "unavailable" to this many more requests
        self.requests = 0
        self.lock = threading.Lock()

    def take_unavailable(self):
        with self.lock:
            self.requests += 1
            if self.unavailable > 0:
                self.unavailable -= 1
                return True
            return False

    def run(self, signature_name, inputs):
        if signature_name not in self.loaded.signatures:
            raise ValueError(f"Serving signature name: \"{signature_name}\" not found in signature def")
        function = self.loaded.signatures[signature_name]
        specs = function.structured_input_signature[1]
        if set(inputs) != set(specs):
            raise ValueError(f"expected inputs {sorted(specs)}, got {sorted(inputs)}")
        tensors = {key: tf.constant(np.asarray(value, specs[key].dtype.as_numpy_dtype))
                   for key, value in inputs.items()}
        return {key: value.numpy() for key, value in function(**tensors).items()}


class RestStandIn:
    """A threaded HTTP server on 127.0.0.1 answering TF Serving's REST predict API."""

    def __init__(self, saved_model_dir, model_name="model", version=1):
        self.model = _Model(saved_model_dir, model_name, version)
        model = self.model

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _answer(self, code, body):
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                match = PREDICT_PATH.match(self.path)
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length)
                if not match or match.group(1) != model.name:
                    return self._answer(404, {"error": f"Servable not found for request: {self.path}"})
                if match.group(2) and int(match.group(2)) != model.version:
                    return self._answer(404, {"error": f"Servable not found: version {match.group(2)}"})
                if model.take_unavailable():
                    return self._answer(503, {"error": "Service unavailable (stand-in)"})
                try:
                    return self._answer(200, self._predict(json.loads(body)))
                except (ValueError, KeyError, TypeError, tf.errors.OpError) as error:
                    message = error.message if isinstance(error, tf.errors.OpError) else str(error)
                    return self._answer(400, {"error": message})

            def _predict(self, request):
                signature = request.get("signature_name", "serving_default")
                if ("instances" in request) == ("inputs" in request):
                    raise ValueError("Missing 'inputs' or 'instances' key")
                names = list(model.loaded.signatures[signature].structured_input_signature[1]) \
                    if signature in model.loaded.signatures else ["input"]
                if "instances" in request:
                    instances = request["instances"]
                    if instances and isinstance(instances[0], dict):
                        inputs = {key: [row[key] for row in instances] for key in instances[0]}
                    else:
                        inputs = {names[0]: instances}
                    batch = len(instances)
                    outputs = model.run(signature, inputs)
                    for key, value in outputs.items():
                        if value.ndim == 0 or value.shape[0] != batch:
                            raise ValueError(f"Batch size for output tensor {key} does not match the number of "
                                             "instances: use the 'inputs' (columnar) format")
                    if len(outputs) == 1:
                        return {"predictions": _jsonable(next(iter(outputs.values())))}
                    return {"predictions": [{key: _jsonable(value[i]) for key, value in outputs.items()}
                                            for i in range(batch)]}
                inputs = request["inputs"]
                if not isinstance(inputs, dict):
                    inputs = {names[0]: inputs}
                outputs = model.run(signature, inputs)
                if len(outputs) == 1:
                    return {"outputs": _jsonable(next(iter(outputs.values())))}
                return {"outputs": {key: _jsonable(value) for key, value in outputs.items()}}

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


class GrpcStandIn:
    """A gRPC server on 127.0.0.1 answering `PredictionService/Predict` with the official messages."""

    def __init__(self, saved_model_dir, model_name="model", version=1, max_message_bytes=4 * 1024 * 1024):
        import grpc
        from tensorflow_serving.apis import predict_pb2

        self.model = _Model(saved_model_dir, model_name, version)
        model = self.model

        def predict(request, context):
            if request.model_spec.name != model.name:
                context.abort(grpc.StatusCode.NOT_FOUND, f"Servable not found: {request.model_spec.name}")
            if model.take_unavailable():
                context.abort(grpc.StatusCode.UNAVAILABLE, "unavailable (stand-in)")
            inputs = {key: tf.make_ndarray(value) for key, value in request.inputs.items()}
            try:
                outputs = model.run(request.model_spec.signature_name or "serving_default", inputs)
            except (ValueError, tf.errors.OpError) as error:
                message = error.message if isinstance(error, tf.errors.OpError) else str(error)
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, message)
            response = predict_pb2.PredictResponse()
            response.model_spec.CopyFrom(request.model_spec)
            for key, value in outputs.items():
                response.outputs[key].CopyFrom(tf.make_tensor_proto(value))
            return response

        handler = grpc.method_handlers_generic_handler("tensorflow.serving.PredictionService", {
            "Predict": grpc.unary_unary_rpc_method_handler(
                predict, request_deserializer=predict_pb2.PredictRequest.FromString,
                response_serializer=predict_pb2.PredictResponse.SerializeToString),
        })
        options = [("grpc.max_receive_message_length", max_message_bytes),
                   ("grpc.max_send_message_length", max_message_bytes)]
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), handlers=[handler], options=options)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.target = f"127.0.0.1:{self.port}"

    def __enter__(self):
        self.server.start()
        return self

    def __exit__(self, *exc):
        self.server.stop(grace=None)
