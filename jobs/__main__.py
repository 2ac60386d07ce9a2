"""``python -m raystream.jobs`` is the ``raystream`` command (same as ``python -m raystream.jobs.cli``)."""

import sys

from raystream.jobs.cli import main

sys.exit(main())
