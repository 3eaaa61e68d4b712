"""The networks: the backbone and its tasks, the builders, the registry and model statistics (imported on first use).

The core: `specs` (the paper's tables), `backbone` (`VideoResNetBackbone`),
`classifier` (`VideoClassifier`, `VideoFeatureExtractor`), `network` (tables
to models), `legacy` (0.1.0's plain functional models read as tasks), `fold`,
`stats`. On top of it and of `keras_r21d.weights`, the front door:
`video_resnet` (`VideoResNet`, `R2Plus1D`, ...) and `registry` (`get_model`,
`from_preset`).
"""

from keras_r21d._lazy import lazy_exports

_EXPORTS = {
    **{name: "video_resnet" for name in ("BUILDERS", "FR2D", "MC2", "MC3", "MC4", "MC5", "R2D", "R3D", "RMC2",
                                         "RMC3", "RMC4", "RMC5", "R2Plus1D", "VideoResNet")},
    "VideoResNetBackbone": "backbone", "VideoClassifier": "classifier", "VideoFeatureExtractor": "classifier",
    "fold_batchnorm": "fold",
    "from_preset": "registry", "get_model": "registry", "get_preset": "registry", "list_models": "registry",
    "list_presets": "registry", "parse_model_name": "registry",
    "model_stats": "stats",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
