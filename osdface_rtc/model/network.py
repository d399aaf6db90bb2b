"""The restorer network trained here: the OSDFace one-step formulation at video-call sizes.

::

    LQ face ──► VAE encoder (f=4, C latent ch) ──► z_L ─► UNet(z_L, t=399, prompt) ─► ε̂
       │              │ skip features                              x0 = (z_L − √(1−ᾱ)ε̂)/√ᾱ
       │              ▼                                                      │
       │        decoder(x0, skips) ──► residual ──► out = LQ + residual ◄───┘
       └─► VRE: conv encoder ─► G×G features ─► nearest codebook entries ─► 1×1 convs ─► prompt

Everything is built from diffusers blocks (``Encoder``/``Decoder`` from
``diffusers.models.autoencoders.vae`` and ``UNet2DConditionModel``); there is no text encoder:
the VRE's quantised visual tokens are the UNet's cross-attention context, as in OSDFace.

Differences from the paper (each measured or forced by the live budget, see the model card):

- the latent is f=4 with more channels (an f=8 latent loses too much at 128² faces);
- the decoder receives the LQ encoder's features (zero-initialised 1×1 skips) and predicts a
  **residual** on top of the LQ face through a zero-initialised head, so an untrained or weak
  model starts as the identity and a good input is not made worse;
- the encoder outputs a deterministic latent (no sampling, no KL posterior);
- all G×G quantised tokens are kept (in grid order) instead of the 77 unique nearest codes.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import ConfigMixin, ModelMixin, UNet2DConditionModel
from diffusers.configuration_utils import register_to_config
from diffusers.models.autoencoders.vae import Decoder, Encoder
from safetensors.torch import load_file
from torch import nn

from .formulation import DEFAULT_TIMESTEP, alpha_bar, iterative_denoise, make_scheduler

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"


class VisualRepresentationEmbedder(nn.Module):
    """VRE: conv encoder → G×G features → nearest codebook entries → prompt tokens.

    The codebook is learned on HQ faces (k-means, see the trainer); the encoder here sees the
    LQ face and is trained to land on the code its HQ counterpart would pick ("association").
    """

    def __init__(self, channels: int, grid: int, face_size: int, codebook_size: int, code_dim: int,
                 prompt_dim: int):
        super().__init__()
        n_down = (face_size // grid).bit_length() - 1
        if n_down < 1 or grid << n_down != face_size:
            raise ValueError(f"face_size {face_size} must be grid {grid} times a power of two")
        layers: list[nn.Module] = []
        c_in = 3
        for _ in range(n_down):
            layers += [nn.Conv2d(c_in, channels, 4, stride=2, padding=1), nn.SiLU()]
            c_in = channels
        layers.append(nn.Conv2d(channels, code_dim, 1))
        self.encoder = nn.Sequential(*layers)
        self.codebook = nn.Parameter(torch.randn(codebook_size, code_dim) * 0.1)
        self.to_prompt = nn.Sequential(
            nn.Conv1d(code_dim, prompt_dim, 1), nn.SiLU(), nn.Conv1d(prompt_dim, prompt_dim, 1)
        )

    def features(self, lq: torch.Tensor) -> torch.Tensor:
        """LQ face (N,3,S,S) in [-1,1] → (N, G·G, code_dim) features."""
        return self.encoder(lq).flatten(2).transpose(1, 2)

    def quantize(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Nearest codebook entries (straight-through gradient) and their indices."""
        cb = self.codebook.to(feats.dtype)
        dist = (feats.pow(2).sum(-1, keepdim=True) - 2 * feats @ cb.t() + cb.pow(2).sum(-1))
        idx = dist.argmin(-1)
        codes = cb[idx]
        return feats + (codes - feats).detach(), idx

    def prompt(self, codes: torch.Tensor) -> torch.Tensor:
        """(N, T, code_dim) codes → (N, T, prompt_dim) cross-attention context."""
        return self.to_prompt(codes.transpose(1, 2)).transpose(1, 2)

    def forward(self, lq: torch.Tensor) -> torch.Tensor:
        codes, _ = self.quantize(self.features(lq))
        return self.prompt(codes)


class OSDFaceNet(ModelMixin, ConfigMixin):
    """One-step face restorer: ``forward(lq) -> restored`` on (N,3,S,S) tensors in [-1, 1]."""

    config_name = CONFIG_NAME

    @register_to_config
    def __init__(
        self,
        face_size: int = 128,
        latent_channels: int = 8,
        vae_channels: tuple[int, ...] = (32, 64, 64),
        vae_layers_per_block: int = 1,
        decoder_layers_per_block: int = 0,
        unet_channels: tuple[int, ...] = (64, 128),
        unet_layers_per_block: int = 1,
        unet_attn_levels: int = 1,
        attention_head_dim: int = 32,
        prompt_dim: int = 128,
        vre_channels: int = 48,
        vre_grid: int = 8,
        codebook_size: int = 256,
        code_dim: int = 64,
        timestep: int = DEFAULT_TIMESTEP,
        norm_num_groups: int = 16,
    ):
        super().__init__()
        vae_channels = tuple(vae_channels)
        n = len(vae_channels)
        if face_size % (2 ** (n - 1)):
            raise ValueError(f"face_size {face_size} not divisible by the VAE factor {2 ** (n - 1)}")
        self.encoder = Encoder(3, latent_channels, ("DownEncoderBlock2D",) * n, vae_channels,
                               vae_layers_per_block, norm_num_groups, double_z=False,
                               mid_block_add_attention=False)
        self.decoder = Decoder(latent_channels, 3, ("UpDecoderBlock2D",) * n, vae_channels,
                               decoder_layers_per_block, norm_num_groups,
                               mid_block_add_attention=False)
        # Skip k feeds decoder up-block k from the encoder feature at the same resolution.
        enc_feat_ch = [vae_channels[0]] + list(vae_channels[:-1])  # conv_in, then down-blocks
        self.skips = nn.ModuleList(
            nn.Conv2d(enc_feat_ch[n - 1 - i], blk.resnets[0].in_channels, 1)
            for i, blk in enumerate(self.decoder.up_blocks)
        )
        self.residual_out = nn.Conv2d(vae_channels[0], 3, 3, padding=1)
        for conv in [*self.skips, self.residual_out]:
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)
        n_plain = len(unet_channels) - unet_attn_levels  # attention only at the coarse levels
        self.unet = UNet2DConditionModel(
            sample_size=face_size // 2 ** (n - 1),
            in_channels=latent_channels,
            out_channels=latent_channels,
            down_block_types=("DownBlock2D",) * n_plain + ("CrossAttnDownBlock2D",) * unet_attn_levels,
            up_block_types=("CrossAttnUpBlock2D",) * unet_attn_levels + ("UpBlock2D",) * n_plain,
            block_out_channels=tuple(unet_channels),
            layers_per_block=unet_layers_per_block,
            cross_attention_dim=prompt_dim,
            attention_head_dim=attention_head_dim,
            norm_num_groups=norm_num_groups,
        )
        self.vre = VisualRepresentationEmbedder(vre_channels, vre_grid, face_size, codebook_size,
                                                code_dim, prompt_dim)
        #: 1/std of HQ latents (set after the VAE stage, like SD's ``scaling_factor``).
        self.register_buffer("latent_scale", torch.ones(()))
        self.scheduler = make_scheduler()
        self.alpha_bar = alpha_bar(self.scheduler, timestep)

    # --- VAE -------------------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Face → (unscaled latent, skip features from high to low resolution)."""
        enc = self.encoder
        h = enc.conv_in(x)
        feats = [h]
        for blk in enc.down_blocks:
            h = blk(h)
            feats.append(h)
        h = enc.conv_out(enc.conv_act(enc.conv_norm_out(enc.mid_block(h))))
        return h, feats[:-1]

    def decode_features(self, z: torch.Tensor, skips: list[torch.Tensor] | None) -> torch.Tensor:
        """Latent (+ optional encoder skips) → full-resolution decoder features."""
        dec = self.decoder
        h = dec.mid_block(dec.conv_in(z), None)
        n = len(dec.up_blocks)
        for i, blk in enumerate(dec.up_blocks):
            if skips is not None:
                h = h + self.skips[i](skips[n - 1 - i])
            h = blk(h, None)
        return dec.conv_act(dec.conv_norm_out(h))

    def autoencode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Plain VAE path (no skips, image head), used to pre-train the latent: (recon, z)."""
        z, _ = self.encode(x)
        return self.decoder.conv_out(self.decode_features(z, None)), z

    # --- one-step restoration ---------------------------------------------------------------
    def eps(self, z_t: torch.Tensor, t: int, prompt: torch.Tensor) -> torch.Tensor:
        """ε̂ = UNet(z_t, t, prompt)."""
        tt = torch.full((z_t.shape[0],), int(t), device=z_t.device, dtype=torch.long)
        return self.unet(z_t, tt, encoder_hidden_states=prompt, return_dict=False)[0]

    def restore_latent(self, z_l: torch.Tensor, prompt: torch.Tensor, steps: int = 1) -> torch.Tensor:
        """Scaled LQ latent → x0 (one step, or IDM's iterative mode for ``steps > 1``)."""
        t0 = int(self.config.timestep)
        return iterative_denoise(
            z_l, lambda z, t: self.eps(z, t, prompt), self.scheduler, t0, steps
        )

    def forward(self, lq: torch.Tensor, steps: int = 1, prompt: torch.Tensor | None = None) -> torch.Tensor:
        """LQ faces (N,3,S,S) in [-1,1] → restored faces (unclamped, same range)."""
        z, skips = self.encode(lq)
        if prompt is None:
            prompt = self.vre(lq)
        x0 = self.restore_latent(z * self.latent_scale, prompt, steps)
        feats = self.decode_features(x0 / self.latent_scale, skips)
        return lq + self.residual_out(feats)


def load_network(path: str | Path) -> OSDFaceNet:
    """Strictly load a saved ``OSDFaceNet`` folder (every key present, every shape matching).

    Raises ``FileNotFoundError`` / ``ValueError`` / ``RuntimeError`` with the file named; the
    restorer turns those into ``RestorerError``.
    """
    path = Path(path)
    cfg_file, w_file = path / CONFIG_NAME, path / WEIGHTS_NAME
    for f in (cfg_file, w_file):
        if not f.is_file():
            raise FileNotFoundError(f"missing model file {f}")
    try:
        config = json.loads(cfg_file.read_text())
        model = OSDFaceNet.from_config(config)
    except Exception as e:  # noqa: BLE001 - any config problem is reported with its file
        raise ValueError(f"bad model config {cfg_file}: {e}") from e
    try:
        state = load_file(str(w_file))
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"cannot read weights {w_file}: {e}") from e
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ValueError(f"weights {w_file} do not match config {cfg_file}: {e}") from e
    return model.eval()


__all__ = ["OSDFaceNet", "VisualRepresentationEmbedder", "load_network", "CONFIG_NAME",
           "WEIGHTS_NAME"]
