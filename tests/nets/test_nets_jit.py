"""JiT-style pixel Transformer (Li & He 2025): DiT with a bottleneck patch embedding, 2-D RoPE
and qk-norm. Shapes per patch size, adaLN-Zero start, RoPE's relative-position property,
qk-norm's scale invariance, FLOPs against the flop counter and DiT's published Gflops, config
and checkpoint round-trips, and a tiny train + sample from the CLI."""

from __future__ import annotations

import json

import pytest
import torch

from pixdiff.checkpoint import load, net_config_from_dict, net_config_to_dict
from pixdiff.cli.main import main
from pixdiff.conditioning import Cond
from pixdiff.denoiser import Denoiser
from pixdiff.nets import DiT, DiTConfig, build_net, preset
from pixdiff.nets.flops import dit_flops, measure_flops
from pixdiff.nets.layers import SelfAttention
from pixdiff.nets.rope import apply_rope, rope_2d
from pixdiff.schedule_registry import get_schedule


@pytest.mark.parametrize("patch", [2, 4, 8])
def test_shapes_for_each_patch_size_at_32px(perturb, patch):
    config = preset(f"jit-tiny-{patch}", num_classes=10)
    net = perturb(DiT(config))
    assert isinstance(net.x_embedder, torch.nn.Sequential)  # the bottleneck
    assert net.x_embedder[0].out_channels == config.bottleneck_dim
    x = torch.randn(2, 3, 32, 32)
    out = net(x, torch.tensor([3.0, 700.0]), Cond(label=torch.tensor([1, 10])))
    assert out.shape == x.shape and torch.isfinite(out).all() and out.abs().sum() > 0


@pytest.mark.parametrize("patch", [2, 4])
def test_shapes_at_28px_fashion_where_the_patch_divides(perturb, patch):
    net = perturb(DiT(preset(f"jit-tiny-{patch}", in_channels=1, image_size=28)))
    assert net(torch.randn(3, 1, 28, 28), torch.rand(3) * 1000).shape == (3, 1, 28, 28)


def test_a_patch_that_does_not_divide_the_image_is_one_clear_message():
    with pytest.raises(ValueError) as err:
        preset("jit-tiny-8", in_channels=1, image_size=28)
    message = str(err.value)
    assert "image_size 28 is not divisible by patch_size 8" in message
    assert "[1, 2, 4, 7, 14, 28]" in message and "\n" not in message


def test_rope_needs_a_head_width_divisible_by_4():
    with pytest.raises(ValueError, match="divisible by 4"):
        preset("jit-tiny-4", hidden_size=72, num_heads=12)  # head width 6


def test_fresh_net_is_the_identity_of_its_parameterisation():
    """adaLN-Zero (Peebles & Xie 2023): every block passes its input through unchanged and the
    final layer outputs zero, so the first denoiser is the zero-output one of its type: for
    x0-prediction x0^ = 0 (the prior mean) and eps^ = x_t / sigma; for eps-prediction the
    identity x0^ = x_t / alpha; for v-prediction x0^ = alpha x_t / (alpha^2 + sigma^2)."""
    net = DiT(preset("jit-tiny-4", num_classes=3))
    seen = []
    for block in net.blocks:
        block.register_forward_hook(lambda m, args, out: seen.append((args[0], out)))
    x, t = torch.randn(2, 3, 32, 32), torch.tensor([0.3, 0.8])
    cond = Cond(label=torch.tensor([0, 2]))
    schedule = get_schedule("flow")
    a, s = (1 - t).view(-1, 1, 1, 1), t.view(-1, 1, 1, 1)
    expected = {"x0": torch.zeros_like(x), "eps": x / a, "v": a * x / (a**2 + s**2)}
    for prediction, x0 in expected.items():
        out = Denoiser(net, schedule, prediction)(x, t, cond)
        assert torch.equal(out.raw, torch.zeros_like(x))
        assert torch.allclose(out.x0, x0, atol=1e-6), prediction
        if prediction == "x0":
            assert torch.allclose(out.eps, x / s)
    assert len(seen) == 3 * len(net.blocks)
    assert all(torch.equal(inp, out) for inp, out in seen)


def test_rope_dot_products_depend_only_on_the_offset():
    """<R(m) q, R(n) k> = <q, R(n - m) k> for 2-D positions m, n (Su et al. 2021, Eq. 16)."""
    gen = torch.Generator().manual_seed(0)
    d, grid_h, grid_w = 16, 5, 6
    cos, sin = rope_2d(d, grid_h, grid_w)
    q, k = torch.randn(2, d, generator=gen, dtype=torch.float64)
    rotated_q = apply_rope(q.expand(grid_h * grid_w, d), cos.double(), sin.double())
    rotated_k = apply_rope(k.expand(grid_h * grid_w, d), cos.double(), sin.double())
    logits = rotated_q @ rotated_k.T  # (T, T): query at m, key at n
    index = torch.arange(grid_h * grid_w).reshape(grid_h, grid_w)
    cases = [((0, 0), (2, 3), (2, 1)), ((1, 2), (3, 5), (1, -2)), ((4, 1), (2, 0), (-2, 4))]
    for (r1, c1), (r2, c2), (sr, sc) in cases:
        base = logits[index[r1, c1], index[r2, c2]]
        shifted = logits[index[r1 + sr, c1 + sc], index[r2 + sr, c2 + sc]]
        assert torch.allclose(base, shifted, atol=1e-12)
        offset = apply_rope(k[None], *_angles_at(d, r2 - r1, c2 - c1))
        assert torch.allclose(base, (q * offset[0]).sum(), atol=1e-12)
    assert torch.allclose(rotated_q.norm(dim=1), q.norm().expand(grid_h * grid_w))
    assert torch.equal(rotated_q[0], q)  # position (0, 0) is not rotated
    # rows and columns use different channel pairs: a row shift and a column shift differ
    assert not torch.allclose(logits[0, index[0, 1]], logits[0, index[1, 0]])


def _angles_at(d: int, dr: int, dc: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin (1, d / 2) of RoPE at one (possibly negative) 2-D position, in float64."""
    quarter = d // 4
    omega = 10000.0 ** (-torch.arange(quarter, dtype=torch.float64) / quarter)
    angles = torch.cat([dr * omega, dc * omega])[None]
    return angles.cos(), angles.sin()


def test_qk_norm_makes_attention_blind_to_the_scale_of_queries_and_keys():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 7, 32, generator=gen)
    for qk_norm in (True, False):
        attn = SelfAttention(32, num_heads=4, qk_norm=qk_norm)
        base = attn(x)
        with torch.no_grad():
            attn.qkv.weight[:64] *= 30.0  # queries and keys, not values
            attn.qkv.bias[:64] *= 30.0
        same = torch.allclose(attn(x), base, atol=1e-5)
        assert same == qk_norm
    normed = SelfAttention(32, num_heads=4, qk_norm=True)
    q = torch.randn(2, 4, 7, 8, generator=gen) * 5
    assert torch.allclose(normed.q_norm(q).square().mean(-1), torch.ones(2, 4, 7), atol=1e-4)


@pytest.mark.parametrize("patch", [2, 4, 8])
def test_flops_match_the_flop_counter(patch):
    config = preset(f"jit-tiny-{patch}", num_classes=10)
    assert dit_flops(config)["total"] == measure_flops(build_net(config), (3, 32, 32))


def test_flops_of_every_conditioning_path_match_the_flop_counter():
    config = preset("dit-tiny", num_classes=3, context_dim=8, pooled_dim=5, low_res_channels=3)
    cond = Cond(
        label=torch.tensor([1]), context=torch.randn(1, 7, 8), pooled=torch.randn(1, 5),
        low_res=torch.randn(1, 3, 8, 8), low_res_noise=torch.zeros(1),
    )  # fmt: skip
    counted = measure_flops(build_net(config), (3, 32, 32), cond)
    assert dit_flops(config, context_len=7)["total"] == counted


@pytest.mark.parametrize(("size", "gflops"), [("s", 6.06), ("b", 23.01), ("xl", 118.64)])
def test_flops_match_dit_published_gflops(size, gflops):
    """Peebles & Xie 2023, Table 4: DiT-{S,B,XL}/2 on 32x32x4 latents, multiply-accumulates."""
    latent = preset(f"dit-{size}-2", in_channels=4, image_size=32)
    assert dit_flops(latent)["total"] / 2e9 == pytest.approx(gflops, rel=2e-3)


def test_attention_flops_grow_with_tokens_squared():
    """At 32 px: p = 2 has 16x the tokens of p = 8, so 256x its attention-score FLOPs."""
    small, large = dit_flops(preset("jit-tiny-2")), dit_flops(preset("jit-tiny-8"))
    assert small["attention_scores"] == 256 * large["attention_scores"]
    assert small["mlp"] == 16 * large["mlp"]


def test_config_round_trips_and_checkpoint_loads_the_same_net(perturb, tmp_path):
    config = preset("jit-tiny-4", num_classes=10, in_channels=1)
    d = net_config_to_dict(config)
    assert d["bottleneck_dim"] == 16 and d["rope"] and d["qk_norm"]
    assert net_config_from_dict(json.loads(json.dumps(d))) == config
    assert DiTConfig.from_dict(config.to_dict()) == config
    net = perturb(DiT(config))
    restored = DiT(DiTConfig.from_dict(config.to_dict()))
    restored.load_state_dict(net.state_dict())
    x, t, cond = (
        torch.randn(2, 1, 32, 32),
        torch.tensor([5.0, 500.0]),
        Cond(label=torch.tensor([0, 9])),
    )
    assert torch.equal(restored(x, t, cond), net(x, t, cond))
    assert any(k.endswith("q_norm.weight") for k in net.state_dict())


def test_tiny_cli_train_and_sample(image_folder, tmp_path, capsys):
    """x0-prediction with a flow-velocity loss, as JiT trains, from the CLI: train, load the
    run (config round-trip through config.json), sample PNGs."""
    data = image_folder(tmp_path / "data", 8, 16, ["a", "b"])
    run = tmp_path / "run"
    code = main([
        "train", "--data", str(data), "--out", str(run), "--image-size", "16",
        "--preset", "jit-tiny-4", "--formulation", "flow", "--steps", "3", "--batch-size", "4",
        "--set", "diffusion.prediction=x0", "--set", "diffusion.loss_space=flow",
        "--set", "run.sample_every=0", "--set", "run.threads=1", "--no-progress",
    ])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    model = load(run)
    assert model.config["train"]["diffusion"]["loss_space"] == "flow"
    assert model.denoiser.prediction == "x0"
    assert model.denoiser.net.config == preset(
        "jit-tiny-4", in_channels=3, image_size=16, num_classes=2
    )
    out = tmp_path / "samples"
    code = main(["sample", str(run), "-n", "2", "--steps", "3", "--out", str(out),
                 "--sampler", "euler", "--no-progress"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.glob("0*.png")) == ["000000.png", "000001.png"]


def test_cli_refuses_a_patch_that_does_not_divide_the_image(image_folder, tmp_path, capsys):
    data = image_folder(tmp_path / "data", 4, 12, ["a"])
    run = tmp_path / "run"
    code = main(["train", "--data", str(data), "--out", str(run), "--image-size", "12",
                 "--preset", "jit-tiny-8", "--steps", "1", "--no-progress"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "image_size 12 is not divisible by patch_size 8" in err
    assert len(err.strip().splitlines()) == 1 and not run.exists()
