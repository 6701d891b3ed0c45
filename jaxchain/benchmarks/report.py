"""The report of a run: a markdown table, plots and JSON."""

import dataclasses

from jaxchain import _malloc
from jaxchain.benchmarks import kernels
from jaxchain.benchmarks.harness import Row, machine


def header(peak: float, torch: str | None = None) -> str:
    """The line a run's table starts with: the CPU, the cores this process may use, jax,
    ``XLA_FLAGS``, the allocator's setting and the matmul rate measured."""
    m = machine()
    line = f"{m['cpu']} ({m['processor']}), nproc {m['nproc']}, {m['device']}, jax {m['jax']}; "
    shared = "; PyTorch's worker too" if torch and _malloc.SETTING is not None else ""
    line += f"XLA_FLAGS={m['xla_flags']!r}; {m['malloc']}{shared}; "
    line += f"float32 matmul {peak / 1e9:.1f} GFLOP/s"
    return line + (f"; PyTorch run by {torch}" if torch else "")


def table(rows: list[Row], peak: float, *, header: bool = True) -> str:
    """A markdown table: each implementation's time, its speed-up over autodiff and over
    PyTorch (where the row has it), temp memory."""
    lines = []
    if header:
        lines += [
            "| bench | config | impl | ms | vs autodiff | vs torch | temp MiB "
            "| temp vs autodiff | % of matmul peak | backend | products | % in products |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
    for row in rows:
        config = " ".join(f"{k}={v}" for k, v in row.config.items())
        for name in row.seconds:
            rate = "" if row.flops is None else f"{100 * row.flops / row.seconds[name] / peak:.0f}"
            torch = f"{row.ratio(name, 'torch'):.2f}x" if "torch" in row.seconds else ""
            memory = row.memory(name)
            temp = (
                ("-", "-") if memory is None else (f"{row.temp[name] / 2**20:.1f}", f"{memory:.3f}")
            )
            lines.append(
                f"| {row.bench} | {config} | {name} | {1e3 * row.seconds[name]:.2f} "
                f"| {row.ratio(name):.2f}x | {torch} | {temp[0]} | {temp[1]} | {rate} "
                f"| {_kernels(row, name)} |"
            )
    return "\n".join(lines)


def _kernels(row: Row, name: str) -> str:
    """The backend, products by library and the share of time in them (blank: PyTorch's)."""
    if name not in row.products:
        return " | | "
    libraries = " ".join(f"{lib} {n}" for lib, n in row.kernels(name).items())
    share = row.product_share(name)
    return f"{row.backends[name]} | {libraries} | {'' if share is None else f'{100 * share:.0f}'}"


def kernel_listing(rows: list[Row]) -> str:
    """Markdown: for each row and implementation, every product of its compiled step."""
    parts = []
    for row in rows:
        config = " ".join(f"{k}={v}" for k, v in row.config.items())
        for name, found in row.products.items():
            title = f"## {row.bench}, {config}: {name} ({row.backends[name]})"
            parts.append(f"{title}\n\n{kernels.listing(found)}")
    return "\n\n".join(parts) + "\n"


def plot(rows: list[Row], path) -> None:
    """Attention time and temp memory against sequence length, one line per implementation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    attention = [r for r in rows if r.bench == "attention"]
    if not attention:
        return
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for causal in sorted({r.config["causal"] for r in attention}):
        chosen = sorted(
            (r for r in attention if r.config["causal"] == causal), key=lambda r: r.config["T"]
        )
        lengths = [r.config["T"] for r in chosen]
        for name in chosen[0].seconds:
            label = f"{name}{' (causal)' if causal else ''}"
            style = "--" if causal else "-"
            axes[0].loglog(
                lengths, [1e3 * r.seconds[name] for r in chosen], "o" + style, label=label
            )
            if name in chosen[0].temp:  # XLA's compiled memory; none for PyTorch
                axes[1].loglog(
                    lengths,
                    [max(r.temp[name], 1) / 2**20 for r in chosen],
                    "o" + style,
                    label=label,
                )
    axes[0].set_ylabel("loss + gradients (ms)")
    axes[1].set_ylabel("compiled temporary memory (MiB)")
    lengths = sorted({r.config["T"] for r in attention})
    for ax in axes:
        ax.set_xlabel("sequence length T")
        ax.set_xticks(lengths, [str(t) for t in lengths])  # the lengths run, not 3x10^2
        ax.minorticks_off()
    axes[0].legend(fontsize=8)
    fig.suptitle("Attention, one head of 64, float32")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def to_json(rows: list[Row], peak: float) -> dict:
    return {
        "machine": machine(),
        "matmul_flops_per_second": peak,
        "rows": [dataclasses.asdict(r) for r in rows],
    }
