"""Training over several processes and over sharded parameters, on JAX's own runtime.

A multi-process run is JAX's multi-controller model: every process runs the same program,
:func:`jax.distributed.initialize` connects them through a coordinator, and a jitted step over
a mesh of all processes' devices is one computation. On the CPU the processes' collectives go
through gloo. The pieces :mod:`jaxchain.train` needs:

* :class:`Cluster` — ``--coordinator HOST:PORT --num-processes N --process-id I`` (or the
  environment variables of :data:`ENV`), checked, and :meth:`Cluster.initialize`;
* :func:`mesh_shardings` — the 1-D ``data`` mesh over all devices: replicated, batch-sharded,
  and (``shard="params"``) a sharding per parameter (:func:`param_sharding`), FSDP / ZeRO-3
  style: each large array is split over the data axis and XLA's sharding propagation gathers
  it where a product needs it whole;
* :func:`shard_batch` — this process's rows of the global batch, as one global array;
* :func:`local` / :func:`broadcast` / :func:`barrier` — what one process computes (an
  evaluation) and all share.

In a single process every function here is the identity or nearly so, so the training loop
has one code path.
"""

import dataclasses
import os
from collections.abc import Mapping

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxchain._arguments import ArgumentError, literal

__all__ = [
    "ENV",
    "SHARDS",
    "SHARD_MIN_SIZE",
    "Cluster",
    "barrier",
    "broadcast",
    "device_bytes",
    "is_main",
    "local",
    "mesh_shardings",
    "param_sharding",
    "shard_batch",
]

#: The environment variable that gives each :class:`Cluster` field.
ENV = {
    "coordinator": "JAXCHAIN_COORDINATOR",
    "num_processes": "JAXCHAIN_NUM_PROCESSES",
    "process_id": "JAXCHAIN_PROCESS_ID",
}
#: The ``shard`` settings: parameters replicated (``none``) or split (``params``).
SHARDS = ("none", "params")
#: Smaller arrays (norms, biases) stay replicated under ``shard="params"``: not worth a
#: gather.
SHARD_MIN_SIZE = 2**14


@dataclasses.dataclass(frozen=True)
class Cluster:
    """Where this process sits among ``num_processes`` (one process: nothing to join)."""

    coordinator: str | None = None
    num_processes: int = 1
    process_id: int = 0

    @classmethod
    def from_flags(
        cls,
        coordinator: str | None = None,
        num_processes: int | None = None,
        process_id: int | None = None,
        environ: Mapping[str, str] = os.environ,
    ) -> "Cluster":
        """The flags, each falling back to its environment variable (:data:`ENV`); raises
        ``ValueError`` naming the flag when they do not describe a cluster."""
        given = {
            "coordinator": coordinator,
            "num_processes": num_processes,
            "process_id": process_id,
        }
        values = {}
        for name, value in given.items():
            if value is None and environ.get(ENV[name]):
                value = environ[ENV[name]]
                if name != "coordinator":
                    try:
                        value = int(value)
                    except ValueError:
                        raise ValueError(f"{ENV[name]} must be an integer, got {value!r}") from None
            values[name] = value
        n, i, address = values["num_processes"], values["process_id"], values["coordinator"]
        if n is None or n == 1:
            if i not in (None, 0):
                raise ArgumentError(f"{{process_id}} {i} needs {{num_processes}} above {i}")
            return cls()
        if n < 1:
            raise ArgumentError(f"{{num_processes}} must be at least 1, got {n}")
        if address is None or i is None:
            raise ArgumentError(
                f"{{num_processes}} {n} needs {{coordinator}} HOST:PORT and {{process_id}}"
            )
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise ArgumentError(f"{{coordinator}} must be HOST:PORT, got {literal(repr(address))}")
        if not 0 <= i < n:
            raise ArgumentError(f"{{process_id}} must be in [0, {n - 1}], got {i}")
        return cls(address, n, i)

    @property
    def multi(self) -> bool:
        return self.num_processes > 1

    def initialize(self) -> None:
        """Join the cluster (before anything else touches JAX's backends): CPU collectives
        through gloo, then :func:`jax.distributed.initialize`."""
        if not self.multi:
            return
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(self.coordinator, self.num_processes, self.process_id)


def is_main() -> bool:
    """Whether this is the process that writes files and logs (process 0)."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Wait until every process reaches ``barrier(name)``; nothing in a single process."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def broadcast(values: np.ndarray) -> np.ndarray:
    """Process 0's ``values`` on every process, bit for bit (sent as bytes; the other
    processes' ``values`` give the shape and dtype)."""
    if jax.process_count() == 1:
        return values
    values = np.ascontiguousarray(values)
    raw = multihost_utils.broadcast_one_to_all(values.view(np.uint8).reshape(-1))
    return np.asarray(raw, np.uint8).view(values.dtype).reshape(values.shape)


def local(tree):
    """A process-local copy of replicated (or sharded) global arrays: gathered if sharded,
    so that one process can evaluate with them alone."""
    if jax.process_count() == 1:
        return tree

    def one(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            if x.is_fully_replicated:
                return x.addressable_data(0)
            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return x

    return jax.tree.map(one, tree)


def param_sharding(mesh: jax.sharding.Mesh, shape: tuple[int, ...]) -> NamedSharding:
    """Where an array of ``shape`` lives when parameters are sharded: split over the ``data``
    axis along its largest dimension that the axis divides, when it has at least
    :data:`SHARD_MIN_SIZE` elements; replicated otherwise."""
    n = mesh.shape["data"]
    size = int(np.prod(shape, dtype=np.int64))
    dims = [d for d in range(len(shape)) if shape[d] % n == 0]
    if n == 1 or size < SHARD_MIN_SIZE or not dims:
        return NamedSharding(mesh, P())
    d = max(dims, key=lambda d: shape[d])
    return NamedSharding(mesh, P(*(["data" if i == d else None for i in range(len(shape))])))


def mesh_shardings(devices: int, batch_size: int, shard: str = "none"):
    """The shardings of a run over ``devices`` devices, or None for one device (in one
    process): ``(state, batch)`` where ``state(tree)`` gives a tree of shardings for params or
    optimizer state (replicated, or :func:`param_sharding` for ``shard="params"``), and
    ``batch`` splits the leading axis over the ``data`` axis."""
    if shard not in SHARDS:
        raise ArgumentError(
            f"{{shard}} must be one of {', '.join(SHARDS)}, got {literal(repr(shard))}"
        )
    processes = jax.process_count()
    if processes > 1 and devices != jax.device_count():
        raise ArgumentError(
            f"{{devices}} {devices}, but a run over {processes} processes spans all "
            f"{jax.device_count()} of their devices"
        )
    if devices == 1:
        return None
    if devices > jax.device_count():
        raise ArgumentError(
            f"{{devices}} {devices} but only {jax.device_count()} available; on the CPU, "
            f"set XLA_FLAGS=--xla_force_host_platform_device_count={devices}"
        )
    if batch_size % devices:
        raise ArgumentError(
            f"{{batch_size}} {batch_size} is not divisible by {{devices}} {devices}"
        )
    # Auto axes: XLA's SPMD partitioner decides how the gradient reductions are sharded
    mesh = jax.make_mesh((devices,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    if shard == "params":
        state = lambda tree: jax.tree.map(lambda x: param_sharding(mesh, x.shape), tree)  # noqa: E731
    else:
        state = lambda tree: jax.tree.map(lambda _: NamedSharding(mesh, P()), tree)  # noqa: E731
    return state, NamedSharding(mesh, P("data"))


def shard_batch(batch, sharding: NamedSharding | None):
    """The global batch (every process computes the same one) as global arrays split over
    ``sharding``'s devices, each process sending only the rows its own devices hold."""
    if sharding is None:
        return batch

    def one(x):
        x = np.asarray(x)
        rows = [index[0] for index in sharding.addressable_devices_indices_map(x.shape).values()]
        lo, hi = (
            min(r.start or 0 for r in rows),
            max(len(x) if r.stop is None else r.stop for r in rows),
        )
        return jax.make_array_from_process_local_data(sharding, x[lo:hi], x.shape)

    return jax.tree.map(one, batch)


def device_bytes(tree) -> tuple[int, int]:
    """``(whole, per device)``: the bytes of ``tree``'s arrays, and the most any one device
    holds of them (read from the arrays' shards)."""
    whole, per_device = 0, {}
    for x in jax.tree.leaves(tree):
        whole += x.nbytes
        for s in x.addressable_shards:
            per_device[s.device] = per_device.get(s.device, 0) + s.data.nbytes
    return whole, max(per_device.values(), default=0)
