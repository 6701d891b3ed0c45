"""Which kernel runs each matrix product of a compiled step: every ``dot`` of the optimised
HLO (``jax.jit(f).lower(...).compile().as_text()``) with its shapes, its operands'
orientation, the library XLA:CPU lowered it to and how many times a call runs it; and the
share of the step's time spent in those products, each timed alone at its shapes.

XLA:CPU (jax 0.10) hands a product to a library by wrapping it in a fusion whose
``backend_config`` names the library (``__ynn_fusion``: YNNPACK, ``__onednn_fusion``: oneDNN,
``__xnn_fusion``: XNNPACK); a ``dot`` outside such a fusion runs on XLA's own Eigen kernels.
YNNPACK, the default, refuses a product whose left operand is transposed (``x^T g``, a weight
gradient), which then runs on Eigen.

>>> import jax, jax.numpy as jnp
>>> f = jax.jit(jnp.matmul).lower(jnp.ones((8, 4)), jnp.ones((4, 2))).compile()
>>> [(p.lhs, p.rhs, p.orientation, p.count) for p in products(f)]
[((8, 4), (4, 2), 'NN', 1)]
"""

import dataclasses
import functools
import math
import re
import statistics
import time
from collections.abc import Iterable, Mapping

import jax
import jax.numpy as jnp

#: The fusion kinds of XLA:CPU's product libraries, and the name each is listed under.
LIBRARIES = {"__ynn_fusion": "YNNPACK", "__onednn_fusion": "oneDNN", "__xnn_fusion": "XNNPACK"}
EIGEN = "Eigen"  # a dot that no library fusion took

#: Programs compiled with compiler options, kept until the process ends: XLA (jax 0.10.2)
#: aborts the process when a program with oneDNN fusions is destroyed right after a call
#: (``object_pool.h: Check failed: available_.size() == num_created_``).
ALIVE: list = []

_HEADER = re.compile(r"^(?:ENTRY )?%(\S+) \(.*\{$")
_ARRAY = re.compile(r"^\s*(?:ROOT )?%(\S+) = (\w+)\[([\d,]*)\](?:\{[\d,]*\})? ")
_DOT = re.compile(r"^\s*(?:ROOT )?%(\S+) = .*? dot\((?:\S+ )?%(\S+), (?:\S+ )?%(\S+)\)")
_CALLEE = re.compile(
    r"\b(calls|body|condition|to_apply|true_computation|false_computation)=%([\w.\-]+)"
)
_BRANCHES = re.compile(r"(?:branch|called)_computations=\{([^}]*)\}")
_TRIPS = re.compile(r'"known_trip_count":\{"n":"(\d+)"\}')
_KIND = re.compile(r'"kind":"(__\w+_fusion)"')


@dataclasses.dataclass(frozen=True)
class Product:
    """One ``dot`` of a compiled program."""

    name: str  #: the HLO instruction's name
    library: str  #: ``YNNPACK``, ``oneDNN``, ``XNNPACK`` or ``Eigen``
    dtype: str  #: the result's element type (``f32``)
    lhs: tuple[int, ...]
    rhs: tuple[int, ...]
    lhs_dtype: str  #: the operands' element types, as HLO names them
    rhs_dtype: str
    lhs_contracting: tuple[int, ...]
    rhs_contracting: tuple[int, ...]
    lhs_batch: tuple[int, ...]
    rhs_batch: tuple[int, ...]
    count: int  #: times one call runs it (the trip counts of the loops around it)

    @classmethod
    def from_json(cls, fields: dict) -> "Product":
        """A product from its JSON (``dataclasses.asdict``: lists for the tuples). JSON
        written before the operands' types were recorded gives them the result's type."""
        fields = {"lhs_dtype": fields["dtype"], "rhs_dtype": fields["dtype"], **fields}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})

    @property
    def orientation(self) -> str:
        """BLAS's letters: ``N`` an operand read as it is (``x`` of ``x W``, ``W`` of
        ``x W``), ``T`` one read transposed: ``NN`` is ``x W``, ``NT`` ``g W^T``, ``TN``
        ``x^T g``."""
        k = len(self.lhs_contracting)
        lhs = "N" if self.lhs_contracting == tuple(range(len(self.lhs) - k, len(self.lhs))) else "T"
        b = len(self.rhs_batch)
        rhs = "N" if self.rhs_contracting == tuple(range(b, b + len(self.rhs_contracting))) else "T"
        return lhs + rhs

    @property
    def flops(self) -> int:
        """``2 m n k`` of one call of this product (batches included)."""
        out = math.prod(s for i, s in enumerate(self.lhs) if i not in self.lhs_contracting)
        free = [
            i for i in range(len(self.rhs)) if i not in (*self.rhs_contracting, *self.rhs_batch)
        ]
        k = math.prod(self.lhs[i] for i in self.lhs_contracting)
        return 2 * out * math.prod(self.rhs[i] for i in free) * k

    def dimension_numbers(self):
        """``lax.dot_general``'s ``dimension_numbers`` of this product."""
        return (
            (self.lhs_contracting, self.rhs_contracting),
            (self.lhs_batch, self.rhs_batch),
        )


def _computations(text: str) -> list[tuple[str, list[str]]]:
    """The HLO module's computations, in printed order (callees before their callers)."""
    found, current = [], None
    for line in text.splitlines():
        header = _HEADER.match(line)
        if header:
            current = (header.group(1), [])
            found.append(current)
        elif current is not None and line.strip() != "}":
            current[1].append(line)
    return found


def _calls(line: str) -> list[tuple[str, int]]:
    """The computations an instruction calls, each with how often per run of it."""
    trips = _TRIPS.search(line)
    n = int(trips.group(1)) if trips and " while(" in line else 1
    called = [
        (name, n if role in ("body", "condition") else 1) for role, name in _CALLEE.findall(line)
    ]
    for group in _BRANCHES.findall(line):
        called += [(name.strip().lstrip("%"), 1) for name in group.split(",") if name.strip()]
    return called


def _counts_and_libraries(comps) -> tuple[dict[str, int], dict[str, str]]:
    """How many times a call of the entry runs each computation, and the library of each
    computation that a library fusion calls."""
    counts = {comps[-1][0]: 1} if comps else {}
    library = {}
    for name, lines in reversed(comps):  # callers first
        for line in lines:
            kind = _KIND.search(line)
            for callee, n in _calls(line):
                counts[callee] = counts.get(callee, 0) + counts.get(name, 0) * n
                if kind and kind.group(1) in LIBRARIES:
                    library[callee] = LIBRARIES[kind.group(1)]
    return counts, library


def _ints(line: str, key: str) -> tuple[int, ...]:
    found = re.search(rf"\b{key}=\{{([\d,]*)\}}", line)
    return tuple(int(i) for i in found.group(1).split(",") if i) if found else ()


def _hlo_text(compiled) -> str:
    """The optimised HLO text of ``compiled`` (a ``jax.stages.Compiled`` or that text)."""
    if isinstance(compiled, str):
        text = compiled
    elif isinstance(compiled, jax.stages.Compiled):
        text = compiled.as_text()
    else:
        raise TypeError(
            "kernels.products: compiled must be a jax.stages.Compiled "
            "(jax.jit(f).lower(...).compile()) or its as_text(), got "
            f"{type(compiled).__name__}"
        )
    if not text.lstrip().startswith("HloModule"):
        raise ValueError(
            "kernels.products: compiled must be an optimised HLO module's text "
            "(jax.jit(f).lower(...).compile().as_text()), starting 'HloModule'"
        )
    return text


def products(compiled) -> list[Product]:
    """Every matrix product of ``compiled`` (a ``jax.stages.Compiled``, or its HLO text),
    in the order the text prints them. A product in a loop counts once per trip; one in a
    branch of a conditional counts as if every branch ran (an upper bound: blockwise causal
    attention skips some blocks); one in a loop whose trip count XLA does not know counts
    once.

    Raises ``TypeError`` for anything but those, and ``ValueError`` for text that is not an
    optimised HLO module's or a ``dot`` it cannot read."""
    text = _hlo_text(compiled)
    comps = _computations(text)
    counts, library = _counts_and_libraries(comps)
    found = []
    for comp, lines in comps:
        shapes = {}
        for line in lines:
            array = _ARRAY.match(line)
            if array:
                dims = tuple(int(d) for d in array.group(3).split(",") if d)
                shapes[array.group(1)] = (array.group(2), dims)
            dot = _DOT.match(line)
            if " dot(" in line and not (dot and {dot.group(2), dot.group(3)} <= set(shapes)):
                raise ValueError(f"kernels.products: cannot read this dot: {line.strip()[:200]}")
            if dot:
                found.append(
                    Product(
                        name=dot.group(1),
                        library=library.get(comp, EIGEN),
                        dtype=shapes[dot.group(1)][0],
                        lhs=shapes[dot.group(2)][1],
                        rhs=shapes[dot.group(3)][1],
                        lhs_dtype=shapes[dot.group(2)][0],
                        rhs_dtype=shapes[dot.group(3)][0],
                        lhs_contracting=_ints(line, "lhs_contracting_dims"),
                        rhs_contracting=_ints(line, "rhs_contracting_dims"),
                        lhs_batch=_ints(line, "lhs_batch_dims"),
                        rhs_batch=_ints(line, "rhs_batch_dims"),
                        count=counts.get(comp, 0),
                    )
                )
    return found


def by_library(found: Iterable[Product]) -> dict[str, int]:
    """How many products each library runs per call (loop trips counted)."""
    totals: dict[str, int] = {}
    for p in found:
        totals[p.library] = totals.get(p.library, 0) + p.count
    return dict(sorted(totals.items()))


#: HLO's element types that :func:`seconds_in_products` can build operands of.
DTYPES = {
    "f64": "float64",
    "f32": "float32",
    "bf16": "bfloat16",
    "f16": "float16",
    "s32": "int32",
    "s8": "int8",
    "c64": "complex64",
}


def _repeated(p: Product, reps: int):
    """``p``'s product ``reps`` times in a loop: every trip multiplies the same operands,
    passed with the last product through an optimisation barrier, so that XLA can neither
    hoist the product out of the loop nor drop it."""
    dn, out = p.dimension_numbers(), jnp.dtype(DTYPES[p.dtype])
    dot = functools.partial(jax.lax.dot_general, dimension_numbers=dn, preferred_element_type=out)

    def f(a, b):
        def body(_, carry):
            a, _ = carry
            return jax.lax.optimization_barrier((a, dot(a, b)))

        shape = jax.eval_shape(dot, a, b)
        return jax.lax.fori_loop(0, reps, body, (a, jnp.zeros(shape.shape, shape.dtype)))[1]

    return f


def _interleaved_medians(runs, args, rounds: int) -> list[float]:
    """The median time of each of ``runs`` on ``args``, taking turns, after one warm-up."""
    times = [[] for _ in runs]
    for run in runs:
        jax.block_until_ready(run(*args))
    for _ in range(rounds):
        for run, t in zip(runs, times, strict=True):
            start = time.perf_counter()
            jax.block_until_ready(run(*args))
            t.append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


@functools.cache
def _seconds_alone(p: Product, options: tuple, rounds: int, reps: int = 8) -> float:
    """The time of one ``p`` at its shapes and element types (compiled with ``options``):
    the difference of loops of ``2 + reps`` and of 2 products, over ``reps``, so that the
    call's own cost and the loop's cancel (a loop of one trip would be no loop at all)."""
    args = (
        jnp.ones(p.lhs, DTYPES[p.lhs_dtype]),
        jnp.ones(p.rhs, DTYPES[p.rhs_dtype]),
    )
    options = dict(options) or None

    def compile_(n: int):
        return jax.jit(_repeated(p, n)).lower(*args).compile(compiler_options=options)

    few, many = compile_(2), compile_(2 + reps)
    if options:
        ALIVE.extend((few, many))
    short, long = _interleaved_medians((few, many), args, rounds)
    return max(long - short, 0.0) / reps


def seconds_in_products(
    found: Iterable[Product],
    compiler_options: Mapping[str, object] | None = None,
    *,
    rounds: int = 5,
) -> float:
    """An estimate of one call's time in its products: each timed alone at its shapes,
    element types and orientation, compiled with the same ``compiler_options``, times its
    count. Products inside a step may run faster (warm caches) or slower (another library's
    layout); products of element types outside :data:`DTYPES` are left out."""
    options = tuple(sorted((compiler_options or {}).items()))
    alone = lambda p: dataclasses.replace(p, name="", library="", count=1)  # noqa: E731
    known = (p for p in found if p.count and {p.dtype, p.lhs_dtype, p.rhs_dtype} <= set(DTYPES))
    return sum(p.count * _seconds_alone(alone(p), options, rounds) for p in known)


def listing(found: Iterable[Product]) -> str:
    """A markdown table: each product's library, orientation, shapes and count."""
    lines = [
        "| product | library | orientation | lhs | rhs | per call | MFLOP |",
        "|---|---|---|---|---|---|---|",
    ]
    for p in found:
        shape = "x".join
        lines.append(
            f"| {p.name} | {p.library} | {p.orientation} | {shape(map(str, p.lhs))} "
            f"| {shape(map(str, p.rhs))} | {p.count} | {p.flops * p.count / 1e6:.1f} |"
        )
    return "\n".join(lines)
