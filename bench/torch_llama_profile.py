"""Where transformers' ``LlamaForCausalLM`` AdamW step of ``jaxchain bench --only decoder
--torch`` spends its time (``torch.profiler``, 5 steps), and torch's float32 products of the
decoder's SwiGLU shape, for ``bench/decoder_pieces.py`` to compare with. Runs in the torch
environment of ``bench/torch_env.sh``, from the repository root::

    ../jaxchain-torch/bin/python bench/torch_llama_profile.py
"""

import pathlib
import sys
import time

import torch

sys.path.insert(0, str(pathlib.Path(__file__).parents[1] / "jaxchain" / "benchmarks"))
import _torch_worker  # the worker that jaxchain bench --torch runs

B, T, D, LAYERS, V = 16, 128, 192, 4, 1024  # bench_decoder's defaults


def ms(f, n: int = 15) -> float:
    for _ in range(3):
        f()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        f()
        times.append(time.perf_counter() - start)
    return 1e3 * sorted(times)[n // 2]


def main() -> None:
    step, what = _torch_worker.llama(B, T, D, LAYERS, V)
    print(f"{what}, {torch.get_num_threads()} threads: {ms(step):.1f} ms per step")
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(5):
            step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
    m, f = B * T, 512
    x, w, g = torch.randn(m, D), torch.randn(D, f), torch.randn(m, f)
    for label, fn in (
        ("x W", lambda: x @ w),
        ("g W^T", lambda: g @ w.T),
        ("x^T g", lambda: x.T @ g),
    ):
        t = ms(fn, 30)
        print(f"matmul {label:6} ({m}x{D}x{f}): {t:.3f} ms, {2 * m * D * f / t / 1e6:.0f} GFLOP/s")


if __name__ == "__main__":
    main()
