"""The stage loop: :class:`Trainer` runs the stages of :data:`~osdface_rtc.train.config.STAGES`
on :class:`~osdface_rtc.train.inputs.TrainData`, with checkpoints and a loss log.

Stage A ``vae``   – the VAE alone on sharp HQ faces (no skips, image head): L1 + Laplacian-pyramid
                    loss + a small latent L2 penalty; then ``latent_scale`` = 1/std of HQ latents.
Stage B ``vre``   – the VRE encoder on HQ faces learns features that predict the HQ latent (a
                    linear read-out per grid cell); half-way the codebook is k-means initialised on
                    HQ features, then trained VQ-style (codebook + commitment losses).
Stage C ``main``  – the whole restorer on (LQ, HQ) pairs, one step at the fixed t: pixel L1 +
                    Laplacian-pyramid L1 (perceptual substitute, no pretrained nets exist offline)
                    + association (LQ VRE features → the HQ face's code, frozen HQ VRE copy)
                    + after ``disc_start`` a hinge patch-GAN term and discriminator feature
                    matching. The codebook is frozen.

An EMA of the weights (diffusers' ``EMAModel``, restarted at every stage) is what gets
validated and shipped. ``TrainConfig.init`` starts stage C from a saved model, re-targeted to
``init_face_size`` by :func:`retarget` when given. Checkpoints are read with
``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import copy
import json
import logging
import math
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.training_utils import EMAModel
from torch import nn

from ..device import resolve_device
from ..evaluate.metrics import face_mask, mean_scores
from ..model.network import OSDFaceNet
from ..model.restorer import to_tensor
from .card import plot_losses, run_model
from .config import STAGES, TrainConfig
from .inputs import TrainData, batches
from .losses import PatchDiscriminator, kmeans, laplacian_pyramid_l1

log = logging.getLogger("osdface_rtc")


def retarget(net: OSDFaceNet, face_size: int) -> OSDFaceNet:
    """The same weights as a model for another face size.

    Every layer of :class:`OSDFaceNet` is convolutional or attention over tokens, so the weights
    do not depend on the face size; only the VRE grid scales with it (``face_size / grid`` stays
    the same power of two, e.g. 128/8 -> 160/10 or 192/12). Fine-tune afterwards: the features
    were learned at the old scale.
    """
    cfg = {k: v for k, v in net.config.items() if not k.startswith("_")}
    cell = cfg["face_size"] // cfg["vre_grid"]
    if face_size % cell:
        raise ValueError(f"face size {face_size} is not a multiple of the VRE cell {cell}px")
    new = OSDFaceNet(**{**cfg, "face_size": int(face_size), "vre_grid": face_size // cell})
    new.load_state_dict(net.state_dict(), strict=True)
    return new


class Trainer:
    """Runs the stages with checkpoints (``ckpt.pt``), a JSONL loss log and a loss plot.

    ``net`` is the network being trained; ``ema`` (diffusers' ``EMAModel``) its moving average,
    which :meth:`ema_model` turns into the model that gets shipped.
    """

    def __init__(self, cfg: TrainConfig, resume: bool = False):
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.device = resolve_device(cfg.device)
        self.amp_dtype = torch.bfloat16 if (cfg.amp and self.device.type == "cuda") else None
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        if cfg.init:
            from ..model.network import load_network

            self.net = load_network(cfg.init)
            if cfg.init_face_size and cfg.init_face_size != self.net.config.face_size:
                self.net = retarget(self.net, cfg.init_face_size)
            self.net.train()
            cfg.model = {k: v for k, v in self.net.config.items() if not k.startswith("_")}
        else:
            self.net = OSDFaceNet(**cfg.model)
        self.net.to(self.device)
        self.ema = self._new_ema()
        self.vre_hq = copy.deepcopy(self.net.vre).requires_grad_(False).eval()
        code_dim, grid = self.net.config.code_dim, self.net.config.vre_grid
        f = 2 ** (len(self.net.config.vae_channels) - 1)
        cell = (self.net.config.face_size // f // grid) ** 2 * self.net.config.latent_channels
        self.latent_head = nn.Linear(code_dim, cell).to(self.device)  # stage B read-out only
        self.disc = PatchDiscriminator(cfg.disc_channels).to(self.device)
        self.stage, self.step = ("main", 0) if cfg.init else ("vae", 0)
        self.main_minutes = 0.0  # wall time spent in stage "main" (persists across --resume)
        self.opt = self._make_opt()
        self.opt_d = torch.optim.AdamW(self.disc.parameters(), cfg.lr_disc, betas=(0.5, 0.9))
        self.log_file = self.out / "loss_log.jsonl"
        self.started = time.time()
        if resume:
            self.load_checkpoint()
        elif self.log_file.exists():
            self.log_file.unlink()
        (self.out / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2))

    # --- optimisers / checkpoints -----------------------------------------------------------
    def _make_opt(self) -> torch.optim.Optimizer:
        net = self.net
        if self.stage == "vae":
            params = [*net.encoder.parameters(), *net.decoder.parameters()]
        elif self.stage == "vre":
            params = [*net.vre.encoder.parameters(), net.vre.codebook, *self.latent_head.parameters()]
        else:
            params = [p for n, p in net.named_parameters() if n != "vre.codebook"]
        return torch.optim.AdamW(params, self.cfg.lr, betas=(0.9, 0.99), weight_decay=0.0)

    def state(self) -> dict:
        return dict(stage=self.stage, step=self.step, net=self.net.state_dict(),
                    ema=self.ema.state_dict(), vre_hq=self.vre_hq.state_dict(),
                    latent_head=self.latent_head.state_dict(), disc=self.disc.state_dict(),
                    opt=self.opt.state_dict(), opt_d=self.opt_d.state_dict(),
                    main_minutes=self.main_minutes, config=asdict(self.cfg))

    def save_checkpoint(self) -> None:
        """``ckpt.pt``: ``ema`` is the ``EMAModel`` state. With ``slim_ckpt`` only the EMA model's
        state dict (bf16), the small modules and counters: a resume then restarts the trained net
        from the EMA with fresh optimiser moments."""
        st = self.state()
        if self.cfg.slim_ckpt:
            def half(sd: dict) -> dict:
                return {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in sd.items()}
            st = {k: v for k, v in st.items() if k not in ("net", "opt", "opt_d")}
            st.update(ema=half(self.ema_model().state_dict()), disc=half(st["disc"]), slim=True)
        tmp = self.out / "ckpt.pt.tmp"
        torch.save(st, tmp)
        tmp.replace(self.out / "ckpt.pt")

    def load_checkpoint(self) -> None:
        """Continue from ``ckpt.pt`` (also one written before the EMA was diffusers' ``EMAModel``,
        whose ``ema`` was the EMA model's state dict)."""
        path = self.out / "ckpt.pt"
        if not path.exists():
            raise FileNotFoundError(f"--resume: no checkpoint at {path}")
        st = torch.load(path, map_location=self.device, weights_only=True)
        if st.get("slim"):
            self.net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in st["ema"].items()})
            self.ema = self._new_ema()
            self.disc.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in st["disc"].items()})
            self.vre_hq.load_state_dict(st["vre_hq"])
            self.latent_head.load_state_dict(st["latent_head"])
            self.stage, self.step = st["stage"], st["step"]
            self.main_minutes = float(st.get("main_minutes", 0.0))
            self.opt = self._make_opt()
            log.info("resumed slim %s at stage %s step %d (net from EMA, fresh optimiser)", path, self.stage, self.step)
            return
        self.net.load_state_dict(st["net"])
        self.load_ema(st["ema"])
        self.vre_hq.load_state_dict(st["vre_hq"])
        self.latent_head.load_state_dict(st["latent_head"])
        self.disc.load_state_dict(st["disc"])
        self.stage, self.step = st["stage"], st["step"]
        self.main_minutes = float(st.get("main_minutes", 0.0))
        self.opt = self._make_opt()
        self.opt.load_state_dict(st["opt"])
        self.opt_d.load_state_dict(st["opt_d"])
        log.info("resumed %s at stage %s step %d", path, self.stage, self.step)

    def log_row(self, row: dict) -> None:
        row = dict(stage=self.stage, step=self.step, minutes=round((time.time() - self.started) / 60, 3), **row)
        with self.log_file.open("a") as fh:
            fh.write(json.dumps(row) + "\n")

    # --- helpers ----------------------------------------------------------------------------
    def tensors(self, lq: np.ndarray, hq: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return (to_tensor(lq, self.device, torch.float32), to_tensor(hq, self.device, torch.float32))

    def autocast(self):
        if self.amp_dtype is None:
            return torch.autocast("cpu", enabled=False)
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    # --- EMA -------------------------------------------------------------------------------
    def _new_ema(self) -> EMAModel:
        """An EMA starting at the net's current weights."""
        return EMAModel(self.net.parameters(), decay=self.cfg.ema_decay)

    def load_ema(self, state: dict) -> None:
        """The EMA from a checkpoint: an ``EMAModel`` state, or an old EMA model state dict."""
        if "shadow_params" in state:
            self.ema.load_state_dict(state)
            self.ema.decay = self.cfg.ema_decay  # the config wins, as for every other knob
            return
        model = copy.deepcopy(self.net)
        model.load_state_dict(state)
        self.ema = EMAModel(model.parameters(), decay=self.cfg.ema_decay)

    def update_ema(self) -> None:
        """One EMA step at decay ``min(ema_decay, (1 + step) / (10 + step))`` (step = this
        stage's step, counted from 1): ``EMAModel``'s schedule with its counter set to the step."""
        self.ema.optimization_step = self.step
        self.ema.step(self.net.parameters())

    def ema_model(self) -> OSDFaceNet:
        """A copy of the net holding the EMA weights (eval mode): what gets validated and shipped."""
        model = copy.deepcopy(self.net).eval()
        model.zero_grad(set_to_none=True)
        self.ema.copy_to(model.requires_grad_(False).parameters())
        return model

    def hq_latent_cells(self, hq: torch.Tensor) -> torch.Tensor:
        """Scaled HQ latent cut into the VRE grid: (N, G·G, cell) read-out targets."""
        with torch.no_grad():
            z, _ = self.net.encode(hq)
            z = z * self.net.latent_scale
        g = self.net.config.vre_grid
        n, c, h, w = z.shape
        z = z.reshape(n, c, g, h // g, g, w // g).permute(0, 2, 4, 1, 3, 5)
        return z.reshape(n, g * g, -1)

    # --- stages -----------------------------------------------------------------------------
    def step_vae(self, lq: torch.Tensor, hq: torch.Tensor) -> dict:
        with self.autocast():
            rec, z = self.net.autoencode(hq)
        rec = rec.float()
        l1 = (rec - hq).abs().mean()
        lap = laplacian_pyramid_l1(rec, hq)
        lat = z.float().pow(2).mean()
        loss = l1 + self.cfg.w_lap * lap + self.cfg.w_latent * lat
        self.backward(loss)
        return dict(loss=loss.item(), l1=l1.item(), lap=lap.item(), latent=lat.item())

    def step_vre(self, lq: torch.Tensor, hq: torch.Tensor) -> dict:
        vre, half = self.net.vre, self.cfg.steps["vre"] // 2
        target = self.hq_latent_cells(hq)
        feats = vre.features(hq)
        if self.step < half:
            pred, vq = self.latent_head(feats), feats.new_zeros(())
        else:
            codes, idx = vre.quantize(feats)
            raw = vre.codebook[idx]
            vq = (raw - feats.detach()).pow(2).mean() + self.cfg.w_commit * (feats - raw.detach()).pow(2).mean()
            pred = self.latent_head(codes)
        rec = F.mse_loss(pred, target)
        self.backward(rec + vq)
        return dict(loss=(rec + vq).item(), latent_mse=rec.item(), vq=vq.item())

    def step_main(self, lq: torch.Tensor, hq: torch.Tensor) -> dict:
        c, net = self.cfg, self.net
        gan = self.step >= c.disc_start and (c.w_adv > 0 or c.w_fm > 0)
        with self.autocast():
            feats = net.vre.features(lq)
            codes, _ = net.vre.quantize(feats)
            out = net(lq, prompt=net.vre.prompt(codes))
        out, feats = out.float(), feats.float()
        with torch.no_grad():
            hq_codes, _ = self.vre_hq.quantize(self.vre_hq.features(hq))
        l1 = (out - hq).abs().mean()
        lap = laplacian_pyramid_l1(out, hq)
        assoc = F.mse_loss(feats, hq_codes)
        loss = l1 + c.w_lap * lap + c.w_assoc * assoc
        row = dict(l1=l1.item(), lap=lap.item(), assoc=assoc.item())
        if gan:
            self.disc.requires_grad_(False)
            logits, f_fake = self.disc(out)
            with torch.no_grad():
                _, f_real = self.disc(hq)
            adv = -logits.mean()
            fm = sum((a - b).abs().mean() for a, b in zip(f_fake, f_real)) / len(f_fake)
            loss = loss + c.w_adv * adv + c.w_fm * fm
            row.update(adv=adv.item(), fm=fm.item())
        self.backward(loss)
        if gan:
            self.disc.requires_grad_(True)
            real, _ = self.disc(hq)
            fake, _ = self.disc(out.detach())
            d_loss = F.relu(1 - real).mean() + F.relu(1 + fake).mean()
            self.opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            self.opt_d.step()
            row["d_loss"] = d_loss.item()
        return dict(loss=loss.item(), **row)

    def main_progress(self) -> float:
        """Fraction of the main stage done: by steps, or by minutes when ``max_minutes`` is set."""
        c = self.cfg
        frac = self.step / max(1, int(c.steps.get("main", 0)))
        if c.max_minutes:
            frac = max(frac, self.main_minutes / c.max_minutes)
        return min(frac, 1.0)

    def set_main_lr(self) -> None:
        """Constant LR, then cosine decay to ``lr_final``·lr after ``lr_decay_from``."""
        c = self.cfg
        u = max(0.0, (self.main_progress() - c.lr_decay_from) / max(1e-9, 1 - c.lr_decay_from))
        factor = c.lr_final + (1 - c.lr_final) * 0.5 * (1 + math.cos(math.pi * u))
        for g in self.opt.param_groups:
            g["lr"] = c.lr * factor

    def backward(self, loss: torch.Tensor) -> None:
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for g in self.opt.param_groups for p in g["params"]], 1.0)
        self.opt.step()

    def end_of_stage(self, data: TrainData) -> None:
        """Stage transitions: latent scale after A, k-means mid-B, frozen HQ VRE copy after B."""
        net = self.net
        if self.stage == "vae":
            with torch.no_grad():
                x = to_tensor(data.hq[:256], self.device, torch.float32)
                z = torch.cat([net.encode(x[i:i + 32])[0] for i in range(0, len(x), 32)])
                net.latent_scale.fill_(1.0 / float(z.std().clamp_min(1e-6)))
            log.info("latent scale %.4f", float(net.latent_scale))
        elif self.stage == "vre":
            self.vre_hq.load_state_dict(net.vre.state_dict())

    def init_codebook(self, data: TrainData) -> None:
        """k-means on HQ VRE features (stage B, half-way)."""
        vre = self.net.vre
        with torch.no_grad():
            x = to_tensor(data.hq[: self.cfg.kmeans_faces], self.device, torch.float32)
            feats = torch.cat([vre.features(x[i:i + 64]) for i in range(0, len(x), 64)]).flatten(0, 1)
            vre.codebook.copy_(kmeans(feats.cpu(), vre.codebook.shape[0], seed=self.cfg.seed).to(self.device))
        log.info("codebook k-means initialised on %d features", len(feats))

    @torch.no_grad()
    def validate(self, data: TrainData, model: OSDFaceNet | None = None) -> dict[str, float]:
        """Face-region PSNR of the (EMA) model on the fixed val pairs, per level (the evaluation's
        :func:`~osdface_rtc.evaluate.metrics.mean_scores`)."""
        model = model or self.ema_model()
        mask = face_mask(data.val_hq.shape[1])
        return {f"psnr_{lv}": mean_scores(run_model(model, lq, self.device), hq, mask)[0]
                for lv, (lq, hq) in data.val.items()}

    def run(self, data: TrainData, deadline: float | None = None) -> OSDFaceNet:
        """Run (or continue) every stage; returns the EMA model (what gets shipped).

        ``deadline`` (a ``time.time()`` value): stop this call there with a checkpoint, to be
        continued with ``--resume`` (e.g. one device call of a few minutes at a time)."""
        from tqdm import tqdm

        c = self.cfg
        for stage in STAGES[STAGES.index(self.stage):]:
            if stage != self.stage:
                self.stage, self.step = stage, 0
                self.opt = self._make_opt()
            total = int(c.steps.get(stage, 0))
            fn = {"vae": self.step_vae, "vre": self.step_vre, "main": self.step_main}[stage]
            bar = tqdm(total=total, initial=self.step, desc=stage, disable=not c.progress)
            it = batches(data, c.batch_size, c.seed + STAGES.index(stage), self.step)
            t_last = time.time()
            while self.step < total:
                if deadline is not None and time.time() > deadline:
                    log.info("this call's time is up at %s step %d: checkpoint saved, --resume continues",
                             stage, self.step)
                    bar.close()
                    self.save_checkpoint()
                    plot_losses(self.log_file, self.out / "loss.png")
                    return self.ema_model()
                if stage == "vre" and self.step == total // 2:
                    self.init_codebook(data)
                if stage == "main":
                    now = time.time()
                    self.main_minutes += (now - t_last) / 60
                    t_last = now
                    if c.max_minutes and self.main_minutes > c.max_minutes:
                        log.info("max_minutes reached at main step %d", self.step)
                        break
                    self.set_main_lr()
                lq, hq = self.tensors(*next(it))
                self.net.train()
                row = fn(lq, hq)
                self.step += 1
                self.update_ema()
                bar.update(1)
                if self.step % c.log_every == 0 or self.step == total:
                    bar.set_postfix(loss=f"{row['loss']:.4f}")
                    self.log_row(dict(row, lr=self.opt.param_groups[0]["lr"]))
                if stage == "main" and self.step % c.eval_every == 0:
                    self.log_row(self.validate(data))
                if self.step % c.ckpt_every == 0:
                    self.save_checkpoint()
                    plot_losses(self.log_file, self.out / "loss.png")
            bar.close()
            if stage != "main":
                self.end_of_stage(data)
                self.ema = self._new_ema()
            self.save_checkpoint()
        plot_losses(self.log_file, self.out / "loss.png")
        return self.ema_model()
