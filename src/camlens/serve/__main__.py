"""``python -m camlens.serve``: start the viewer (the same options as ``camlens serve``)."""

import sys

from camlens.serve.main import main

if __name__ == "__main__":
    sys.exit(main())
