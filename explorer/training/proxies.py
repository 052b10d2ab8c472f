"""Training-free scores of an untrained network, and pre-screening search candidates with them.

Zero-cost proxies (Abdelfattah et al. 2021, "Zero-Cost Proxies for Lightweight NAS", ICLR) score a
design at initialisation from one batch of real data, in a fraction of a second:

============  ================================================================================
``synflow``   sum over weights of |w * dR/dw|, where R is the sum of the outputs of the network
              with every parameter replaced by its absolute value, fed one all-ones image, in
              double precision (Tanaka et al. 2020, "Pruning neural networks without any data by
              iteratively conserving synaptic flow"). Batch norm runs on reset running statistics
              (mean 0, variance 1), so it is the positive affine map |gamma| x + |beta| and no
              batch statistic enters: the score stays a data-free path count, with or without BN.
``naswot``    log-determinant of the kernel K[i, j] = number of ReLU units on which images i and
              j agree (both active or both inactive), over the batch (Mellor et al. 2021,
              "Neural Architecture Search without Training", ICML, their final score).
``jacob_cov`` -sum(log(v + k) + 1 / (v + k)), k = 1e-5, over the eigenvalues v of the correlation
              matrix of the per-image input gradients of the summed outputs (Mellor et al.'s
              first version, as evaluated by Abdelfattah et al.), in double precision.
``snip``      sum over weights of |w * dL/dw| for the cross-entropy L on the batch (Lee et al.
              2019, "SNIP: single-shot network pruning based on connection sensitivity").
``grad_norm`` sum over layers of the Euclidean norm of dL/dw.
============  ================================================================================

"Weights" are those of every convolution and linear layer, as in Abdelfattah et al. Scores that
use the batch run the network in training mode (batch norm on batch statistics) with dropout
off; every score runs on a copy, so the model handed in is left untouched. Abdelfattah et al.
measured Spearman rank correlations with trained accuracy of 0.74 (synflow), 0.73 (jacob_cov),
0.60 (snip) and 0.59 (grad_norm) on NAS-Bench-201 CIFAR-10; BENCHMARKS.md, "Zero-cost proxies on
our space", measures them on this search space next to the parameter count alone.

`explorer.search` pre-screens with them: a proxy chooses, among several candidates the study's own
sampler proposes, the one a search trial trains (``--prescreen M``).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from search_space import NetworkConfig, build_network

PROXY_NAMES = ("synflow", "naswot", "jacob_cov", "snip", "grad_norm")
PROXY_BATCH_SIZE = 64  # Abdelfattah et al.'s batch; NASWOT's kernel is batch x batch
JACOB_COV_K = 1e-5


# --------------------------------------------------------------------------------------------
# The proxies


def _weights(model: nn.Module) -> list[torch.Tensor]:
    """The weights every proxy sums over: those of convolutions and linear layers."""
    return [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    return (
        torch.channels_last
        if x.is_contiguous(memory_format=torch.channels_last)
        else (torch.contiguous_format)
    )


def _batch_mode_copy(model: nn.Module) -> nn.Module:
    """A copy in training mode (batch statistics) with dropout off, so a score is deterministic."""
    net = copy.deepcopy(model)
    net.train()
    for m in net.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd):
            m.eval()
    net.zero_grad(set_to_none=True)
    return net


def synflow(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Synaptic flow of the absolute-valued network on one all-ones image (see module docstring)."""
    net = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
                m.reset_running_stats()
        for p in net.parameters():
            p.abs_()
    net.zero_grad(set_to_none=True)
    ones = torch.ones((1, *x.shape[1:]), dtype=torch.float64, device=x.device)
    ones = ones.contiguous(memory_format=_memory_format(x))
    net(ones).sum().backward()
    total = torch.zeros((), dtype=torch.float64, device=x.device)
    for w in _weights(net):
        if w.grad is not None:
            total += (w * w.grad).abs().sum()
    return total.item()


def naswot(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Log-determinant of the ReLU activation-pattern kernel over the batch (Mellor et al.)."""
    net = _batch_mode_copy(model)
    n = x.shape[0]
    kernel = torch.zeros((n, n), dtype=torch.float64, device=x.device)

    def add_codes(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        codes = (output.detach().reshape(n, -1) > 0).to(torch.float32)
        agree = codes @ codes.T + (1 - codes) @ (1 - codes).T  # exact: counts below 2**24
        kernel.add_(agree.to(torch.float64))

    hooks = [m.register_forward_hook(add_codes) for m in net.modules() if isinstance(m, nn.ReLU)]
    try:
        with torch.no_grad():
            net(x)
    finally:
        for h in hooks:
            h.remove()
    sign, logdet = torch.linalg.slogdet(kernel)
    return logdet.item() if sign.item() > 0 else -math.inf


def jacob_cov(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Score of the correlation between per-image input gradients (Mellor et al., first version)."""
    # Double precision: the score sums log(v + 1e-5) over eigenvalues near zero, which single
    # precision rounding (e.g. a different thread count) moves by whole units.
    net = _batch_mode_copy(model).double()
    inputs = x.detach().to(torch.float64).requires_grad_(True)
    net(inputs).sum().backward()
    jac = inputs.grad.reshape(len(x), -1)
    corr = torch.corrcoef(jac)
    if not torch.isfinite(corr).all():  # an image whose gradient is constant (a dead network)
        return math.nan
    eig = torch.linalg.eigvalsh(corr)
    return -torch.sum(torch.log(eig + JACOB_COV_K) + 1.0 / (eig + JACOB_COV_K)).item()


def _loss_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    net = _batch_mode_copy(model)
    F.cross_entropy(net(x), y).backward()
    return [w for w in _weights(net) if w.grad is not None]


def snip(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Connection sensitivity: sum of |w * dL/dw| for the cross-entropy on the batch."""
    weights = _loss_gradients(model, x, y)
    return float(sum((w * w.grad).abs().sum().item() for w in weights))


def grad_norm(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Sum over layers of the norm of the cross-entropy's weight gradient."""
    weights = _loss_gradients(model, x, y)
    return float(sum(w.grad.norm().item() for w in weights))


PROXIES: dict[str, Callable[[nn.Module, torch.Tensor, torch.Tensor], float]] = {
    "synflow": synflow,
    "naswot": naswot,
    "jacob_cov": jacob_cov,
    "snip": snip,
    "grad_norm": grad_norm,
}


def check_names(names: Sequence[str]) -> tuple[str, ...]:
    """The proxy names, checked; `ValueError` names an unknown one."""
    names = tuple(names)
    unknown = [n for n in names if n not in PROXIES]
    if unknown or not names:
        raise ValueError(
            f"proxy names must be among {', '.join(PROXIES)}, got {', '.join(unknown) or 'none'}"
        )
    return names


def compute_proxies(
    model: nn.Module,
    batch_x: torch.Tensor,
    batch_y: torch.Tensor,
    names: Sequence[str] = PROXY_NAMES,
) -> dict[str, float]:
    """Zero-cost proxy scores of `model` at its current weights on one batch (higher is better).

    A score that is undefined for this network (a singular NASWOT kernel, a dead network's
    jacob_cov) is ``-inf`` or ``nan``. The model itself is not changed.
    """
    names = check_names(names)
    return {name: float(PROXIES[name](model, batch_x, batch_y)) for name in names}


def proxy_batch(
    data: Any, device: torch.device | str, seed: int, batch_size: int = PROXY_BATCH_SIZE
) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `batch_size` unaugmented training images of a seeded draw, on `device`, in the
    channels-last layout `explorer.training` uses (twice as fast as NCHW for these convolutions on
    a CPU)."""
    generator = torch.Generator().manual_seed(seed)
    batches = data.on(device).train_batches(
        batch_size, batch_size, generator, augment=False, memory_format=torch.channels_last
    )
    return next(iter(batches))


def proxy_scores(
    network: NetworkConfig,
    data: Any,
    device: torch.device | str,
    seed: int,
    names: Sequence[str] = PROXY_NAMES,
    batch_size: int = PROXY_BATCH_SIZE,
) -> dict[str, float | None]:
    """Proxy scores of a design at the initial weights a search trial with this seed trains from.

    The network is built after ``torch.manual_seed(seed)`` (as the search builds it) and scored on
    `proxy_batch(data, device, seed)`, so equal seeds give equal scores. The result is the
    ``proxies`` trial attribute: JSON-safe, an undefined score is None.
    """
    device = torch.device(device)
    x, y = proxy_batch(data, device, seed, batch_size)
    torch.manual_seed(seed)
    model = build_network(network).to(device=device, memory_format=torch.channels_last)
    scores = compute_proxies(model, x, y, names)
    return {k: (v if math.isfinite(v) else None) for k, v in scores.items()}
