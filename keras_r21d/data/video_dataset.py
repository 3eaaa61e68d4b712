"""`VideoDataset`: a list of labelled videos, whatever layout (`datasets`) or shard folder (`shards`) it came from."""

import dataclasses
import hashlib
import os


@dataclasses.dataclass
class VideoDataset:
    """A list of labelled videos.

    Attributes:
        name: the spec it came from.
        paths: video file paths.
        labels: int class indices, one per path.
        class_names: the class names, indexed by label.
    """

    name: str
    paths: list
    labels: list
    class_names: list

    def __len__(self):
        return len(self.paths)

    @property
    def num_classes(self):
        return len(self.class_names)

    def subset(self, indices):
        """A new dataset with the videos at `indices`."""
        return VideoDataset(
            self.name, [self.paths[i] for i in indices], [self.labels[i] for i in indices], list(self.class_names)
        )

    def fingerprint(self):
        """A hash of the video list and labels (paths relative to their common folder, label names)."""
        digest = hashlib.sha256()
        if self.paths:
            root = os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in self.paths])
            for path, label in sorted(zip(self.paths, self.labels)):
                digest.update(f"{os.path.relpath(os.path.abspath(path), root)}\t{self.class_names[label]}\n".encode(
                    "utf-8", "surrogateescape"))
        return f"{len(self.paths)} videos, sha256 {digest.hexdigest()[:16]}"
