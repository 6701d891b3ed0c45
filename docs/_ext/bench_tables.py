"""The benchmark page's tables and plot, written from ``bench/bench.json`` at build time.

``jaxchain bench`` records its results in ``bench/bench.json``; this extension turns them into
``docs/_build/generated/bench-tables.md`` (one table per benchmark, in the format of the
command's own ``bench.md``, by :func:`jaxchain.benchmarks.report.table`, less the column that
names the benchmark) and
``docs/_build/generated/attention.png`` (:func:`jaxchain.benchmarks.report.plot`), and the
audit's table ``bench/AUDIT.md`` into ``audit.md`` there, without its title. The guide
``docs/guides/benchmarks.md`` includes them, so that nothing on the page is pasted by hand. A
file is rewritten only when its content changes, so that rebuilds stay incremental.
"""

import json
import re
from pathlib import Path

DOCS = Path(__file__).parents[1]
BENCH = DOCS.parent / "bench"
GENERATED = DOCS / "_build" / "generated"

# The benchmarks in the order the page shows them, each with the sentence above its table.
SECTIONS = {
    "attention": "Attention, one head of 64 (`rules.dot_product_attention`, blockwise from "
    "T = 1024), against autodiff of the twin, `jax.nn.dot_product_attention`, chunked "
    "attention under `jax.checkpoint` and PyTorch's `scaled_dot_product_attention`.",
    "linear_cross_entropy": "The fused linear cross-entropy "
    "(`rules.linear_softmax_cross_entropy`): the `(N, V)` logits never exist.",
    "lstm": "The LSTM (`rules.lstm`, one backward pass through time), on a grid of T, B and H "
    "and at four sizes of (T, B, I, H); flax's `OptimizedLSTMCell` in `nnx.RNN` where shown.",
    "gru": "The GRU (`rules.gru`) at four sizes of (T, B, I, H).",
    "bert step": "A MiniLM-L6 fine-tuning step (AdamW over all 22.7M parameters) against "
    "Hugging Face's `BertModel`.",
    "decoder step": "A training step of the Llama-style decoder against transformers' "
    "`LlamaForCausalLM`.",
    "decoder lora step": "A LoRA fine-tuning step of the same decoder, adapters of rank 8 on "
    "every projection (`lora_dense`, and `lora_swiglu` for the SwiGLU unit); `full` is the "
    "full fine-tuning step, for scale.",
    "mlp": "A 4-layer MLP of width 1024.",
    "jacobian (jacfwd)": "Forward mode: `jax.jacfwd` of an MLP through `jaxchain.tangents` "
    "against autodiff's JVPs.",
    "lstm hvp": "An LSTM loss's Hessian-vector product, forward over reverse, through each family.",
}


def _write(path: Path, content: bytes) -> None:
    if not path.exists() or path.read_bytes() != content:
        path.write_bytes(content)


def tables(recorded: dict) -> str:
    """The markdown of every benchmark's table, under a heading of its own."""
    from jaxchain.benchmarks.harness import Row
    from jaxchain.benchmarks.report import table

    rows = [Row.from_json(row) for row in recorded["rows"]]
    benches = list(dict.fromkeys(r.bench for r in rows))
    unknown = [b for b in benches if b not in SECTIONS]
    if unknown:
        raise ValueError(f"bench/bench.json has benchmarks the page does not know: {unknown}")
    machine = recorded["machine"]
    cpu = f"{machine.get('cpu', machine['processor'])}, nproc {machine.get('nproc', '?')}"
    parts = [
        f"Recorded on {cpu} ({machine['device']}), Python {machine['python']}, "
        f"jax {machine['jax']}, XLA_FLAGS={machine.get('xla_flags', '')!r}"
        + (f"; {machine['malloc']}" if "malloc" in machine else "")
        + "; float32 matmul "
        f"rate {recorded['matmul_flops_per_second'] / 1e9:.1f} GFLOP/s.",
    ]
    peak = recorded["matmul_flops_per_second"]
    for bench in (b for b in SECTIONS if b in benches):
        chosen = [r for r in rows if r.bench == bench]
        rows_of_table = table(chosen, peak).splitlines()  # less its "bench" column:
        narrower = "\n".join("|" + line.split("|", 2)[2] for line in rows_of_table)
        parts += [f"### {bench}", SECTIONS[bench], narrower]
    return "\n\n".join(parts) + "\n"


def audit(text: str) -> str:
    """``bench/AUDIT.md`` less its title: the table as the page shows it."""
    return re.sub(r"\A# [^\n]*\n+", "", text)


def generate(app=None) -> None:
    GENERATED.mkdir(parents=True, exist_ok=True)
    recorded = json.loads((BENCH / "bench.json").read_text())
    _write(GENERATED / "bench-tables.md", tables(recorded).encode())
    _write(GENERATED / "audit.md", audit((BENCH / "AUDIT.md").read_text()).encode())
    plot = GENERATED / "attention.png"
    if not plot.exists() or plot.stat().st_mtime < (BENCH / "bench.json").stat().st_mtime:
        from jaxchain.benchmarks.harness import Row
        from jaxchain.benchmarks.report import plot as draw

        draw([Row.from_json(row) for row in recorded["rows"]], plot)


def setup(app):
    app.connect("builder-inited", generate)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
