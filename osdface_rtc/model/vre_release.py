"""The released OSDFace Visual Representation Embedder (VRE), rebuilt from diffusers blocks.

Release layout (``associate_2.ckpt``, a Lightning checkpoint; keys under ``vqvae_LQ.``; read
from the public OSDFace code, ``lq_embed/vqvae.py`` + ``lq_embed/inference.py``):

- ``encoder.*``: a taming-style VQGAN encoder, ``ch=64``, ``ch_mult=(1, 2, 2, 2, 4, 8)``,
  ``num_res_blocks=2``, self-attention after every block of the 16×16 level (the last one) and
  in the middle block, GroupNorm(32, eps=1e-6), SiLU, ``z_channels=512``, no double-z.
  512² face → 16×16 grid of 512-d features.
- ``quant_conv.*``: 1×1 conv 512→512; ``quantize.embedding.weight``: the 1024×512 codebook.
- ``decoder.*`` / ``post_quant_conv.*``: not used at inference (ignored).

``embedding_change_weights.pth`` holds ``conv1`` (Conv1d 512→256, k=1) and ``conv2`` (Conv1d
256→1024, k=1), each followed by SiLU, mapping the 77 selected codes to the UNet's context.

Why diffusers' ``Encoder`` and a key-rename map rather than a copy of the taming module: the
two layouts are the same network (diffusers' own SD-VAE converter maps one onto the other), and
diffusers' blocks bring SDPA attention and fp16/CUDA-graph friendliness for free. The
differences are names only (``down.i.block.j`` → ``down_blocks.i.resnets.j``,
``nin_shortcut`` → ``conv_shortcut``, 1×1-conv q/k/v/proj_out → linear ``to_q/to_k/to_v/
to_out.0``) plus one unused key (``attn.norm2``, only used by the release's cross-attention
variant) that is dropped.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.models.autoencoders.vae import Encoder
from torch import nn

log = logging.getLogger("osdface_rtc")

#: Prefix of the LQ VQGAN in the release's Lightning checkpoint.
VRE_PREFIX = "vqvae_LQ."
CODEBOOK_KEY = "quantize.embedding.weight"


@dataclass(frozen=True)
class VREConfig:
    """Sizes of the VQGAN encoder + codebook (defaults: the release's)."""

    ch: int = 64
    ch_mult: tuple[int, ...] = (1, 2, 2, 2, 4, 8)
    num_res_blocks: int = 2
    attn_levels: tuple[int, ...] = (5,)  # levels whose blocks are followed by self-attention
    z_channels: int = 512
    embed_dim: int = 512
    n_embed: int = 1024
    n_tokens: int = 77
    norm_groups: int = 32

    @property
    def downscale(self) -> int:
        """Input size / feature-grid size (32 for the release: 512² → 16×16)."""
        return 2 ** (len(self.ch_mult) - 1)

    @classmethod
    def from_state_dict(cls, sd: dict[str, torch.Tensor], n_tokens: int = 77) -> VREConfig:
        """Read the sizes from a taming-layout state dict (``encoder.*``, ``quant_conv.*``, ...)."""
        ch = sd["encoder.conv_in.weight"].shape[0]
        levels = sorted({int(m.group(1)) for k in sd if (m := re.match(r"encoder\.down\.(\d+)\.", k))})
        blocks = {int(m.group(1)) for k in sd if (m := re.match(r"encoder\.down\.0\.block\.(\d+)\.", k))}
        attn = tuple(i for i in levels if any(k.startswith(f"encoder.down.{i}.attn.") for k in sd))
        n_embed, embed_dim = sd[CODEBOOK_KEY].shape
        return cls(
            ch=ch,
            ch_mult=tuple(sd[f"encoder.down.{i}.block.0.conv1.weight"].shape[0] // ch for i in levels),
            num_res_blocks=len(blocks),
            attn_levels=attn,
            z_channels=sd["encoder.conv_out.weight"].shape[0],
            embed_dim=embed_dim,
            n_embed=n_embed,
            n_tokens=n_tokens,
        )


_RENAMES: tuple[tuple[str, str], ...] = (
    (r"^down\.(\d+)\.block\.(\d+)\.nin_shortcut\.", r"down_blocks.\1.resnets.\2.conv_shortcut."),
    (r"^down\.(\d+)\.block\.(\d+)\.", r"down_blocks.\1.resnets.\2."),
    (r"^down\.(\d+)\.attn\.(\d+)\.", r"down_blocks.\1.attentions.\2."),
    (r"^down\.(\d+)\.downsample\.conv\.", r"down_blocks.\1.downsamplers.0.conv."),
    (r"^mid\.block_1\.", r"mid_block.resnets.0."),
    (r"^mid\.block_2\.", r"mid_block.resnets.1."),
    (r"^mid\.attn_1\.", r"mid_block.attentions.0."),
    (r"^norm_out\.", r"conv_norm_out."),
)
_ATTN_RENAMES = {"norm1": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}


def taming_to_diffusers(enc_sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a taming ``Encoder`` state dict (keys without ``encoder.``) to diffusers' ``Encoder``.

    Attention 1×1 convs become linear weights; the unused ``attn.*.norm2`` is dropped.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in enc_sd.items():
        new = key
        for pattern, repl in _RENAMES:
            new, n = re.subn(pattern, repl, new)
            if n:
                break
        if ".attentions." in new:
            head, sub, leaf = new.rsplit(".", 2)
            if sub == "norm2":
                continue
            new = f"{head}.{_ATTN_RENAMES[sub]}.{leaf}"
            if leaf == "weight" and value.ndim == 4:
                value = value[:, :, 0, 0]
        out[new] = value
    return out


class EmbeddingChange(nn.Module):
    """``embedding_change_weights.pth``: two k=1 Conv1d (C→C/2→prompt_dim), SiLU after each."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int):
        super().__init__()
        self.conv1 = nn.Conv1d(in_dim, hidden_dim, kernel_size=1)
        self.conv2 = nn.Conv1d(hidden_dim, out_dim, kernel_size=1)

    @classmethod
    def from_state_dict(cls, sd: dict[str, torch.Tensor]) -> EmbeddingChange:
        hidden, in_dim, _ = sd["conv1.weight"].shape
        module = cls(in_dim, hidden, sd["conv2.weight"].shape[0])
        module.load_state_dict(sd)
        return module

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T, C) → (B, T, prompt_dim)."""
        x = F.silu(self.conv1(tokens.transpose(1, 2)))
        return F.silu(self.conv2(x)).transpose(1, 2)


def select_codes(
    feats: torch.Tensor, codebook: torch.Tensor, n_tokens: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The release's token selection, vectorised (no host sync, CUDA-graph safe).

    Each grid position takes its nearest code; positions are ordered by that distance
    (ascending); the first ``n_tokens`` *distinct* codes in that order are kept.

    Args:
        feats: (B, P, D) features of the P grid positions (row-major).
        codebook: (K, D).
    Returns:
        codes (B, n_tokens) long, valid (B, n_tokens) bool (False rows: fewer distinct codes
        than ``n_tokens``; the release leaves those tokens zero).
    """
    b, p, _ = feats.shape
    f, e = feats.float(), codebook.float()
    # Same expansion as the release (|z|² + |e|² − 2 z·e), but always in fp32: in fp16 the
    # cancellation would reorder near-ties.
    dist = f.pow(2).sum(-1, keepdim=True) + e.pow(2).sum(-1) - 2.0 * f @ e.t()
    min_dist, nearest = dist.min(dim=-1)  # (B, P)
    order = torch.sort(min_dist, dim=1, stable=True).indices
    ranked = nearest.gather(1, order)  # codes in selection order
    pos = torch.arange(p, device=feats.device).expand(b, p)
    first = torch.full((b, codebook.shape[0]), p, device=feats.device, dtype=torch.long)
    first = first.scatter_reduce(1, ranked, pos, reduce="amin")
    is_first = first.gather(1, ranked) == pos
    rank = is_first.cumsum(1) - 1
    slot = torch.where(is_first & (rank < n_tokens), rank, torch.full_like(rank, n_tokens))
    codes = torch.zeros(b, n_tokens + 1, device=feats.device, dtype=torch.long)
    codes = codes.scatter(1, slot, ranked)[:, :n_tokens]  # slot n_tokens is a discard bin
    valid = torch.arange(n_tokens, device=feats.device) < is_first.sum(1, keepdim=True)
    return codes, valid


class ReleaseVRE(nn.Module):
    """LQ face in [-1, 1] → (B, n_tokens, prompt_dim) visual prompt, as the release computes it."""

    def __init__(self, cfg: VREConfig, embedding_change: EmbeddingChange):
        super().__init__()
        self.cfg = cfg
        widths = tuple(cfg.ch * m for m in cfg.ch_mult)
        self.encoder = Encoder(
            in_channels=3,
            out_channels=cfg.z_channels,
            down_block_types=tuple(
                "AttnDownEncoderBlock2D" if i in cfg.attn_levels else "DownEncoderBlock2D"
                for i in range(len(widths))
            ),
            block_out_channels=widths,
            layers_per_block=cfg.num_res_blocks,
            norm_num_groups=cfg.norm_groups,
            double_z=False,
        )
        self.quant_conv = nn.Conv2d(cfg.z_channels, cfg.embed_dim, 1)
        self.codebook = nn.Parameter(torch.zeros(cfg.n_embed, cfg.embed_dim))
        self.embedding_change = embedding_change

    def load_release_state(self, sd: dict[str, torch.Tensor]) -> None:
        """Load a taming-layout ``vqvae_LQ`` state dict (prefix stripped).

        Every encoder weight must be present (``RuntimeError`` naming the missing ones); extra
        encoder keys are logged and ignored, as the release itself loads with ``strict=False``.
        """
        enc = taming_to_diffusers({k[8:]: v for k, v in sd.items() if k.startswith("encoder.")})
        result = self.encoder.load_state_dict(enc, strict=False)
        if result.missing_keys:
            raise RuntimeError(f"missing encoder weights (diffusers names): {result.missing_keys}")
        if result.unexpected_keys:
            log.warning("ignoring unused VRE encoder weights: %s", result.unexpected_keys)
        self.quant_conv.load_state_dict(
            {"weight": sd["quant_conv.weight"], "bias": sd["quant_conv.bias"]}
        )
        self.codebook.data.copy_(sd[CODEBOOK_KEY])

    def features(self, lq: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) in [-1, 1] → (B, P, embed_dim) grid features (row-major positions).

        Reproduces the release's quirk: its encoder re-normalises the already-[-1, 1] input
        with ``(x - 0.5) / 0.5``, so the encoder sees values in [-3, 1].
        """
        h = self.quant_conv(self.encoder((lq - 0.5) / 0.5))
        return h.flatten(2).transpose(1, 2)

    def forward(self, lq: torch.Tensor) -> torch.Tensor:
        codes, valid = select_codes(self.features(lq), self.codebook, self.cfg.n_tokens)
        tokens = self.codebook[codes] * valid.unsqueeze(-1).to(self.codebook.dtype)
        return self.embedding_change(tokens)
