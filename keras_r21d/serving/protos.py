"""The TF Serving messages the client and the warm-up file need, wire-compatible with `tensorflow_serving.apis`.

`tensorflow-serving-api` requires the `tensorflow` distribution, which would
install a second TensorFlow beside `tensorflow-cpu`. Protocol buffers travel
by field numbers, not names, so these few messages are declared here with the
field numbers of TF Serving's `.proto` files (`model.proto`, `predict.proto`,
`prediction_log.proto`) and TensorFlow's own `TensorProto`. The tests check
them byte for byte against the official package.
"""

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2  # noqa: F401
from tensorflow.core.framework import tensor_pb2  # noqa: F401  (registers tensorflow/core/framework/tensor.proto)

PACKAGE = "keras_r21d.tfserving"
# The gRPC method TF Serving serves predictions on.
PREDICT_METHOD = "/tensorflow.serving.PredictionService/Predict"

_F = descriptor_pb2.FieldDescriptorProto


def _field(message, name, number, kind, type_name=None, repeated=False, oneof=None):
    field = message.field.add(name=name, number=number, type=kind,
                              label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL)
    if type_name:
        field.type_name = type_name
    if oneof is not None:
        field.oneof_index = oneof
    return field


def _tensor_map(message, name, number):
    entry = message.nested_type.add(name=f"{name.title()}Entry")
    entry.options.map_entry = True
    _field(entry, "key", 1, _F.TYPE_STRING)
    _field(entry, "value", 2, _F.TYPE_MESSAGE, ".tensorflow.TensorProto")
    _field(message, name, number, _F.TYPE_MESSAGE, f".{PACKAGE}.{message.name}.{entry.name}", repeated=True)


def _build():
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName("keras_r21d/tfserving.proto")
    except KeyError:
        f = descriptor_pb2.FileDescriptorProto(name="keras_r21d/tfserving.proto", package=PACKAGE, syntax="proto3")
        f.dependency.extend(["tensorflow/core/framework/tensor.proto", "google/protobuf/wrappers.proto"])
        spec = f.message_type.add(name="ModelSpec")
        _field(spec, "name", 1, _F.TYPE_STRING)
        _field(spec, "version", 2, _F.TYPE_MESSAGE, ".google.protobuf.Int64Value")
        _field(spec, "signature_name", 3, _F.TYPE_STRING)
        _field(spec, "version_label", 4, _F.TYPE_STRING)
        request = f.message_type.add(name="PredictRequest")
        _field(request, "model_spec", 1, _F.TYPE_MESSAGE, f".{PACKAGE}.ModelSpec")
        _tensor_map(request, "inputs", 2)
        _field(request, "output_filter", 3, _F.TYPE_STRING, repeated=True)
        response = f.message_type.add(name="PredictResponse")
        _tensor_map(response, "outputs", 1)
        _field(response, "model_spec", 2, _F.TYPE_MESSAGE, f".{PACKAGE}.ModelSpec")
        log = f.message_type.add(name="PredictLog")
        _field(log, "request", 1, _F.TYPE_MESSAGE, f".{PACKAGE}.PredictRequest")
        _field(log, "response", 2, _F.TYPE_MESSAGE, f".{PACKAGE}.PredictResponse")
        prediction_log = f.message_type.add(name="PredictionLog")
        prediction_log.oneof_decl.add(name="log_type")
        _field(prediction_log, "predict_log", 6, _F.TYPE_MESSAGE, f".{PACKAGE}.PredictLog", oneof=0)
        pool.Add(f)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{PACKAGE}.{name}"))
        for name in ("ModelSpec", "PredictRequest", "PredictResponse", "PredictLog", "PredictionLog")
    }


_MESSAGES = _build()
ModelSpec = _MESSAGES["ModelSpec"]
PredictRequest = _MESSAGES["PredictRequest"]
PredictResponse = _MESSAGES["PredictResponse"]
PredictLog = _MESSAGES["PredictLog"]
PredictionLog = _MESSAGES["PredictionLog"]
