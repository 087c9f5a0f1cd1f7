"""``python -m gem_sam.import_reviewed``, the same as ``gem-sam import-reviewed`` (``gem_sam.cli``)."""

import sys

from .cli.import_reviewed import main

if __name__ == "__main__":
    sys.exit(main())
