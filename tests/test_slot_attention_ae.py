"""Slot Attention autoencoder: shapes, masks, broadcast decoder sizes, implicit gradient, registry."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ground.errors import UserError
from models import build_model, method_spec
from models.decoders import SpatialBroadcastDecoder, broadcast_size
from models.position import SoftPositionEmbed, position_grid
from models.slot_attention import SlotAttention
from models.slot_attention_ae import SlotAttentionAE, SlotAttentionAEConfig, check_config

TINY = dict(num_slots=3, slot_size=8, mlp_hidden_size=16, encoder_channels=8, decoder_channels=8, kernel_size=3)


def tiny_model(image_size: int = 16, **kw) -> SlotAttentionAE:
    torch.manual_seed(0)
    return SlotAttentionAE(SlotAttentionAEConfig(image_size=image_size, decoder_upsamples=2, **{**TINY, **kw}))


def test_outputs_shapes_and_masks_sum_to_one_over_slots():
    model = tiny_model()
    out = model({"image": torch.rand(2, 3, 16, 16)})
    assert out["slots"].shape == (2, 3, 8)
    assert out["reconstruction"].shape == (2, 3, 16, 16)
    for source in ("decoder", "slots"):
        masks = out["masks"][source]
        assert masks.shape == (2, 3, 16, 16), source
        torch.testing.assert_close(masks.sum(1), torch.ones(2, 16, 16))
    visuals = out["visuals"]
    assert visuals["slot_rgb"].shape == (2, 3, 3, 16, 16) and visuals["slot_masks"].shape == (2, 3, 16, 16)
    # The reconstruction is the alpha-weighted sum of the per-slot colours (in [0, 1] scale).
    composed = (visuals["slot_rgb"] * visuals["slot_masks"].unsqueeze(2)).sum(1)
    torch.testing.assert_close(composed, out["reconstruction"])
    # The loss is the mean MSE on [-1, 1] images.
    image = torch.rand(1, 3, 16, 16)
    torch.manual_seed(1)
    out = model({"image": image})
    torch.testing.assert_close(out["loss"], ((out["reconstruction"] * 2 - 1 - (image * 2 - 1)) ** 2).mean())


def test_position_grid_is_y_x_and_complements():
    grid = position_grid(3, 5)
    assert grid.shape == (3, 5, 4)
    torch.testing.assert_close(grid[:, 0, 0], torch.tensor([0.0, 0.5, 1.0]))  # y down the rows
    torch.testing.assert_close(grid[0, :, 1], torch.linspace(0, 1, 5))  # x along the columns
    torch.testing.assert_close(grid[..., 2], 1 - grid[..., 0])
    embed = SoftPositionEmbed(6, 3, 5)
    assert embed(torch.zeros(2, 6, 3, 5)).shape == (2, 6, 3, 5)
    assert "grid" not in embed.state_dict()


@pytest.mark.parametrize("image_size,upsamples,broadcast", [(32, 2, 8), (64, 3, 8), (64, 4, 4), (128, 4, 8), (32, 0, 32)])
def test_broadcast_decoder_sizes(image_size, upsamples, broadcast):
    assert broadcast_size(image_size, upsamples) == broadcast
    decoder = SpatialBroadcastDecoder(8, image_size, hidden_channels=4, num_upsamples=upsamples)
    assert decoder.broadcast == broadcast
    out = decoder(torch.randn(2, 3, 8))
    assert out["reconstruction"].shape == (2, 3, image_size, image_size)
    assert out["masks"].shape == (2, 3, image_size, image_size)
    assert out["slot_reconstructions"].shape == (2, 3, 3, image_size, image_size)
    torch.testing.assert_close(out["masks"].sum(1), torch.ones(2, image_size, image_size))


def test_image_size_not_divisible_is_a_user_error():
    with pytest.raises(UserError, match="--image_size 40 is not divisible by 2\\*\\*--decoder_upsamples = 16"):
        check_config(SlotAttentionAEConfig(image_size=40, decoder_upsamples=4))
    check_config(SlotAttentionAEConfig(image_size=40, decoder_upsamples=3))
    with pytest.raises(UserError, match="--kernel_size 4 must be odd"):
        check_config(SlotAttentionAEConfig(kernel_size=4))


def test_model_rejects_images_of_another_size():
    with pytest.raises(ValueError, match="built for 16 px"):
        tiny_model()({"image": torch.rand(1, 3, 32, 32)})


def record_steps(module: SlotAttention, monkeypatch) -> list[tuple[bool, bool]]:
    """(input slots carry a graph, output slots carry a graph) for every iteration."""
    calls: list[tuple[bool, bool]] = []
    original = SlotAttention.step

    def step(self, slots, keys, values, *args):
        out = original(self, slots, keys, values, *args)
        calls.append((slots.requires_grad, out[0].requires_grad))
        return out

    monkeypatch.setattr(SlotAttention, "step", step)
    return calls


def test_implicit_grad_differentiates_only_the_last_iteration(monkeypatch):
    model = tiny_model(implicit_grad=True, num_iterations=3)
    calls = record_steps(model.slot_attention, monkeypatch)
    out = model({"image": torch.rand(2, 3, 16, 16)})
    # The seed's count: 3 ordinary iterations (no graph needed), then one more from detached slots.
    assert calls == [(False, False), (False, False), (False, False), (False, True)]
    out["loss"].backward()

    # Same gradient as running 3 iterations, detaching, and differentiating one more.
    reference = tiny_model(implicit_grad=False, num_iterations=3)
    reference.load_state_dict(model.state_dict())
    sa = reference.slot_attention
    image = torch.rand(2, 3, 16, 16)
    torch.manual_seed(5)
    model.zero_grad()
    model({"image": image})["loss"].backward()
    torch.manual_seed(5)
    target = image * 2 - 1
    inputs = sa.norm_inputs(reference.encoder(target))
    keys = (sa.to_k(inputs) * sa.scale).unsqueeze(1)
    values = sa.to_v(inputs).unsqueeze(1)
    slots = sa.init(2)
    for _ in range(3):
        slots = sa.step(slots, keys, values)[0]
    slots = sa.step(slots.detach(), keys, values)[0]
    loss = ((reference.decoder(slots)["reconstruction"] - target) ** 2).mean()
    loss.backward()
    for (name, p), (_, q) in zip(model.named_parameters(), reference.named_parameters()):
        if p.requires_grad:
            torch.testing.assert_close(p.grad, q.grad, msg=name)


def test_every_trainable_parameter_gets_a_gradient():
    """DDP (find_unused_parameters=False) requires a gradient for every trainable parameter.

    With implicit_grad the learned slot init (mu, log_sigma) can get none: it is frozen instead.
    """
    for implicit in (False, True):
        model = tiny_model(implicit_grad=implicit)
        model({"image": torch.rand(2, 3, 16, 16)})["loss"].backward()
        missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
        assert missing == [], (implicit, missing)
        frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
        expected = ["slot_attention.init.mu", "slot_attention.init.log_sigma"] if implicit else []
        assert frozen == expected


def test_registry_rebuilds_the_model_from_its_config():
    model = tiny_model(implicit_grad=True)
    spec = method_spec("slot_attention")
    assert spec.config_cls is SlotAttentionAEConfig and spec.eval_choices == frozenset()
    rebuilt = build_model("slot_attention", model.config.to_dict(), None)
    rebuilt.load_state_dict(model.state_dict())
    assert rebuilt.config == model.config
    with pytest.raises(UserError, match="method 'no_such_method' cannot be built"):
        build_model("no_such_method", {}, None)


def test_conv_init_glorot_by_default_and_kaiming_keeps_the_signal():
    from models.decoders import init_weights

    torch.manual_seed(0)
    stack = torch.nn.Sequential(*[m for _ in range(4) for m in (torch.nn.Conv2d(32, 32, 3, padding=1), torch.nn.ReLU())])
    x = torch.randn(4, 32, 16, 16)
    spreads = {}
    for method in ("glorot", "kaiming"):
        init_weights(stack, method)
        assert all(float(m.bias.detach().abs().sum()) == 0 for m in stack if isinstance(m, torch.nn.Conv2d))
        with torch.no_grad():
            spreads[method] = float(stack(x).pow(2).mean())
    # Glorot halves the second moment per ReLU layer, He keeps it (about 1 after 4 layers).
    assert spreads["glorot"] < 0.2 < 0.5 < spreads["kaiming"] < 2
    model = tiny_model()
    bound = (6 / (3 * 9 + 8 * 9)) ** 0.5  # glorot-uniform bound of the first 3x3 conv, 3 -> 8 channels
    assert model.config.conv_init == "glorot" and float(model.encoder.convs[0].weight.detach().abs().max()) <= bound
    with pytest.raises(UserError, match="--conv_init"):
        check_config(SlotAttentionAEConfig(conv_init="normal"))


class _PlainSlotAttentionAE(torch.nn.Module):
    """An independent, plain PyTorch Slot Attention autoencoder written from the paper's description alone (no
    project modules), with its parameters declared in the project model's order so weights copy
    over one to one. Differential test (issue #9): same weights, same noise -> same outputs and
    gradients."""

    def __init__(self, size: int, c: int, d: int, hidden: int, k: int, slots: int, iters: int, ups: int) -> None:
        super().__init__()
        nn, self.slots, self.iters, self.d, self.s = torch.nn, slots, iters, d, size // 2**ups
        self.convs = nn.ModuleList(nn.Conv2d(3 if i == 0 else c, c, k, padding=k // 2) for i in range(4))
        self.enc_pos, self.enc_norm, self.enc_fc1, self.enc_fc2 = nn.Linear(4, c), nn.LayerNorm(c), nn.Linear(c, c), nn.Linear(c, c)
        self.init = nn.ParameterList([torch.zeros(1, 1, d), torch.zeros(1, 1, d)])  # mu, log sigma
        self.norm_in, self.norm_slots, self.norm_mlp = nn.LayerNorm(c), nn.LayerNorm(d), nn.LayerNorm(d)
        self.q, self.k, self.v = nn.Linear(d, d, bias=False), nn.Linear(c, d, bias=False), nn.Linear(c, d, bias=False)
        self.gru, self.fc1, self.fc2 = nn.GRUCell(d, d), nn.Linear(d, hidden), nn.Linear(hidden, d)
        self.dec_pos = nn.Linear(4, d)
        self.dec = nn.ModuleList([nn.ConvTranspose2d(d if i == 0 else c, c, k, 2, k // 2, output_padding=1) for i in range(ups)]
                                 + [nn.ConvTranspose2d(c, c, k, 1, k // 2), nn.ConvTranspose2d(c, 4, 3, 1, 1)])

    @staticmethod
    def grid(n: int) -> torch.Tensor:
        y, x = torch.meshgrid(torch.linspace(0, 1, n), torch.linspace(0, 1, n), indexing="ij")
        return torch.stack([y, x, 1 - y, 1 - x], -1)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = image * 2 - 1
        h = x
        for conv in self.convs:
            h = F.relu(conv(h))
        h = (h + self.enc_pos(self.grid(h.shape[-1])).permute(2, 0, 1)).flatten(2).transpose(1, 2)
        h = self.norm_in(self.enc_fc2(F.relu(self.enc_fc1(self.enc_norm(h)))))
        keys, values = self.k(h), self.v(h)
        b = x.shape[0]
        slots = self.init[0] + self.init[1].exp() * torch.randn(b, self.slots, self.d)
        for _ in range(self.iters):
            attn = torch.einsum("bnd,bkd->bnk", keys, self.q(self.norm_slots(slots)) * self.d**-0.5).softmax(-1) + 1e-8
            updates = torch.einsum("bnk,bnd->bkd", attn / attn.sum(1, keepdim=True), values)
            slots = self.gru(updates.reshape(-1, self.d), slots.reshape(-1, self.d)).view(b, self.slots, self.d)
            slots = slots + self.fc2(F.relu(self.fc1(self.norm_mlp(slots))))
        out = slots.reshape(-1, self.d, 1, 1).repeat(1, 1, self.s, self.s) + self.dec_pos(self.grid(self.s)).permute(2, 0, 1)
        for i, layer in enumerate(self.dec):
            out = layer(out) if i == len(self.dec) - 1 else F.relu(layer(out))
        out = out.view(b, self.slots, 4, *out.shape[-2:])
        alpha = out[:, :, 3:].softmax(1)
        return F.mse_loss((alpha * out[:, :, :3]).sum(1), x), alpha[:, :, 0]


def test_matches_an_independent_plain_implementation():
    model = tiny_model(image_size=16, num_iterations=3)
    plain = _PlainSlotAttentionAE(16, c=8, d=8, hidden=16, k=3, slots=3, iters=3, ups=2)
    ours, theirs = list(model.named_parameters()), list(plain.named_parameters())
    assert len(ours) == len(theirs)
    with torch.no_grad():
        for (name, p), (_, q) in zip(ours, theirs):
            assert p.shape == q.shape, name
            q.copy_(p)
    image = torch.rand(2, 3, 16, 16)
    torch.manual_seed(3)
    out = model({"image": image})
    torch.manual_seed(3)
    loss, alpha = plain(image)
    torch.testing.assert_close(out["loss"], loss)
    torch.testing.assert_close(out["masks"]["decoder"], alpha)
    out["loss"].backward()
    loss.backward()
    for (name, p), (_, q) in zip(ours, theirs):
        # Gradients of one scale: the slot LayerNorm's bias gets (numerically) none, since a shift
        # common to all queries cancels in the softmax over slots.
        torch.testing.assert_close(p.grad, q.grad, atol=1e-6 * float(q.grad.abs().max()) + 1e-9, rtol=1e-4, msg=name)
