"""GNM networks (docs/methods/gnm.md): image encoder, StructDRAW, the per-cell latent head,
and the sub-pixel glimpse and background decoders.

Blocks follow the official code's behaviour: Conv -> CELU -> GroupNorm(1 group) (activation before the norm) and
Linear -> CELU -> LayerNorm; the last layer of every stack is linear.
"""
from __future__ import annotations

import torch
from torch import nn

from models import noise

ENCODER_PAIR_FILTERS: tuple[int, ...] = (16, 32, 64, 128)  # 128 px: [16,16,32,32,64,64,128,128] + final
GLIMPSE_FILTERS: tuple[int, ...] = (128, 64, 32, 16, 8)  # then 4 channels (RGB + alpha)
BG_FILTERS: tuple[int, ...] = (128, 64, 32, 16, 8)  # then a 3x3 conv to RGB
BG_UPSCALES: tuple[int, ...] = (4, 2, 4, 2, 2)  # 1 -> 128


def conv_block(c_in: int, c_out: int, kernel: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, stride, (kernel - 1) // 2), nn.CELU(), nn.GroupNorm(1, c_out))


def mlp(sizes: list[int], final_norm: bool = False) -> nn.Sequential:
    """Linear -> CELU -> LayerNorm for every hidden layer; the last layer is linear unless
    ``final_norm`` (then it is followed by CELU -> LayerNorm too)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2 or final_norm:
            layers += [nn.CELU(), nn.LayerNorm(b)]
    return nn.Sequential(*layers)


class ImageEncoder(nn.Module):
    """Image [B, 3, H, H] -> encoding [B, enc_dim, G, G] with ``num_down`` stride-2 convolutions.

    Pairs of (4x4 stride 2, 3x3 stride 1) convolutions then a final 4x4 stride-2 convolution; at
    128 px -> 4x4 this is the official filter list. Fewer downsamplings drop the first pairs.
    """

    def __init__(self, num_down: int, enc_dim: int, filters: list[int] | None = None,
                 kernels: list[int] | None = None, strides: list[int] | None = None) -> None:
        super().__init__()
        if filters:  # an explicit layer list (a released model's layout); the last filter is enc_dim
            layers, c = [], 3
            for f, k, s in zip(filters, kernels or [], strides or []):
                layers.append(conv_block(c, f, k, s))
                c = f
            self.net = nn.Sequential(*layers)
            return
        pairs = num_down - 1
        filters = list(ENCODER_PAIR_FILTERS[-pairs:]) if pairs <= len(ENCODER_PAIR_FILTERS) else (
            [ENCODER_PAIR_FILTERS[0]] * (pairs - len(ENCODER_PAIR_FILTERS)) + list(ENCODER_PAIR_FILTERS)
        )
        layers, c = [], 3
        for f in filters:
            layers += [conv_block(c, f, 4, 2), conv_block(f, f, 3, 1)]
            c = f
        layers.append(conv_block(c, enc_dim, 4, 2))
        self.net = nn.Sequential(*layers)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.net(image)


class ConvLSTMCell(nn.Module):
    """Convolutional LSTM cell (1x1 kernel on the cell grid) with a learned initial state."""

    def __init__(self, c_in: int, hidden: int, grid_size: int, kernel: int = 1) -> None:
        super().__init__()
        self.gates = nn.Conv2d(c_in + hidden, 4 * hidden, kernel, padding=(kernel - 1) // 2)
        self.h0 = nn.Parameter(torch.zeros(1, hidden, grid_size, grid_size))
        self.c0 = nn.Parameter(torch.zeros(1, hidden, grid_size, grid_size))

    def initial(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.h0.expand(batch, -1, -1, -1), self.c0.expand(batch, -1, -1, -1)

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        h, c = state
        i, f, o, g = self.gates(torch.cat([x, h], dim=1)).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c


def gaussian_params(raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split the last dim into (mean, softplus std)."""
    mean, std_raw = raw.chunk(2, dim=-1)
    return mean, nn.functional.softplus(std_raw)


class StructDRAW(nn.Module):
    """Autoregressive global latent z^g over ``steps`` steps, decoded into a [B, enc_dim, G, G] canvas.

    Posterior (``encoding`` given): the encoder LSTM reads ``[x_enc, x_enc - canvas, h_dec]`` and
    q-net gives q(z_t | .); the prior p-net reads the previous ``h_dec`` along the same path.
    Prior only (``encoding`` None): z_t is drawn from p. Either way ``z_t`` -> MLP -> G x G map,
    concatenated with the canvas into the decoder LSTM, and ``canvas += conv3x3(h_dec)``.
    ``map_norm``: the z -> map MLP ends with CELU + LayerNorm (official) instead of a Linear.
    """

    def __init__(self, enc_dim: int, hidden: int, grid_size: int, z_dim: int, steps: int, mlp_hidden: int,
                 stat_hidden: list[int] | None = None, map_hidden: list[int] | None = None,
                 map_norm: bool = True) -> None:
        super().__init__()
        stat_hidden = list(stat_hidden) if stat_hidden else [mlp_hidden, mlp_hidden]
        map_hidden = list(map_hidden) if map_hidden else [mlp_hidden, 2 * mlp_hidden]
        self.enc_dim, self.hidden, self.grid_size, self.z_dim, self.steps = enc_dim, hidden, grid_size, z_dim, steps
        cells = grid_size * grid_size
        self.encoder = ConvLSTMCell(2 * enc_dim + hidden, hidden, grid_size)
        self.decoder = ConvLSTMCell(2 * enc_dim, hidden, grid_size)
        self.q_net = mlp([hidden * cells, *stat_hidden, 2 * z_dim])
        self.p_net = mlp([hidden * cells, *stat_hidden, 2 * z_dim])
        # The official z -> map network ends with CELU + LayerNorm too (``map_norm``; False: the
        # plain final Linear of checkpoints written before, see docs/methods/gnm.md).
        self.z_to_map = mlp([z_dim, *map_hidden, enc_dim * cells], final_norm=map_norm)
        self.to_canvas = nn.Conv2d(hidden, enc_dim, 3, padding=1)

    def forward(self, encoding: torch.Tensor | None, batch: int | None = None) -> dict[str, torch.Tensor]:
        """Returns ``canvas`` [B, enc_dim, G, G], ``z`` [B, T, Dz], prior and (with an encoding)
        posterior ``*_mean`` / ``*_std`` [B, T, Dz]."""
        b = encoding.shape[0] if encoding is not None else int(batch)  # type: ignore[arg-type]
        device = self.to_canvas.weight.device
        g = self.grid_size
        canvas = torch.zeros(b, self.enc_dim, g, g, device=device)
        dec_state = self.decoder.initial(b)
        enc_state = self.encoder.initial(b) if encoding is not None else None
        out: dict[str, list[torch.Tensor]] = {k: [] for k in ("z", "p_mean", "p_std", "q_mean", "q_std")}
        for _ in range(self.steps):
            p_mean, p_std = gaussian_params(self.p_net(dec_state[0].flatten(1)))
            if encoding is not None:
                enc_in = torch.cat([encoding, encoding - canvas, dec_state[0]], dim=1)
                enc_state = self.encoder(enc_in, enc_state)
                q_mean, q_std = gaussian_params(self.q_net(enc_state[0].flatten(1)))
                z = q_mean + q_std * noise.randn_like(q_std, "gnm_draw_q")
                out["q_mean"].append(q_mean)
                out["q_std"].append(q_std)
            else:
                z = p_mean + p_std * noise.randn_like(p_std, "gnm_draw_p")
            z_map = self.z_to_map(z).view(b, self.enc_dim, g, g)
            dec_state = self.decoder(torch.cat([z_map, canvas], dim=1), dec_state)
            canvas = canvas + self.to_canvas(dec_state[0])
            out["z"].append(z)
            out["p_mean"].append(p_mean)
            out["p_std"].append(p_std)
        result = {k: torch.stack(v, dim=1) for k, v in out.items() if v}
        result["canvas"] = canvas
        return result


class LocalLatentHead(nn.Module):
    """Feature map [B, C, G, G] -> per-cell latent parameters, raster order [B, G*G, .].

    One network serves the prior (on the StructDRAW canvas) and the posterior (on the image
    encoding): q(z^s) depends on x only, as in the official code.
    """

    def __init__(self, c_in: int, hidden: int, z_what_dim: int, body: list[int] | None = None) -> None:
        super().__init__()
        widths = list(body) if body else [hidden, hidden]
        self.body = nn.Sequential(*[conv_block(a, b, 1) for a, b in zip([c_in, *widths[:-1]], widths)])
        hidden = widths[-1]
        self.pres = nn.Conv2d(hidden, 1, 1)
        self.where = nn.Conv2d(hidden, 8, 1)
        self.depth = nn.Conv2d(hidden, 2, 1)
        self.what = nn.Conv2d(hidden, 2 * z_what_dim, 1)
        # Small initial boxes: where-mean weights near zero, scale bias -1 (sigmoid(-1) = 0.27).
        nn.init.uniform_(self.where.weight, -0.01, 0.01)
        with torch.no_grad():
            self.where.bias.zero_()
            self.where.bias[0] = -1.0

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.body(features)

        def cells(x: torch.Tensor) -> torch.Tensor:
            return x.flatten(2).transpose(1, 2)  # [B, C, G, G] -> [B, G*G, C]

        where_mean, where_std = gaussian_params(cells(self.where(h)))
        depth_mean, depth_std = gaussian_params(cells(self.depth(h)))
        what_mean, what_std = gaussian_params(cells(self.what(h)))
        return {
            "pres_logits": torch.tanh(cells(self.pres(h)).squeeze(-1)) * 8.8,
            "where_mean": where_mean, "where_std": where_std,
            "depth_mean": depth_mean, "depth_std": depth_std,
            "what_mean": what_mean, "what_std": what_std,
        }


def subpixel_stage(c_in: int, c_out: int, kernel: int, upscale: int, last: bool) -> nn.Sequential:
    """Conv to ``c_out * upscale^2`` channels then PixelShuffle; CELU + GroupNorm unless ``last``."""
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out * upscale * upscale, kernel, padding=(kernel - 1) // 2)]
    if upscale > 1:
        layers.append(nn.PixelShuffle(upscale))
    if not last:
        layers += [nn.CELU(), nn.GroupNorm(1, c_out)]
    return nn.Sequential(*layers)


class GlimpseDecoder(nn.Module):
    """z_what [M, D] -> glimpse RGB [M, 3, g, g] and alpha [M, 1, g, g] (both sigmoid), g = 2^stages."""

    def __init__(self, z_what_dim: int, stages: int, filters: list[int] | None = None,
                 kernels: list[int] | None = None, upscales: list[int] | None = None) -> None:
        super().__init__()
        filters = list(filters) if filters else list(GLIMPSE_FILTERS[: stages - 1]) + [4]
        kernels = list(kernels) if kernels else [3] * len(filters)
        upscales = list(upscales) if upscales else [2] * len(filters)
        layers, c = [], z_what_dim
        for i, (f, k, u) in enumerate(zip(filters, kernels, upscales)):
            layers.append(subpixel_stage(c, f, k, u, last=i == len(filters) - 1))
            c = f
        self.net = nn.Sequential(*layers)

    def forward(self, z_what: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = torch.sigmoid(self.net(z_what[:, :, None, None]))
        return out[:, :3], out[:, 3:]


def background_upscales(image_size: int) -> list[int]:
    """The official 128-px upscales (4, 2, 4, 2, 2), cut short so their product is ``image_size``."""
    upscales, remaining = [], image_size
    for factor in BG_UPSCALES:
        if remaining == 1:
            break
        factor = min(factor, remaining)
        upscales.append(factor)
        remaining //= factor
    if remaining != 1:
        raise ValueError(f"background decoder cannot reach {image_size} px")
    return upscales


class BackgroundDecoder(nn.Module):
    """z_bg [B, D] -> background image [B, 3, H, H] (1x1 sub-pixel stages, then a 3x3 conv, sigmoid)."""

    def __init__(self, z_bg_dim: int, image_size: int, filters: list[int] | None = None,
                 kernels: list[int] | None = None, upscales: list[int] | None = None) -> None:
        super().__init__()
        layers, c = [], z_bg_dim
        if filters:  # an explicit stage list (a released model's layout); the last gives RGB
            for i, (f, k, u) in enumerate(zip(filters, kernels or [], upscales or [])):
                layers.append(subpixel_stage(c, f, k, u, last=i == len(filters) - 1))
                c = f
            self.net = nn.Sequential(*layers)
            return
        for f, u in zip(BG_FILTERS, background_upscales(image_size)):
            layers.append(subpixel_stage(c, f, 1, u, last=False))
            c = f
        layers.append(subpixel_stage(c, 3, 3, 1, last=True))
        self.net = nn.Sequential(*layers)

    def forward(self, z_bg: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(z_bg[:, :, None, None]))
