"""Training: data, tasks, optimizers, run directories and checkpoints, the loop, and many
devices and processes. The layer above the models; it imports the derivatives
(:mod:`jaxchain.rules`, :mod:`jaxchain.reference`) and the models (:mod:`jaxchain.nn`,
:mod:`jaxchain.pretrained`), never the checker or the commands.

- :mod:`~jaxchain.train.data`: the data sets that ship inside installed packages, a tokenizer;
- :mod:`~jaxchain.train.tasks`: a model and a data set made a task (loss, batches, evaluation);
- :mod:`~jaxchain.train.optim`: optimizers by name, the jitted (optionally checked) step;
- :mod:`~jaxchain.train.runs`: run directories (refuse, overwrite, resume, lock) and orbax
  checkpoints;
- :mod:`~jaxchain.train.loop`: the configuration and the loop, whose names are this package's;
- :mod:`~jaxchain.train.distributed`: meshes, sharded params, several processes.
"""

from jaxchain.train.loop import (
    BACKWARDS,
    TOKENIZER_FILE,
    Config,
    History,
    evaluate,
    read_config,
    restore_params,
    sample,
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
    "sample",
    "train",
    "write_outputs",
]
