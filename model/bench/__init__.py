"""GPU benchmarks: nothing in the app imports this package.

- main.py (``python -m model.bench``): engine vs plain transformers, one JSON;
- gpus.py (``python -m model.bench.gpus``): the engine beside the speech stack;
- engine.py, stream.py, baseline.py, checks.py, micro.py: the timed parts;
- speech_load.py: the speech stack as a load; report.py: the closing table;
  stats.py: quantiles.
"""
