"""Calibrate a training budget: is it short enough, and does it still rank designs right?

Trains v1, v2 and random designs of the default space (in the default two-stage skeleton) at a
budget (``quick`` by default) and at the same budget with ten times the training images, then
reports Kendall's tau between the two rankings by validation accuracy (all designs, and the
batch-norm ones alone), how much of its longer-budget accuracy v1 reaches, and the seconds per
trial, from which it estimates a whole search (100 random trials plus the references). Writes the
"Budget calibration" section of BENCHMARKS.md.

    python -m bench calibrate            # the full measurement (about 20-25 min on 2 CPU cores)
    python -m bench calibrate --quick    # a sanity run of a few minutes

More designs on two cores: one process per core, each training half of them into a shared cache,
then a run that reports from the cache (and writes the section):

    C=bench/results/calibrate/runs.json
    python -m bench calibrate --threads 1 --designs 22 --cache $C --part 1/2 &
    python -m bench calibrate --threads 1 --designs 22 --cache $C --part 2/2; wait
    python -m bench calibrate --threads 1 --designs 22 --cache $C --reuse-short
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from pathlib import Path

import optuna
import torch

from explorer.training import (
    BUDGETS,
    DataError,
    TrainConfig,
    count_flops,
    evaluate,
    load_dataset,
    measure_latency,
    resolve_device,
    train,
)
from search_space import (
    REFERENCES,
    NetworkConfig,
    build_network,
    config_from_trial,
    network_params,
)

from ._common import (
    LOAD_AT_START,
    ROOT,
    JsonState,
    add_run_args,
    command,
    environment_lines,
    results_dir,
    set_threads,
    write_section,
)

SECTION = "Budget calibration"
CACHE_EXAMPLE = (results_dir("calibrate") / "runs.json").relative_to(ROOT)


def random_designs(
    count: int, seed: int, max_params: int | None
) -> list[tuple[str, NetworkConfig]]:
    """`count` valid designs drawn at random from the default space, in draw order."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out: list[tuple[str, NetworkConfig]] = []
    while len(out) < count:
        trial = study.ask()
        try:
            net = NetworkConfig(block=config_from_trial(trial))
        except ValueError:  # fewer than two branches: the search rejects these too
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            continue
        study.tell(trial, 0.0)
        if max_params is None or network_params(net) <= max_params:
            out.append((f"r{trial.number}", net))
    return out


def parse_fields(pairs: list[str], config: TrainConfig) -> dict:
    """``FIELD=VALUE`` strings as TrainConfig changes, each value read as its field's type."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    changes = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or name not in fields:
            raise ValueError(f"expected FIELD=VALUE with a TrainConfig field, got {pair!r}")
        current = getattr(config, name)
        if text.lower() == "none":
            changes[name] = None
        elif isinstance(current, bool):
            if text.lower() not in ("true", "false"):
                raise ValueError(f"{name} takes true or false, got {text!r}")
            changes[name] = text.lower() == "true"
        elif isinstance(current, int) or name in ("train_images", "val_images", "final_val_images"):
            changes[name] = int(text)
        elif isinstance(current, float):
            changes[name] = float(text)
        else:
            changes[name] = text
    return changes


def trial_seconds(net: NetworkConfig, data, config: TrainConfig, device: torch.device) -> dict:
    """Train one design as a search trial would (plus its cost metrics) and time it."""
    torch.manual_seed(config.seed)
    start = time.perf_counter()
    model = build_network(net)
    result = train(model, data, config, device)
    shape = data.input_shape
    flops = count_flops(model, shape)
    measure_latency(model, shape, 1, device, repeats=10, budget_s=0.3)
    measure_latency(model, shape, config.batch_size, device, repeats=3, budget_s=0.5)
    return {
        "val_acc": result.final_val_acc,
        "curve": result.val_acc,
        "train_s": result.train_time_s,
        "trial_s": time.perf_counter() - start,
        "images_per_s": result.images_per_s,
        "flops": flops,
    }


def kendall(a: list[float], b: list[float]) -> float:
    from scipy.stats import kendalltau

    return float(kendalltau(a, b).statistic) if len(a) >= 2 else float("nan")


def long_cell(accs: list[float]) -> str:
    """One design's longer-budget accuracy: the value, or the mean and each seed's."""
    if len(accs) == 1:
        return f"{accs[0]:.4f}"
    return f"{statistics.fmean(accs):.4f} ({' / '.join(f'{v:.4f}' for v in accs)})"


def bootstrap_interval(
    statistic, columns: list[list[float]], resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """A 95% bootstrap interval of `statistic(*columns)`: designs (rows) drawn again with
    replacement, the same draw for every column."""
    import random

    rng = random.Random(seed)
    n = len(columns[0])
    values = []
    for _ in range(resamples):
        pick = [rng.randrange(n) for _ in range(n)]
        value = statistic(*([col[i] for i in pick] for col in columns))
        if value == value:  # a resample of one repeated design has no tau
            values.append(value)
    values.sort()
    return values[int(0.025 * len(values))], values[int(0.975 * len(values)) - 1]


def kendall_interval(a: list[float], b: list[float]) -> tuple[float, float]:
    """A 95% bootstrap interval of Kendall's tau between two rankings of the designs."""
    return bootstrap_interval(kendall, [a, b])


def kendall_gain_interval(a: list[float], b: list[float], ref: list[float]) -> tuple[float, float]:
    """A 95% paired bootstrap interval of tau(a, ref) - tau(b, ref)."""
    return bootstrap_interval(lambda a, b, r: kendall(a, r) - kendall(b, r), [a, b, ref])


def fit_seconds(rows: list[dict]) -> tuple[float, float]:
    """Least squares trial seconds = a + b * forward MFLOPs, over the measured designs."""
    xs = [r["flops"] / 1e6 for r in rows]
    ys = [r["trial_s"] for r in rows]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else 0.0
    return my - b * mx, b


def estimate_search(a: float, b: float, trials: int, seed: int, shape) -> tuple[float, float]:
    """(total minutes, mean seconds) for `trials` random designs plus the references."""
    nets = [net for _, net in random_designs(trials, seed + 1000, None)]
    nets += [NetworkConfig(block=block) for block in REFERENCES.values()]
    seconds = []
    for net in nets:
        with torch.device("meta"):  # FLOPs only: no memory, no initialisation cost
            model = build_network(net)
        seconds.append(a + b * count_flops(model, shape) / 1e6)
    return sum(seconds) / 60, statistics.fmean(seconds)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--budget",
        default="quick",
        choices=sorted(BUDGETS),
        help="the budget to calibrate (default: quick)",
    )
    parser.add_argument(
        "--factor",
        type=int,
        default=10,
        help="the longer budget trains this many times more images (default: 10)",
    )
    parser.add_argument(
        "--designs", type=int, default=10, help="random designs besides v1 and v2 (default: 10)"
    )
    parser.add_argument(
        "--max-params",
        type=int,
        default=150_000,
        help="skip random designs above this many parameters, to bound the run "
        "time (default: 150000; 0 for no limit)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the random designs (default: 0)"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)"
    )
    add_run_args(parser, SECTION, quick="2 random designs, factor 2")
    parser.add_argument(
        "--cache",
        default=None,
        help="a JSON file keeping the longer runs' results, keyed by design, "
        "longer-budget config and device, so a re-run that changes only "
        f"how the short budget validates need not retrain them (e.g. {CACHE_EXAMPLE})",
    )
    parser.add_argument(
        "--short-images",
        type=int,
        default=None,
        help="train the short runs on this many images per epoch instead of the budget's own, "
        "against the same longer budget (factor x the budget's own): to try a longer or shorter "
        "variant of a budget without retraining the reference",
    )
    parser.add_argument(
        "--short-set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="change one TrainConfig field of the short runs only (repeatable; e.g. lr=0.003), "
        "against the same longer budget: to try other shapes of a budget without retraining the "
        "reference",
    )
    parser.add_argument(
        "--long-seeds",
        type=int,
        default=1,
        help="train the longer budget with this many seeds and rank by their mean; with 2 or "
        "more the report also gives tau between two longer-budget seeds, the ceiling of any "
        "agreement with one longer run (default: 1)",
    )
    parser.add_argument(
        "--part",
        default=None,
        metavar="K/N",
        help="train only every N-th design starting at the K-th, into --cache, "
        "and write nothing: N such runs side by side share the work; a "
        "final run with --reuse-short then reports from the cache",
    )
    parser.add_argument(
        "--reuse-short",
        action="store_true",
        help="take the short-budget runs from --cache as well (their accuracies "
        "and seconds as measured then) instead of retraining them",
    )
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line, checked; ``part`` as (K, N) or None, ``short`` and ``long`` the two
    budgets' TrainConfigs (`calibration_budgets`)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.part is not None:
        try:
            part = tuple(int(x) for x in args.part.split("/"))
            if len(part) != 2 or not 1 <= part[0] <= part[1]:
                raise ValueError
        except ValueError:
            parser.error(f"--part must be K/N with 1 <= K <= N, not {args.part!r}")
        args.part = part
        if not args.cache:
            parser.error("--part needs --cache, where its results go")
    if args.reuse_short and not args.cache:
        parser.error("--reuse-short needs --cache")
    if args.quick:
        args.designs, args.factor, args.no_write = 2, 2, True
    if args.short_images is not None and args.short_images < 1:
        parser.error("--short-images must be at least 1")
    if args.factor < 2 or args.designs < 0 or args.long_seeds < 1:
        parser.error("--factor must be at least 2, --designs at least 0, --long-seeds at least 1")
    try:
        args.short, args.long = calibration_budgets(args)
    except ValueError as exc:
        parser.error(str(exc))
    return args


def calibration_budgets(args: argparse.Namespace) -> tuple[TrainConfig, TrainConfig]:
    """(the short runs' config, the longer runs'); ValueError says why the budget cannot be
    calibrated as asked."""
    short = BUDGETS[args.budget]
    if short.train_images is None:
        raise ValueError(
            f"budget {args.budget} trains on the whole split; it cannot be made {args.factor}x longer"
        )
    # The longer run validates once, at its end, on the whole validation split (`Calibration`).
    long = dataclasses.replace(
        short, train_images=short.train_images * args.factor, val_images=1, final_val_images=1
    )
    if args.short_images:  # a variant of the budget against the same longer reference
        short = dataclasses.replace(short, train_images=args.short_images)
    if args.short_set:
        try:
            short = dataclasses.replace(short, **parse_fields(args.short_set, short))
        except ValueError as exc:
            raise ValueError(f"--short-set: {exc}") from None
    return short, long


def _key(net: NetworkConfig, config: TrainConfig, device: torch.device) -> str:
    return json.dumps([net.to_dict(), config.to_dict(), device.type], sort_keys=True)


@dataclasses.dataclass
class Calibration:
    """Training the designs at the two budgets, through the cache when there is one."""

    args: argparse.Namespace
    device: torch.device
    data: object
    cache: JsonState | None
    reused: dict[str, int] = dataclasses.field(default_factory=lambda: {"short": 0, "long": 0})

    def short_run(self, net: NetworkConfig) -> dict:
        """The design at the short budget, as a search trial (`trial_seconds`)."""
        key = _key(net, self.args.short, self.device)
        if self.cache is not None and self.args.reuse_short:
            found = self.cache.get(key)
            if found is not None:
                self.reused["short"] += 1
                return found
        result = trial_seconds(net, self.data, self.args.short, self.device)
        if self.cache is not None:
            self.cache.put(key, result)
        return result

    def long_runs(self, net: NetworkConfig) -> tuple[list[float], list[float]]:
        """(validation accuracy, training seconds) of each seed of the longer budget."""
        accs, secs = [], []
        for offset in range(self.args.long_seeds):
            config = dataclasses.replace(self.args.long, seed=self.args.long.seed + offset)
            key = _key(net, config, self.device)
            cached = self.cache.get(key) if self.cache is not None else None
            if cached is not None:
                self.reused["long"] += 1
            else:
                torch.manual_seed(config.seed)
                model = build_network(net)
                cached = {
                    "long_train_s": train(model, self.data, config, self.device).train_time_s,
                    "long_acc": evaluate(model, self.data, self.device, "val")[1],
                }
                if self.cache is not None:
                    self.cache.put(key, cached)
            accs.append(cached["long_acc"])
            secs.append(cached["long_train_s"])
        return accs, secs

    def own_run(self, net: NetworkConfig) -> dict | None:
        """A variant's design under the budget itself, when the cache has it."""
        if self.cache is None or self.args.short == BUDGETS[self.args.budget]:
            return None
        return self.cache.get(_key(net, BUDGETS[self.args.budget], self.device))

    def row(self, name: str, net: NetworkConfig) -> dict:
        """One design's row of the table, printed as it is measured."""
        quick = self.short_run(net)
        long_accs, long_secs = self.long_runs(net)
        own = self.own_run(net)
        row = {
            "name": name,
            "block": net.block.short(),
            "bn": net.block.bn != "none",
            "params": network_params(net),
            **quick,
            "long_acc": statistics.fmean(long_accs),
            "long_accs": long_accs,
            "long_train_s": statistics.fmean(long_secs),
            "own_acc": own["val_acc"] if own else None,
        }
        args = self.args
        print(
            f"{name:>5} {row['params']:>7} {row['flops'] / 1e6:6.1f}M  "
            f"{args.budget} {row['val_acc']:.4f} ({row['train_s']:.1f}s train, "
            f"{row['trial_s']:.1f}s trial)  {args.factor}x {row['long_acc']:.4f} "
            f"({row['long_train_s']:.0f}s)  load {os.getloadavg()[0]:.2f}  {row['block']}",
            flush=True,
        )
        return row


def variant_lines(rows: list[dict], args: argparse.Namespace) -> list[str]:
    """A variant of the budget (--short-images, --short-set) against the budget itself, when the
    cache holds the budget's own runs of every design."""
    if not rows or any(r["own_acc"] is None for r in rows):
        return []
    variant = [r["val_acc"] for r in rows]
    own = [r["own_acc"] for r in rows]
    ref = [r["long_acc"] for r in rows]
    gain = kendall(variant, ref) - kendall(own, ref)
    gain_low, gain_high = kendall_gain_interval(variant, own, ref)
    return [
        f"against {args.budget} itself (its runs from the cache): this variant ranks the "
        f"designs with tau {kendall(variant, own):.3f} against it; {args.budget} ranks them "
        f"with tau {kendall(own, ref):.3f} against {args.factor}x, so the variant gains "
        f"{gain:+.3f} (95% paired bootstrap interval {gain_low:+.2f} to {gain_high:+.2f}); "
        f"the mean of the two ranks them with tau "
        f"{kendall([(x + y) / 2 for x, y in zip(variant, own)], ref):.3f} against "
        f"{args.factor}x; one accuracy differs between the two by "
        f"{statistics.stdev(x - y for x, y in zip(variant, own)) / 2**0.5:.4f} (sd / sqrt 2, "
        f"the seed noise when only the seed differs), while {args.budget}'s accuracies "
        f"spread by {statistics.stdev(own):.4f} and the {args.factor}x ones by "
        f"{statistics.stdev(ref):.4f} (sd over the designs)"
    ]


def long_seed_lines(rows: list[dict], args: argparse.Namespace) -> list[str]:
    """With two or more longer-budget seeds: how well one of them ranks against another."""
    if args.long_seeds < 2:
        return []
    first = [r["long_accs"][0] for r in rows]
    second = [r["long_accs"][1] for r in rows]
    first_bn = [r["long_accs"][0] for r in rows if r["bn"]]
    second_bn = [r["long_accs"][1] for r in rows if r["bn"]]
    spread = statistics.fmean(statistics.stdev(r["long_accs"]) for r in rows)
    return [
        f"the {args.factor}x accuracy is the mean of {args.long_seeds} seeds (seed-to-seed "
        f"standard deviation {spread:.4f}, mean over designs); one {args.factor}x seed against "
        f"another ranks the designs with tau {kendall(first, second):.3f} over all and "
        f"{kendall(first_bn, second_bn):.3f} over the batch-norm ones: the most any short "
        f"budget can agree with a single {args.factor}x run",
        f"{args.budget} against the first {args.factor}x seed alone: tau "
        f"{kendall([r['val_acc'] for r in rows], first):.3f} over all, "
        f"{kendall([r['val_acc'] for r in rows if r['bn']], first_bn):.3f} over the "
        f"batch-norm ones",
    ]


def summary_lines(
    rows: list[dict], args: argparse.Namespace, cal: Calibration, load_start: float, started: float
) -> list[str]:
    """The findings: Kendall's tau against the longer budget, v1's share of its longer accuracy,
    the seconds per trial and the estimated search, what came from the cache, the load."""
    short_acc, long_acc = [r["val_acc"] for r in rows], [r["long_acc"] for r in rows]
    tau_all = kendall(short_acc, long_acc)
    tau_bn = kendall(
        [r["val_acc"] for r in rows if r["bn"]], [r["long_acc"] for r in rows if r["bn"]]
    )
    n_bn = sum(r["bn"] for r in rows)
    low, high = kendall_interval(short_acc, long_acc)
    v1 = next(r for r in rows if r["name"] == "v1")
    v1_ratio = v1["val_acc"] / v1["long_acc"]
    a, b = fit_seconds(rows)
    total_min, mean_s = estimate_search(a, b, 100, args.seed, cal.data.input_shape)
    reused = cal.reused
    return [
        f"Kendall tau, {args.budget} vs {args.factor}x: {tau_all:.3f} over all {len(rows)} designs "
        f"(target >= 0.6: {'met' if tau_all >= 0.6 else 'not met'}; 95% bootstrap interval "
        f"{low:.2f} to {high:.2f}), {tau_bn:.3f} over the "
        f"{n_bn} batch-norm designs (target >= 0.5: {'met' if tau_bn >= 0.5 else 'not met'})",
        *variant_lines(rows, args),
        *long_seed_lines(rows, args),
        f"v1 (no batch norm) reaches {v1_ratio:.0%} of its {args.factor}x accuracy (target >= 80%)",
        f"{args.budget} trial, measured: {statistics.fmean(r['train_s'] for r in rows):.1f} s training, "
        f"{statistics.fmean(r['trial_s'] for r in rows):.1f} s with validation and cost metrics "
        f"(mean; max {max(r['trial_s'] for r in rows):.1f} s)",
        f"estimated search of 100 random trials plus the {len(REFERENCES)} references: "
        f"{total_min:.1f} min ({mean_s:.1f} s per trial, from trial s = {a:.2f} + {b:.3f} x forward "
        f"MFLOPs fitted on the designs above; target <= 20 min)",
        *(
            [
                f"from the cache {args.cache}: {reused['long']} of the {args.factor}x runs and "
                f"{reused['short']} of the {args.budget} runs (earlier runs of the same designs, "
                f"configs, seed and device; --part runs fill it)"
            ]
            if reused["long"] or reused["short"]
            else []
        ),
        f"load average {load_start:.2f} at the start, {os.getloadavg()[0]:.2f} at the end; "
        f"{(time.time() - started) / 60:.1f} min in all",
    ]


def budget_sentence(args: argparse.Namespace) -> str:
    """How the two budgets and the random designs were set up, for the section."""
    short, long = args.short, args.long
    cfg = ", ".join(f"{k}={v}" for k, v in short.to_dict().items())
    return (
        f"Budget `{args.budget}`: {cfg}. The longer budget trains {args.factor}x the images per "
        f"epoch (same epochs and schedule"
        + (
            f"; {long.train_images:,} images, {args.factor}x the budget's own, while --short-images "
            f"sets the short runs' {args.short_images:,}"
            if args.short_images
            else ""
        )
        + (
            "; the budget's own "
            + ", ".join(
                f"{name}={getattr(BUDGETS[args.budget], name)}"
                for name in sorted(parse_fields(args.short_set, short))
            )
            + f", while --short-set gives the short runs {', '.join(args.short_set)}"
            if args.short_set
            else ""
        )
        + ") and validates on the whole validation split; "
        f"`{args.budget}` validates on its own `val_images` slice, as the search does. Random "
        f"designs: the default space, seed {args.seed}"
        + (
            f", those above {args.max_params:,} parameters skipped to bound the run time"
            if args.max_params
            else ""
        )
        + "."
    )


def section_body(
    rows: list[dict],
    args: argparse.Namespace,
    summary: list[str],
    environment: list[str],
    command: str,
) -> str:
    """The "Budget calibration" section: command, machine, budgets, the table, the findings."""
    seeds_head = ", mean (per seed)" if args.long_seeds > 1 else ""
    body = [
        f"Command: `{command.strip()}`",
        "",
        *environment,
        "",
        budget_sentence(args),
        "",
        f"| design | params | fwd MFLOPs | BN | {args.budget} val acc | per-epoch val acc | "
        f"train s | trial s | {args.factor}x val acc{seeds_head} | {args.factor}x train s | block |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        curve = " ".join(f"{v:.2f}" for v in r["curve"])
        body.append(
            f"| {r['name']} | {r['params']:,} | {r['flops'] / 1e6:.1f} | {'yes' if r['bn'] else 'no'} "
            f"| {r['val_acc']:.4f} | {curve} | {r['train_s']:.1f} | {r['trial_s']:.1f} "
            f"| {long_cell(r['long_accs'])} | {r['long_train_s']:.0f} "
            f"| `{r['block']}` |"
        )
    body += [""] + [f"- {line}" for line in summary]
    return "\n".join(body)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        device = resolve_device(args.device)
        data = load_dataset(data_dir=args.data_dir).on(device)
    except (ValueError, DataError) as exc:
        print(f"calibrate: {exc}", file=sys.stderr)
        return 2
    threads = set_threads(args.threads)
    designs = [
        ("v1", NetworkConfig(block=REFERENCES["v1"])),
        ("v2", NetworkConfig(block=REFERENCES["v2"])),
    ]
    designs += random_designs(args.designs, args.seed, args.max_params or None)
    load_start = LOAD_AT_START
    started = time.time()
    print(
        f"{len(designs)} designs, budget {args.budget} vs {args.factor}x images, device {device}, "
        f"{threads} threads, load {load_start:.2f}",
        flush=True,
    )
    cal = Calibration(args, device, data, JsonState(args.cache) if args.cache else None)
    part = args.part
    rows = [
        cal.row(name, net)
        for index, (name, net) in enumerate(designs)
        if part is None or index % part[1] == part[0] - 1
    ]
    if part is not None:
        print(f"part {part[0]}/{part[1]} done: {len(rows)} designs into the cache {args.cache}")
        return 0
    summary = summary_lines(rows, args, cal, load_start, started)
    for line in summary:
        print(line)
    if args.no_write:
        return 0
    environment = environment_lines(device, threads, load_start)
    body = section_body(rows, args, summary, environment, command("calibrate", argv))
    write_section(SECTION, body, Path(args.output))
    print(f"wrote the '{SECTION}' section of {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
