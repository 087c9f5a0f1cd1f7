"""``python -m gem_sam.evaluate``, the same as ``gem-sam evaluate`` (see ``gem_sam.cli.evaluate``)."""

import sys

from .cli.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
