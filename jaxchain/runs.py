"""A run directory is a unit: one configuration, its checkpoints, its outputs.

``DIR/run.json`` records the configuration when a run starts. A directory that holds anything
is never trained into unless asked: a new run refuses it, ``overwrite`` replaces a run whole
(and refuses a directory that is not a run), and ``resume`` reads ``run.json`` first and
refuses, before a single array is restored, a configuration that differs in a field that
changes the model, the optimizer or the data. Checkpoints are written by orbax atomically
(to a temporary path, then renamed), so a run killed at any moment resumes from its last
checkpoint exactly.

Fields that may change on resume: :data:`MAY_CHANGE` (and ``steps``, unless the learning
rate schedule is ``cosine``, whose decay is set by the number of steps).
"""

import json
import os
import pathlib
import shutil

import jax
import orbax.checkpoint as ocp

RUN_FILE = "run.json"
MAY_CHANGE = frozenset(
    {"time_limit", "eval_every", "checkpoint_every", "patience", "devices", "shard"}
)


class RunError(ValueError):
    """A run directory cannot be used as asked (the command reports it in one line)."""


def write_json(path: pathlib.Path, value) -> None:
    """Write JSON atomically: to a temporary file, then renamed over ``path``."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(value, indent=1))
    os.replace(tmp, path)


def changed_fields(saved: dict, config: dict) -> list[str]:
    """``name: saved -> new`` for each field that differs and may not change on resume."""
    free = MAY_CHANGE | ({"steps"} if config.get("schedule") != "cosine" else set())
    names = sorted((set(saved) | set(config)) - free)
    return [f"{n}: {saved.get(n)!r} -> {config.get(n)!r}" for n in names
            if saved.get(n) != config.get(n)]  # fmt: skip


def check(out: pathlib.Path, config: dict, *, resume: bool = False, overwrite: bool = False):
    """Raise :class:`RunError` unless ``out`` may take a run of ``config`` (a dict of its
    fields) as asked; changes nothing.

    * neither flag: ``out`` must be missing or empty;
    * ``overwrite``: ``out`` is missing, empty or a run (which will be replaced whole);
    * ``resume``: ``out`` must hold a run whose configuration agrees with ``config`` (see
      :func:`changed_fields`).
    """
    if resume and overwrite:
        raise RunError("--resume and --overwrite exclude each other")
    record = out / RUN_FILE
    if resume:
        if not record.is_file():
            raise RunError(f"--resume: nothing to resume in {out} (no {RUN_FILE})")
        diff = changed_fields(json.loads(record.read_text())["config"], config)
        if diff:
            raise RunError(f"--resume: the configuration differs from {out}: {'; '.join(diff)}")
    elif out.exists() and any(out.iterdir()):
        if not overwrite:
            raise RunError(f"{out} holds a run or other files; pass --resume or --overwrite")
        if not record.is_file():
            raise RunError(f"--overwrite: {out} is not a jaxchain run (no {RUN_FILE}); not removed")


def prepare(out: pathlib.Path, config: dict, *, resume: bool = False, overwrite: bool = False):
    """:func:`check`, then make ``out`` ready: with ``overwrite`` a run there is removed
    whole; ``run.json`` records ``config`` (on resume, with the fields that may change)."""
    check(out, config, resume=resume, overwrite=overwrite)
    if overwrite and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / RUN_FILE, {"config": config})


class Checkpoints:
    """Atomic orbax checkpoints of ``{params, opt_state}`` plus JSON metadata (step, history,
    config) under ``directory``; orbax writes to a temporary path and renames it."""

    def __init__(self, directory: pathlib.Path, keep: int = 2):
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=False)
        self.manager = ocp.CheckpointManager(directory.absolute(), options=options)

    def save(self, step: int, state: dict, meta: dict) -> None:
        if step in self.manager.all_steps():
            return  # already saved (the last step is saved once)
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
        self.manager.save(step, args=args, force=True)
        self.manager.wait_until_finished()

    def restore(self, like: dict) -> tuple[dict, dict] | None:
        """The latest ``(state, meta)``, shaped like ``like``; None if nothing is saved."""
        step = self.manager.latest_step()
        if step is None:
            return None
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
        args = ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()
        )
        restored = self.manager.restore(step, args=args)
        return restored["state"], restored["meta"]

    def close(self) -> None:
        self.manager.close()
