"""Training and sampling speed of pixdiff's U-Net against diffusers' UNet2DModel.

Both nets are built at matched parameter count (within a few percent), resolution and batch,
in one process, and timed in interleaved rounds so machine noise hits both alike; results are
ratios. Also reports achieved FLOP/s (counted by torch.utils.flop_counter) against this CPU's
measured matmul peak in fp32 and bf16.

    .venv/bin/python bench/train_speed.py --rounds 5          # needs: pip install diffusers
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from pixdiff.nets import build_net, count_parameters, preset


def pixdiff_net(size: int, channels: int):
    cfg = preset(
        "unet-small",
        in_channels=channels,
        out_channels=channels,
        image_size=size,
        model_channels=64,
        channel_mult=(1, 2, 2),
        num_res_blocks=2,
        attention_resolutions=(size // 2,),
        num_heads=4,
        dropout=0.0,
        num_classes=0,
    )
    return build_net(cfg)


def diffusers_net(size: int, channels: int):
    from diffusers import UNet2DModel

    return UNet2DModel(
        sample_size=size,
        in_channels=channels,
        out_channels=channels,
        block_out_channels=(64, 128, 128),
        layers_per_block=2,
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=32,
    )


class Contender:
    """A network plus how it is run: memory format, autocast, compile."""

    def __init__(
        self, name, net, *, channels_last=False, bf16=False, compile=False, diffusers=False
    ):
        self.name, self.diffusers, self.bf16, self.channels_last = (
            name,
            diffusers,
            bf16,
            channels_last,
        )
        self.net = net.to(memory_format=torch.channels_last) if channels_last else net
        self.fn = torch.compile(self.net) if compile else self.net
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=1e-4)

    def forward(self, x, t):
        x = x.contiguous(memory_format=torch.channels_last) if self.channels_last else x
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            out = self.fn(x, t)
        return (out.sample if self.diffusers else out).float()

    def train_step(self, x, t):
        loss = (self.forward(x, t) - x).square().mean()
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)

    @torch.no_grad()
    def sample_step(self, x, t):
        self.forward(x, t)


def time_it(fn, iters: int) -> float:
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - start) / iters


def count_flops(c: Contender, x, t) -> int:
    with FlopCounterMode(display=False) as fc:
        loss = c.forward(x, t).square().mean()
        loss.backward()
    c.opt.zero_grad(set_to_none=True)
    return fc.get_total_flops()


def matmul_peak(dtype: torch.dtype, n: int = 1024, iters: int = 5) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    return 2 * n**3 / time_it(lambda: a @ b, iters)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--size", type=int, default=32, help="image size (default 32)")
    p.add_argument("--channels", type=int, default=3, help="image channels (default 3)")
    p.add_argument("--batch", type=int, default=32, help="batch size (default 32)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds (default 5)")
    p.add_argument("--iters", type=int, default=2, help="steps per contender per round")
    p.add_argument("--compile", action="store_true", help="also time pixdiff under torch.compile")
    p.add_argument("--bf16", action="store_true", help="also time pixdiff under bf16 autocast")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    p.add_argument("--json", default=None, help="write results to this JSON file")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.randn(args.batch, args.channels, args.size, args.size)
    t = torch.randint(0, 1000, (args.batch,)).float()
    base = pixdiff_net(args.size, args.channels)
    contenders = [
        Contender(
            "diffusers UNet2DModel (fp32)", diffusers_net(args.size, args.channels), diffusers=True
        ),
        Contender("pixdiff UNet (fp32)", base),
        Contender(
            "pixdiff UNet (fp32, channels_last)",
            pixdiff_net(args.size, args.channels),
            channels_last=True,
        ),
    ]
    if args.bf16:  # slow on CPUs without native bf16 (AVX2-only), hence opt-in
        contenders.append(
            Contender(
                "pixdiff UNet (bf16 autocast, channels_last)",
                pixdiff_net(args.size, args.channels),
                channels_last=True,
                bf16=True,
            )
        )
    if args.compile:
        contenders.append(
            Contender(
                "pixdiff UNet (fp32, channels_last, compile)",
                pixdiff_net(args.size, args.channels),
                channels_last=True,
                compile=True,
            )
        )
    for c in contenders:  # warm-up (and compile)
        c.train_step(x, t)
        c.sample_step(x, t)
    train_s = {c.name: [] for c in contenders}
    fwd_s = {c.name: [] for c in contenders}
    for r in range(args.rounds):
        print(f"round {r + 1}/{args.rounds}", flush=True)
        for c in contenders:
            train_s[c.name].append(time_it(lambda c=c: c.train_step(x, t), args.iters))
            fwd_s[c.name].append(time_it(lambda c=c: c.sample_step(x, t), args.iters))
    report(args, contenders, train_s, fwd_s, x, t)


def report(args, contenders, train_s, fwd_s, x, t) -> None:
    ref = contenders[0].name
    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    rows = []
    for c in contenders:
        tr, fw = statistics.median(train_s[c.name]), statistics.median(fwd_s[c.name])
        flops = count_flops(c, x, t)
        rows.append(
            {
                "name": c.name,
                "params": count_parameters(c.net),
                "train_img_s": args.batch / tr,
                "sample_img_s": args.batch / fw,
                "train_speedup": statistics.median(train_s[ref]) / tr,
                "sample_speedup": statistics.median(fwd_s[ref]) / fw,
                "train_gflop_s": flops / tr / 1e9,
                "frac_fp32_peak": flops / tr / peaks["fp32"],
                "frac_bf16_peak": flops / tr / peaks["bf16"],
            }
        )
    print(
        f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; batch {args.batch}, {args.channels}x{args.size}"
        f"x{args.size}; matmul peak fp32 {peaks['fp32'] / 1e9:.1f} GFLOP/s, "
        f"bf16 {peaks['bf16'] / 1e9:.1f} GFLOP/s"
    )
    print(
        "| net | params | train img/s | vs diffusers | sample img/s | vs diffusers | "
        "train GFLOP/s | of fp32 peak | of bf16 peak |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['name']} | {r['params'] / 1e6:.2f}M | {r['train_img_s']:.1f} | "
            f"{r['train_speedup']:.2f}x | {r['sample_img_s']:.1f} | {r['sample_speedup']:.2f}x | "
            f"{r['train_gflop_s']:.1f} | {r['frac_fp32_peak']:.0%} | {r['frac_bf16_peak']:.0%} |"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"peaks": peaks, "rows": rows, "args": vars(args)}, f, indent=2)


if __name__ == "__main__":
    main()
