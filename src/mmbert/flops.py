"""FLOPs of a training step and the device's peak, for MFU (model FLOPs utilization).

MFU = the model's FLOPs per second / the device's peak. The FLOPs count what the model needs, not what
a kernel happens to do: 6 x (encoder parameters) per token for forward + backward, 6 x (head + decoder
parameters) per *predicted* token (the sparse head runs only at masked positions), plus attention over
the query-key pairs each token really attends (documents never attend to each other; local layers see
a window). Padding is not counted because the packed stream has none.

The peak: for a known GPU its dense bf16 rate; on a CPU it is *measured* at start (fp32 matmuls),
because hosts of the same kind differ by 3x and a table would be wrong on most of them.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence

import torch

from mmbert.config import MmBertConfig

# Dense bf16 peaks of GPUs (a CPU's fp32 peak is measured at start: hosts differ by 3x).
GPU_PEAK_BF16_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12}


def doc_attention_pairs(lengths: Sequence[int], window: int | None) -> int:
    """Query-key pairs attended over documents of `lengths` (full, or |i - j| <= window)."""
    total = 0
    for n in lengths:
        if window is None or n <= window + 1:
            total += n * n
        else:
            # every query sees 2w+1 keys, minus the w(w+1) missing at the two edges
            total += n * (2 * window + 1) - window * (window + 1)
    return total


def train_flops(config: MmBertConfig, lengths: Sequence[int], n_predicted: int) -> float:
    """FLOPs of one forward + backward over packed documents of `lengths` with sparse prediction.

    Attention: 2 matmuls (QK^T, AV) x 2 FLOPs x hidden per query-key pair, x 3 for forward + backward.
    """
    h, v = config.hidden_size, config.vocab_size
    encoder = config.num_parameters(include_embeddings=False)
    flops = 6.0 * encoder * sum(lengths) + 6.0 * (h * h + h * v) * n_predicted
    full = doc_attention_pairs(lengths, None)
    local = doc_attention_pairs(lengths, config.local_attention // 2)
    for layer in range(config.num_hidden_layers):
        flops += 12.0 * h * (full if config.is_global(layer) else local)
    return flops


def measure_matmul_flops(
    n: int = 1024, reps: int = 5, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> float:
    """This device's matmul rate now: the median of `reps` n^3 matmuls (no RNG is consumed).

    The median, not the best: a single run swings with turbo and with other processes on a shared host.
    """
    a = torch.ones(n, n, device=device, dtype=dtype)
    is_cuda = torch.device(device).type == "cuda"
    # Warm up for 0.2 s first: a cold start (thread pool, clock ramp) measured 2.5x below the rate
    # the same CPU reached a few seconds later.
    start = time.perf_counter()
    while time.perf_counter() - start < 0.2:
        a @ a
    times = []
    for _ in range(reps):
        if is_cuda:
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        a @ a
        if is_cuda:
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times)


def default_peak_flops(device: torch.device) -> float | None:
    """Peak of the device for MFU: bf16 dense for known GPUs, the measured fp32 matmul rate on CPU."""
    if device.type == "cpu":
        return measure_matmul_flops()
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in GPU_PEAK_BF16_FLOPS.items() if key in name), None)
