"""Training: data, tasks, optimizers, run directories and checkpoints, the loop, and many
devices and processes. The layer above the models; it imports the derivatives
(:mod:`jaxchain.rules`, :mod:`jaxchain.reference`) and the models (:mod:`jaxchain.nn`,
:mod:`jaxchain.pretrained`), never the checker or the commands.

- :mod:`~jaxchain.train.data`: the data sets that ship inside installed packages, a tokenizer;
- :mod:`~jaxchain.train.tasks`: the tables of data sets and model builders, a pair made a task
  (loss, batches, evaluation), text generation;
- :mod:`~jaxchain.train.options`: option groups, read and written by their flags' names;
- :mod:`~jaxchain.train.optim`: optimizers by name, the jitted (optionally checked) step;
- :mod:`~jaxchain.train.runs`: run directories (refuse, overwrite, resume, lock) and orbax
  checkpoints;
- :mod:`~jaxchain.train.loop`: the configuration and the loop, whose names are this package's;
- :mod:`~jaxchain.train.distributed`: meshes, sharded params, several processes.
"""

from jaxchain._extras import require

require("train", __name__)  # before the imports that need it

from jaxchain.train.loop import (
    BACKWARDS,
    TOKENIZER_FILE,
    Config,
    History,
    evaluate,
    read_config,
    restore_params,
    train,
    write_outputs,
)

__all__ = [
    "BACKWARDS",
    "TOKENIZER_FILE",
    "Config",
    "History",
    "evaluate",
    "read_config",
    "restore_params",
    "train",
    "write_outputs",
]
