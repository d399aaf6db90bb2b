"""The training losses and helpers that are not the network: the Laplacian-pyramid L1 (the
perceptual stand-in; no pretrained nets exist offline), the patch discriminator of the GAN terms,
and the k-means that initialises the VRE codebook.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def laplacian_pyramid_l1(x: torch.Tensor, y: torch.Tensor, levels: int = 3) -> torch.Tensor:
    """L1 between Laplacian pyramids (band-pass detail at several scales; penalises blur)."""
    loss = x.new_zeros(())
    for _ in range(levels):
        xd, yd = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
        xb = x - F.interpolate(xd, scale_factor=2, mode="bilinear", align_corners=False)
        yb = y - F.interpolate(yd, scale_factor=2, mode="bilinear", align_corners=False)
        loss = loss + (xb - yb).abs().mean()
        x, y = xd, yd
    return loss


class PatchDiscriminator(nn.Module):
    """Small PatchGAN (spectral-normalised); returns the logits map and intermediate features."""

    def __init__(self, channels: int = 32, layers: int = 3):
        super().__init__()
        sn = nn.utils.spectral_norm
        blocks, c_in = [], 3
        for i in range(layers):
            c_out = channels * 2**i
            blocks.append(nn.Sequential(sn(nn.Conv2d(c_in, c_out, 4, 2, 1)), nn.LeakyReLU(0.2)))
            c_in = c_out
        self.blocks = nn.ModuleList(blocks)
        self.head = sn(nn.Conv2d(c_in, 1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        feats = []
        for b in self.blocks:
            x = b(x)
            feats.append(x)
        return self.head(x), feats


def kmeans(x: torch.Tensor, k: int, iters: int = 15, seed: int = 0) -> torch.Tensor:
    """Plain k-means (k-means++-free: random distinct init) on rows of ``x``; returns k centres."""
    g = torch.Generator().manual_seed(seed)
    centres = x[torch.randperm(len(x), generator=g)[:k]].clone()
    for _ in range(iters):
        idx = torch.cdist(x, centres).argmin(1)
        for j in range(k):
            members = x[idx == j]
            if len(members):
                centres[j] = members.mean(0)
            else:  # re-seed an empty cluster with a random point
                centres[j] = x[torch.randint(len(x), (1,), generator=g)].squeeze(0)
    return centres
