"""``python -m jobs`` is the ``raystream`` command (same as ``python -m jobs.cli``)."""

import sys

from jobs.cli import main

sys.exit(main())
