"""``python -m hggt.annotate …`` is ``hggt annotate …``."""

import sys

from hggt.annotate.cli import main

sys.exit(main())
