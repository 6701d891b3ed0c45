"""``python -m jaxchain.cli``: the ``jaxchain`` command."""

import sys

from jaxchain.cli import main

sys.exit(main())
