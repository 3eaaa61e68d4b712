"""The tables that define the network family (paper Table 1 and section 3).

Variants and depths are data: one generic builder reads these tables.
"""

# depth -> (block type, blocks per group conv2..conv5). Paper Table 1.
DEPTHS = {
    10: ("basic", (1, 1, 1, 1)),
    16: ("basic", (2, 2, 2, 1)),
    18: ("basic", (2, 2, 2, 2)),
    26: ("basic", (2, 3, 4, 3)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}

# Group widths conv2..conv5 (a bottleneck's inner width; its output is 4x).
GROUP_WIDTHS = (64, 128, 256, 512)
STEM_WIDTH = 64
# The (2+1)D stem's intermediate width: fixed at 45 in VMZ and torchvision.
STEM_2PLUS1D_MIDPLANES = 45

# variant -> (display name, stem type, conv type of conv2..conv5). Section 3.
# Stem types: "3d" (3x7x7), "2d" (1x7x7), "2plus1d" (1x7x7 then 3x1x1),
# "clip" (R2D: L x 7 x 7 without temporal padding; time collapses to 1).
VARIANTS = {
    "r2d": ("R2D", "clip", ("2d", "2d", "2d", "2d")),
    "fr2d": ("f-R2D", "2d", ("2d", "2d", "2d", "2d")),
    "r3d": ("R3D", "3d", ("3d", "3d", "3d", "3d")),
    "mc2": ("MC2", "3d", ("2d", "2d", "2d", "2d")),
    "mc3": ("MC3", "3d", ("3d", "2d", "2d", "2d")),
    "mc4": ("MC4", "3d", ("3d", "3d", "2d", "2d")),
    "mc5": ("MC5", "3d", ("3d", "3d", "3d", "2d")),
    "rmc2": ("rMC2", "2d", ("3d", "3d", "3d", "3d")),
    "rmc3": ("rMC3", "2d", ("2d", "3d", "3d", "3d")),
    "rmc4": ("rMC4", "2d", ("2d", "2d", "3d", "3d")),
    "rmc5": ("rMC5", "2d", ("2d", "2d", "2d", "3d")),
    "r2plus1d": ("R(2+1)D", "2plus1d", ("2plus1d", "2plus1d", "2plus1d", "2plus1d")),
}

DEFAULT_INPUT_SHAPE = (16, 112, 112, 3)

# BatchNorm epsilon per reading: VMZ (the paper's code) and torchvision.
BN_EPSILON = {"paper": 1e-3, "torchvision": 1e-5}
BN_MOMENTUM = 0.9


def stem_spans_clip(variant=None, stem_type=None):
    """Whether a network's stem convolves the whole clip at once (R2D's `L x 7 x 7`, stem type `"clip"`).

    Such a network's clip length is fixed when it is built; every other
    network takes clips of any length and size. The one place this rule lives.
    """
    return (stem_type or VARIANTS[variant][1]) == "clip"


def clip_input_shape(frames, variant=None, stem_type=None):
    """The input shape for clips of `frames` frames: `(None, None, None, 3)`, or `(frames, None, None, 3)` when the
    stem spans the clip (R2D)."""
    return (frames if stem_spans_clip(variant, stem_type) else None, None, None, 3)
