"""MTCNN ONet, the third stage of the MTCNN face detector, with facenet-pytorch's pretrained weights
(facenet-pytorch 2.6.0, MIT; the weights are the original MTCNN's, ported by facenet-pytorch).

Covers: a CNN whose activations are PReLU (not ReLU), max pooling, Linear head; three outputs: the face
probability (softmax over [not face, face], the main output), the box regression, and 5 facial
landmarks (10 coordinates: a keypoint output). Input: a 48x48 RGB face candidate, (pixel-127.5)/128.

    qtapp-cli quantize benchmarks/real_models/mtcnn_onet.py:build --calib D/mtcnn_onet_calib.npz \
        --eval D/mtcnn_onet_eval.npz --metric top1 --out out/onet
    python benchmarks/real_models/mtcnn_onet.py --data D --check

facenet-pytorch pins torch<2.3 and numpy<2 in its metadata but runs on torch 2.14: install it with
`pip install --no-deps facenet-pytorch==2.6.0`.
"""

from __future__ import annotations

import faces
import rm_common
import torch
from torch import nn

SIZE = 48
INFO = {
    "name": "mtcnn_onet",
    "package": "facenet-pytorch==2.6.0 (--no-deps)",
    "weights": "facenet_pytorch/data/onet.pt (1.6 MB)",
    "licence": "MIT (facenet-pytorch); MTCNN weights from the MTCNN authors' release (MIT)",
    "covers": "CNN with PReLU activations; classifier (face/not face) + box + 5 landmarks (keypoints)",
    "metric": "top1",  # labels are class ids: the app's own top-1
    "metric_fn": "top1",
    "target": "drop<=1",  # top-1 points (the app's top1); the same as a fraction for task_metrics.py:top1
    "target_own": "drop<=0.01",  # at most 1 point of face/not-face accuracy lost
    "batch_size": 64, "calib_batches": 2,  # 128 calibration crops; evaluation 4 x 64 = 256
    "methods": ["static"],
}


class ONetFace(nn.Module):
    """facenet_pytorch.ONet, outputs reordered: (face probabilities N x 2, boxes N x 4, landmarks N x 10)."""

    def __init__(self):
        super().__init__()
        from facenet_pytorch.models.mtcnn import ONet

        self.onet = ONet(pretrained=True).eval()

    def forward(self, x):
        box, landmarks, prob = self.onet(x)
        return prob, box, landmarks


def build():
    model = ONetFace().eval()
    model.example_input_shape = (1, 3, SIZE, SIZE)
    return model


def make_data(out_dir, quick: bool = False) -> dict:
    bs = INFO["batch_size"]
    xc, _, xe, ye = faces.split(SIZE, bs * INFO["calib_batches"], 4 * bs)
    return rm_common.write_split(out_dir, INFO["name"], xc, xe, ye)


if __name__ == "__main__":
    rm_common.data_cli(make_data, build)
