"""Benchmarks: each hand-written rule against ``jax.grad`` of its twin, and against what a user
would pick instead, in the same run — the median time of a training step (loss and gradients)
after warm-up, its ratio to autodiff, and XLA's compiled temporary memory.

``jaxchain bench`` runs them and writes a markdown table, a JSON file and plots; the results
recorded for this project are in ``bench/RESULTS.md``.

The package: :mod:`~jaxchain.benchmarks.harness` (timing, memory, rows),
:mod:`~jaxchain.benchmarks.peer` (the PyTorch worker's client; the worker,
``_torch_worker.py``, runs in another interpreter), :mod:`~jaxchain.benchmarks.baselines`
(what a user would write instead), :mod:`~jaxchain.benchmarks.cases` (the benchmarks),
:mod:`~jaxchain.benchmarks.kernels` (which kernel runs each product),
:mod:`~jaxchain.benchmarks.report` (table, plots, JSON), and here the presets and
:func:`run`. The commands' layer: it may import every other.
"""

from jaxchain._extras import require

require("train", __name__)  # before the imports that need them
require("flax", __name__)

import contextlib
from collections.abc import Callable

from jaxchain.benchmarks.baselines import chunked_attention
from jaxchain.benchmarks.cases import (
    bench_attention,
    bench_bert,
    bench_decoder,
    bench_decoder_lora,
    bench_gru,
    bench_hvp,
    bench_jacobian,
    bench_linear_cross_entropy,
    bench_lstm,
    bench_mlp,
    bench_recurrent,
)
from jaxchain.benchmarks.harness import (
    Row,
    machine,
    matmul_flops_per_second,
    measure,
    median_seconds,
    temp_bytes,
)
from jaxchain.benchmarks.peer import PeerError, TorchPeer
from jaxchain.benchmarks.report import header, kernel_listing, plot, table, to_json
from jaxchain.train.backends import BACKENDS

ALL = tuple(BACKENDS)  # a row's steps under every backend, interleaved

# --- whole models: a MiniLM-L6 fine-tuning step, a decoder training step ------------------


# --- MLP -------------------------------------------------------------------------------------


#: The sizes at which the recurrent rules are compared with PyTorch's: ``(T, B, I, H)``.
TORCH_SIZES = ((64, 32, 64, 128), (256, 16, 32, 64), (100, 32, 128, 128), (128, 64, 128, 256))

#: Each benchmark's cases: functions of the PyTorch peer (or None) to a :class:`Row`.
PRESETS: dict[str, dict[str, list[Callable[[TorchPeer | None], Row]]]] = {
    "full": {
        "attention": [lambda p, t=t, c=c: bench_attention(t, is_causal=c, peer=p)
                      for t in (256, 1024, 4096) for c in (False, True)],
        "linear_cross_entropy": [lambda p: bench_linear_cross_entropy(2048, 256, 32768)],
        "lstm": [lambda p, t=t, b=b, i=i, h=h: bench_lstm(t, b, h, i=i, peer=p,
                                                         others=(t, b, i, h) == (100, 32, 128, 128))
                 for t, b, i, h in TORCH_SIZES]
                + [lambda p, t=t, b=b, h=h: bench_lstm(t, b, h)
                   for t in (50, 100, 500) for b in (8, 32, 64) for h in (32, 128, 256)],
        "gru": [lambda p, t=t, b=b, i=i, h=h: bench_gru(t, b, h, i=i, peer=p)
                for t, b, i, h in TORCH_SIZES],
        "bert": [lambda p: bench_bert(16, 32, peer=p)],
        "decoder": [lambda p: bench_decoder(peer=p), lambda p: bench_decoder_lora()],
        "mlp": [lambda p: bench_mlp()],
        "forward": [lambda p: bench_jacobian(), lambda p: bench_hvp(100, 32, 128)],
    },
    # each program under every backend (jaxchain.train.backends), to choose PROGRAMS by
    "backends": {
        "attention": [lambda p, c=c: bench_attention(4096, is_causal=c, peer=p, backend=ALL,
                                                     others=False)
                      for c in (False, True)],
        "lstm": [lambda p, s=s: bench_lstm(*s[:2], s[3], i=s[2], peer=p, backend=ALL)
                 for s in TORCH_SIZES],
        "gru": [lambda p, s=s: bench_gru(*s[:2], s[3], i=s[2], peer=p, backend=ALL)
                for s in TORCH_SIZES],
        "bert": [lambda p: bench_bert(16, 32, peer=p, backend=ALL)],
        "decoder": [lambda p: bench_decoder(peer=p, backend=ALL)],
    },
    "quick": {
        "attention": [lambda p, t=t: bench_attention(t, is_causal=True, peer=p)
                      for t in (256, 1024)],
        "linear_cross_entropy": [lambda p: bench_linear_cross_entropy(1024, 256, 8192)],
        "lstm": [lambda p: bench_lstm(100, 32, 128, peer=p)],
        "gru": [lambda p: bench_gru(100, 32, 128, peer=p)],
        "bert": [lambda p: bench_bert(8, 16, rounds=3, peer=p)],
        "decoder": [lambda p: bench_decoder(4, 64, hidden=64, layers=2, vocab=256, peer=p),
                    lambda p: bench_decoder_lora(4, 64, hidden=64, layers=2, vocab=256)],
        "mlp": [lambda p: bench_mlp(512, 4, 512)],
        "forward": [lambda p: bench_jacobian(), lambda p: bench_hvp(50, 16, 64)],
    },
}  # fmt: skip


def run(
    preset: str = "full",
    only: tuple[str, ...] = (),
    log: Callable[[str], None] = print,
    torch: str | None = None,
):
    """Run a preset's benchmarks (or ``only`` some of them), with PyTorch's counterparts run by
    the interpreter ``torch`` if given (:class:`TorchPeer`); returns the rows and the matmul
    rate (flop/s) measured in the same run. ``log`` gets the table's header, then each row as
    it is measured."""
    with contextlib.ExitStack() as stack:
        peer = None if torch is None else stack.enter_context(TorchPeer(torch))
        if peer is not None:
            log(f"PyTorch {peer.version} ({peer.threads} threads), run by {torch}")
        peak = matmul_flops_per_second()
        log(f"{header(peak, torch)}\n\n{table([], peak)}")
        rows = []
        for name, cases in PRESETS[preset].items():
            if only and name not in only:
                continue
            for case in cases:
                row = case(peer)
                log(table([row], peak, header=False))
                rows.append(row)
    return rows, peak


__all__ = [
    "PRESETS",
    "TORCH_SIZES",
    "PeerError",
    "Row",
    "TorchPeer",
    "bench_attention",
    "bench_bert",
    "bench_decoder",
    "bench_decoder_lora",
    "bench_gru",
    "bench_hvp",
    "bench_jacobian",
    "bench_linear_cross_entropy",
    "bench_lstm",
    "bench_mlp",
    "bench_recurrent",
    "chunked_attention",
    "header",
    "kernel_listing",
    "machine",
    "matmul_flops_per_second",
    "measure",
    "median_seconds",
    "plot",
    "run",
    "table",
    "temp_bytes",
    "to_json",
]
