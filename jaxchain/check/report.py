"""What a check found: one :class:`LeafError` per check and leaf, gathered in a
:class:`Report` whose ``repr`` is its table."""

import dataclasses
import math

COLUMN = "Jacobian column"  # how a row's note that holds one starts


@dataclasses.dataclass(frozen=True)
class LeafError:
    """The error of one leaf in one check.

    ``got`` and ``want`` are the analytic and the trusted value (reference or finite
    differences) at the worst element ``index``; ``note`` says what is special about the row
    (``kink``: the point is not differentiable and the rule's derivative lies between the
    one-sided ones; a Jacobian column; an error message); ``skipped`` rows did not run."""

    check: str
    leaf: str
    max_abs: float
    max_rel: float
    index: tuple
    tol: float
    got: float = math.nan
    want: float = math.nan
    note: str = ""
    skipped: bool = False

    @property
    def ok(self) -> bool:
        return self.skipped or bool(self.max_rel <= self.tol)  # False for NaN


def failure(check: str, leaf: str, note: str) -> LeafError:
    """A check that failed outright (a contract broken, a crash): infinitely wrong."""
    return LeafError(check, leaf, math.inf, math.inf, (), 0.0, note=note)


def skipped(check: str, why: str) -> LeafError:
    """A check that could not run, and why."""
    return LeafError(check, "-", math.nan, math.nan, (), math.nan, note=why, skipped=True)


def unverified(rows: list[LeafError], compared: tuple[str, ...]) -> list[LeafError]:
    """A failing ``unchecked`` row when none of the first-order comparisons ``compared``
    (against the reference, against finite differences) ran: a report that compared the
    derivative with nothing must not say ok. Says why each could not run."""
    if any(e.check in compared and not e.skipped for e in rows):
        return []
    why = [f"{e.check}: {e.note}" for e in rows if e.check in compared and e.skipped]
    because = "; ".join(why) or "no reference, and finite differences off"
    note = f"the derivative was compared with nothing ({because})"
    return [failure("unchecked", "-", note)]


@dataclasses.dataclass(frozen=True)
class Report:
    """What :func:`check_vjp` (or :func:`check_jvp`) found.

    ``errors`` has one row per check and leaf; ``notes`` says what was weakened (a working
    precision lower than the inputs', masked outputs, kinks) and why."""

    name: str
    errors: tuple[LeafError, ...]
    kind: str = "check_vjp"  # what made it: check_vjp, check_jvp or assert_close
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return all(e.ok for e in self.errors)

    @property
    def max_rel_error(self) -> float:
        return max((e.max_rel for e in self.errors if not e.skipped), default=0.0)

    @property
    def failed(self) -> tuple[str, ...]:
        """The checks with a failing row."""
        return tuple(dict.fromkeys(e.check for e in self.errors if not e.ok))

    @property
    def skipped(self) -> dict[str, str]:
        """The checks that did not run, with why."""
        return {e.check: e.note for e in self.errors if e.skipped}

    def max_rel(self, check: str) -> float:
        """The largest relative error of one check (NaN when it did not run)."""
        rels = [e.max_rel for e in self.errors if e.check == check and not e.skipped]
        return max(rels) if rels else math.nan

    def worst(self) -> LeafError | None:
        """The failing row furthest over its tolerance."""
        bad = [e for e in self.errors if not e.ok]
        return max(bad, key=lambda e: e.max_rel / e.tol if e.tol else math.inf, default=None)

    def __str__(self) -> str:
        head = f"{self.kind}({self.name}): {'ok' if self.ok else 'FAILED'}"
        rows = [e for e in self.errors if not e.skipped]
        cw = max([len("check"), *(len(e.check) for e in rows)])
        lw = max([len("leaf"), *(len(e.leaf) for e in rows)])
        cols = f"  {'check':<{cw}} {'leaf':<{lw}} {'max abs':>10} {'max rel':>10} {'tol':>8}  index"
        lines = [head, cols, *(_row(e, cw, lw) for e in rows)]
        lines += [f"  skipped {e.check}: {e.note}" for e in self.errors if e.skipped]
        lines += [f"  note: {n}" for n in self.notes]
        worst = self.worst()
        if worst is not None:
            lines.append(_worst_line(worst))
        columns = [e for e in self.errors if e is not worst and e.note.startswith(COLUMN)]
        lines += [f"  {e.note}" for e in columns]  # check_vjp's, for a small failing leaf
        return "\n".join(lines)

    __repr__ = __str__


def _row(e: LeafError, cw: int, lw: int) -> str:
    flag = "" if e.ok else "  <-- FAIL"
    kink = "  kink" if "kink" in e.note else ""
    return (
        f"  {e.check:<{cw}} {e.leaf:<{lw}} {e.max_abs:>10.2e} {e.max_rel:>10.2e} {e.tol:>8.0e}"
        f"  {e.index}{kink}{flag}"
    )


def _worst_line(e: LeafError) -> str:
    where = f"{e.leaf}{list(e.index)}" if e.index else e.leaf
    line = f"  worst: {e.check} at {where}: analytic {e.got:.10g}, expected {e.want:.10g}"
    return line + (f"\n  {e.note}" if e.note and "kink" not in e.note else "")
