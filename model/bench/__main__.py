"""``python -m model.bench``: the engine benchmark (model/bench/main.py)."""
import sys

from model.bench.main import main

sys.exit(main())
