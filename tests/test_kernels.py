"""Mixed precision and kernels: SDPA vs explicit attention, bf16 autocast, torch.compile, fused Adam,
and the --amp / --compile flags (tiny models on the CPU)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

import eval_spot
import train_spot
import utils.train
from models.decoders import AutoregressiveDecoder, _MultiHeadAttention
from models.encoders import FrozenViT
from models.spot import SPOT, SPOTConfig
from utils.checkpoint import load_checkpoint
from utils.train import adam_kernel, amp_settings, keep_kernel_choice, make_adam

TINY = ["--dataset", "shapes", "--image_size", "32", "--which_encoder", "vit_micro_p8", "--no_pretrained",
        "--num_slots", "3", "--slot_size", "16", "--mlp_hidden_size", "32", "--num_dec_blocks", "1",
        "--num_heads", "2", "--batch_size", "4", "--eval_batch_size", "8", "--train_samples", "8",
        "--val_samples", "4", "--num_workers", "0", "--lr_warmup_steps", "2"]
SPOT_FLAGS = ["--dec_type", "transformer", "--train_permutations", "random", "--eval_permutations", "standard"]
MODES = {
    "dinosaur": dict(dec_type="mlp", train_permutations="standard", use_slot_proj=False),
    "spot": dict(dec_type="transformer", train_permutations="random"),
}


def tiny_model(mode: str, seed: int = 0) -> SPOT:
    torch.manual_seed(seed)
    config = SPOTConfig(image_size=32, num_slots=3, slot_size=16, mlp_hidden_size=32, num_dec_blocks=2, num_heads=2,
                        mlp_dec_hidden=32, **MODES[mode])
    return SPOT(FrozenViT("vit_micro_p8", pretrained=False), config)


# --- scaled_dot_product_attention vs the explicit path ----------------------------------------
@pytest.mark.parametrize("causal, lk", [(True, 10), (False, 4)], ids=["causal_self", "cross"])
def test_sdpa_matches_explicit_attention(causal: bool, lk: int) -> None:
    torch.manual_seed(0)
    attn = _MultiHeadAttention(dim=16, num_heads=4, dropout=0.0, out_gain=1.0)
    q = torch.randn(3, 10, 16, requires_grad=True)
    kv = q if causal else torch.randn(3, lk, 16, requires_grad=True)
    results = []
    for sdpa in (True, False):
        attn.sdpa = sdpa
        out, _ = attn(q, kv, causal=causal)
        grads = torch.autograd.grad(out.square().sum(), [q, *attn.parameters()])
        results.append((out, grads))
    (out_a, grads_a), (out_b, grads_b) = results
    torch.testing.assert_close(out_a, out_b, rtol=1e-5, atol=1e-5)
    for a, b in zip(grads_a, grads_b):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    if causal:  # the mask is applied: the first output only sees the first input
        attn.sdpa = True
        changed = q.detach().clone()
        changed[:, 1:] += 1.0
        torch.testing.assert_close(attn(changed, changed, causal=True)[0][:, 0], out_a[:, 0].detach())


def test_decoder_uses_sdpa_except_for_the_mask_weights(monkeypatch) -> None:
    torch.manual_seed(0)
    decoder = AutoregressiveDecoder(feature_dim=16, slot_dim=8, num_tokens=6, num_blocks=3, num_heads=2,
                                    num_orderings=2)
    slots, targets = torch.randn(2, 3, 8), torch.randn(2, 6, 16)
    calls: list[bool] = []
    original = F.scaled_dot_product_attention

    def spy(*args, **kwargs):
        calls.append(bool(kwargs.get("is_causal")))
        return original(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    fast = decoder(slots, targets, ordering=torch.randperm(6), ordering_index=torch.tensor(1))
    # Every block's causal self-attention, and the cross-attention of all but the last block
    # (whose weights are the masks and need the explicit softmax).
    assert calls == [True, False, True, False, True]
    calls.clear()
    decoder.use_sdpa(False)
    torch.manual_seed(1)
    ordering = torch.randperm(6)
    explicit = decoder(slots, targets, ordering=ordering, ordering_index=1)
    assert calls == []
    decoder.use_sdpa(True)
    again = decoder(slots, targets, ordering=ordering, ordering_index=torch.tensor(1))
    for key in ("reconstruction", "masks"):
        torch.testing.assert_close(again[key], explicit[key], rtol=1e-5, atol=1e-5)
    assert fast["masks"].dtype == torch.float32


# --- bf16 autocast ----------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["dinosaur", "spot"])
def test_bf16_autocast_stays_close_to_fp32(mode: str) -> None:
    model = tiny_model(mode).train()
    images = torch.rand(4, 3, 32, 32)
    torch.manual_seed(3)
    reference = model({"image": images})
    norm_dtypes: list[torch.dtype] = []
    sa = model.slot_attention
    hooks = [m.register_forward_hook(lambda _m, _i, out: norm_dtypes.append(out.dtype))
             for m in (sa.norm_inputs, sa.norm_slots, sa.norm_mlp)]
    torch.manual_seed(3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = model({"image": images})
    for hook in hooks:
        hook.remove()
    # Normalisation, softmaxes, attention maps and the slot state stay fp32 under autocast.
    assert norm_dtypes and set(norm_dtypes) == {torch.float32}
    for name in ("decoder", "slots"):
        assert mixed["masks"][name].dtype == torch.float32
        assert (mixed["masks"][name] - reference["masks"][name]).abs().max() < 0.05, name
    assert mixed["slots"].dtype == torch.float32 and mixed["reconstruction"].dtype == torch.float32
    loss, reference_loss = float(mixed["loss"].detach()), float(reference["loss"].detach())
    assert abs(loss - reference_loss) < 0.02 * reference_loss
    scale = reference["reconstruction"].abs().mean()
    assert (mixed["reconstruction"] - reference["reconstruction"]).abs().mean() < 0.02 * scale
    mixed["loss"].backward()  # the mixed graph differentiates


def test_amp_settings(monkeypatch) -> None:
    assert amp_settings(False, torch.device("cuda")) == (False, torch.float32)
    assert amp_settings(True, torch.device("cpu")) == (False, torch.float32)  # CPU: a logged no-op
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert amp_settings(True, torch.device("cuda")) == (True, torch.bfloat16)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert amp_settings(True, torch.device("cuda")) == (True, torch.float16)


# --- torch.compile ------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["dinosaur", "spot"])
def test_compiled_training_step_matches_eager(mode: str) -> None:
    """aot_eager traces exactly what inductor compiles (dynamo + AOT autograd, no graph break),
    without the C++ build; the inductor build itself is in the slow test below."""
    torch._dynamo.reset()
    results = []
    for compiled in (False, True):
        model = tiny_model(mode).train()
        module = torch.compile(model, backend="aot_eager", fullgraph=True) if compiled else model
        torch.manual_seed(5)
        images = torch.rand(4, 3, 32, 32)
        losses = []
        for _ in range(3):  # several steps: SPOT draws another ordering each time
            out = module({"image": images, "step": 0, "total_steps": 3})
            model.zero_grad()
            out["loss"].backward()
            losses.append(out["loss"].detach())
        grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
        results.append((torch.stack(losses), grads, out["masks"]["decoder"].detach()))
    (loss_a, grads_a, masks_a), (loss_b, grads_b, masks_b) = results
    torch.testing.assert_close(loss_b, loss_a, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(masks_b, masks_a, rtol=1e-4, atol=1e-5)
    assert grads_a.keys() == grads_b.keys() and grads_a
    for name, grad in grads_a.items():
        torch.testing.assert_close(grads_b[name], grad, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.slow
def test_inductor_compiled_step_matches_eager() -> None:
    """The real --compile backend (inductor, C++ on the CPU): about a minute of compilation."""
    torch._dynamo.reset()
    results = []
    with torch._inductor.config.patch(fallback_random=True):  # eager's RNG stream, to compare
        for compiled in (False, True):
            model = tiny_model("spot").train()
            module = torch.compile(model) if compiled else model
            torch.manual_seed(5)
            out = module({"image": torch.rand(4, 3, 32, 32)})
            out["loss"].backward()
            results.append((out["loss"].detach(), model.slot_attention.to_q.weight.grad))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(results[1][1], results[0][1], rtol=1e-3, atol=1e-5)


@pytest.fixture
def compile_spy(monkeypatch) -> list[torch.nn.Module]:
    """``torch.compile`` as the Trainer calls it, with the quick aot_eager backend; records the modules."""
    compiled: list[torch.nn.Module] = []
    original = torch.compile

    def spy(module, **kwargs):
        compiled.append(module)
        return original(module, backend="aot_eager", **kwargs)

    monkeypatch.setattr(utils.train.torch, "compile", spy)
    monkeypatch.setattr(utils.train, "COMPILE_DEVICES", ("cuda", "cpu"))  # CUDA-only in training scripts
    torch._dynamo.reset()
    return compiled


def only_run(folder: Path) -> Path:
    (run,) = [p for p in folder.iterdir() if p.is_dir()]
    return run


def test_compile_flag_trains_and_checkpoints_load_eagerly(tmp_path: Path, compile_spy, monkeypatch) -> None:
    amp_requests: list[bool] = []
    original_amp = utils.train.amp_settings
    monkeypatch.setattr(utils.train, "amp_settings", lambda enabled, device: (amp_requests.append(enabled),
                                                                              original_amp(enabled, device))[1])
    train_spot.main([*TINY, *SPOT_FLAGS, "--epochs", "2", "--max_steps", "2", "--compile", "--amp",
                     "--log_path", str(tmp_path)])
    run = only_run(tmp_path)
    assert len(compile_spy) == 1 and amp_requests == [True]  # both flags reach the loop
    recorded = yaml.safe_load((run / "args.yaml").read_text())
    assert recorded["compile"] is True and recorded["amp"] is True
    checkpoint = load_checkpoint(run)
    assert checkpoint["step"] == 2 and not any("_orig_mod" in key for key in checkpoint["model"])
    # The checkpoint of a compiled run evaluates in an eager model...
    record = eval_spot.main(["--checkpoint_path", str(run), "--dataset", "shapes", "--val_samples", "4",
                             "--num_workers", "0", "--no_progress"])
    assert 0 <= record["mbo_i"] <= 100
    # ...and the run resumes without --compile (a runtime flag, recorded as changed).
    train_spot.main(["--resume", str(run), "--no-compile", "--no-amp"])
    assert len(compile_spy) == 1 and amp_requests == [True, False]
    assert load_checkpoint(run)["step"] == 4
    recorded = yaml.safe_load((run / "args.yaml").read_text())
    assert recorded["compile"] is False and recorded["amp"] is False


def test_eager_run_resumes_compiled(tmp_path: Path, compile_spy) -> None:
    train_spot.main([*TINY, "--dec_type", "mlp", "--train_permutations", "standard", "--epochs", "2",
                     "--max_steps", "2", "--log_path", str(tmp_path)])
    run = only_run(tmp_path)
    assert compile_spy == []
    train_spot.main(["--resume", str(run), "--compile"])
    assert len(compile_spy) == 1 and load_checkpoint(run)["step"] == 4
    assert yaml.safe_load((run / "args.yaml").read_text())["compile"] is True


# --- fused Adam -----------------------------------------------------------------------------------
def test_make_adam_picks_fused_and_matches_plain_adam() -> None:
    torch.manual_seed(0)
    params = [torch.randn(5, 3, requires_grad=True), torch.randn(3, requires_grad=True)]
    assert adam_kernel(params) == {"fused": True}
    assert adam_kernel([*params, torch.empty(2, device="meta")]) == {"foreach": True}
    fused_params = [p.detach().clone().requires_grad_() for p in params]
    fused = make_adam([{"params": fused_params[:1]}, {"params": iter(fused_params[1:]), "lr": 0.05}], lr=0.1,
                      weight_decay=0.01)
    plain = torch.optim.Adam([{"params": params[:1]}, {"params": params[1:], "lr": 0.05}], lr=0.1,
                             weight_decay=0.01, foreach=False)
    assert [g["fused"] for g in fused.param_groups] == [True, True]
    assert isinstance(make_adam(params, lr=0.1, adamw=True), torch.optim.AdamW)
    for step in range(3):
        for group in (params, fused_params):
            for p in group:
                p.grad = torch.full_like(p, float(step + 1)) * p.detach()
        plain.step()
        fused.step()
    for a, b in zip(params, fused_params):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-6)


def test_loading_keeps_the_kernel_of_this_run() -> None:
    """A checkpoint of a plain-Adam run (step counters on the CPU) resumes with fused Adam, and back."""
    torch.manual_seed(0)
    weight = torch.randn(4, requires_grad=True)
    plain = torch.optim.Adam([weight], lr=0.1, foreach=False)
    weight.grad = torch.ones(4)
    plain.step()
    fused = make_adam([weight], lr=0.1)
    kernels = [{k: g[k] for k in ("fused", "foreach") if k in g} for g in fused.param_groups]
    fused.load_state_dict(plain.state_dict())
    keep_kernel_choice(fused, kernels)
    assert fused.param_groups[0]["fused"] is True and fused.param_groups[0]["foreach"] is None
    assert fused.state[weight]["step"].dtype == torch.float32 and float(fused.state[weight]["step"]) == 1
    fused.step()
    back = torch.optim.Adam([weight], lr=0.1, foreach=False)
    back.load_state_dict(fused.state_dict())
    keep_kernel_choice(back, [{"fused": None, "foreach": False}])
    back.step()
    assert float(back.state[weight]["step"]) == 3


def test_compile_is_not_applied_on_the_cpu(tmp_path: Path, monkeypatch) -> None:
    """--compile gave SPOT no reliable gain on the CPU: there it is a (logged) no-op."""
    calls: list[torch.nn.Module] = []
    monkeypatch.setattr(utils.train.torch, "compile", lambda module, **kwargs: calls.append(module) or module)
    train_spot.main([*TINY, "--dec_type", "mlp", "--train_permutations", "standard", "--epochs", "1",
                     "--max_steps", "1", "--compile", "--device", "cpu", "--log_path", str(tmp_path)])
    assert calls == [] and load_checkpoint(only_run(tmp_path))["step"] == 1


@pytest.mark.filterwarnings("ignore")  # dynamo warns about the graph breaks at the keyed draws
def test_compiled_training_step_with_noise_keys_matches_eager() -> None:
    """With the training loop's noise keys (models/noise.py) the compiled forward breaks its graph at the
    keyed draws but computes the same steps: the keys are made current outside the compiled module."""
    from models import noise

    results = []
    for compiled in (False, True):
        torch._dynamo.reset()
        model = tiny_model("spot").train()
        module = torch.compile(model, backend="aot_eager") if compiled else model
        images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
        losses = []
        for step in range(3):
            batch = {"image": images, "step": step, "total_steps": 3,
                     "sample_seed": noise.sample_seeds(0, step, range(4)), "step_seed": torch.tensor(noise.step_seed(0, step))}
            with noise.keyed(batch):
                out = module(batch)
            model.zero_grad()
            out["loss"].backward()
            losses.append(out["loss"].detach())
        results.append(torch.stack(losses))
    torch.testing.assert_close(results[1], results[0], rtol=1e-5, atol=1e-6)
