"""``python -m camlens.serve``: start the viewer (the same command as ``camlens serve``)."""

import sys

from camlens.cli.serve import main

if __name__ == "__main__":
    sys.exit(main())
