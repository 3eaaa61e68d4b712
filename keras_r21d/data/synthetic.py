"""A synthetic action dataset whose classes differ only by motion.

Classes come in time-reversed pairs (left/right, up/down, clockwise/
counter-clockwise, approach/recede, ...): a video of one class, played
backwards, is a video of its twin, drawn from exactly the same distribution.
So no single frame and no orderless pooling of frames (f-R2D) can tell the
twins apart, while temporal models (R3D, R(2+1)D) can: the paper's RQ1 in
miniature. Texture, background, speed, start position, size and length are
random per video; everything is deterministic for a seed. Videos are real
MPEG-4 files in the UCF101 layout (`classInd.txt`, `trainlist0N.txt`,
`testlist0N.txt`, `Class/v_Class_gXX_cYY.avi`).

A horizontal flip turns MoveLeft into MoveRight and a clockwise rotation into
a counter-clockwise one: train on this dataset without flips
(`ClipConfig(flip=False)`, `keras-r21d train --no-flip`).
"""

import os

import cv2
import numpy as np

# (class name, motion kind, direction); each kind appears with both directions.
MOTIONS = [
    ("MoveLeft", "horizontal", -1),
    ("MoveRight", "horizontal", 1),
    ("RotateClockwise", "rotate", -1),
    ("RotateCounterClockwise", "rotate", 1),
    ("MoveUp", "vertical", -1),
    ("MoveDown", "vertical", 1),
    ("Approach", "zoom", 1),
    ("Recede", "zoom", -1),
    ("MoveUpLeft", "diagonal", -1),
    ("MoveDownRight", "diagonal", 1),
    ("MoveUpRight", "antidiagonal", -1),
    ("MoveDownLeft", "antidiagonal", 1),
]
MAX_CLASSES = len(MOTIONS)
KINDS = tuple(dict.fromkeys(kind for _, kind, _ in MOTIONS))


def motion_classes(kinds, name="kinds"):
    """The `MOTIONS` entries of `kinds`, twin pairs in the order given; `ValueError` naming `name` if invalid."""
    kinds = tuple(kinds)
    if not kinds or any(k not in KINDS for k in kinds) or len(set(kinds)) != len(kinds):
        raise ValueError(f"`{name}` must be distinct motion kinds from {list(KINDS)}. Received: {name}={list(kinds)}")
    return [motion for kind in kinds for motion in MOTIONS if motion[1] == kind]
SPLITS = 3


def _texture(rng, height, width, cells, colors=3):
    """Smooth random color texture: random cells upsampled."""
    small = rng.integers(0, 256, (cells[0], cells[1], colors), dtype=np.uint8)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)


def _object(rng, size):
    """A random textured blob (RGB + mask) with a marked, asymmetric pattern."""
    tex = _texture(rng, size, size, (int(rng.integers(3, 6)), int(rng.integers(3, 6))))
    mask = np.zeros((size, size), np.uint8)
    axes = (int(size * rng.uniform(0.3, 0.48)), int(size * rng.uniform(0.22, 0.4)))
    tilt = float(rng.uniform(0, 180))
    cv2.ellipse(mask, (size // 2, size // 2), axes, tilt, 0, 360, 255, -1)
    outline = np.zeros_like(mask)
    cv2.ellipse(outline, (size // 2, size // 2), axes, tilt, 0, 360, 255, max(1, size // 16))
    tex[outline > 0] = 0
    # A bright notch off-center makes rotation visible whatever the texture.
    cv2.circle(tex, (size // 2 + axes[0] // 2, size // 2), max(2, size // 10), (255, 255, 255), -1)
    return tex, mask


def render_video(kind, direction, rng, frames, height, width):
    """Frames `(frames, height, width, 3)` uint8 RGB of one synthetic video.

    Translations wrap around the frame (the object leaves on one side and
    comes back on the other), so the speed can be high whatever the length
    and every position is equally likely in every class.
    """
    # A low-contrast background and a high-contrast, outlined object: the
    # motion is plain to see, while both still change from video to video.
    texture = _texture(rng, height, width, (int(rng.integers(3, 7)), int(rng.integers(4, 9)))).astype(np.float32)
    background = rng.uniform(60, 190, 3) + 0.25 * (texture - 128)
    size = int(min(height, width) * rng.uniform(0.5, 0.7))
    tex, mask = _object(rng, size)
    steps = frames - 1
    speed = rng.uniform(0.02, 0.035) * min(height, width)  # pixels per frame
    angle0 = rng.uniform(0, 360)
    spin = rng.uniform(4.0, 8.0) * steps  # degrees over the video
    zoom = min(np.exp(rng.uniform(0.015, 0.025) * steps), 2.5)  # scale ratio over the video
    scale_lo = rng.uniform(0.5, 0.7)
    cx0 = rng.uniform(0, width)
    cy0 = rng.uniform(0, height)
    axis = {"horizontal": (1, 0), "vertical": (0, 1), "diagonal": (0.7071, 0.7071),
            "antidiagonal": (0.7071, -0.7071)}.get(kind, (0, 0))
    out = np.empty((frames, height, width, 3), np.uint8)
    for t in range(frames):
        s = t / steps if direction > 0 else 1 - t / steps  # the reversed twin runs s backwards
        cx = (cx0 + axis[0] * speed * steps * s) % width
        cy = (cy0 + axis[1] * speed * steps * s) % height
        angle = angle0 + (spin * s if kind == "rotate" else 0.0)
        scale = scale_lo * zoom**s if kind == "zoom" else 1.0
        frame = background.copy()
        # Draw the object at its position and at its wrapped copies across the edges.
        for dx in (-width, 0, width):
            for dy in (-height, 0, height):
                x, y = cx + dx, cy + dy
                if -size < x < width + size and -size < y < height + size:
                    matrix = cv2.getRotationMatrix2D((size / 2, size / 2), angle, scale)
                    matrix[:, 2] += (x - size / 2, y - size / 2)
                    obj = cv2.warpAffine(tex, matrix, (width, height), flags=cv2.INTER_LINEAR)
                    alpha = cv2.warpAffine(mask, matrix, (width, height), flags=cv2.INTER_LINEAR)[..., None] / 255.0
                    frame = frame * (1 - alpha) + obj * alpha
        out[t] = np.clip(frame, 0, 255).astype(np.uint8)
    return out


def write_video(path, frames, fps=25.0):
    """Writes RGB frames as an MPEG-4 (part 2) `.avi` with OpenCV; raises if it cannot."""
    height, width = frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {path} with the mp4v codec")
    try:
        for frame in frames:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()


def make_synthetic_dataset(out_dir, classes=8, videos_per_class=24, frames=(32, 64), size=(128, 96), seed=0,
                           progress=None, kinds=None):
    """Writes the synthetic motion dataset in the UCF101 layout.

    Args:
        out_dir: output folder (created).
        classes: number of classes, 2..12 (time-reversed pairs first:
            MoveLeft/MoveRight, RotateClockwise/RotateCounterClockwise, ...).
        videos_per_class: videos per class (a quarter of them are the test
            set of each of the 3 splits, rotating).
        frames: `(min, max)` video length in frames.
        size: `(width, height)` of the frames.
        seed: the random seed; the same seed writes the same videos.
        progress: optional callable `progress(done, total)`.
        kinds: optional motion kinds instead of `classes`, each giving its
            twin pair of classes, e.g. `("horizontal", "vertical")` for
            MoveLeft/MoveRight/MoveUp/MoveDown (see `KINDS`).

    Returns:
        The dataset spec string, `"ucf101:OUT_DIR"`.
    """
    if kinds is not None:
        classes = len(motion_classes(kinds))
    if not 2 <= classes <= MAX_CLASSES:
        raise ValueError(f"`classes` must be between 2 and {MAX_CLASSES}. Received: classes={classes}")
    if videos_per_class < 4:
        raise ValueError(f"`videos_per_class` must be at least 4. Received: videos_per_class={videos_per_class}")
    low, high = frames
    if not 2 <= low <= high:
        raise ValueError(f"`frames` must be (min, max) with 2 <= min <= max. Received: frames={frames}")
    width, height = size
    if width < 16 or height < 16:
        raise ValueError(f"`size` must be at least 16x16. Received: size={size}")
    os.makedirs(out_dir, exist_ok=True)
    motions = MOTIONS[:classes] if kinds is None else motion_classes(kinds)
    with open(os.path.join(out_dir, "classInd.txt"), "w") as f:
        f.writelines(f"{i + 1} {name}\n" for i, (name, _, _) in enumerate(motions))
    train = {k: [] for k in range(1, SPLITS + 1)}
    test = {k: [] for k in range(1, SPLITS + 1)}
    total, done = classes * videos_per_class, 0
    for label, (name, kind, direction) in enumerate(motions):
        os.makedirs(os.path.join(out_dir, name), exist_ok=True)
        for i in range(videos_per_class):
            rng = np.random.default_rng([seed, label, i])
            length = int(rng.integers(low, high + 1))
            relative = f"{name}/v_{name}_g{i // 4 + 1:02d}_c{i % 4 + 1:02d}.avi"
            write_video(os.path.join(out_dir, relative), render_video(kind, direction, rng, length, height, width))
            for split in range(1, SPLITS + 1):
                if i % 4 == split - 1:
                    test[split].append(relative)
                else:
                    train[split].append(f"{relative} {label + 1}")
            done += 1
            if progress is not None:
                progress(done, total)
    for split in range(1, SPLITS + 1):
        with open(os.path.join(out_dir, f"trainlist{split:02d}.txt"), "w") as f:
            f.writelines(line + "\n" for line in train[split])
        with open(os.path.join(out_dir, f"testlist{split:02d}.txt"), "w") as f:
            f.writelines(line + "\n" for line in test[split])
    return f"ucf101:{out_dir}"
