"""PNG plots of a run: loss and error per epoch (the paper's train-vs-test figure), learning rate, confusion."""

import csv
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def read_history(csv_path):
    """Reads Keras' CSVLogger file into `{column: [floats]}`."""
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    columns = {}
    for row in rows:
        for key, value in row.items():
            try:
                columns.setdefault(key, []).append(float(value))
            except (TypeError, ValueError):
                columns.setdefault(key, []).append(float("nan"))
    return columns


def plot_history(csv_path, out_dir):
    """Writes `loss.png`, `error.png` and `learning_rate.png` from a history CSV; returns their paths."""
    history = read_history(csv_path)
    epochs = [int(e) + 1 for e in history.get("epoch", [])]
    written = []

    def save(fig, name):
        path = os.path.join(out_dir, name)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)

    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label in [("loss", "train"), ("val_loss", "validation")]:
        if key in history:
            ax.plot(epochs, history[key], marker="o", label=label)
    ax.set(xlabel="epoch", ylabel="loss", title="Loss")
    ax.legend()
    save(fig, "loss.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label in [("accuracy", "train clip error"), ("val_accuracy", "validation clip error"),
                       ("val_video_accuracy", "validation video error")]:
        if key in history:
            ax.plot(epochs, [100 * (1 - v) for v in history[key]], marker="o", label=label)
    ax.set(xlabel="epoch", ylabel="error (%)", title="Train vs validation error")
    ax.legend()
    save(fig, "error.png")

    if "learning_rate" in history:
        fig, ax = plt.subplots(figsize=(6, 3))
        ax.plot(epochs, history["learning_rate"], marker="o")
        ax.set(xlabel="epoch", ylabel="learning rate (epoch end)", title="Learning rate", yscale="log")
        save(fig, "learning_rate.png")
    return written


def plot_confusion_matrix(confusion, class_names, path):
    """Writes a row-normalized confusion matrix (true class per row) as a PNG."""
    confusion = np.asarray(confusion, dtype=float)
    rows = confusion.sum(axis=1, keepdims=True)
    normalized = np.divide(confusion, rows, out=np.zeros_like(confusion), where=rows > 0)
    size = max(4, 0.45 * len(class_names) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(normalized, cmap="Blues", vmin=0, vmax=1)
    ticks = range(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=90, fontsize=7)
    ax.set_yticks(ticks, class_names, fontsize=7)
    ax.set(xlabel="predicted", ylabel="true", title="Video-level confusion matrix")
    if len(class_names) <= 20:
        for i in ticks:
            for j in ticks:
                if confusion[i, j]:
                    ax.text(j, i, int(confusion[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if normalized[i, j] > 0.5 else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
