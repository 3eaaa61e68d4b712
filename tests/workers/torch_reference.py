"""torchvision's video ResNets as references for the converter: `python torch_reference.py OUT_DIR`.

Run in a process of its own (torch and TensorFlow must not share one). For
r3d_18, mc3_18, r2plus1d_18 (torchvision's own builders) and R(2+1)D-34 built
the ig65m way (torchvision `VideoResNet`, the paper's per-conv M in the first
block of conv3..conv5, BatchNorm epsilon 1e-3), with random weights and random
BatchNorm statistics in eval mode, writes `NAME.pth` (the state dict) and
`NAME.npz` (random clips `(N, T, H, W, 3)` per clip length and the logits).
"""

import os
import sys

import numpy as np
import torch
from torchvision.models.video import mc3_18, r2plus1d_18, r3d_18
from torchvision.models.video.resnet import BasicBlock, Conv2Plus1D, R2Plus1dStem, VideoResNet


def ig65m_r2plus1d_34(num_classes):
    model = VideoResNet(block=BasicBlock, conv_makers=[Conv2Plus1D] * 4, layers=[3, 4, 6, 3], stem=R2Plus1dStem,
                        num_classes=num_classes)
    # The paper's per-conv M where it differs from torchvision's per-block M.
    model.layer2[0].conv2[0] = Conv2Plus1D(128, 128, 288)
    model.layer3[0].conv2[0] = Conv2Plus1D(256, 256, 576)
    model.layer4[0].conv2[0] = Conv2Plus1D(512, 512, 1152)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm3d):
            module.eps = 1e-3
    return model


MODELS = {
    "r3d_18": (lambda: r3d_18(num_classes=400), (16, 8)),
    "mc3_18": (lambda: mc3_18(num_classes=400), (16, 8)),
    "r2plus1d_18": (lambda: r2plus1d_18(num_classes=400), (16, 8)),
    "ig65m_r2plus1d_34": (lambda: ig65m_r2plus1d_34(487), (8, 32)),
}


def main(out_dir, names):
    torch.manual_seed(0)
    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    for name in names:
        build, lengths = MODELS[name]
        model = build()
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, torch.nn.BatchNorm3d):
                    module.running_mean.normal_(0, 0.1)
                    module.running_var.uniform_(0.5, 1.5)
                    module.weight.uniform_(0.5, 1.3)
                    module.bias.normal_(0, 0.1)
        model.eval()
        torch.save(model.state_dict(), os.path.join(out_dir, f"{name}.pth"))
        arrays = {}
        for frames in lengths:
            clips = rng.normal(size=(1, frames, 112, 112, 3)).astype(np.float32)
            with torch.no_grad():
                logits = model(torch.from_numpy(clips).permute(0, 4, 1, 2, 3).contiguous())
            arrays[f"clips_{frames}"] = clips
            arrays[f"logits_{frames}"] = logits.numpy()
        np.savez(os.path.join(out_dir, f"{name}.npz"), **arrays)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:] or list(MODELS)))
