"""``python -m gem_sam``, the same as the ``gem-sam`` command."""

import sys

from .cli.main import main

sys.exit(main())
