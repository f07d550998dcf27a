"""Behaviour that follows the official code bases (docs/methods/*.md, "Differences from the official
code"): one test per difference that used to exist, plus the legacy path of old checkpoints."""
from __future__ import annotations

import torch
from torch import nn

from models import build_model, upgrade_model_config

GNM_TINY = dict(image_size=32, enc_dim=16, draw_hidden=16, mlp_hidden=32, z_what_dim=8, z_global_dim=4, draw_steps=2)


# --- GNM ---------------------------------------------------------------------------------------
def test_gnm_struct_draw_map_ends_with_celu_and_layernorm_old_checkpoints_keep_linear() -> None:
    from models.gnm import GNM, GNMConfig

    new = GNM(GNMConfig(**GNM_TINY))
    last = list(new.draw.z_to_map)[-3:]
    assert [type(m) for m in last] == [nn.Linear, nn.CELU, nn.LayerNorm]
    assert last[2].normalized_shape == (GNM_TINY["enc_dim"] * 16,)
    # A checkpoint written before the field existed rebuilds its plain final Linear and loads.
    old_record = {k: v for k, v in new.config.to_dict().items() if k not in ("draw_map_norm", "paste_premultiplied")}
    old = build_model("gnm", old_record, None)
    assert isinstance(old.draw.z_to_map[-1], nn.Linear)
    n_new, n_old = (sum(p.numel() for p in m.parameters()) for m in (new, old))
    assert n_new - n_old == 2 * GNM_TINY["enc_dim"] * 16  # exactly one LayerNorm(enc_dim * cells)
    assert upgrade_model_config("gnm", old_record)["paste_premultiplied"] is False
    assert upgrade_model_config("gnm", new.config.to_dict())["draw_map_norm"] is True


def _render_one_opaque_glimpse(model: nn.Module) -> dict[str, torch.Tensor]:
    """Render cell 5 only, with an all-white opaque glimpse over a black background."""
    model.glimpse_decoder.forward = lambda z: (torch.ones(z.shape[0], 3, 16, 16), torch.ones(z.shape[0], 1, 16, 16))
    model.bg_decoder.forward = lambda z: torch.zeros(z.shape[0], 3, 32, 32)
    z_pres = torch.zeros(1, 16)
    z_pres[0, 5] = 1.0
    z_where = torch.zeros(1, 16, 4)
    z_where[..., 0] = -0.7  # a box of about a third of the image
    z_where[..., 2:] = 0.13  # off the pixel grid: its edges fall between pixels
    return model.render(z_pres, z_where, torch.zeros(1, 16, 1), torch.zeros(1, 16, 8), torch.zeros(1, 10))


def test_gnm_pastes_the_product_alpha_times_rgb() -> None:
    from models.gnm import GNM, GNMConfig

    out = _render_one_opaque_glimpse(GNM(GNMConfig(**GNM_TINY)))
    weight = out["a_hat"][0, 5, 0]  # the pasted alpha: the bilinear weight w of the glimpse
    edge = (weight > 0.05) & (weight < 0.95)
    assert edge.any()
    # One transform of alpha * rgb: the edge fades as w (pasting both apart would give w^2).
    torch.testing.assert_close(out["image"][0, 0], weight, atol=1e-5, rtol=0)
    legacy = GNM(GNMConfig(**GNM_TINY, paste_premultiplied=False))
    old = _render_one_opaque_glimpse(legacy)
    torch.testing.assert_close(old["image"][0, 0], old["a_hat"][0, 5, 0] ** 2, atol=1e-5, rtol=0)


def test_gnm_first_training_iteration_runs_as_step_one() -> None:
    from models.gnm import GNM, GNMConfig

    model = GNM(GNMConfig(**GNM_TINY)).train()
    model.set_step(0)  # no step completed yet: the official loop already counts this one
    assert model.current_step() == 1 and model._in_curriculum()
    assert model.schedule_values()["beta_aux_where"] == model.schedules["beta_aux_where"](1)
    model.set_step(498)
    assert model._in_curriculum()  # runs as step 499
    model.set_step(499)
    assert not model._in_curriculum()  # runs as step 500: the curriculum is over (0 < step < 500)
    model.eval()  # evaluation sees the completed steps
    assert model.current_step() == 499
