"""How fast does the trainer train, against the machine's matmul peak and a plain DataLoader loop?

Measures, in one run: the float32 matmul peak (bf16 on CUDA), `explorer.training.train`'s images/s
and achieved FLOP/s on the v1 and v2 skeleton networks over a few batch sizes and thread counts,
the cost of torch.compile, and the same model trained by a plain torchvision ``DataLoader`` +
transforms loop. Training FLOPs are counted as 3 x the forward FLOPs (forward, plus a backward
for inputs and weights), forward FLOPs as 2 x multiply-adds (see explorer.training.metrics). Writes the
"Trainer throughput" section of BENCHMARKS.md with the command, machine, date and load average.

    python -m bench trainer            # the full measurement (a few minutes on 2 CPU cores)
    python -m bench trainer --quick    # a sanity run of well under a minute, nothing written
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from explorer.training import (
    BUDGETS,
    TRAIN_FLOPS_PER_FORWARD,
    DataError,
    TrainConfig,
    count_flops,
    load_dataset,
    resolve_device,
    train,
)
from search_space import REFERENCES, NetworkConfig, build_network

from ._common import (
    LOAD_AT_START,
    add_run_args,
    command,
    environment_lines,
    matmul_peak,
    set_threads,
    write_section,
)

SECTION = "Trainer throughput"


# --- measurements ------------------------------------------------------------------------------


def trainer_rate(
    net: NetworkConfig, data, config: TrainConfig, device: torch.device, compile_model: bool = False
) -> tuple[float, float]:
    """(images/s of the last epoch, seconds of the first) with `explorer.training.train`; the first
    epoch pays for one-off set-up (oneDNN primitives, cuDNN autotuning, compilation)."""
    torch.manual_seed(0)
    model = build_network(net)
    if compile_model:
        model = torch.compile(model)
    result = train(model, data, config, device)
    last = config.train_images // config.batch_size * config.batch_size
    return last / result.epoch_train_s[-1], result.epoch_time_s[0]


def dataloader_rate(
    net: NetworkConfig, dataset, config: TrainConfig, images: int, channels_last: bool
) -> float:
    """images/s of a plain loop: a map-style dataset with torchvision transforms per sample, a
    DataLoader, float32 on the CPU."""
    from torch.utils.data import DataLoader
    from torchvision.transforms import v2

    info = dataset.info
    steps = [v2.RandomCrop(info.image_size, padding=info.pad)]
    if info.flip:
        steps.append(v2.RandomHorizontalFlip())
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(info.mean, info.std)]
    transform = v2.Compose(steps)

    class Images(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(dataset.train_labels)

        def __getitem__(self, i: int):
            return transform(dataset.train_images[i]), dataset.train_labels[i]

    torch.manual_seed(0)
    model = build_network(net)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model.to(memory_format=fmt).train()
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    loader = DataLoader(Images(), batch_size=config.batch_size, shuffle=True, drop_last=True)
    seen, start = 0, None
    for i, (x, y) in enumerate(loader):
        if i == 2:  # the first steps build oneDNN primitives: leave them out, as for ours
            start, seen = time.perf_counter(), 0
        x = x.contiguous(memory_format=fmt)
        loss = F.cross_entropy(model(x), y, label_smoothing=config.label_smoothing)
        opt.zero_grad()
        loss.backward()
        opt.step()
        seen += len(y)
        if seen >= images and start is not None:
            break
    return seen / (time.perf_counter() - start)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line, checked; ``batch_sizes`` and ``thread_counts`` as lists of integers."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--images", type=int, default=2048, help="training images per timed epoch (default: 2048)"
    )
    parser.add_argument(
        "--batch-sizes",
        default="16,64,256",
        help="batch sizes to time on v1; the first and last also on v2, the first "
        "for torch.compile and the DataLoader loop (default: 16,64,256)",
    )
    parser.add_argument(
        "--threads",
        default=None,
        help="comma-separated CPU thread counts to compare (default: 1 and all)",
    )
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile run")
    add_run_args(parser, SECTION, quick="256 images, batch 64, no compile")
    args = parser.parse_args(argv)
    try:
        args.batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
        args.thread_counts = (
            [int(t) for t in args.threads.split(",")]
            if args.threads
            else sorted({1, os.cpu_count() or 1})
        )
        if min(args.batch_sizes) < 1 or min(args.thread_counts) < 1:
            raise ValueError
    except ValueError:
        parser.error("--batch-sizes and --threads take comma-separated positive integers")
    if args.quick:
        args.images, args.batch_sizes, args.no_compile, args.no_write = 256, [64], True, True
        args.thread_counts = args.thread_counts[-1:]
    return args


@dataclasses.dataclass
class Measurement:
    """What the runs share (device, data, the two networks and their forward FLOPs, the budget
    they train under) and what they found: rows of (run, batch, threads, images/s, forward FLOPs,
    load average) and the matmul peak, (FLOP/s, n), per thread count."""

    device: torch.device
    dataset: Any
    data: Any
    nets: dict[str, NetworkConfig]
    fwd: dict[str, float]
    base: TrainConfig
    rows: list[tuple] = dataclasses.field(default_factory=list)
    peaks: dict[int, tuple[float, int]] = dataclasses.field(default_factory=dict)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def record(self, run: str, batch: int, threads: int, rate: float, ref: str) -> None:
        load = os.getloadavg()[0]
        self.rows.append((run, batch, threads, rate, self.fwd[ref], load))
        print(
            f"{run:<46} batch {batch:>4} threads {threads}  {rate:8.0f} img/s  "
            f"{rate * TRAIN_FLOPS_PER_FORWARD * self.fwd[ref] / 1e9:6.1f} GFLOP/s  load {load:.2f}",
            flush=True,
        )

    def peak_for(self, threads: int) -> float:
        if threads in self.peaks:
            return self.peaks[threads][0]
        return max(p[0] for p in self.peaks.values())


def measure_trainer(m: Measurement, args: argparse.Namespace) -> None:
    """Per thread count (one, the default, on CUDA): the matmul peak, then the trainer on v1 at
    every batch size and on v2 at the first and last."""
    for threads in args.thread_counts if not m.cuda else [set_threads(None)]:
        set_threads(threads)
        if m.cuda:
            peak = matmul_peak(m.device, torch.bfloat16, (4096, 8192), 2.0)
        else:
            peak = matmul_peak(
                m.device, torch.float32, (256, 512, 1024, 2048), 1.0 if args.quick else 3.0
            )
        m.peaks[threads] = peak
        print(
            f"matmul peak ({'bf16' if m.cuda else 'float32'}, {threads} threads): "
            f"{peak[0] / 1e9:.1f} GFLOP/s at n={peak[1]}  load {os.getloadavg()[0]:.2f}",
            flush=True,
        )
        for ref in m.nets:
            sizes = args.batch_sizes
            if ref != "v1":
                sizes = dict.fromkeys(sizes[:: len(sizes) - 1 or 1])
            for batch in sizes:
                config = dataclasses.replace(m.base, batch_size=batch)
                rate, _ = trainer_rate(m.nets[ref], m.data, config, m.device)
                m.record(f"explorer.training, {ref}", batch, threads, rate, ref)


def measure_compile(m: Measurement, batch: int, threads: int) -> str:
    """The trainer on v1 under torch.compile; a line on what compiling cost (or why it failed)."""
    config = dataclasses.replace(m.base, batch_size=batch)
    try:
        t0 = time.perf_counter()
        rate, first = trainer_rate(m.nets["v1"], m.data, config, m.device, compile_model=True)
        m.record("explorer.training, v1, torch.compile", batch, threads, rate, "v1")
        return (
            f"torch.compile: first epoch {first:.1f} s (compilation included), "
            f"{time.perf_counter() - t0:.1f} s for the whole run"
        )
    except Exception as exc:  # a missing compiler or an unsupported op: report, don't fail
        return f"torch.compile failed: {type(exc).__name__}: {str(exc).splitlines()[0]}"


def measure_dataloader(m: Measurement, images: int, batch: int, threads: int) -> None:
    """The plain DataLoader loop on v1, in the default memory format and in channels_last."""
    config = dataclasses.replace(m.base, batch_size=batch)
    for cl in (False, True):
        rate = dataloader_rate(m.nets["v1"], m.dataset, config, images, channels_last=cl)
        run = f"DataLoader + transforms loop, v1{', channels_last' if cl else ''}"
        m.record(run, batch, threads, rate, "v1")


def results_table(m: Measurement) -> tuple[list[str], str]:
    """(the markdown table of every run, the verdict on the trainer's best share of the peak)."""
    table = [
        f"| run | batch | threads | images/s | fwd MFLOPs/image | achieved GFLOP/s (3 x fwd) "
        f"| % of {'bf16' if m.cuda else 'float32'} matmul peak | load avg (1 min) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for run, batch, thr, rate, flops, load in m.rows:
        achieved = rate * TRAIN_FLOPS_PER_FORWARD * flops
        table.append(
            f"| {run} | {batch} | {thr} | {rate:,.0f} | {flops / 1e6:.1f} | "
            f"{achieved / 1e9:.1f} | {achieved / m.peak_for(thr):.0%} | {load:.2f} |"
        )
    best = max(
        m.rows, key=lambda r: r[3] * r[4] / m.peak_for(r[2]) if r[0].startswith("explorer") else 0
    )
    best_frac = best[3] * TRAIN_FLOPS_PER_FORWARD * best[4] / m.peak_for(best[2])
    verdict = (
        f"Best of the trainer: {best_frac:.0%} of the matmul peak ({best[0]}, batch {best[1]}, "
        f"{best[2]} threads); the target of 75% is {'met' if best_frac >= 0.75 else 'not met'}."
    )
    return table, verdict


def write_results(
    m: Measurement,
    args: argparse.Namespace,
    command: str,
    threads: int,
    load_start: float,
    compile_note: str,
) -> None:
    """Rewrite the section of `args.output` with the command, the machine, the peaks and the
    table."""
    table, verdict = results_table(m)
    peak_lines = [
        f"- Matmul peak ({'bf16' if m.cuda else 'float32'}, {t} threads): "
        f"{p[0] / 1e9:.1f} GFLOP/s (n = {p[1]})"
        for t, p in m.peaks.items()
    ]
    body = [
        f"Command: `{command.strip()}`",
        "",
        *environment_lines(m.device, threads, load_start),
        *peak_lines,
        f"- Trainer runs: budget `quick` settings, {args.images} images per epoch, 2 epochs, the "
        f"last timed (the first builds oneDNN primitives / autotunes); FLOPs = 2 x multiply-adds, "
        f"training = {TRAIN_FLOPS_PER_FORWARD} x forward",
        "",
        *table,
        "",
        f"- {verdict}",
    ]
    if compile_note:
        body.append(f"- {compile_note}")
    write_section(SECTION, "\n".join(body), Path(args.output))
    print(f"wrote the '{SECTION}' section of {args.output}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        device = resolve_device(args.device)
        dataset = load_dataset(data_dir=args.data_dir)
    except (ValueError, DataError) as exc:
        print(f"trainer bench: {exc}", file=sys.stderr)
        return 2
    nets = {ref: NetworkConfig(block=REFERENCES[ref]) for ref in ("v1", "v2")}
    m = Measurement(
        device=device,
        dataset=dataset,
        data=dataset.on(device),
        nets=nets,
        fwd={
            ref: count_flops(build_network(net), dataset.input_shape) for ref, net in nets.items()
        },
        base=dataclasses.replace(
            BUDGETS["quick"], epochs=2, train_images=args.images, val_images=256
        ),
    )
    measure_trainer(m, args)
    threads = args.thread_counts[-1] if not m.cuda else torch.get_num_threads()
    set_threads(threads)
    compile_note = ""
    if not args.no_compile:
        compile_note = measure_compile(m, args.batch_sizes[0], threads)
        print(compile_note, flush=True)
    if not m.cuda:
        measure_dataloader(m, args.images, args.batch_sizes[0], threads)
    table, verdict = results_table(m)
    print("\n".join(table))
    print(verdict)
    if compile_note:
        print(compile_note)
    if not args.no_write:
        write_results(m, args, command("trainer", argv), threads, LOAD_AT_START, compile_note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
