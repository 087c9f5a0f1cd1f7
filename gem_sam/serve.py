"""``python -m gem_sam.serve``, the same as ``gem-sam serve`` (see ``gem_sam.cli.serve``)."""

import sys

from .cli.serve import main

if __name__ == "__main__":
    sys.exit(main())
