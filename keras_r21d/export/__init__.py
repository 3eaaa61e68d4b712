"""Deployment: SavedModel for TF Serving (raw-video signature), TFLite without `CONV_3D`."""

from keras_r21d.export.saved_model import ExportError, export_saved_model, load_metadata, read_warmup_records
from keras_r21d.export.tflite import export_tflite, tflite_ops

__all__ = ["ExportError", "export_saved_model", "export_tflite", "load_metadata", "read_warmup_records",
           "tflite_ops"]
