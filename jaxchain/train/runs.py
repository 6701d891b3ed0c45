"""A run directory is a unit: one configuration, its checkpoints, its outputs, one writer.

``DIR/run.json`` records the configuration when a run starts. A directory that holds anything
is never trained into unless asked: a new run refuses it, ``overwrite`` replaces a run whole
(and refuses a directory that is not a run), and ``resume`` reads ``run.json`` first and
refuses, before a single array is restored, a configuration that differs in a field that
changes the model, the optimizer or the data.

While a run trains, its directory is locked (:class:`Lock`: ``flock`` on ``DIR/.lock``, which
the operating system releases when the process ends, however it ends); a second run into
the same directory is refused with the first one's process id. Checkpoints are written by
orbax atomically (to a temporary path, then renamed), so a run killed at any moment resumes
from its last checkpoint exactly; a checkpoint whose files were damaged afterwards is set
aside on resume, and the newest one that restores is used (:meth:`Checkpoints.restore`).

Fields that may change on resume: :data:`MAY_CHANGE` (and ``steps``, unless the learning
rate schedule is ``cosine``, whose decay is set by the number of steps).
"""

import fcntl
import json
import os
import pathlib
import re
import shutil
import zlib
from collections.abc import Callable

import jax
import orbax.checkpoint as ocp

from jaxchain import _files
from jaxchain._arguments import ArgumentError, literal
from jaxchain.train import options

#: The run directory's record of its configuration.
RUN_FILE = "run.json"
#: The file a process holds locked while it writes the run directory.
LOCK_FILE = ".lock"
#: Where damaged checkpoints are set aside on resume.
CORRUPT_DIR = "corrupt-checkpoints"
#: The configuration fields a resumed run may change.
MAY_CHANGE = frozenset(
    {"time_limit", "eval_every", "checkpoint_every", "patience", "devices", "shard"}
)


class RunError(ArgumentError):
    """A run directory cannot be used as asked (the command reports it in one line, naming
    its flags where this names the arguments ``out``, ``resume`` and ``overwrite``)."""


def write_json(path: pathlib.Path, value) -> None:
    """Write JSON atomically, under a temporary name no other writer shares."""
    _files.write_text(path, json.dumps(value, indent=1))


def read_json(path: pathlib.Path) -> dict:
    """A JSON object from ``path``; :class:`RunError` naming the file if it is not one."""
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RunError(f"{literal(path)} cannot be read: {literal(e)}") from None
    if not isinstance(value, dict):
        raise RunError(f"{literal(path)} cannot be read: not a JSON object")
    return value


def read_record(out: pathlib.Path) -> dict:
    """The configuration saved in ``out/run.json``; :class:`RunError` if there is none."""
    record = out / RUN_FILE
    config = read_json(record).get("config")
    if not isinstance(config, dict):
        raise RunError(f'{literal(record)} cannot be read: it has no "config" object')
    return config


def changed_fields(saved: dict, config: dict) -> list[str]:
    """``name: saved -> new`` for each leaf (by its flag's name) that differs and may not
    change on resume; ``saved`` and ``config`` are records of a configuration, nested by its
    groups."""
    saved, config = options.flatten(saved), options.flatten(config)
    free = MAY_CHANGE | ({"steps"} if config.get("schedule") != "cosine" else set())
    names = sorted((set(saved) | set(config)) - free)
    return [
        f"{n}: {saved.get(n)!r} -> {config.get(n)!r}"
        for n in names
        if saved.get(n) != config.get(n)
    ]


def _contents(out: pathlib.Path) -> list[pathlib.Path]:
    """What ``out`` holds, its lock file aside."""
    return [p for p in out.iterdir() if p.name != LOCK_FILE]


def usable(out: pathlib.Path) -> None:
    """Raise :class:`RunError` unless ``out`` is a directory this process can create or write
    in: not a file, not under a file, not somewhere it may not write. Changes nothing."""
    if out.exists() and not out.is_dir():
        raise RunError(f"{{out}}: {literal(out)} is a file, not a directory")
    parent = out
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise RunError(f"{{out}}: {literal(out)} is under {literal(parent)}, which is a file")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise RunError(f"{{out}}: {literal(parent)} may not be written by this user")


def vet(out: pathlib.Path, config: dict, *, resume: bool = False, overwrite: bool = False):
    """Raise :class:`RunError` unless ``out`` may take a run of ``config`` (a dict of its
    fields) as asked; changes nothing.

    * neither flag: ``out`` must be missing or empty;
    * ``overwrite``: ``out`` is missing, empty or a run (which will be replaced whole);
    * ``resume``: ``out`` must hold a run whose configuration agrees with ``config`` (see
      :func:`changed_fields`).
    """
    if resume and overwrite:
        raise RunError("{resume} and {overwrite} exclude each other")
    usable(out)
    record = out / RUN_FILE
    if resume:
        if not record.is_file():
            raise RunError(f"{{resume}}: nothing to resume in {literal(out)} (no {RUN_FILE})")
        diff = changed_fields(read_record(out), config)
        if diff:
            raise RunError(
                f"{{resume}}: the configuration differs from {literal(out)}: "
                + literal("; ".join(diff))
            )
    elif out.exists() and _contents(out):
        if not overwrite:
            raise RunError(
                f"{literal(out)} holds a run or other files; pass {{resume}} or {{overwrite}}"
            )
        if not record.is_file():
            raise RunError(
                f"{{overwrite}}: {literal(out)} is not a jaxchain run (no {RUN_FILE}); not removed"
            )


def prepare(out: pathlib.Path, config: dict, *, resume: bool = False, overwrite: bool = False):
    """:func:`vet`, then make ``out`` ready: with ``overwrite`` a run there is removed
    whole (its lock file kept); ``run.json`` records ``config`` (on resume, with the fields
    that may change)."""
    vet(out, config, resume=resume, overwrite=overwrite)
    if overwrite and out.exists():
        for p in _contents(out):
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / RUN_FILE, {"config": config})


class Lock:
    """The run directory ``out`` held by this process: an exclusive ``flock`` on
    ``out/.lock`` (created, with ``out``, if missing), which holds this process's id.

    The operating system releases it when the file is closed or the process ends, so a
    killed run never leaves its directory locked. :class:`RunError` names the process that
    holds it.
    """

    def __init__(self, out: pathlib.Path, *, record: bool = True):
        usable(out)
        out.mkdir(parents=True, exist_ok=True)
        self.path = out / LOCK_FILE
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self.fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(self.fd)
            raise RunError(
                f"{{out}}: {literal(out)} is in use by another run (process {literal(holder)}); "
                "wait for it "
                "to finish or stop it"
            ) from None
        if record:  # a probe (:func:`free`) leaves the last holder's id
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the last descriptor releases the lock
            self.fd = None

    def __enter__(self) -> "Lock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def free(out: pathlib.Path) -> None:
    """Raise :class:`RunError` if another process holds ``out``'s lock; changes nothing
    (a directory without a lock file is free)."""
    if (out / LOCK_FILE).is_file():
        Lock(out, record=False).release()


def _first_line(e: BaseException) -> str:
    """``e`` in a few words: its kind and the first line of its message, without the
    pointer to tensorstore's details that orbax appends."""
    text = str(e).split(" See full TensorStore details")[0].strip()
    line = text.splitlines()[0] if text else ""
    return f"{type(e).__name__}: {line[:160]}".rstrip(": ")


def os_error(e: BaseException) -> str | None:
    """The operating system's words for ``e`` ("No space left on device"), if the file
    system caused it (an ``OSError``, or tensorstore's message with an ``os_error_code``)."""
    if isinstance(e, OSError):
        return e.strerror or str(e)
    # from the code, not the words before it: other payloads ("[tensorstore_spec='{...}']")
    # may come between them
    found = re.search(r"\[os_error_code='?(\d+)'?\]", str(e))
    return None if found is None else os.strerror(int(found.group(1)))


#: The file in each checkpoint that lists its files' sizes and CRC-32s.
FILES = "jaxchain-files.json"


def _listing(step_dir: pathlib.Path) -> dict[str, list[int]]:
    """``{path: [bytes, CRC-32]}`` of every file under ``step_dir`` but the listing itself."""
    listing = {}
    for path in sorted(step_dir.rglob("*")):
        if path.is_file() and path.name != FILES:
            crc = 0
            with open(path, "rb") as f:
                while chunk := f.read(1 << 22):
                    crc = zlib.crc32(chunk, crc)
            listing[str(path.relative_to(step_dir))] = [path.stat().st_size, crc]
    return listing


def damage(step_dir: pathlib.Path) -> str | None:
    """What differs between ``step_dir`` and the listing written with it (a file missing,
    truncated or changed); None when nothing does, or when it has no listing."""
    record = step_dir / FILES
    if not record.is_file():
        return None
    try:
        saved = json.loads(record.read_text())
    except (OSError, json.JSONDecodeError):
        return f"{FILES} cannot be read"
    now = _listing(step_dir)
    for name, (size, crc) in saved.items():
        if name not in now:
            return f"{name} is missing"
        if now[name][0] != size:
            return f"{name} has {now[name][0]} bytes, not {size}"
        if now[name][1] != crc:
            return f"{name} has changed (CRC-32)"
    return None


class Checkpoints:
    """Atomic orbax checkpoints of ``{params, opt_state}`` plus JSON metadata (step, history,
    config) under ``directory``; orbax writes to a temporary path and renames it. Each
    checkpoint also lists its files' sizes and CRC-32s (``jaxchain-files.json``, by process
    0), so that damage done later is found before orbax reads a byte (:func:`damage`)."""

    def __init__(self, directory: pathlib.Path, keep: int = 2):
        self.directory = directory.absolute()
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=False)
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def save(self, step: int, state: dict, meta: dict) -> None:
        if step in self.manager.all_steps():
            return  # already saved (the last step is saved once)
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
        try:
            self.manager.save(step, args=args, force=True)
            self.manager.wait_until_finished()
            if jax.process_index() == 0:
                step_dir = self.directory / str(step)
                _files.write_text(step_dir / FILES, json.dumps(_listing(step_dir)))
        except Exception as e:  # tensorstore reports the file system's errors as ValueError
            reason = os_error(e)
            if reason is None:
                raise
            raise RunError(
                f"{{out}}: checkpoint {step} cannot be written in {literal(self.directory)}: "
                + literal(reason)
            ) from None

    def _restore(self, step: int, like: dict) -> tuple[dict, dict]:
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
        args = ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()
        )
        restored = self.manager.restore(step, args=args)
        if not isinstance(restored["meta"], dict) or restored["meta"].get("step") != step:
            raise ValueError("its metadata does not name this step")
        return restored["state"], restored["meta"]

    def restore(
        self, like: dict, log: Callable[[str], None] | None = None
    ) -> tuple[dict, dict] | None:
        """The newest ``(state, meta)`` that can be read, shaped like ``like``; None if
        nothing is saved.

        A checkpoint that cannot be read (a file truncated or missing, orbax's record of it
        finished or not) is named to ``log`` in one line; the next older one is tried. With
        ``log`` (a run that goes on from what is restored) the unreadable ones are moved to
        ``../corrupt-checkpoints/STEP``, so that the run writes those steps afresh; without
        it nothing is moved. :class:`RunError` when every checkpoint fails, nothing moved.
        """
        failed = []
        self.manager.reload()
        for step in sorted(self.manager.all_steps(), reverse=True):
            try:
                found = damage(self.directory / str(step))
                if found is not None:
                    raise ValueError(found)
                restored = self._restore(step, like)
            except Exception as e:  # orbax and tensorstore raise many kinds
                reason = _first_line(e)
                failed.append(step)
                if log is not None:
                    log(f"checkpoint {step} cannot be read ({reason}); trying an older one")
                last = reason
                continue
            if log is not None and failed:
                self._set_aside(failed)
            return restored
        if failed:
            raise RunError(
                f"{{resume}}: no checkpoint in {literal(self.directory)} can be read (tried "
                f"{', '.join(map(str, failed))}; the last: {literal(last)})"
            )
        return None

    def _set_aside(self, steps: list[int]) -> None:
        aside = self.directory.parent / CORRUPT_DIR
        aside.mkdir(exist_ok=True)
        for step in steps:
            target = aside / str(step)
            if target.exists():
                shutil.rmtree(target)
            os.replace(self.directory / str(step), target)
        self.manager.reload()

    def close(self) -> None:
        self.manager.close()
