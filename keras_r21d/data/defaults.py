"""The clip preprocessing values of the paper, VMZ and torchvision's video models, in plain Python.

Kept apart from `transforms` (TensorFlow graph ops) so that the models and the
weight presets, which record these values, import without TensorFlow: on the
JAX and PyTorch backends too.
"""

# RGB mean and std on the 0..1 scale (VMZ and torchvision's video models).
MEAN = (0.43216, 0.394666, 0.37645)
STD = (0.22803, 0.22145, 0.216989)
# The paper resizes frames to 128x171 before cropping 112x112.
RESIZE = (128, 171)
CROP = 112


def resize_for_crop(crop=CROP):
    """The pre-crop frame size for a crop: the paper's 128x171 for 112, scaled for other crops."""
    return (round(crop * RESIZE[0] / CROP), round(crop * RESIZE[1] / CROP))
