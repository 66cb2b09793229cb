"""``python -m zerosearch.retrieval`` is the retrieval server CLI (see ``server.py``)."""

import sys

from zerosearch.retrieval.server import main

sys.exit(main())
