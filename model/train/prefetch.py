"""Batches made ahead in worker processes, so a GPU step never waits on episode generation.

Contract:
* ``Prefetch(draw, workers, ahead=2*workers)`` is a callable ``step -> draw(step)``: the same
  batches, in the same order, computed by ``workers`` forked processes ``ahead`` steps in
  advance. ``draw`` must be deterministic in ``step`` (the curriculum is), so resuming
  and worker count change nothing.
* Asking for a step other than the next one (a resume) drops what was made ahead.
* Tensors come back through shared memory (``torch.multiprocessing``), not pickled bytes.
* A worker's exception is raised by the call for that step. ``close()`` (or ``with``)
  lets the tasks in flight finish (dropped ones too), then ends the workers.
* Linux only (fork): the workers inherit ``draw`` and its tokenizer as they are.
"""
from __future__ import annotations

import os
from collections import deque

_DRAW = None                       # the draw function the forked workers inherited


def _work(step: int):
    return _DRAW(step)


class Prefetch:
    def __init__(self, draw, workers: int, ahead: int | None = None):
        if workers < 1:
            raise ValueError(f"Prefetch: workers must be >= 1, got {workers}")
        import torch.multiprocessing as tmp
        global _DRAW
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        _DRAW = draw
        self.ahead = ahead or 2 * workers
        self.pool = tmp.get_context("fork").Pool(workers)
        self.pending: deque = deque()            # (step, AsyncResult), consecutive steps
        self.issued: list = []                   # every AsyncResult not yet seen ready
        self.next = 0

    def __call__(self, step: int):
        if not self.pending or self.pending[0][0] != step:
            self.pending.clear()
            self.next = step
        self.issued = [r for r in self.issued if not r.ready()]
        while len(self.pending) < self.ahead:
            result = self.pool.apply_async(_work, (self.next,))
            self.pending.append((self.next, result))
            self.issued.append(result)
            self.next += 1
        _, result = self.pending.popleft()
        return result.get()

    def close(self) -> None:
        # terminating a pool with tasks in flight can trip multiprocessing's own assertion
        # ("Cannot have cache with result_hander not alive"); let them finish first
        for r in self.issued:
            r.wait(timeout=60)
        if all(r.ready() for r in self.issued):
            self.pool.close()
        else:
            self.pool.terminate()
        self.pool.join()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
