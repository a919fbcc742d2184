"""ViT and MAE cost: XLA-counted FLOPs of an MAE step against a full-ViT step, and each ViT
option's step time, compile time and memory against the plain model, in one run.

1. MAE FLOPs (He et al. 2022: the encoder sees only the 25 % visible patches). From XLA's
   cost analysis of the compiled train step (`jax.jit(step).lower(...).compile()
   .cost_analysis()["flops"]`: forward, backward and the AdamW update, nothing run):
   - MAE (mask ratio 0.75) / the same MAE at mask ratio 0 (the encoder on every patch: the
     paper's "encoder w/ [M]" row of Table 1c, the alternative MAE exists to avoid);
   - MAE (0.75) / a supervised ViT step of the same encoder on the whole image (a head
     instead of the decoder).
   Target: <= 0.4 x. Blocks unrolled (XLA counts a scanned body once).
2. Per ViT option (scan over blocks, remat "nothing_saveable", bf16 compute, FLIP patch
   dropout 0.5, ...), a supervised train step of the same ViT on the same batch: compile
   time (lower + compile), step time (median of timed calls after a warm-up), and XLA's
   memory plan (`compiled.memory_analysis()`: arguments + outputs + temporaries - aliased;
   on a GPU also the allocator's peak), each as a ratio to the plain model's.
3. Achieved FLOP/s of the plain ViT step (its XLA FLOPs / its step time) as a fraction of
   this machine's plain float32 matmul FLOP/s (a jitted N x N @ N x N, the practical
   ceiling here), and on a GPU, of the chip's nominal bf16 peak (MFU) when its kind is known.

  python -m benchmarks.bench_vit            # ViT-S/16 at 96 px, MAE-base at 224 px (~minutes)
  python -m benchmarks.bench_vit --smoke    # tiny models, seconds
  python -m benchmarks.bench_vit --image 224 --batch 32   # on an accelerator
  python -m benchmarks.bench_vit --mae large --mae_count lowered --mae_only   # ViT-L's ratio
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ssl_gen.models import mae, vit  # noqa: E402
from ssl_gen.objectives import classification  # noqa: E402
from ssl_gen.objectives import mae as mae_objective  # noqa: E402

# Nominal dense bf16 peaks (FLOP/s) from the vendors' data sheets, for MFU.
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "V5E": 197e12}

OPTIONS = {  # name -> vit.Model overrides
    "plain": {},
    "scan": dict(scan=True),
    "remat": dict(remat="nothing_saveable"),
    "scan+remat": dict(scan=True, remat="nothing_saveable"),
    "bf16": dict(dtype="bfloat16"),
    "patch_dropout=0.5": dict(patch_dropout=0.5),
}


def _step(loss_fn, tx):
    """A jitted train step: value_and_grad of loss_fn, the optax update."""
    def step(params, opt_state, batch, key):
        (loss, _), g = jax.value_and_grad(loss_fn, has_aux=True)(params, batch, key)
        updates, opt_state = tx.update(g, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss
    return jax.jit(step, donate_argnums=(0, 1))


def _compile(step, *args):
    t = time.perf_counter()
    compiled = step.lower(*args).compile()
    return compiled, time.perf_counter() - t


def _flops(compiled) -> float:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost.get("flops", float("nan")))


def _memory(compiled) -> float:
    """Bytes of XLA's memory plan for one call (arguments + outputs + temps - aliased)."""
    m = compiled.memory_analysis()
    if m is None:
        return float("nan")
    return float(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
                 - m.alias_size_in_bytes)


def _tx():
    return optax.adamw(1e-4, b2=0.95, weight_decay=0.05)


def _count(step, *args, compiled: bool) -> float:
    """XLA's FLOPs of the step: of the compiled program, or (much cheaper to get) of the
    lowered, not yet optimized one (a few % apart; ratios agree closely)."""
    lowered = step.lower(*args)
    cost = (lowered.compile() if compiled else lowered).cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost.get("flops", float("nan")))


def mae_flops(variant: str, image: int, batch: int, *, compiled: bool = True
              ) -> dict[str, float]:
    """XLA FLOPs of the MAE step at mask 0.75 and 0, and of a ViT step of its encoder."""
    x = jnp.zeros((batch, image, image, 3), jnp.float32)
    key = jax.random.key(0)
    out = {}
    model = mae.Model(variant=variant, image_size=image)
    params = jax.eval_shape(lambda k: model.init(k, x[:1], key=k), key)
    tx = _tx()
    opt = jax.eval_shape(tx.init, params)
    for ratio in (0.75, 0.0):
        loss = lambda p, b, k, r=ratio: mae_objective.loss_fn(p, b, k, model=model,
                                                              mask_ratio=r)
        out[f"mae_{ratio}"] = _count(_step(loss, tx), params, opt, {"image": x}, key,
                                     compiled=compiled)
    enc = vit.Model(**{**model.encoder_kwargs(), "num_classes": 1000})
    vparams = jax.eval_shape(lambda k: enc.init(k, x[:1]), key)
    vloss = lambda p, b, k: classification.loss_fn(p, b, k, model=enc)
    batch_ = {"image": x, "label": jnp.zeros((batch,), jnp.int32)}
    out["vit"] = _count(_step(vloss, tx), vparams, jax.eval_shape(tx.init, vparams), batch_,
                        key, compiled=compiled)
    return out


def option_table(variant: str, image: int, batch: int, steps: int, names) -> list[dict]:
    """Compile time, step time, memory plan and FLOPs of a ViT train step per option."""
    rng = np.random.default_rng(0)
    batch_ = {"image": jnp.asarray(rng.standard_normal((batch, image, image, 3)), jnp.float32),
              "label": jnp.asarray(rng.integers(0, 1000, batch), jnp.int32)}
    key = jax.random.key(0)
    rows = []
    for name in names:
        model = vit.Model(variant=variant, image_size=image, num_classes=1000, **OPTIONS[name])
        params = jax.jit(lambda k, m=model: m.init(k, batch_["image"][:1]))(key)
        tx = _tx()
        opt = tx.init(params)
        loss = lambda p, b, k, m=model: classification.loss_fn(p, b, k, model=m)
        compiled, compile_s = _compile(_step(loss, tx), params, opt, batch_, key)
        params, opt, first = compiled(params, opt, batch_, key)  # warm-up
        jax.block_until_ready(first)
        times = []
        for i in range(steps):
            t = time.perf_counter()
            params, opt, value = compiled(params, opt, batch_, jax.random.key(i + 1))
            jax.block_until_ready(value)
            times.append(time.perf_counter() - t)
        stats = jax.devices()[0].memory_stats() or {}
        rows.append(dict(option=name, compile_s=compile_s, step_s=float(np.median(times)),
                         memory=_memory(compiled), flops=_flops(compiled),
                         peak=float(stats.get("peak_bytes_in_use", float("nan"))),
                         loss=float(first)))
        del params, opt
    return rows


def matmul_flops_per_sec(n: int, dtype=jnp.float32, reps: int = 5) -> float:
    """FLOP/s of a jitted (n, n) @ (n, n) matmul (2 n^3 FLOPs), best of `reps`."""
    a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n)), dtype)
    f = jax.jit(lambda a: a @ a)
    f(a).block_until_ready()
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        f(a).block_until_ready()
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def _si(x: float) -> str:
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.2f} {unit}"
    return f"{x:.0f}"


def _gib(b: float) -> str:
    return f"{b / 2**20:.1f} MiB" if np.isfinite(b) else "-"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny models: seconds")
    p.add_argument("--variant", default="S/16", help="ViT variant of the option table")
    p.add_argument("--image", type=int, default=96, help="image side of the option table")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=3, help="timed steps per option")
    p.add_argument("--mae", default="base", help="MAE variant of the FLOP ratio")
    p.add_argument("--mae_image", type=int, default=224)
    p.add_argument("--mae_count", choices=("compiled", "lowered"), default="compiled",
                   help="FLOPs of the compiled or of the lowered (unoptimized) program")
    p.add_argument("--mae_only", action="store_true", help="only the MAE FLOP ratio")
    p.add_argument("--options", default=",".join(OPTIONS))
    p.add_argument("--matmul_n", type=int, default=0, help="0: 2048 on CPU, 8192 elsewhere")
    a = p.parse_args(argv)
    if a.smoke:
        a.variant, a.image, a.batch, a.steps = "tiny/4", 16, 4, 2
        a.mae, a.mae_image, a.matmul_n = "tiny", 8, 256
    backend, kind = jax.default_backend(), jax.devices()[0].device_kind
    print(f"backend {backend} ({kind}), {jax.device_count()} device(s)")

    f = mae_flops(a.mae, a.mae_image, batch=1, compiled=a.mae_count == "compiled")
    print(f"\nMAE-{a.mae} at {a.mae_image}px, train step (fwd + bwd + AdamW), XLA FLOPs per "
          f"image ({a.mae_count} program):")
    print("| step | FLOPs | MAE (0.75) / this |")
    print("|---|---|---|")
    for name, label in (("mae_0.75", "MAE, 75 % masked"),
                        ("mae_0.0", "MAE at mask 0 (encoder on every patch)"),
                        ("vit", "supervised ViT, same encoder, whole image")):
        print(f"| {label} | {_si(f[name])} | {f['mae_0.75'] / f[name]:.3f} |")
    if a.mae_only:
        return

    names = [n for n in a.options.split(",") if n]
    rows = option_table(a.variant, a.image, a.batch, a.steps, names)
    base = rows[0]
    print(f"\nViT-{a.variant}, {a.image}px, batch {a.batch}, train step; ratios to "
          f"{base['option']!r} (same run):")
    print("| option | compile s | step ms | memory plan | compile x | step x | memory x |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['option']} | {r['compile_s']:.1f} | {1e3 * r['step_s']:.1f} | "
              f"{_gib(r['memory'])} | {r['compile_s'] / base['compile_s']:.2f} | "
              f"{r['step_s'] / base['step_s']:.2f} | {r['memory'] / base['memory']:.2f} |")

    n = a.matmul_n or (2048 if backend == "cpu" else 8192)
    mm = matmul_flops_per_sec(n)
    achieved = base["flops"] / base["step_s"]
    print(f"\nachieved by the {base['option']} ViT-{a.variant} step ({_si(base['flops'])}FLOPs): "
          f"{_si(achieved)}FLOP/s = {achieved / mm:.2f} of a float32 {n}x{n} matmul "
          f"({_si(mm)}FLOP/s)")
    peak = next((v for k, v in PEAK_BF16.items() if k.lower() in kind.lower()), None)
    if backend == "gpu" and peak:
        for r in rows:
            if r["option"] in ("plain", "bf16"):
                mfu = r["flops"] / r["step_s"] / peak
                print(f"MFU of the {r['option']} step against {kind}'s nominal bf16 peak "
                      f"({peak / 1e12:.0f} TFLOP/s): {mfu:.3f}")

if __name__ == "__main__":
    main()
