"""``python -m orderflow.notebook``: strip notebooks (see ``orderflow.notebook.strip``)."""

import sys

from orderflow.notebook.strip import main

main(sys.argv[1:])
