"""``python -m gem_sam.evaluate_dense``, the same as ``gem-sam evaluate-dense`` (see ``gem_sam.cli.evaluate_dense``)."""

import sys

from .cli.evaluate_dense import main

if __name__ == "__main__":
    sys.exit(main())
