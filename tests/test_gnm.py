"""GNM model: rendering, depth order, straight-through clamp, schedules, KL terms, masks, curriculum."""
from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from ground.errors import UserError
from ground.schedules import LinearAnneal
from models import build_model
from models.gnm import GNM, SCHEDULES, GNMConfig, bernoulli_kl, check_config, estimate_nll, gaussian_kl
from models.gnm_render import composite, decode_where, draw_boxes, masks_with_background, paste, straight_through_clamp

TINY = dict(image_size=32, enc_dim=16, draw_hidden=16, mlp_hidden=32, z_what_dim=8, z_global_dim=4, draw_steps=2)


def where_for(scale: float, cell: tuple[int, int], grid: int) -> torch.Tensor:
    """Raw z_where [1, G*G, 4] giving every cell size ``scale`` (ratio 1, no shift)."""
    z = torch.zeros(1, grid * grid, 4)
    z[..., 0] = math.log(scale / (1 - scale))  # sigmoid^-1
    return z


def test_single_cell_is_pasted_at_its_place_and_size() -> None:
    grid, size = 4, 32
    z_where = where_for(0.25, (1, 2), grid)
    box_size, centre = decode_where(z_where, grid)
    cell = 1 * grid + 2  # row 1, column 2
    torch.testing.assert_close(centre[0, cell], torch.tensor([0.25, -0.25]))  # (2/4)(2.5) - 1, (2/4)(1.5) - 1
    torch.testing.assert_close(box_size[0, cell], torch.tensor([0.25, 0.25]))
    glimpses = torch.zeros(1, grid * grid, 1, 8, 8)
    glimpses[0, cell] = 1.0
    layer = paste(glimpses, box_size, centre, size)[0, :, 0].sum(0)  # only `cell` is non-zero
    # Box of 0.25 x 32 = 8 px centred at pixel (x 20, y 12): columns 16..23, rows 8..15.
    rows, cols = torch.nonzero(layer > 0.5, as_tuple=True)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (8, 15, 16, 23)
    assert torch.all(layer[8:16, 16:24] > 0.5) and layer[:6].sum() == 0 and layer[:, :14].sum() == 0
    # A shift moves the centre by tanh(shift) cells; the ratio stretches one side and shrinks the other.
    z_where[0, cell, 2] = math.atanh(0.5)
    z_where[0, cell, 1] = math.log(4.0)
    box_size, centre = decode_where(z_where, grid)
    torch.testing.assert_close(centre[0, cell], torch.tensor([0.5, -0.25]))
    torch.testing.assert_close(box_size[0, cell], torch.tensor([0.125, 0.5]))


def overlapping_pair(depth_red: float, depth_green: float) -> dict[str, torch.Tensor]:
    rgb = torch.zeros(1, 2, 3, 8, 8)
    rgb[0, 0, 0] = 1.0  # red
    rgb[0, 1, 1] = 1.0  # green
    alpha = torch.ones(1, 2, 1, 8, 8)
    background = torch.zeros(1, 3, 8, 8)
    return composite(rgb, alpha, torch.ones(1, 2), torch.tensor([[depth_red, depth_green]]), background)


def test_depth_decides_which_object_is_in_front() -> None:
    red_front = overlapping_pair(-4.0, 4.0)["image"][0, :, 4, 4]
    assert red_front[0] > 0.95 and red_front[1] < 0.05
    green_front = overlapping_pair(4.0, -4.0)["image"][0, :, 4, 4]
    assert green_front[1] > 0.95 and green_front[0] < 0.05


def test_object_over_background_and_alpha_clamp_keeps_gradients() -> None:
    x = torch.tensor([-0.5, 0.3, 1.7], requires_grad=True)
    y = straight_through_clamp(x, 0.0, 1.0)
    assert y.tolist() == [0.0, pytest.approx(0.3), 1.0]
    y.sum().backward()
    assert x.grad.tolist() == [1.0, 1.0, 1.0]
    # Two fully opaque objects: the alpha map sums to 2 and is clamped, but alpha still gets a gradient.
    alpha = torch.ones(1, 2, 1, 4, 4, requires_grad=True)
    rgb = torch.rand(1, 2, 3, 4, 4)
    out = composite(rgb, alpha, torch.ones(1, 2), torch.zeros(1, 2), torch.rand(1, 3, 4, 4))
    assert float(out["alpha_map"].detach().max()) <= 1.0
    out["alpha_map"].sum().backward()
    assert torch.all(alpha.grad == 1.0)
    # A half-transparent single object blends over the background.
    rgb, bg = torch.ones(1, 1, 3, 2, 2), torch.zeros(1, 3, 2, 2)
    image = composite(rgb, torch.full((1, 1, 1, 2, 2), 0.5), torch.ones(1, 1), torch.zeros(1, 1), bg)["image"]
    torch.testing.assert_close(image, torch.full((1, 3, 2, 2), 0.5))


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_every_schedule_at_start_middle_and_end(name: str) -> None:
    values = SCHEDULES[name]
    schedule = LinearAnneal.from_values(values)
    if len(values) == 1:
        assert schedule(0) == schedule(10**6) == values[0]
        return
    start, end, start_step, end_step = values
    middle = (start_step + end_step) // 2
    assert schedule(0) == schedule(start_step) == start
    assert schedule(middle) == pytest.approx((start + end) / 2)
    assert schedule(end_step) == schedule(10 * end_step) == end


def test_schedule_defaults_are_the_spec_values() -> None:
    model = GNM(GNMConfig(**TINY)).eval()  # eval: the completed steps (training runs one ahead)
    model.set_step(250)
    values = model.schedule_values()
    assert values["beta_aux_where"] == pytest.approx(5.5)  # 10 -> 1 over 0..500
    model.set_step(10_500)
    values = model.schedule_values()
    assert values["tau_pres"] == pytest.approx(0.75)  # 1 -> 0.5 over 1k..20k
    assert values["beta_global"] == pytest.approx(0.105)  # 0 -> 1 over 0..100k
    assert values["beta_aux_bg"] == pytest.approx(50 - 49 * 0.21)  # 50 -> 1 over 0..50k
    assert values["p_pres_prior"] == pytest.approx(0.001)  # 0.1 -> 0.001 over 0..4k
    assert LinearAnneal(3.0, 7.0, 0, 0)(5) == 3.0  # end step 0: constant start value


def test_kl_terms_match_closed_forms() -> None:
    assert float(gaussian_kl(torch.tensor(1.0), torch.tensor(1.0), torch.tensor(0.0), torch.tensor(1.0))) == pytest.approx(0.5)
    two = torch.tensor(2.0)
    assert float(gaussian_kl(torch.tensor(0.0), two, torch.tensor(0.0), torch.tensor(1.0))) == pytest.approx(0.5 * (4 - 1 - math.log(4)))
    qm, qs, pm, ps = torch.randn(5), torch.rand(5) + 0.1, torch.randn(5), torch.rand(5) + 0.1
    torch.testing.assert_close(gaussian_kl(qm, qs, pm, ps), kl_divergence(Normal(qm, qs), Normal(pm, ps)))
    logit = lambda p: math.log(p / (1 - p))  # noqa: E731
    expected = 0.5 * math.log(0.5 / 0.1) + 0.5 * math.log(0.5 / 0.9)
    assert float(bernoulli_kl(torch.tensor(logit(0.5)), torch.tensor(logit(0.1)))) == pytest.approx(expected)
    assert float(bernoulli_kl(torch.tensor(3.0), torch.tensor(3.0))) == pytest.approx(0.0, abs=1e-7)


def test_model_kl_terms_and_aux_weighting() -> None:
    torch.manual_seed(0)
    model = GNM(GNMConfig(**TINY))
    post = model.infer(torch.rand(2, 3, 32, 32))
    n = model.config.num_cells
    present = torch.zeros(2, n)
    present[:, 0] = 1.0
    kl = model._kl_terms(post, present, 0.1)
    q = post["q"]
    # Closed form of the auxiliary where-KL of cell 0 (the others count with weight 1e-5).
    prior = Normal(torch.tensor([-1.5, 0.0, 0.0, 0.0]), torch.tensor([0.1, 0.3, 1.0, 1.0]))
    per_cell = kl_divergence(Normal(q["where_mean"], q["where_std"]), prior).sum(-1)
    expected = per_cell[:, 0] + 1e-5 * per_cell[:, 1:].sum(1)
    torch.testing.assert_close(kl["aux_kl_where"], expected)
    draw = post["draw"]
    global_kl = kl_divergence(Normal(draw["q_mean"], draw["q_std"]), Normal(draw["p_mean"], draw["p_std"])).sum((1, 2))
    torch.testing.assert_close(kl["kl_global"], global_kl)
    assert set(kl) == {"kl_global", "kl_pres", "kl_where", "kl_depth", "kl_what", "kl_bg",
                       "aux_kl_pres", "aux_kl_where", "aux_kl_depth", "aux_kl_what", "aux_kl_bg"}
    assert all(torch.all(v >= -1e-5) for v in kl.values())


def test_forward_contract_gradients_and_masks() -> None:
    torch.manual_seed(0)
    model = GNM(GNMConfig(**TINY))
    out = model(dict(image=torch.rand(2, 3, 32, 32)))
    masks = out["masks"]["decoder"]
    assert masks.shape == (2, 1 + 16, 32, 32)
    torch.testing.assert_close(masks.sum(1), torch.ones(2, 32, 32))
    out["loss"].backward()
    assert all(p.grad is not None for p in model.parameters())
    assert {"mse", "elbo", "kl_global", "aux_kl_bg"} <= set(out["losses"])
    # The official evaluator: background 1 - sum(cells), argmax over background + cells.
    a_hat = torch.rand(3, 4, 1, 5, 5) * 0.6
    reference = torch.cat([1 - a_hat.squeeze(2).sum(1, keepdim=True), a_hat.squeeze(2)], 1).argmax(1)
    assert torch.equal(masks_with_background(a_hat).argmax(1), reference)


def test_curriculum_clamps_presence_only_in_its_steps() -> None:
    torch.manual_seed(0)
    model = GNM(GNMConfig(**TINY)).train()
    with torch.no_grad():  # presence logits at their maximum (8.8): relaxed samples are often > 0.99
        model.local_head.pres.bias.fill_(100.0)
    image = torch.rand(4, 3, 32, 32)
    model.set_step(10)
    assert float(model(dict(image=image))["z_pres"].detach().max()) <= 0.99 + 1e-6
    model.set_step(600)
    assert float(model(dict(image=image))["z_pres"].detach().max()) > 0.99 + 1e-6


def test_check_config_rejects_sizes_that_cannot_work() -> None:
    check_config(GNMConfig(image_size=64))
    check_config(GNMConfig(image_size=128))
    with pytest.raises(UserError, match="--image_size 48"):
        check_config(GNMConfig(image_size=48))
    with pytest.raises(UserError, match="--grid_size 3"):
        check_config(GNMConfig(image_size=64, grid_size=3))
    with pytest.raises(UserError, match="--grid_size 32"):
        check_config(GNMConfig(image_size=64, grid_size=32))
    with pytest.raises(UserError, match="--beta_global"):
        check_config(GNMConfig(beta_global=[0.0, 1.0]))
    with pytest.raises(UserError, match="--tau_pres"):
        check_config(GNMConfig(tau_pres=[1.0, 0.0, 0, 10]))


def test_rebuild_nll_and_pictures() -> None:
    torch.manual_seed(0)
    model = GNM(GNMConfig(**TINY))
    model.set_step(7)
    rebuilt = build_model("gnm", model.config.to_dict(), None)
    rebuilt.load_state_dict(model.state_dict())
    assert int(rebuilt.step) == 7
    images = torch.rand(2, 3, 32, 32)
    loader = [dict(image=images)]
    a = estimate_nll(model, loader, torch.device("cpu"), num_samples=3)
    b = estimate_nll(rebuilt, loader, torch.device("cpu"), num_samples=3)
    assert a == b and math.isfinite(a["nll"]) and a["nll"] > 0
    pictures = model.pictures(images)
    assert {k: tuple(v.shape) for k, v in pictures.items()} == {
        k: (2, 3, 32, 32) for k in ("reconstruction", "boxes", "reconstruction from prior", "samples from prior")
    }
    boxed = draw_boxes(torch.zeros(1, 3, 8, 8), torch.tensor([[[1.0, 2.0, 5.0, 6.0]]]), torch.tensor([[True]]))
    assert boxed[0, 0, 2, 1:6].eq(1).all() and boxed[0, 0, 3:6, 2:5].eq(0).all()


@pytest.mark.parametrize("image_size, glimpse", [(64, 32), (128, 64)])
def test_default_architecture_at_64_and_128_px(image_size: int, glimpse: int) -> None:
    model = GNM(GNMConfig(image_size=image_size))
    assert model.encoder(torch.zeros(1, 3, image_size, image_size)).shape == (1, 128, 4, 4)
    rgb, alpha = model.glimpse_decoder(torch.zeros(2, 64))
    assert rgb.shape == (2, 3, glimpse, glimpse) and alpha.shape == (2, 1, glimpse, glimpse)
    with torch.no_grad():
        out = model(dict(image=torch.rand(1, 3, image_size, image_size)))
    assert out["masks"]["decoder"].shape == (1, 17, image_size, image_size)
    assert out["reconstruction"].shape == (1, 3, image_size, image_size)
