"""The Inception-v3 network that the standard FID weights expect.

The FID of Heusel et al. (2017) is defined on the 2048-d pool features of the TensorFlow
Inception-v3 graph of 2015-12-05. Its PyTorch port (``pt_inception-2015-12-05-6726825d.pth``,
published with pytorch-fid) has the layer names and shapes of the usual Inception-v3 (no auxiliary
head, a 1008-way classifier) and three differences from the torchvision network, which the numbers
depend on: the average pools inside the mixed blocks 5b-5d, 6b-6e and 7b ignore the zero padding
(``count_include_pad=False``), and block 7c pools its last branch with a max instead of an average.
Inputs in [0, 1] are resized to 299x299 (bilinear) and mapped to [-1, 1].

Nothing is downloaded unless :func:`download_fid_weights` is called; :func:`load_fid_inception`
reads a local file (``path`` or ``$EDGEGEN_FID_WEIGHTS``) and records its SHA-256
(:func:`fid_weights_sha256`): only the official file makes the distance "FID"; any other file in
the same layout is reported as non-standard (see :func:`is_official_fid_weights`).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["FIDInceptionV3", "FID_WEIGHTS_URL", "FID_WEIGHTS_ENV", "FID_WEIGHTS_SHA256_PREFIX",
           "download_fid_weights", "load_fid_inception", "fid_weights_path", "fid_weights_sha256",
           "is_official_fid_weights"]

FID_WEIGHTS_URL = ("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
                   "pt_inception-2015-12-05-6726825d.pth")
FID_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
# The file name carries the first 8 hex digits of the file's SHA-256 (the torch.hub convention);
# that prefix is the only published identity of the file, so it is what loading checks.
FID_WEIGHTS_SHA256_PREFIX = "6726825d"
FID_WEIGHTS_ENV = "EDGEGEN_FID_WEIGHTS"
FEATURE_DIM = 2048
INPUT_SIZE = 299


class _Conv(nn.Module):
    """Convolution without bias, batch norm (eps 1e-3, as in the TensorFlow graph), ReLU."""

    def __init__(self, cin: int, cout: int, kernel, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg3(x: Tensor) -> Tensor:
    # The TensorFlow graph averages over the valid pixels only at the borders.
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class _BlockA(nn.Module):  # 35x35 grid: 1x1, 5x5, double 3x3, pooled 1x1
    def __init__(self, cin: int, pool_features: int):
        super().__init__()
        self.branch1x1 = _Conv(cin, 64, 1)
        self.branch5x5_1 = _Conv(cin, 48, 1)
        self.branch5x5_2 = _Conv(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = _Conv(cin, 64, 1)
        self.branch3x3dbl_2 = _Conv(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _Conv(96, 96, 3, padding=1)
        self.branch_pool = _Conv(cin, pool_features, 1)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.branch1x1(x),
                          self.branch5x5_2(self.branch5x5_1(x)),
                          self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                          self.branch_pool(_avg3(x))], 1)


class _ReduceB(nn.Module):  # 35 -> 17
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = _Conv(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = _Conv(cin, 64, 1)
        self.branch3x3dbl_2 = _Conv(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _Conv(96, 96, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.branch3x3(x),
                          self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                          F.max_pool2d(x, 3, stride=2)], 1)


class _BlockC(nn.Module):  # 17x17 grid with factorised 7x7 convolutions
    def __init__(self, cin: int, c7: int):
        super().__init__()
        row, col = dict(kernel=(1, 7), padding=(0, 3)), dict(kernel=(7, 1), padding=(3, 0))
        self.branch1x1 = _Conv(cin, 192, 1)
        self.branch7x7_1 = _Conv(cin, c7, 1)
        self.branch7x7_2 = _Conv(c7, c7, **row)
        self.branch7x7_3 = _Conv(c7, 192, **col)
        self.branch7x7dbl_1 = _Conv(cin, c7, 1)
        self.branch7x7dbl_2 = _Conv(c7, c7, **col)
        self.branch7x7dbl_3 = _Conv(c7, c7, **row)
        self.branch7x7dbl_4 = _Conv(c7, c7, **col)
        self.branch7x7dbl_5 = _Conv(c7, 192, **row)
        self.branch_pool = _Conv(cin, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = x
        for layer in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                      self.branch7x7dbl_5):
            d = layer(d)
        return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(_avg3(x))], 1)


class _ReduceD(nn.Module):  # 17 -> 8
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1 = _Conv(cin, 192, 1)
        self.branch3x3_2 = _Conv(192, 320, 3, stride=2)
        self.branch7x7x3_1 = _Conv(cin, 192, 1)
        self.branch7x7x3_2 = _Conv(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = _Conv(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = _Conv(192, 192, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), b7, F.max_pool2d(x, 3, stride=2)], 1)


class _BlockE(nn.Module):  # 8x8 grid with split 1x3 / 3x1 outputs; ``max_pool``: block 7c's variant
    def __init__(self, cin: int, max_pool: bool):
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = _Conv(cin, 320, 1)
        self.branch3x3_1 = _Conv(cin, 384, 1)
        self.branch3x3_2a = _Conv(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = _Conv(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = _Conv(cin, 448, 1)
        self.branch3x3dbl_2 = _Conv(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = _Conv(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = _Conv(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = _Conv(cin, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        s = self.branch3x3_1(x)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _avg3(x)
        return torch.cat([self.branch1x1(x),
                          self.branch3x3_2a(s), self.branch3x3_2b(s),
                          self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d),
                          self.branch_pool(pooled)], 1)


class FIDInceptionV3(nn.Module):
    """``FIDInceptionV3()(images)`` -> [N, 2048] pool features. ``images``: [N, 3, H, W] floats in
    [0, 1] (any H, W: resized to 299 bilinearly, as the standard FID does). ``logits(images)``
    gives the 1008-way classifier output of the same weights."""

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = _Conv(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = _Conv(32, 32, 3)
        self.Conv2d_2b_3x3 = _Conv(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = _Conv(64, 80, 1)
        self.Conv2d_4a_3x3 = _Conv(80, 192, 3)
        self.Mixed_5b = _BlockA(192, 32)
        self.Mixed_5c = _BlockA(256, 64)
        self.Mixed_5d = _BlockA(288, 64)
        self.Mixed_6a = _ReduceB(288)
        self.Mixed_6b = _BlockC(768, 128)
        self.Mixed_6c = _BlockC(768, 160)
        self.Mixed_6d = _BlockC(768, 160)
        self.Mixed_6e = _BlockC(768, 192)
        self.Mixed_7a = _ReduceD(768)
        self.Mixed_7b = _BlockE(1280, max_pool=False)
        self.Mixed_7c = _BlockE(2048, max_pool=True)
        self.fc = nn.Linear(2048, 1008)

    @staticmethod
    def preprocess(images: Tensor) -> Tensor:
        if images.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
            images = F.interpolate(images, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        return images * 2.0 - 1.0

    def _trunk(self, x: Tensor) -> Tensor:
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, 3, stride=2)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c,
                      self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
            x = block(x)
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)

    def forward(self, images: Tensor) -> Tensor:
        return self._trunk(self.preprocess(images))

    def logits(self, images: Tensor) -> Tensor:
        return self.fc(self.forward(images))


def fid_weights_path(path: str | os.PathLike | None = None) -> Path | None:
    """The weights file to use: ``path``, else ``$EDGEGEN_FID_WEIGHTS``, else None (no standard
    weights here). A path that is named but absent is an error, never a silent fallback."""
    source = "path"
    if path is None:
        path, source = os.environ.get(FID_WEIGHTS_ENV) or None, f"${FID_WEIGHTS_ENV}"
    if path is None:
        return None
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"{source}: the FID Inception weights file {p} does not exist (expected "
                                f"{FID_WEIGHTS_FILE}, from {FID_WEIGHTS_URL}; edgegen.eval.download_fid_weights() "
                                "fetches it)")
    return p


# (resolved path, size, mtime in ns) -> SHA-256 hex digest: the file is ~100 MB, hash it once.
_SHA256_CACHE: dict[tuple[str, int, int], str] = {}
_SHA256_LOCK = threading.Lock()


def fid_weights_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 (hex) of the weights file at ``path``, computed once per file and remembered
    by path, size and modification time (a rewritten file is hashed again)."""
    p = Path(path).expanduser().resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    with _SHA256_LOCK:
        digest = _SHA256_CACHE.get(key)
    if digest is None:
        from edgegen.data.download import file_digest

        digest = file_digest(p, "sha256")
        with _SHA256_LOCK:
            _SHA256_CACHE[key] = digest
    return digest


def is_official_fid_weights(sha256: str) -> bool:
    """Whether a file digest is that of the official ``pt_inception-2015-12-05-6726825d.pth``
    (its published SHA-256 prefix; the file name of a copy proves nothing)."""
    return sha256.lower().startswith(FID_WEIGHTS_SHA256_PREFIX)


def load_fid_inception(path: str | os.PathLike | None = None) -> FIDInceptionV3:
    """The FID network with the weights from ``path`` (or ``$EDGEGEN_FID_WEIGHTS``), in eval
    mode. Every parameter and buffer of the network must be in the file with its shape. The file's
    SHA-256 is kept as ``net.weights_sha256``; only when :func:`is_official_fid_weights` holds for
    it are these the standard FID weights (a file of the same layout with other values loads, but
    what it measures is not FID)."""
    p = fid_weights_path(path)
    if p is None:
        raise FileNotFoundError(f"path: no FID Inception weights given (pass a path or set ${FID_WEIGHTS_ENV} to "
                                f"{FID_WEIGHTS_FILE}, downloadable from {FID_WEIGHTS_URL})")
    state = torch.load(p, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"path: {p} holds a {type(state).__name__}, expected a state dict")
    net = FIDInceptionV3()
    own = net.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k} {tuple(state[k].shape)} != {tuple(own[k].shape)}" for k in own
             if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        raise ValueError(f"path: {p} is not the FID Inception-v3 state dict: missing {missing[:3]}, unexpected "
                         f"{unexpected[:3]}, shape mismatches {wrong[:3]}")
    net.load_state_dict(state, strict=False)  # only num_batches_tracked may be absent
    net.weights_sha256 = fid_weights_sha256(p)
    return net.eval()


def download_fid_weights(dest_dir: str | os.PathLike | None = None) -> Path:
    """Fetch the standard FID weights (about 92 MB) into ``dest_dir`` (default
    ``~/.cache/edgegen/fid``), checking the SHA-256 prefix that the file name carries, and return
    the path (set ``$EDGEGEN_FID_WEIGHTS`` to it)."""
    from edgegen.data.download import fetch

    dest = Path(dest_dir or "~/.cache/edgegen/fid").expanduser() / FID_WEIGHTS_FILE
    if not dest.is_file():
        fetch(FID_WEIGHTS_URL, dest)
    digest = fid_weights_sha256(dest)
    if not is_official_fid_weights(digest):
        dest.unlink()
        raise OSError(f"{FID_WEIGHTS_URL}: SHA-256 {digest[:16]}... does not start with {FID_WEIGHTS_SHA256_PREFIX}; "
                      "the download is corrupt or not the official file (deleted)")
    return dest
