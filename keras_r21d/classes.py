"""Class names: the contract between a model and a dataset.

A model's outputs are indexed by its class names, a dataset's labels by its
own; the two lists may order the same classes differently (a `folder:`
dataset sorts them, a `classInd.txt` or a preset does not). Everything that
scores or trains a model on a dataset (`evaluate`, fine-tuning with a kept
head, validation during training and search) pairs them **by name** through
`align_to_model`, never by position, and a dataset class the model does not
know is an error before any video is decoded.

A model without recorded names (a bare `.keras` file) is paired by position,
with a warning that says so.
"""

import warnings


class ClassMismatchError(ValueError):
    """The dataset's classes cannot be paired with the model's outputs; the message lists the names."""


def _listing(names, limit=12):
    names = list(names)
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def align_to_model(dataset, model_names, num_outputs, model_label="the model", data_label=None):
    """The dataset relabelled to index the model's outputs.

    Args:
        dataset: a `VideoDataset`.
        model_names: the model's class names in output order, or `None` when
            the model carries none (then classes pair by position, with a
            warning).
        num_outputs: the model's number of outputs.
        model_label, data_label: how the messages name the model and dataset.

    Returns:
        A `VideoDataset` with the same videos whose `labels` index the model's
        outputs and whose `class_names` are the model's; its
        `evaluated_classes` attribute lists the dataset's own classes (those a
        report speaks of).

    Raises:
        ClassMismatchError: a dataset class the model does not know (all of
            them are listed, with the model's), more dataset classes than
            outputs for a model without names, or names that do not match
            the model's output count.
    """
    data_label = data_label or f"dataset {dataset.name!r}"
    data_names = list(dataset.class_names)
    if model_names is None:
        if len(data_names) > num_outputs:
            raise ClassMismatchError(
                f"{data_label} has {len(data_names)} classes but {model_label} has only {num_outputs} outputs "
                "(and no recorded class names to pair them by)")
        warnings.warn(
            f"{model_label} has no recorded class names: the {len(data_names)} classes of {data_label} are paired "
            f"with its outputs by position ({data_names[0]!r} = output 0, ...). Keep the model's run.json or "
            "MODEL.keras.json beside it to pair them by name.", UserWarning, stacklevel=2)
        names = data_names + [f"output_{i}" for i in range(len(data_names), num_outputs)]
        return _relabelled(dataset, list(dataset.labels), names)
    model_names = [str(n) for n in model_names]
    if len(model_names) != num_outputs:
        raise ClassMismatchError(
            f"{model_label} records {len(model_names)} class names for {num_outputs} outputs; its record does not "
            "belong to it")
    if len(set(model_names)) != len(model_names):
        raise ClassMismatchError(f"{model_label} records duplicate class names")
    index = {name: i for i, name in enumerate(model_names)}
    unknown = [name for name in data_names if name not in index]
    if unknown:
        raise ClassMismatchError(
            f"{len(unknown)} class(es) of {data_label} are not classes of {model_label}: {_listing(unknown)}. "
            f"{model_label} knows {_listing(model_names)}. Classes are paired by name: rename the folders or list "
            "entries, or fine-tune a new head on this dataset (train --init MODEL).")
    mapping = [index[name] for name in data_names]
    return _relabelled(dataset, [mapping[label] for label in dataset.labels], model_names)


def _relabelled(dataset, labels, class_names):
    """A copy of `dataset` with `labels` indexing `class_names`; it remembers the dataset's own classes."""
    aligned = dataset.subset(range(len(dataset)))
    aligned.labels = labels
    aligned.class_names = list(class_names)
    aligned.evaluated_classes = list(dataset.class_names)
    aligned.skipped = list(getattr(dataset, "skipped", []))
    return aligned


def same_classes(a, b):
    """Whether two class-name lists hold the same names (in any order)."""
    return a is not None and b is not None and sorted(map(str, a)) == sorted(map(str, b))
