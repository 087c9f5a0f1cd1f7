"""``python -m gem_sam.label``, the same as ``gem-sam label`` (see ``gem_sam.cli.label``)."""

import sys

from .cli.label import main

if __name__ == "__main__":
    sys.exit(main())
