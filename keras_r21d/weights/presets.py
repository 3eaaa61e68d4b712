"""Pretrained weight presets: published PyTorch checkpoints, downloaded, checked, converted once, cached.

`R2Plus1D(depth=18, weights="kinetics400")` downloads torchvision's
checkpoint with `keras.utils.get_file`, checks its SHA-256 against the table
(the 8-hex-digit prefix the publishers put in the file name, torch.hub's
convention), converts it (this step needs `torch`) and caches the result as
`.weights.h5`; later calls load that file and need no torch. `weights=` also
takes a local `.weights.h5` or `.pth` file, or a URL of one.
"""

import dataclasses
import os
import tempfile

import keras

from keras_r21d._files import sha256_of  # noqa: F401 - also imported from here (cli convert)
from keras_r21d.data import defaults
from keras_r21d.models.classifier import VideoClassifier
from keras_r21d.models.network import variant_network
from keras_r21d.models.specs import clip_input_shape
from keras_r21d.weights.convert import ConversionError, convert_state_dict, load_torch_checkpoint

TORCHVISION = "https://download.pytorch.org/models/"
IG65M = "https://github.com/moabitcoin/ig65m-pytorch/releases/download/v1.0.0/"
# Every preset's preprocessing (torchvision's video preset and VMZ): resize 128x171 bilinear without
# antialiasing, center crop 112, RGB on the 0..1 scale normalized by this mean and std, every frame.
PREPROCESSING = {"resize": list(defaults.RESIZE), "crop": defaults.CROP, "mean": list(defaults.MEAN),
                 "std": list(defaults.STD), "frame_stride": 1}


@dataclasses.dataclass(frozen=True)
class Preset:
    """One published checkpoint.

    Attributes:
        name: the `weights=` value (`"kinetics400"`, `"ig65m_kinetics400"`, `"ig65m"`).
        variant, depth: the network (`"r2plus1d"`, 18).
        frames: the clip length it was trained and tested at.
        url: where the `.pth` file is published.
        sha256: the hash prefix published in the file name (or the full hash).
        classes: the classifier size.
        midplanes: the architecture reading the checkpoint needs (`"torchvision"`:
            per-block M, BatchNorm epsilon 1e-5; `"paper"`: per-conv M, 1e-3).
        labels: `"kinetics400"` when the classes are Kinetics-400's, else `None`.
        video_top1: the publisher's Kinetics-400 Video@1, if published.
    """

    name: str
    variant: str
    depth: int
    frames: int
    url: str
    sha256: str
    classes: int
    midplanes: str
    labels: str = None
    video_top1: float = None

    @property
    def handle(self):
        """The preset's one name: `<variant>_<depth>.<name>_<frames>f`, e.g. `r2plus1d_34.ig65m_kinetics400_32f`."""
        return f"{self.variant}_{self.depth}.{self.name}_{self.frames}f"

    def metadata(self):
        """What the checkpoint is: network, clip length, classes, preprocessing, the publisher's accuracy, source."""
        return {"handle": self.handle, "model": f"{self.variant}_{self.depth}", "weights": self.name,
                "frames": self.frames, "classes": self.classes, "labels": self.labels, "midplanes": self.midplanes,
                "video_top1": self.video_top1, "preprocessing": dict(PREPROCESSING), "url": self.url,
                "sha256": self.sha256}

    def clip_config(self, test_clips=10):
        """The `ClipConfig` this checkpoint expects (for `eval_dataset`, `export_saved_model`, ...)."""
        from keras_r21d.data.pipeline import ClipConfig

        return ClipConfig(clip_len=self.frames, frame_stride=PREPROCESSING["frame_stride"],
                          resize=tuple(PREPROCESSING["resize"]), crop=PREPROCESSING["crop"],
                          mean=tuple(PREPROCESSING["mean"]), std=tuple(PREPROCESSING["std"]), test_clips=test_clips)


PRESETS = [
    Preset("kinetics400", "r3d", 18, 16, TORCHVISION + "r3d_18-b3b3357e.pth", "b3b3357e", 400, "torchvision",
           "kinetics400", 63.2),
    Preset("kinetics400", "mc3", 18, 16, TORCHVISION + "mc3_18-a90a0ba3.pth", "a90a0ba3", 400, "torchvision",
           "kinetics400", 63.96),
    Preset("kinetics400", "r2plus1d", 18, 16, TORCHVISION + "r2plus1d_18-91a641e6.pth", "91a641e6", 400,
           "torchvision", "kinetics400", 67.46),
    # The paper's authors' R(2+1)D-34 (VMZ, Caffe2), converted by ig65m-pytorch: per-conv M, epsilon 1e-3.
    Preset("ig65m_kinetics400", "r2plus1d", 34, 32, IG65M + "r2plus1d_34_clip32_ft_kinetics_from_ig65m-ade133f1.pth",
           "ade133f1", 400, "paper", "kinetics400"),
    Preset("ig65m_kinetics400", "r2plus1d", 34, 8, IG65M + "r2plus1d_34_clip8_ft_kinetics_from_ig65m-0aa0550b.pth",
           "0aa0550b", 400, "paper", "kinetics400"),
    Preset("ig65m", "r2plus1d", 34, 32, IG65M + "r2plus1d_34_clip32_ig65m_from_scratch-449a7af9.pth", "449a7af9",
           359, "paper"),
    Preset("ig65m", "r2plus1d", 34, 8, IG65M + "r2plus1d_34_clip8_ig65m_from_scratch-9bae36ae.pth", "9bae36ae",
           487, "paper"),
]


def preset_names():
    """The `weights=` names a builder takes (with its variant and depth; `list_presets()` names each checkpoint)."""
    return sorted({preset.name for preset in PRESETS})


def list_presets(model=None):
    """The preset handles, one per checkpoint (`r2plus1d_18.kinetics400_16f`, ...), of one `model` if given."""
    return sorted(p.handle for p in PRESETS if model is None or f"{p.variant}_{p.depth}" == model)


def resolve_preset(name, variant=None, depth=None, frames=None):
    """The `Preset` a name means: a handle names its checkpoint; a `weights=` name needs `variant` and `depth`
    (and picks by `frames` where there are several, `find_preset`)."""
    if name in list_presets():
        return get_preset(name)
    return find_preset(variant, depth, name, frames)


def get_preset(handle):
    """The `Preset` of a handle from `list_presets()`; a `ValueError` listing them for any other string."""
    for preset in PRESETS:
        if preset.handle == handle:
            return preset
    raise ValueError(f"no preset {handle!r}. Available: {list_presets()}")


def find_preset(variant, depth, name, frames=None):
    """The preset `name` of `variant`-`depth`: the one trained at `frames` if there are several, else the first."""
    matches = [p for p in PRESETS if p.name == name and p.variant == variant and p.depth == depth]
    if not matches:
        available = sorted(f"{p.variant}_{p.depth}: {p.name}" for p in PRESETS)
        raise ValueError(f"no pretrained weights {name!r} for {variant}_{depth}. Available: {available}")
    exact = [p for p in matches if p.frames == frames]
    return exact[0] if exact else matches[0]


def class_names(labels):
    """Class names of a label set (`"kinetics400"`), as shipped with the package."""
    if labels is None:
        return None
    path = os.path.join(os.path.dirname(__file__), f"{labels}.txt")
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f if line.strip()]


def cache_dir(cache_dir=None):
    """Where downloads and converted weights go: `cache_dir`, `$KERAS_R21D_CACHE`, else `~/.keras/keras_r21d`."""
    if cache_dir:
        return cache_dir
    return os.environ.get("KERAS_R21D_CACHE") or os.path.join(os.path.expanduser("~"), ".keras", "keras_r21d")


def download(url, expected_sha256=None, folder=None):
    """Downloads `url` into the cache (once) and checks its SHA-256 (a full hash or a prefix).

    A file whose hash does not match (a truncated or altered download) is
    deleted and reported; it is never used.
    """
    folder = os.path.join(cache_dir(folder), "downloads")
    os.makedirs(folder, exist_ok=True)
    filename = url.rsplit("/", 1)[-1]
    try:
        path = keras.utils.get_file(filename, origin=url, cache_dir=folder, cache_subdir=".")
    except Exception as error:  # noqa: BLE001 - network errors come in many types
        raise ValueError(f"cannot download {url}: {type(error).__name__}: {error}") from None
    if expected_sha256:
        actual = sha256_of(path)
        if not actual.startswith(expected_sha256.lower()):
            size = os.path.getsize(path)
            os.remove(path)
            raise ValueError(
                f"{url}: SHA-256 {actual[:16]}... of the downloaded file ({size} bytes) does not match the "
                f"published {expected_sha256}: the download is truncated or not the published file (deleted; "
                "retry, or pass a local file you trust as weights=PATH)"
            )
    return path


def _reference_model(preset):
    return variant_network(preset.variant, preset.depth, input_shape=clip_input_shape(preset.frames, preset.variant),
                           classes=preset.classes, midplanes=preset.midplanes)


def converted_weights_path(preset, folder=None):
    """Where the preset's converted `.weights.h5` is (or will be) cached."""
    return os.path.join(cache_dir(folder), f"{preset.variant}{preset.depth}_{preset.name}_{preset.frames}f-"
                                           f"{preset.sha256[:8]}.weights.h5")


def converted_weights(preset, folder=None):
    """The preset as a cached `.weights.h5` of its full model: downloaded and converted on first use."""
    target = converted_weights_path(preset, folder)
    if os.path.isfile(target):
        return target
    checkpoint = download(preset.url, preset.sha256, folder)
    model = convert_state_dict(load_torch_checkpoint(checkpoint), _reference_model(preset), checkpoint)
    # Written under a temporary name and renamed: a cache file is either complete or absent.
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".weights.h5", dir=os.path.dirname(target))
    os.close(fd)
    try:
        model.save_weights(tmp, overwrite=True)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return target


def _copy_by_layer(source, model, origin):
    """Copies weights layer by layer (by name) from `source` into `model` (which may lack the classifier)."""
    names = {layer.name for layer in source.layers}
    for layer in model.layers:
        if not layer.weights:
            continue
        if layer.name not in names:
            raise ConversionError(f"{origin}: no weights for layer {layer.name!r}")
        values = source.get_layer(layer.name).get_weights()
        shapes = [tuple(v.shape) for v in values]
        if shapes != [tuple(w.shape) for w in layer.weights]:
            raise ConversionError(f"{origin}: layer {layer.name!r} has weights of shapes {shapes}, the model needs "
                                  f"{[tuple(w.shape) for w in layer.weights]}")
        layer.set_weights(values)


def load_preset(model, preset, folder=None):
    """Loads a preset into a model built with the preset's architecture (classifier optional)."""
    path = converted_weights(preset, folder)
    reference = _reference_model(preset)
    try:
        reference.load_weights(path)
    except Exception as error:  # noqa: BLE001 - name the file, whatever h5py or Keras raise
        raise ValueError(f"cannot load cached weights {path} ({type(error).__name__}: {error}); "
                         "delete the file to convert the checkpoint again") from None
    _copy_by_layer(reference, model, path)
    return model


def load_file(model, weights, folder=None):
    """Loads a `.weights.h5` or `.pth` file (or a URL of one) into `model`."""
    if weights.startswith(("http://", "https://")):
        weights = download(weights, None, folder)
    if not os.path.isfile(weights):
        raise ValueError(f"weights file not found: {weights} (presets: {preset_names()})")
    if weights.endswith(".pth") or weights.endswith(".pt"):
        state = load_torch_checkpoint(weights)
        if not isinstance(model, VideoClassifier):  # features only: the checkpoint's classifier is not needed
            state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        return convert_state_dict(state, model, weights)
    if weights.endswith(".weights.h5"):
        try:
            model.load_weights(weights)
        except Exception as error:  # noqa: BLE001
            raise ValueError(f"cannot load weights {weights} into {model.name!r}: {type(error).__name__}: {error}") \
                from None
        return model
    raise ValueError(f"weights must be None, a preset {preset_names()}, or a .weights.h5 / .pth file or URL. "
                     f"Received: {weights!r}")
