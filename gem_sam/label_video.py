"""``python -m gem_sam.label_video``, the same as ``gem-sam label-video`` (see ``gem_sam.cli.label_video``)."""

import sys

from .cli.label_video import main

if __name__ == "__main__":
    sys.exit(main())
