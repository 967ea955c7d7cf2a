"""MTCNN PNet, the first (proposal) stage of the MTCNN face detector, with facenet-pytorch's weights
(facenet-pytorch 2.6.0, MIT): a fully convolutional net (3 convs with PReLU, no Linear layer) that
slides over an image pyramid; on one 12x12 window its outputs are 1x1 maps.

Covers: a tiny fully convolutional PReLU CNN whose float accuracy on the crops is not saturated (the
12x12 stage is the weakest of the three); outputs: the face probability (N x 2, the main output) and
the box regression (N x 4). Same crops as ONet (benchmarks/real_models/faces.py) at 12x12.

Install: `pip install --no-deps facenet-pytorch==2.6.0` (its metadata pins torch<2.3).
"""

from __future__ import annotations

import faces
import rm_common
from torch import nn

SIZE = 12
INFO = {
    "name": "mtcnn_pnet",
    "package": "facenet-pytorch==2.6.0 (--no-deps)",
    "weights": "facenet_pytorch/data/pnet.pt (28 kB)",
    "licence": "MIT (facenet-pytorch; MTCNN weights MIT)",
    "covers": "fully convolutional PReLU CNN (no Linear); face/not-face classifier + box regression",
    "metric": "top1",
    "metric_fn": "top1",
    "target": "drop<=1",  # top-1 points (the app's top1); the same as a fraction for task_metrics.py:top1
    "target_own": "drop<=0.01",
    "batch_size": 64, "calib_batches": 2,
    "methods": ["static"],
}


class PNetFace(nn.Module):
    """facenet_pytorch.PNet on 12x12 windows: (face probabilities N x 2, boxes N x 4)."""

    def __init__(self):
        super().__init__()
        from facenet_pytorch.models.mtcnn import PNet

        self.pnet = PNet(pretrained=True).eval()

    def forward(self, x):
        box, prob = self.pnet(x)
        return prob.flatten(1), box.flatten(1)


def build():
    model = PNetFace().eval()
    model.example_input_shape = (1, 3, SIZE, SIZE)
    return model


def make_data(out_dir, quick: bool = False) -> dict:
    bs = INFO["batch_size"]
    xc, _, xe, ye = faces.split(SIZE, bs * INFO["calib_batches"], 4 * bs)
    return rm_common.write_split(out_dir, INFO["name"], xc, xe, ye)


if __name__ == "__main__":
    rm_common.data_cli(make_data, build)
