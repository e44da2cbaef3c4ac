"""How fast does the dream step? One run prints every number issue 4 asks for.

0. The machine's kind (CPU model, its bf16-relevant flags, what torch reports,
   and the precision ``"auto"`` chooses) and, in the same run, the landed
   design's default (bf16 autocast, the guided pair: two memory passes per
   step) next to the steps since: one pass (the world's own guidance, a
   distilled world's 1) still under bf16 autocast, then the new default
   (``precision="auto"``, one pass, bf16 the memory model's weights cast
   once: ``MemoryModel.inference_copy``), and fp32 with one pass: single-env
   rgb steps/s and batched tokens env-steps/s at N = 1, 16, 64, the designs
   taking turns over interleaved rounds. ``--compare-only`` stops after it.
1. Single-env step latency (p50 / p95) with rgb and with tokens observations,
   in float32 and bf16 (``precision``): before and after.
2. Batched throughput (env steps/s) of ``DreamVectorEnv`` at N = 1, 8, 16, 32, 64,
   with the default ``step_chunk`` (cache-sized memory passes on a CPU) and
   with one pass over all N (``step_chunk=N``): the chunking gain.
3. The memory model's achieved FLOP/s (FLOPs of one batched pass counted with
   ``torch.utils.flop_counter``, times passes per second) as a share of this
   machine's best matmul peak (float32 or bfloat16, whichever is higher),
   measured in the same run by timing a large matmul.
4. The IRIS-style baseline: generating the same next frame token by token
   (prefill the context, then ``tokens_per_frame`` sequential one-token passes
   with a KV cache). It runs a causal GPT with the memory model's sizes
   (``n_layer``, ``n_head``, ``n_embd``, vocab, sequence length) and random
   weights: a cost proxy, since the weights do not change the cost.
5. A long rollout (tokens observations) sampling the process RSS, to show that
   memory stays flat.

    python benchmarks/dream_step.py                       # bundled checkpoints
    python benchmarks/dream_step.py --checkpoints ROOT --quick
"""

from __future__ import annotations

import argparse
import resource
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from elworld.model.memory import MemoryConfig, MemoryModel
from elworld.world.loading import resolve_checkpoints
from elworld_gym.dream_env import DreamEnv
from elworld_gym.vector_env import DreamVectorEnv

from common import best_matmul_peak, cpu_kind, synchronize


@dataclass
class Args:
    """Benchmark settings; help text in ``HELP``."""

    checkpoints: str | None = None
    device: str | None = None
    batch_sizes: str = "1,8,16,32,64"
    precision: str = "auto"
    guidance: str = ""
    latency_steps: int = 100
    batch_steps: int = 20
    baseline_frames: int = 3
    rollout_steps: int = 10_000
    matmul_size: int = 2048
    seed: int = 0
    threads: int = 0
    landed_guidance: str = "2"
    compare_sizes: str = "1,16,64"
    compare_steps: int = 20
    compare_rounds: int = 3
    compare_only: bool = False
    quick: bool = False


HELP = {
    "checkpoints": "checkpoints root (default: $ELWORLD_CHECKPOINTS, else the bundled demo)",
    "device": "torch device (default: cuda when available, else cpu)",
    "batch_sizes": "comma-separated numbers of envs for the batched throughput",
    "precision": "auto (bf16 where native, else fp32), bf16 or fp32 for the batched measurements",
    "guidance": "classifier-free guidance scale of the dream (default: the world's)",
    "latency_steps": "timed steps per single-env latency measurement",
    "batch_steps": "timed batched steps per N",
    "baseline_frames": "frames generated token by token for the IRIS-style baseline (0: skip it)",
    "rollout_steps": "length of the memory-flatness rollout",
    "matmul_size": "side of the square matmul that measures the machine's peak",
    "seed": "reset seed",
    "threads": "torch CPU threads (0: torch's default)",
    "landed_guidance": "guidance of the landed default in the comparison (its guided pair)",
    "compare_sizes": "comma-separated numbers of envs for the landed-vs-new comparison",
    "compare_steps": "timed steps per figure and round of the landed-vs-new comparison",
    "compare_rounds": "interleaved rounds of the landed-vs-new comparison (figures: medians)",
    "compare_only": "print the machine and the landed-vs-new comparison, then stop",
    "quick": "tiny numbers everywhere (a smoke run, not a measurement)",
}


def parse_args(argv: list[str] | None = None) -> Args:
    """Parse ``argv`` into ``Args``; ``--quick`` shrinks every count."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for field in fields(Args):
        flag = "--" + field.name.replace("_", "-")
        if field.type == "bool":
            parser.add_argument(flag, action="store_true", help=HELP[field.name])
        else:
            kind = {"int": int}.get(str(field.type), str)
            parser.add_argument(flag, type=kind, default=field.default, help=HELP[field.name])
    args = Args(**vars(parser.parse_args(argv)))
    if args.quick:
        args.batch_sizes = args.compare_sizes = "1,4,16"
        args.compare_steps, args.compare_rounds = 3, 2
        args.latency_steps, args.batch_steps, args.baseline_frames = 10, 5, 1
        args.rollout_steps, args.matmul_size = 300, 512
    return args


def rss_mib() -> float:
    """Current resident set size (``/proc/self/statm``; peak RSS where unavailable)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * resource.getpagesize() / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10


# ------------------------------------------------------------------ measurements
def sampling(args: Args, precision: str | None = None) -> dict[str, object]:
    """The env kwargs that choose precision and guidance."""
    guidance = float(args.guidance) if args.guidance else None
    return {"precision": precision or args.precision, "guidance": guidance}


def step_latency(args: Args, obs_type: str, precision: str) -> tuple[float, float, DreamEnv]:
    """p50 and p95 of one ``DreamEnv.step`` in ms."""
    env = DreamEnv(
        args.checkpoints, obs_type=obs_type, device=args.device, **sampling(args, precision)
    )
    env.reset(seed=args.seed)
    rng = np.random.default_rng(args.seed)
    actions = (rng.random((args.latency_steps + 3, 22)) < 0.1).astype(np.uint8)
    times = []
    for i, action in enumerate(actions):
        start = time.perf_counter()
        _, _, terminated, truncated, _ = env.step(action)  # returns numpy: already synced
        if i >= 3:  # warm-up
            times.append((time.perf_counter() - start) * 1e3)
        if terminated or truncated:
            env.reset()
    return float(np.percentile(times, 50)), float(np.percentile(times, 95)), env


def batched_throughput(
    args: Args, num_envs: int, obs_type: str, step_chunk: int | None = None
) -> float:
    """Env steps per second of ``DreamVectorEnv`` with ``num_envs`` envs (``step_chunk`` per pass)."""
    envs = DreamVectorEnv(
        num_envs, args.checkpoints, obs_type=obs_type, device=args.device,
        step_chunk=step_chunk, **sampling(args),
    )  # fmt: skip
    envs.reset(seed=args.seed)
    actions = np.zeros((num_envs, 22), np.uint8)
    envs.step(actions)  # warm-up
    start = time.perf_counter()
    for _ in range(args.batch_steps):
        envs.step(actions)
    elapsed = time.perf_counter() - start
    envs.close()
    return num_envs * args.batch_steps / elapsed


def memory_pass_flops(env: DreamEnv | DreamVectorEnv, num_envs: int) -> int:
    """FLOPs of one memory step of all ``num_envs`` envs, every chunk (counted, not estimated)."""
    world = env.world
    actions = np.zeros((num_envs, world.action_dim), np.uint8)
    counter = FlopCounterMode(display=False)
    with counter:
        world.step(actions)
    return int(counter.get_total_flops())


# ------------------------------------------------- the machine, landed vs new
@dataclass(frozen=True)
class Design:
    """A way of stepping the dream: env kwargs, and whether bf16 runs as autocast (landed)."""

    kwargs: dict
    autocast: bool = False  # fp32 weights under bf16 autocast, as before the bf16 weight copy


def comparison_env(args: Args, num_envs: int, obs_type: str, design: Design) -> object:
    """A ``DreamEnv`` (``num_envs`` 1) or ``DreamVectorEnv`` stepping as ``design`` says, reset."""
    if num_envs == 1:
        env = DreamEnv(args.checkpoints, obs_type=obs_type, device=args.device, **design.kwargs)
    else:
        env = DreamVectorEnv(
            num_envs, args.checkpoints, obs_type=obs_type, device=args.device, **design.kwargs
        )
    if design.autocast and env.world.precision == "bf16":  # the fp32 weights: sample_next autocasts
        paths = resolve_checkpoints(args.checkpoints, None, None, False)
        env.world.memory = MemoryModel.from_checkpoint(paths.memory, device=env.world.device)
    env.reset(seed=args.seed)
    return env


def env_rate(args: Args, env: object, num_envs: int, rng: np.random.Generator) -> float:
    """Env steps/s of ``env`` over ``compare_steps`` steps of sticky-free random keys."""
    shape = (num_envs, 22) if num_envs > 1 else (22,)
    actions = (rng.random((args.compare_steps, *shape)) < 0.1).astype(np.uint8)
    start = time.perf_counter()
    for action in actions:
        _, _, terminated, truncated, _ = env.step(action)
        if num_envs == 1 and (terminated or truncated):
            env.reset()
    return num_envs * args.compare_steps / (time.perf_counter() - start)


LANDED, ONE_PASS, NEW = "landed", "one pass, autocast", "new default"


def landed_vs_new(args: Args) -> None:
    """Print the landed default next to the new one (and the steps between), same run.

    The designs take turns, figure by figure, for ``compare_rounds`` rounds
    (each figure is the median): a noisy machine slows them alike.
    """
    designs = {
        LANDED: Design({"precision": "bf16", "guidance": float(args.landed_guidance)}, True),
        ONE_PASS: Design({"precision": "auto", "guidance": None}, True),
        NEW: Design({"precision": "auto", "guidance": None}),
        "fp32, one pass": Design({"precision": "fp32", "guidance": 1.0}),
    }
    columns = [(1, "rgb")] + [(int(n), "tokens") for n in args.compare_sizes.split(",")]
    envs = {
        (name, column): comparison_env(args, *column, design)
        for name, design in designs.items()
        for column in columns
    }
    rng = np.random.default_rng(args.seed)
    for (_, (num_envs, _)), env in envs.items():  # warm-up
        env_rate(replace(args, compare_steps=2), env, num_envs, rng)
    rates: dict[tuple, list[float]] = {key: [] for key in envs}
    for _ in range(args.compare_rounds):
        for column in columns:
            for name in designs:
                rates[name, column].append(env_rate(args, envs[name, column], column[0], rng))
    for statistic, summary in (("median", np.median), ("best round", np.max)):
        rows = {
            name: [float(summary(rates[name, column])) for column in columns] for name in designs
        }
        comparison_table(args, envs, designs, columns, rows, statistic)
    for env in envs.values():
        env.close()


def comparison_table(
    args: Args, envs: dict, designs: dict, columns: list, rows: dict, statistic: str
) -> None:
    """Print one ``statistic`` (median or best round) of every design, and two ratios."""
    print(
        f"\n== landed default vs new default (env steps/s, {statistic} of {args.compare_rounds} "
        "interleaved rounds; one run, same machine)"
    )
    header = "".join(
        f" {('rgb' if kind == 'rgb' else 'tok') + f' N={n}':>9}" for n, kind in columns
    )
    print(f"{'design':<54}{header}")
    for name, design in designs.items():
        world = envs[name, columns[0]].world
        how = "bf16 autocast" if design.autocast and world.precision == "bf16" else world.precision
        label = f"{name} ({how}, {world.memory.weight_dtype}, g {world.guidance:g})"
        print(f"{label:<54}" + "".join(f" {r:>9.1f}" for r in rows[name]))
    for top, bottom in ((NEW, LANDED), (NEW, ONE_PASS)):
        ratios = "".join(f" {n / o:>8.2f}x" for n, o in zip(rows[top], rows[bottom]))
        print(f"{top + ' / ' + bottom:<54}{ratios}")


# --------------------------------------------------------- IRIS-style baseline
class CausalProxy(nn.Module):
    """A causal GPT with the memory model's sizes, decoding one token per pass (KV cache)."""

    def __init__(self, config: MemoryConfig) -> None:
        super().__init__()
        C, self.n_head = config.n_embd, config.n_head
        self.tokens_per_frame = config.tokens_per_frame
        self.context_frames = config.context_frames
        self.emb = nn.Embedding(config.vocab_size, C)
        self.action = nn.Linear(config.action_dim, C)
        self.ln1 = nn.ModuleList(nn.LayerNorm(C) for _ in range(config.n_layer))
        self.qkv = nn.ModuleList(nn.Linear(C, 3 * C) for _ in range(config.n_layer))
        self.proj = nn.ModuleList(nn.Linear(C, C) for _ in range(config.n_layer))
        self.ln2 = nn.ModuleList(nn.LayerNorm(C) for _ in range(config.n_layer))
        self.fc = nn.ModuleList(nn.Linear(C, 4 * C) for _ in range(config.n_layer))
        self.out = nn.ModuleList(nn.Linear(4 * C, C) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(C)
        self.head = nn.Linear(C, config.vocab_size)

    def _layers(self, x: torch.Tensor, cache: list[list[torch.Tensor]]) -> torch.Tensor:
        """Run ``x`` ``(B, L, C)`` through every layer, appending to the KV cache."""
        B, L, C = x.shape
        for i, kv in enumerate(cache):
            q, k, v = self.qkv[i](self.ln1[i](x)).split(C, dim=2)  # 3 x (B, L, C)
            q, k, v = (
                t.view(B, L, self.n_head, -1).transpose(1, 2) for t in (q, k, v)
            )  # (B, nh, L, hs)
            if kv:
                k, v = (
                    torch.cat([kv[0], k], dim=2),
                    torch.cat([kv[1], v], dim=2),
                )  # (B, nh, P+L, hs)
            kv[:] = [k, v]
            y = F.scaled_dot_product_attention(q, k, v, is_causal=L > 1)  # (B, nh, L, hs)
            x = x + self.proj[i](y.transpose(1, 2).reshape(B, L, C))  # (B, L, C)
            x = x + self.out[i](F.gelu(self.fc[i](self.ln2[i](x))))
        return x

    @torch.inference_mode()
    def generate(self, context: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Next-frame tokens ``(B, T)`` from context tokens ``(B, K*T)`` and actions ``(B, A)``."""
        cache: list[list[torch.Tensor]] = [[] for _ in self.qkv]
        prompt = torch.cat(
            [self.emb(context), self.action(action)[:, None]], dim=1
        )  # (B, K*T+1, C)
        x = self._layers(prompt, cache)[:, -1:]  # (B, 1, C)
        tokens = []
        for _ in range(self.tokens_per_frame):  # one pass per token
            token = self.head(self.ln_f(x)).argmax(dim=-1)  # (B, 1)
            tokens.append(token)
            x = self._layers(self.emb(token), cache)  # (B, 1, C)
        return torch.cat(tokens, dim=1)  # (B, T)


def iris_baseline(
    world_config: MemoryConfig, num_envs: int, frames: int, device: torch.device
) -> float:
    """Env steps per second when each next frame is decoded token by token."""
    proxy = CausalProxy(world_config).to(device).eval()
    K, T = world_config.context_frames, world_config.tokens_per_frame
    context = torch.randint(world_config.vocab_size, (num_envs, K * T), device=device)
    action = torch.zeros(num_envs, world_config.action_dim, device=device)
    proxy.generate(context, action)  # warm-up
    synchronize(device)
    start = time.perf_counter()
    for _ in range(frames):
        proxy.generate(context, action)
    synchronize(device)
    return num_envs * frames / (time.perf_counter() - start)


def memory_rollout(args: Args) -> list[tuple[int, float]]:
    """``(step, RSS MiB)`` samples along a long tokens-observation rollout."""
    env = DreamEnv(
        args.checkpoints,
        obs_type="tokens",
        device=args.device,
        max_episode_steps=1000,
        **sampling(args),
    )
    env.reset(seed=args.seed)
    action = np.zeros(22, np.uint8)
    every = max(1, args.rollout_steps // 10)
    samples = [(0, rss_mib())]
    for step in range(1, args.rollout_steps + 1):
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            env.reset()
        if step % every == 0:
            samples.append((step, rss_mib()))
    return samples


def main(argv: list[str] | None = None) -> int:
    """Run every measurement and print a report."""
    args = parse_args(argv)
    sizes = [int(n) for n in args.batch_sizes.split(",")]
    if args.threads:
        torch.set_num_threads(args.threads)
    print("\n".join(cpu_kind()))
    landed_vs_new(args)
    if args.compare_only:
        return 0

    latency = {
        (precision, obs_type): step_latency(args, obs_type, precision)
        for precision in ("fp32", "bf16", "auto")
        for obs_type in ("rgb", "tokens")
    }
    env = latency[("auto", "tokens")][2]
    world = env.world
    device = world.device
    config = world.memory.config
    print(f"device: {device}  torch threads: {torch.get_num_threads()}  quick: {args.quick}")
    print(
        f"memory model: {config.n_layer} layers x {config.n_embd} wide, {config.n_head} heads, "
        f"{config.attention} attention, vocab {config.vocab_size}, grid "
        f"{config.grid_height}x{config.grid_width}, context {config.context_frames}, "
        f"sampling_steps {world.sampling_steps}, guidance {world.guidance}"
    )
    print("\n== single env step latency (ms)")
    for (precision, obs_type), (p50, p95, _) in latency.items():
        print(f"{precision} {obs_type:<7} p50 {p50:8.2f}   p95 {p95:8.2f}")

    peak, peak_dtype = best_matmul_peak(args.matmul_size, device)
    print(f"\n== best matmul peak ({args.matmul_size}^2, {peak_dtype}): {peak / 1e9:,.1f} GFLOP/s")
    print(f"\n== batched throughput (env steps/s, {args.precision}) and memory-model efficiency")
    print(
        f"   (tokens: default step_chunk {world.step_chunk} envs per memory pass; one pass: all N)"
    )
    print(
        f"{'N':>4} {'tokens':>10} {'one pass':>10} {'gain':>6} {'rgb':>10} {'GFLOP/step':>11} "
        f"{'GFLOP/s':>9} {'of peak':>8}"
    )
    for n in sizes:
        tokens_rate = batched_throughput(args, n, "tokens")
        one_pass = batched_throughput(args, n, "tokens", step_chunk=n)
        rgb_rate = batched_throughput(args, n, "rgb")
        vec = DreamVectorEnv(
            n, args.checkpoints, obs_type="tokens", device=args.device, **sampling(args)
        )
        vec.reset(seed=args.seed)
        flops = memory_pass_flops(vec, n)
        achieved = flops * tokens_rate / n  # steps/s = env steps/s / N
        print(
            f"{n:>4} {tokens_rate:>10.1f} {one_pass:>10.1f} {tokens_rate / one_pass:>5.2f}x "
            f"{rgb_rate:>10.1f} {flops / 1e9:>11.3f} {achieved / 1e9:>9.1f} {achieved / peak:>8.1%}"
        )

    if args.baseline_frames:
        print("\n== IRIS-style baseline: the same-size model decoding token by token (KV cache)")
        print(f"   ({config.tokens_per_frame} sequential passes per frame; random-weight proxy)")
    for n in sorted({sizes[0], sizes[-1]}) if args.baseline_frames else []:
        ours = batched_throughput(args, n, "tokens")
        theirs = iris_baseline(config, n, args.baseline_frames, device)
        print(
            f"N={n:<3} one-shot {ours:10.1f} steps/s   token-by-token {theirs:10.2f} steps/s   "
            f"speed-up x{ours / theirs:,.0f}"
        )

    print(f"\n== {args.rollout_steps}-step rollout (tokens obs): RSS MiB")
    samples = memory_rollout(args)
    print("  ".join(f"{step}:{rss:.0f}" for step, rss in samples))
    later = [rss for _, rss in samples[1:]]
    print(f"growth after the first sample: {max(later) - later[0]:+.1f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
