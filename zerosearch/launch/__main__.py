"""``python -m zerosearch.launch``: the training launcher that ``train_*.sh`` call (``train.py``)."""

import sys

from zerosearch.launch.train import main

sys.exit(main())
