"""``python -m gem_sam.export``, the same as ``gem-sam export`` (see ``gem_sam.cli.export``)."""

import sys

from ..cli.export import main

sys.exit(main())
