"""Reads a PyTorch state dict into an `.npz`, in a process of its own: `python _read_pth.py IN.pth OUT.npz`.

Run as a script, never imported: importing torch into a process that has
already loaded TensorFlow crashes (a segmentation fault with torch 2.14 and
TensorFlow 2.21), so the converter reads checkpoints here, with nothing but
torch and numpy loaded. Exit status 3: torch is not installed; 2: the file
is not a readable state dict of tensors (the reason on stderr).
"""

import sys


def main(path, out):
    try:
        import torch
    except ImportError:
        print("reading a PyTorch checkpoint needs torch: pip install 'keras_r21d[convert]' "
              "(only for converting; converted weights load without torch)", file=sys.stderr)
        return 3
    import numpy as np

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - a truncated or foreign file raises many types
        print(f"{type(error).__name__}: {error}".replace("\n", " ")[:2000], file=sys.stderr)
        return 2
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        print("not a state dict of tensors", file=sys.stderr)
        return 2
    arrays = {}
    for key, value in state.items():
        value = value.detach().cpu()
        arrays[key.removeprefix("module.")] = (value.float() if value.is_floating_point() else value).numpy()
    np.savez(out, **arrays)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
