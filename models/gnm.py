"""GNM, Generative Neurosymbolic Machines (Jiang & Ahn 2020), written from the official code's behaviour (docs/methods/gnm.md).

A global latent z^g (StructDRAW on a G x G grid) generates a structured symbolic map z^s (per cell:
``z_pres``, ``z_where``, ``z_depth``, ``z_what``) and a background latent ``z_bg``; glimpses decoded
from ``z_what`` are pasted by spatial transformers and composited by depth over the background.
Training maximises the ELBO with annealed betas and auxiliary KLs to fixed priors (docs/methods/gnm.md).
Images are in [0, 1]. The model's current training step (``set_step``, called by the Trainer)
drives every schedule and the 500-step curriculum; it is a buffer, so checkpoints keep it.
"""
from __future__ import annotations

import argparse
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Normal, RelaxedBernoulli
from torch.distributions.utils import clamp_probs

from ground.errors import UserError
from ground.schedules import LinearAnneal
from models import noise
from models.gnm_nets import (
    BackgroundDecoder, GlimpseDecoder, ImageEncoder, LocalLatentHead, StructDRAW, gaussian_params, mlp,
)
from models.gnm_render import (
    boxes_from_where, composite, decode_where, draw_boxes, masks_with_background, num_upsamplings, paste,
)

# Fixed prior of the auxiliary where-KL (docs/methods/gnm.md): mean and std of (scale, ratio, shift x, shift y).
AUX_WHERE_MEAN: tuple[float, ...] = (-1.5, 0.0, 0.0, 0.0)
AUX_WHERE_STD: tuple[float, ...] = (0.1, 0.3, 1.0, 1.0)
PRES_WEIGHT_MIN = 1e-5  # z_pres floor when it weights the auxiliary KLs
CURRICULUM_MAX_PRES = 0.99
CURRICULUM_ALPHA = 0.9

# Every schedule: [start_value, end_value, start_step, end_step] or [constant] (docs/methods/gnm.md).
SCHEDULES: dict[str, list[float]] = {
    "beta_global": [0.0, 1.0, 0, 100_000],
    "beta_pres": [1.0], "beta_where": [1.0], "beta_depth": [1.0], "beta_what": [1.0], "beta_bg": [1.0],
    "beta_aux_pres": [1.0],
    "beta_aux_where": [10.0, 1.0, 0, 500],
    "beta_aux_depth": [1.0], "beta_aux_what": [1.0],
    "beta_aux_bg": [50.0, 1.0, 0, 50_000],
    "p_pres_prior": [0.1, 0.001, 0, 4_000],  # Bernoulli prior of the auxiliary pres-KL
    "tau_pres": [1.0, 0.5, 1_000, 20_000],  # RelaxedBernoulli temperature of z_pres
}
# KL term name -> its beta schedule.
KL_BETAS: dict[str, str] = {
    "kl_global": "beta_global", "kl_pres": "beta_pres", "kl_where": "beta_where", "kl_depth": "beta_depth",
    "kl_what": "beta_what", "kl_bg": "beta_bg", "aux_kl_pres": "beta_aux_pres", "aux_kl_where": "beta_aux_where",
    "aux_kl_depth": "beta_aux_depth", "aux_kl_what": "beta_aux_what", "aux_kl_bg": "beta_aux_bg",
}


def _schedule_field(name: str) -> Any:
    return field(default_factory=lambda: list(SCHEDULES[name]))


@dataclass
class GNMConfig:
    """Everything needed to rebuild a GNM model (stored in every checkpoint). Defaults: the official arrow configuration."""

    image_size: int = 128
    grid_size: int = 4
    enc_dim: int = 128  # image encoding / canvas / latent-head channels
    draw_hidden: int = 128  # ConvLSTM hidden channels
    draw_steps: int = 4
    z_global_dim: int = 32  # per draw step
    z_what_dim: int = 64
    z_bg_dim: int = 10
    mlp_hidden: int = 512
    likelihood_sigma: float = 0.2
    curriculum_steps: int = 500
    # Explicit layer lists, as the original GNM configuration writes them; empty = derived from the
    # sizes above (the default architecture). Set when importing a released model
    # (docs/released_models.md); every list's last entry is that network's output width.
    encoder_filters: list[int] = field(default_factory=list)
    encoder_kernels: list[int] = field(default_factory=list)
    encoder_strides: list[int] = field(default_factory=list)
    draw_stat_hidden: list[int] = field(default_factory=list)  # hidden widths of StructDRAW's q/p nets
    draw_map_hidden: list[int] = field(default_factory=list)  # hidden widths of its z -> map MLP
    head_hidden: list[int] = field(default_factory=list)  # 1x1 conv widths of the latent head
    glimpse_filters: list[int] = field(default_factory=list)
    glimpse_kernels: list[int] = field(default_factory=list)
    glimpse_upscales: list[int] = field(default_factory=list)
    bg_filters: list[int] = field(default_factory=list)
    bg_kernels: list[int] = field(default_factory=list)
    bg_upscales: list[int] = field(default_factory=list)
    bg_posterior_hidden: list[int] = field(default_factory=list)
    bg_prior_hidden: list[int] = field(default_factory=list)
    # Official behaviour (docs/methods/gnm.md); checkpoints written before these fields existed
    # lack them and get False (models.FIELDS_ADDED_IN_FORMAT_2): their architecture and rendering.
    draw_map_norm: bool = True  # StructDRAW's z -> map MLP ends with CELU + LayerNorm
    paste_premultiplied: bool = True  # paste alpha * rgb (one transform), not alpha and rgb apart
    beta_global: list[float] = _schedule_field("beta_global")
    beta_pres: list[float] = _schedule_field("beta_pres")
    beta_where: list[float] = _schedule_field("beta_where")
    beta_depth: list[float] = _schedule_field("beta_depth")
    beta_what: list[float] = _schedule_field("beta_what")
    beta_bg: list[float] = _schedule_field("beta_bg")
    beta_aux_pres: list[float] = _schedule_field("beta_aux_pres")
    beta_aux_where: list[float] = _schedule_field("beta_aux_where")
    beta_aux_depth: list[float] = _schedule_field("beta_aux_depth")
    beta_aux_what: list[float] = _schedule_field("beta_aux_what")
    beta_aux_bg: list[float] = _schedule_field("beta_aux_bg")
    p_pres_prior: list[float] = _schedule_field("p_pres_prior")
    tau_pres: list[float] = _schedule_field("tau_pres")

    @classmethod
    def from_args(cls, args: Any) -> "GNMConfig":
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def num_cells(self) -> int:
        return self.grid_size * self.grid_size

    @property
    def glimpse_size(self) -> int:
        """Half the image side, as the 64-px glimpses of the official configuration for 128-px images."""
        return self.image_size // 2


def _check_layer_lists(config: GNMConfig) -> None:
    """Explicit layer lists (released models) must be complete and reach the sizes they feed."""
    groups = {"encoder": ("encoder_filters", "encoder_kernels", "encoder_strides"),
              "glimpse": ("glimpse_filters", "glimpse_kernels", "glimpse_upscales"),
              "bg": ("bg_filters", "bg_kernels", "bg_upscales")}
    for name, keys in groups.items():
        lists = [getattr(config, k) for k in keys]
        if any(lists) and len({len(v) for v in lists}) != 1:
            raise UserError(f"the {name} layer lists {', '.join(keys)} must have the same length")
    if config.encoder_filters:
        if math.prod(config.encoder_strides) * config.grid_size != config.image_size or \
                config.encoder_filters[-1] != config.enc_dim:
            raise UserError("encoder_strides must reduce image_size to grid_size, and encoder_filters end at enc_dim")
    if config.glimpse_filters and config.glimpse_filters[-1] != 4:
        raise UserError("glimpse_filters must end with 4 channels (RGB + alpha)")
    if config.bg_filters and (config.bg_filters[-1] != 3 or math.prod(config.bg_upscales) != config.image_size):
        raise UserError("bg_filters must end with 3 channels and bg_upscales multiply to image_size")


def check_config(config: GNMConfig) -> None:
    """Reject sizes and schedules that cannot work, with one line naming the flag to change."""
    _check_layer_lists(config)
    size, grid = config.image_size, config.grid_size
    if size not in (16, 32, 64, 128):
        raise UserError(f"--image_size {size} cannot be used by GNM: use 64 or 128 (32 or 16 for quick tests)")
    if grid < 1 or size % grid or (size // grid) & (size // grid - 1) or size // grid < 4:
        raise UserError(
            f"--grid_size {grid} does not divide --image_size {size} into cells of a power-of-two side >= 4 px; "
            f"use --grid_size 4 (or another power of two <= {size // 4})"
        )
    if config.likelihood_sigma <= 0:
        raise UserError("--likelihood_sigma must be positive (published runs use 0.2 to 0.7)")
    for name in SCHEDULES:
        values = getattr(config, name)
        if len(values) not in (1, 4):
            raise UserError(
                f"--{name} takes 1 value (constant) or 4 (start_value end_value start_step end_step), got {len(values)}"
            )
        if len(values) == 4 and any(v < 0 or v != int(v) for v in values[2:]):
            raise UserError(f"--{name}: the start and end steps must be whole numbers >= 0, got {values[2]} and {values[3]}")
        low = min(values[:2])
        if name == "tau_pres" and low <= 0:
            raise UserError("--tau_pres must stay positive (it is a temperature)")
        if name == "p_pres_prior" and not (0 < low and max(values[:2]) < 1):
            raise UserError("--p_pres_prior must stay inside (0, 1) (it is a Bernoulli probability)")
        if name.startswith("beta") and low < 0:
            raise UserError(f"--{name} must not be negative")


def sample_normal(mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Reparameterised sample of N(mean, std^2) (keyed in a training forward, models/noise.py)."""
    return mean + std * noise.randn_like(std, "gnm_normal")


def relaxed_bernoulli_rsample(tau: float, logits: torch.Tensor) -> torch.Tensor:
    """Reparameterised relaxed Bernoulli sample (``RelaxedBernoulli(tau, logits).rsample()``), with
    keyed uniforms in a training forward (models/noise.py) and the distribution's own draw otherwise."""
    uniforms = noise.rand(logits.shape[0], logits.shape[1:], "gnm_pres", logits.device, logits.dtype)
    if uniforms is None:
        return RelaxedBernoulli(torch.tensor(tau, device=logits.device), logits=logits).rsample()
    # The same formula as torch.distributions' LogitRelaxedBernoulli, then the sigmoid.
    probs = clamp_probs(torch.sigmoid(logits))
    uniforms = clamp_probs(uniforms)
    return torch.sigmoid((uniforms.log() - (-uniforms).log1p() + probs.log() - (-probs).log1p()) / tau)


def gaussian_kl(q_mean: torch.Tensor, q_std: torch.Tensor, p_mean: torch.Tensor, p_std: torch.Tensor) -> torch.Tensor:
    """Elementwise KL(N(q_mean, q_std^2) || N(p_mean, p_std^2))."""
    var_ratio = (q_std / p_std) ** 2
    return 0.5 * (var_ratio + ((q_mean - p_mean) / p_std) ** 2 - 1.0 - torch.log(var_ratio))


def bernoulli_kl(q_logits: torch.Tensor, p_logits: torch.Tensor) -> torch.Tensor:
    """Elementwise KL(Bernoulli(sigmoid(q_logits)) || Bernoulli(sigmoid(p_logits))), stable in logits."""
    q = torch.sigmoid(q_logits)
    return q * (F.logsigmoid(q_logits) - F.logsigmoid(p_logits)) + (1 - q) * (
        F.logsigmoid(-q_logits) - F.logsigmoid(-p_logits)
    )


class GNM(nn.Module):
    """GNM. ``forward(batch)`` returns ``loss`` (negative beta-weighted ELBO, batch mean), ``losses``,
    ``masks`` {"decoder": [B, 1 + G*G, H, W]} (background first), ``reconstruction`` [B, 3, H, W],
    ``background``, ``z_pres`` [B, G*G] and ``boxes`` [B, G*G, 4] (pixels, x0 y0 x1 y1)."""

    def __init__(self, config: GNMConfig) -> None:
        super().__init__()
        check_config(config)
        self.config = c = config
        self.encoder = ImageEncoder(num_upsamplings(c.image_size // c.grid_size, "cell size"), c.enc_dim,
                                    c.encoder_filters, c.encoder_kernels, c.encoder_strides)
        self.draw = StructDRAW(c.enc_dim, c.draw_hidden, c.grid_size, c.z_global_dim, c.draw_steps, c.mlp_hidden,
                               c.draw_stat_hidden, c.draw_map_hidden, map_norm=c.draw_map_norm)
        self.local_head = LocalLatentHead(c.enc_dim, c.enc_dim, c.z_what_dim, c.head_hidden)
        glimpse_stages = len(c.glimpse_filters) or num_upsamplings(c.glimpse_size, "glimpse size")
        self.glimpse_decoder = GlimpseDecoder(c.z_what_dim, glimpse_stages, c.glimpse_filters, c.glimpse_kernels,
                                              c.glimpse_upscales)
        bg_post = c.bg_posterior_hidden or [c.mlp_hidden, c.mlp_hidden // 2]
        bg_prior = c.bg_prior_hidden or [c.mlp_hidden // 4, c.mlp_hidden // 8]
        self.bg_posterior = mlp([c.enc_dim * c.num_cells, *bg_post, 2 * c.z_bg_dim])
        self.bg_prior = mlp([c.draw_steps * c.z_global_dim, *bg_prior, 2 * c.z_bg_dim])
        self.bg_decoder = BackgroundDecoder(c.z_bg_dim, c.image_size, c.bg_filters, c.bg_kernels, c.bg_upscales)
        self.schedules = {name: LinearAnneal.from_values(getattr(c, name)) for name in SCHEDULES}
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self.register_buffer("aux_where_mean", torch.tensor(AUX_WHERE_MEAN), persistent=False)
        self.register_buffer("aux_where_std", torch.tensor(AUX_WHERE_STD), persistent=False)

    def set_step(self, step: int) -> None:
        """Completed training steps, which drive the schedules and the curriculum (called by the Trainer)."""
        self.step.fill_(int(step))

    def current_step(self) -> int:
        """The step the schedules and the curriculum see: the official loop counts a training
        iteration before running it (the first forward is step 1), so in training mode this is
        one more than the completed steps; evaluation sees the completed steps."""
        return int(self.step) + (1 if self.training else 0)

    def schedule_values(self, step: int | None = None) -> dict[str, float]:
        step = self.current_step() if step is None else step
        return {name: schedule(step) for name, schedule in self.schedules.items()}

    # --- rendering ---------------------------------------------------------------------------
    def render(self, z_pres: torch.Tensor, z_where: torch.Tensor, z_depth: torch.Tensor, z_what: torch.Tensor,
               z_bg: torch.Tensor, force_alpha: float | None = None) -> dict[str, torch.Tensor]:
        """Latents ([B, N, .] per cell, z_bg [B, D]) -> composited image and its parts (see ``composite``)."""
        b, n = z_pres.shape
        size, centre = decode_where(z_where, self.config.grid_size)
        rgb, alpha = self.glimpse_decoder(z_what.reshape(b * n, -1))
        premultiplied = self.config.paste_premultiplied
        # Official: the product alpha * rgb is pasted, so a glimpse's edge fades as the pasted
        # weight w (pasting both apart and multiplying after fades as w^2).
        glimpses = torch.cat([rgb * alpha if premultiplied else rgb, alpha], dim=1).view(b, n, 4, *rgb.shape[-2:])
        full = paste(glimpses, size, centre, self.config.image_size)
        background = self.bg_decoder(z_bg)
        out = composite(full[:, :, :3], full[:, :, 3:], z_pres, z_depth.squeeze(-1), background, force_alpha,
                        premultiplied=premultiplied)
        out["background"] = background
        out["boxes"] = boxes_from_where(size, centre, self.config.image_size)
        return out

    def _in_curriculum(self) -> bool:
        return self.training and 0 < self.current_step() < self.config.curriculum_steps

    # --- inference -----------------------------------------------------------------------------
    def infer(self, image: torch.Tensor) -> dict[str, Any]:
        """Posterior and prior parameters for ``image`` [B, 3, H, W] in [0, 1]."""
        encoding = self.encoder(image)
        draw = self.draw(encoding)
        return {
            "draw": draw,
            "q": self.local_head(encoding),  # q(z^s | x): x only (pitfall 13)
            "p": self.local_head(draw["canvas"]),  # p(z^s | z^g)
            "q_bg": gaussian_params(self.bg_posterior(encoding.flatten(1))),
            "p_bg": gaussian_params(self.bg_prior(draw["z"].flatten(1))),
        }

    @staticmethod
    def _sample_gaussians(stats: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: sample_normal(stats[f"{k}_mean"], stats[f"{k}_std"]) for k in ("where", "depth", "what")}

    @noise.keyed_forward
    def forward(self, batch: dict[str, Any]) -> dict[str, Any]:
        image = batch["image"]
        sched = self.schedule_values()
        post = self.infer(image)
        q, p = post["q"], post["p"]
        z_pres = relaxed_bernoulli_rsample(sched["tau_pres"], q["pres_logits"])
        force_alpha = None
        if self._in_curriculum():
            z_pres = z_pres.clamp(max=CURRICULUM_MAX_PRES)
            force_alpha = CURRICULUM_ALPHA
        z = self._sample_gaussians(q)
        q_bg_mean, q_bg_std = post["q_bg"]
        z_bg = sample_normal(q_bg_mean, q_bg_std)
        rendered = self.render(z_pres, z["where"], z["depth"], z["what"], z_bg, force_alpha)
        recon = rendered["image"]

        sigma = self.config.likelihood_sigma
        log_like = Normal(recon, sigma).log_prob(image).flatten(1).sum(1)
        kl = self._kl_terms(post, z_pres, sched["p_pres_prior"])
        weighted = sum(sched[KL_BETAS[name]] * value for name, value in kl.items())
        loss = (-log_like + weighted).mean()
        elbo = log_like - sum(value for name, value in kl.items() if not name.startswith("aux"))
        losses = {
            "mse": F.mse_loss(recon, image).detach(),
            "log_like": log_like.mean().detach(),
            "elbo": elbo.mean().detach(),
            **{name: value.mean().detach() for name, value in kl.items()},
            "tau_pres": torch.tensor(sched["tau_pres"]),
            "beta_global": torch.tensor(sched["beta_global"]),
            "count": (z_pres > 0.5).float().sum(1).mean().detach(),
        }
        return {
            "loss": loss,
            "losses": losses,
            "masks": {"decoder": masks_with_background(rendered["a_hat"])},
            "reconstruction": recon,
            "background": rendered["background"],
            "z_pres": z_pres,
            "boxes": rendered["boxes"],
        }

    def _kl_terms(self, post: dict[str, Any], z_pres: torch.Tensor, p_pres_prior: float) -> dict[str, torch.Tensor]:
        """Every KL of the ELBO (docs/methods/gnm.md), each summed over cells / dims / draw steps: [B] per term."""
        q, p, draw = post["q"], post["p"], post["draw"]
        kl = {"kl_global": gaussian_kl(draw["q_mean"], draw["q_std"], draw["p_mean"], draw["p_std"]).flatten(1).sum(1)}
        kl["kl_pres"] = bernoulli_kl(q["pres_logits"], p["pres_logits"]).sum(1)
        for name in ("where", "depth", "what"):
            kl_cells = gaussian_kl(q[f"{name}_mean"], q[f"{name}_std"], p[f"{name}_mean"], p[f"{name}_std"])
            kl[f"kl_{name}"] = kl_cells.sum((1, 2))
        (q_bg_mean, q_bg_std), (p_bg_mean, p_bg_std) = post["q_bg"], post["p_bg"]
        kl["kl_bg"] = gaussian_kl(q_bg_mean, q_bg_std, p_bg_mean, p_bg_std).sum(1)
        # Auxiliary KLs to fixed priors; the per-cell ones count only where an object is present.
        prior_logit = math.log(p_pres_prior) - math.log1p(-p_pres_prior)
        kl["aux_kl_pres"] = bernoulli_kl(q["pres_logits"], torch.full_like(q["pres_logits"], prior_logit)).sum(1)
        weight = z_pres.clamp(min=PRES_WEIGHT_MIN)[..., None]
        aux_where = gaussian_kl(q["where_mean"], q["where_std"], self.aux_where_mean, self.aux_where_std)
        kl["aux_kl_where"] = (aux_where * weight).sum((1, 2))
        for name in ("depth", "what"):
            mean, std = q[f"{name}_mean"], q[f"{name}_std"]
            aux = gaussian_kl(mean, std, torch.zeros_like(mean), torch.ones_like(std))
            kl[f"aux_kl_{name}"] = (aux * weight).sum((1, 2))
        kl["aux_kl_bg"] = gaussian_kl(q_bg_mean, q_bg_std, torch.zeros_like(q_bg_mean), torch.ones_like(q_bg_std)).sum(1)
        return kl

    # --- evaluation extras -------------------------------------------------------------------
    @torch.no_grad()
    def log_importance_weights(self, image: torch.Tensor) -> torch.Tensor:
        """One importance sample per image: log p(x, z) - log q(z | x) [B], with z ~ q.

        ``z_pres`` is drawn as a hard Bernoulli (the generative model's discrete presence),
        every other latent from its Gaussian; each prior term is conditioned on the sampled z^g.
        """
        post = self.infer(image)
        q, p, draw = post["q"], post["p"], post["draw"]
        log_ratio = (Normal(draw["p_mean"], draw["p_std"]).log_prob(draw["z"])
                     - Normal(draw["q_mean"], draw["q_std"]).log_prob(draw["z"])).flatten(1).sum(1)
        pres_q = torch.distributions.Bernoulli(logits=q["pres_logits"])
        z_pres = pres_q.sample()
        pres_p = torch.distributions.Bernoulli(logits=p["pres_logits"])
        log_ratio += (pres_p.log_prob(z_pres) - pres_q.log_prob(z_pres)).sum(1)
        z = self._sample_gaussians(q)
        for name in ("where", "depth", "what"):
            log_ratio += (Normal(p[f"{name}_mean"], p[f"{name}_std"]).log_prob(z[name])
                          - Normal(q[f"{name}_mean"], q[f"{name}_std"]).log_prob(z[name])).sum((1, 2))
        (q_bg_mean, q_bg_std), (p_bg_mean, p_bg_std) = post["q_bg"], post["p_bg"]
        z_bg = sample_normal(q_bg_mean, q_bg_std)
        log_ratio += (Normal(p_bg_mean, p_bg_std).log_prob(z_bg) - Normal(q_bg_mean, q_bg_std).log_prob(z_bg)).sum(1)
        recon = self.render(z_pres, z["where"], z["depth"], z["what"], z_bg)["image"]
        log_like = Normal(recon, self.config.likelihood_sigma).log_prob(image).flatten(1).sum(1)
        return log_like + log_ratio

    @torch.no_grad()
    def pictures(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """Images [B, 3, H, W] for inspection: reconstruction, boxes of present cells, reconstruction
        from the prior (z^g from q, z^s and z_bg from p(. | z^g)) and unconditional samples."""
        out = self(dict(image=image))
        post = self.infer(image)
        p = post["p"]
        z = self._sample_gaussians(p)
        z_pres = torch.distributions.Bernoulli(logits=p["pres_logits"]).sample()
        p_bg_mean, p_bg_std = post["p_bg"]
        from_prior = self.render(z_pres, z["where"], z["depth"], z["what"], sample_normal(p_bg_mean, p_bg_std))
        return {
            "reconstruction": out["reconstruction"],
            "boxes": draw_boxes(image, out["boxes"], out["z_pres"] > 0.5),
            "reconstruction from prior": from_prior["image"],
            "samples from prior": self.sample(image.shape[0]),
        }

    @torch.no_grad()
    def sample(self, batch_size: int) -> torch.Tensor:
        """Unconditional samples [B, 3, H, W]: z^g ~ StructDRAW prior, then z^s, z_bg ~ p(. | z^g)."""
        draw = self.draw(None, batch_size)
        p = self.local_head(draw["canvas"])
        z = self._sample_gaussians(p)
        z_pres = torch.distributions.Bernoulli(logits=p["pres_logits"]).sample()
        p_bg_mean, p_bg_std = gaussian_params(self.bg_prior(draw["z"].flatten(1)))
        return self.render(z_pres, z["where"], z["depth"], z["what"], sample_normal(p_bg_mean, p_bg_std))["image"]


@torch.no_grad()
def estimate_nll(model: GNM, loader: Any, device: torch.device, num_samples: int, seed: int = 0) -> dict[str, float]:
    """Importance-sampled negative log-likelihood, ``-log mean_k exp(log w_k)`` averaged over images.

    Returns ``nll`` (nats per image) and ``nll_bits_per_dim``. Drawn from a fixed seed without
    disturbing the caller's RNG. The papers use 100 samples (30 during training).
    """
    was_training = model.training
    model.eval()
    total, count, dims = 0.0, 0, 1
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for batch in loader:
            image = batch["image"].to(device)
            weights = torch.stack([model.log_importance_weights(image) for _ in range(num_samples)])
            log_px = torch.logsumexp(weights, dim=0) - math.log(num_samples)
            total += float(-log_px.sum())
            count += image.shape[0]
            dims = image[0].numel()
    model.train(was_training)
    nll = total / max(count, 1)
    return {"nll": nll, "nll_bits_per_dim": nll / (dims * math.log(2))}


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """GNM model and loss flags (defaults: the official arrow/CLEVR configuration)."""
    group = parser.add_argument_group("GNM model")
    defaults = GNMConfig()
    group.add_argument("--grid_size", type=int, default=defaults.grid_size,
                       help="cells per side of the symbolic map (max objects = grid_size^2)")
    group.add_argument("--enc_dim", type=int, default=defaults.enc_dim,
                       help="channels of the image encoding, canvas and latent head")
    group.add_argument("--draw_hidden", type=int, default=defaults.draw_hidden, help="StructDRAW ConvLSTM hidden channels")
    group.add_argument("--draw_steps", type=int, default=defaults.draw_steps, help="StructDRAW steps")
    group.add_argument("--z_global_dim", type=int, default=defaults.z_global_dim, help="global latent size per draw step")
    group.add_argument("--z_what_dim", type=int, default=defaults.z_what_dim,
                       help="appearance latent per cell (64 CLEVR/arrow, 20 MNIST)")
    group.add_argument("--z_bg_dim", type=int, default=defaults.z_bg_dim, help="background latent size")
    group.add_argument("--mlp_hidden", type=int, default=defaults.mlp_hidden,
                       help="width of the StructDRAW and background MLPs")
    group.add_argument("--likelihood_sigma", type=float, default=defaults.likelihood_sigma,
                       help="std of the Gaussian likelihood: 0.2 arrow, 0.4 CLEVR6, 0.7 ClevrTex")
    group.add_argument("--curriculum_steps", type=int, default=defaults.curriculum_steps,
                       help="for 0 < step < this, z_pres <= 0.99 and the alpha map is fixed at 0.9")
    sched = parser.add_argument_group("GNM schedules: VALUE, or START_VALUE END_VALUE START_STEP END_STEP (linear)")
    for name, values in SCHEDULES.items():
        shown = " ".join(f"{v:g}" for v in values)
        sched.add_argument(f"--{name}", type=float, nargs="+", default=list(values), metavar="V", help=f"default {shown}")
