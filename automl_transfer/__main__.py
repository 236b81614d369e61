"""``python -m automl_transfer``: the same as the ``automl-transfer`` command."""

import sys

from automl_transfer.commands.cli import main

sys.exit(main())
