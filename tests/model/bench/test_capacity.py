"""The capacity benchmark (model/bench/capacity.py, model/bench/fleet.py): the bar and the
stop-at-first-failure rule (pure, made-up numbers), the fleet of live app sessions against
fake engines (skips, reply bounds, question latency), and a whole tiny CPU run (slow)."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest

from app.events import ReplyEnded, ReplyStarted, StepDecision
from app.workers import EngineWorker
from model.bench.capacity import BAR, capacity, failures, limit_line, main, summarize
from model.bench.fleet import Fleet


def _row(n, step=30.0, ttft=60.0, skipped=0, eng=0.3, gpu=0.3, **kw):
    return {"n": n, "chunk_step_p99_ms": step, "question_ttft_p99_ms": ttft, "chunks_skipped": skipped,
            "engine_errors": 0, "engine_busy_fraction": eng, "gpu_busy_fraction": gpu,
            "mem_reserved_peak_gb": 40.0, "mem_total_gb": 141.0, **kw}


def test_bar_names_each_failure_with_its_number():
    """Guards the bar of issue 17: p99 step <= 100 ms, p99 question->first token <= 150 ms,
    no chunk skipped; values exactly at the bar pass; each miss is named with its value."""
    assert failures(_row(1, step=100.0, ttft=150.0)) == []
    f = failures(_row(4, step=100.5, ttft=151.0, skipped=2))
    assert f == ["p99 chunk step 100.5 ms > 100 ms", "p99 question->first token 151.0 ms > 150 ms",
                 "2 chunk(s) skipped"]
    assert failures(_row(2, ttft=None)) == ["no question answered"]
    assert failures({"n": 16, "not_run": "memory: 16 sessions need 87.0 GB"}) == ["memory: 16 sessions need 87.0 GB"]


def test_capacity_is_the_last_pass_before_the_first_failure():
    """Guards stop-at-first-failure: a later N that happens to pass does not count once an
    earlier N failed; no failure -> the largest N; the first N failing -> 0."""
    rows = [_row(1), _row(2), _row(4, ttft=180.0), _row(8)]
    cap, fail = capacity(rows)
    assert (cap, fail["n"]) == (2, 4)
    assert capacity([_row(1), _row(2)]) == (2, None)
    assert capacity([_row(1, skipped=1)])[0] == 0
    assert capacity(list(reversed(rows)))[0] == 2          # order of the rows does not matter


def test_limit_line_says_what_limits_with_numbers():
    """Guards the one-line diagnosis: a saturated engine thread with an idle GPU is the
    thread, a busy GPU is GPU time, memory comes from a not-run row, and the numbers are in it."""
    thread = limit_line([_row(1), _row(8, ttft=400.0, eng=0.97, gpu=0.55)])
    assert thread.startswith("1 sessions: at N=8 p99 question->first token 400.0 ms > 150 ms")
    assert "the single engine thread" in thread and "0.97" in thread and "0.55" in thread
    assert "GPU time" in limit_line([_row(1), _row(2), _row(4, step=120.0, eng=0.95, gpu=0.93)])
    mem = limit_line([_row(1), {"n": 16, "not_run": "memory: 16 sessions need 87.0 GB"}])
    assert mem == "1 sessions: N=16 memory: 16 sessions need 87.0 GB"
    assert limit_line([_row(1), _row(2)]).startswith("not reached: every N up to 2 passed")
    assert "queueing" in limit_line([_row(1), _row(2, ttft=170.0, eng=0.5, gpu=0.4)])
    assert BAR["chunks_skipped"] == 0


class _FakeEngineSession:
    """An engine session that takes ``step_s`` per step and, asked a question, produces
    reply tokens (``tok_s`` each) until ``cancel()`` (random weights never stop either)."""

    def __init__(self, step_s: float, tok_s: float = 0.002):
        self.step_s, self.tok_s, self.context_tokens, self.maintained = step_s, tok_s, 100, 0

    def step(self, chunk, question=None, cancel=None, allow_speak=True):
        time.sleep(self.step_s)
        yield StepDecision(chunk.t_s, "speak" if question else "silent", 0.5, self.context_tokens,
                           self.step_s * 1000, chunk.index, question)
        if not question:
            return
        rid = f"r{chunk.index}"
        yield ReplyStarted(chunk.t_s, rid, False)
        n = 1
        while not cancel():
            time.sleep(self.tok_s)
            n += 1
        yield ReplyEnded(chunk.t_s, rid, "", False, 0.0, n, True)

    def maintain(self, budget_s):
        self.maintained += 1
        return False

    def reset(self):
        pass

    def close(self):
        pass


class _FakeModel:
    def __init__(self, step_s):
        self.step_s = step_s

    def new_session(self, session_id):
        return _FakeEngineSession(self.step_s)


def _fleet_run(step_s, n, seconds, **kw):
    worker = EngineWorker().start()
    try:
        fleet = Fleet(_FakeModel(step_s), worker, frames=[np.zeros((4, 4, 3), np.uint8)] * 2)
        rec = fleet.run(n, seconds=seconds, settle_s=0.3, warm_chunks=0, stagger_chunks=0,
                        progress=lambda _m: None, **kw)
    finally:
        worker.stop()
    return rec


def test_fleet_of_app_sessions_bounds_replies_and_times_questions():
    """Guards the capacity driver: real LiveSessions (sampler, orchestrator) feed the shared
    EngineWorker in real time, about one chunk per second each; every question gets a reply
    cut at 12-40 tokens by the step's cancel hook; question->first token is measured; the
    engine thread's busy time is the fake steps' time; nothing is skipped at light load."""
    rec = _fleet_run(0.01, n=2, seconds=3.0, question_every_s=1.5)
    row = summarize(rec)
    assert row["chunks_skipped"] == 0 and row["engine_errors"] == 0
    assert 2 <= row["silent_steps"] <= 8                     # 2 sessions x ~3 chunks, less the questions' ones
    assert row["questions_answered"] >= 3
    tokens = [r[2] for log in rec.logs for r in log.replies.values() if r[1] is not None]
    assert tokens and all(12 <= t <= 40 for t in tokens)
    assert 0 < row["question_ttft_p50_ms"] < 1000            # ask -> close the chunk -> step -> reply
    assert 9 <= row["chunk_step_p50_ms"] <= 12               # the engine's own step_ms, passed through
    assert 0 < row["engine_busy_fraction"] < 0.5


def test_slow_engine_makes_the_apps_orchestrator_skip_chunks():
    """Guards that skips are the app's policy, counted: four sessions whose steps take 1 s
    each need 4 s of engine per second, so each orchestrator's backlog overflows (at ~5 s)
    and drops chunks; the row counts them and the bar fails on them."""
    rec = _fleet_run(1.0, n=4, seconds=7.0, question_every_s=100.0)
    row = summarize(rec)
    assert row["chunks_skipped"] >= 1 and row["overload_errors"] >= 1
    assert any("skipped" in f for f in failures(row))
    assert row["engine_busy_fraction"] > 0.7        # idle only before the first chunk


def test_bad_arguments_are_one_line_errors(tmp_path, capsys):
    """Guards the CLI boundary: unordered N, an impossible reply range, the 8B shape on the
    CPU: exit code 2 and one line, nothing written."""
    out = str(tmp_path / "c.json")
    assert main(["--ns", "4", "2", "--out", out]) == 2
    assert main(["--reply-tokens", "40", "12", "--out", out]) == 2
    assert main(["--device", "cpu", "--out", out]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 3 and "--ns" in err and "--reply-tokens" in err and "needs --tiny" in err
    assert not (tmp_path / "c.json").exists()


def test_merge_joins_calls_and_recomputes_the_capacity(tmp_path):
    """Guards splitting the plan over two device calls: rows of both files are joined, the
    later file wins for the same N, and the capacity/limit are recomputed over all rows."""
    a, b, out = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "c.json"
    a.write_text(json.dumps({"bar": BAR, "device": "X", "rows": [_row(1), _row(2), _row(4, ttft=999.0)]}))
    b.write_text(json.dumps({"bar": BAR, "rows": [_row(4), _row(8, step=101.0)]}))
    assert main(["--merge", str(a), str(b), "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert [r["n"] for r in res["rows"]] == [1, 2, 4, 8]
    assert res["capacity_sessions"] == 4 and res["first_failing_n"] == 8 and res["device"] == "X"


@pytest.mark.slow
def test_tiny_cpu_run_end_to_end(tmp_path):
    """Guards the whole command on the tiny model: the engine loaded as the app does, two
    N in real time through the app's sessions and worker, every issue field written per N,
    and the top-level capacity (bars relaxed: the CPU is not the GPU)."""
    pytest.importorskip("transformers")
    out = tmp_path / "cap.json"
    rc = main(["--tiny", "--device", "cpu", "--ns", "1", "2", "--seconds-per-n", "3", "--settle-s", "0.5",
               "--question-every-s", "2.5", "--warm-chunks", "2", "--bar-step-p99-ms", "1e6",
               "--bar-ttft-p99-ms", "1e6", "--out", str(out)])
    res = json.loads(out.read_text())
    assert rc == 0 and res["errors"] == []
    # bars relaxed; a CPU shared with other jobs may still skip a chunk, which stops the plan
    first_fails = bool(failures(res["rows"][0], res["bar"]))
    assert [r["n"] for r in res["rows"]] == ([1] if first_fails else [1, 2])
    assert (res["capacity_sessions"], res["limit"].startswith("not reached")) == \
        ((0, False) if first_fails else (2, True))
    for row in res["rows"]:
        for key in ("chunk_step_p50_ms", "chunk_step_p99_ms", "question_ttft_p50_ms", "question_ttft_p99_ms",
                    "reply_ms_per_token_while_others_reply_p50", "chunks_skipped", "engine_busy_fraction",
                    "gpu_busy_fraction", "context_tokens_max"):
            assert key in row
        assert row["chunk_step_p50_ms"] > 0 and row["questions_answered"] >= 1
        assert 1 <= row["reply_tokens_p50"] <= 40        # a slow CPU reply may be cut by the next question
    assert res["engine"]["max_new_tokens"] == 128 and res["sessions_preallocated"] == 2


def test_a_failing_setup_is_recorded_and_saved():
    """capacity's and turn's shared error record: a failed set-up goes into the result file,
    which is saved, and the run is told to stop; a good set-up is left alone; a failed phase
    is recorded under its section and named in one line for its row."""
    from model.bench.engine import record_error, setup_or_record

    class Bench:
        def __init__(self, fail):
            self.fail, self.res, self.saved = fail, {"errors": []}, 0

        def setup(self):
            if self.fail:
                raise RuntimeError("no GPU memory left")

        def save(self):
            self.saved += 1
    bad, good = Bench(True), Bench(False)
    assert setup_or_record(bad) is False and bad.saved == 1
    assert bad.res["errors"][0]["section"] == "setup" and "no GPU memory left" in bad.res["errors"][0]["error"]
    assert setup_or_record(good) is True and good.saved == 0 and good.res["errors"] == []
    try:
        raise ValueError("N=4 ran out of memory")
    except ValueError:
        assert record_error(good, "n=4") == "ValueError: N=4 ran out of memory"
    assert good.res["errors"][0]["section"] == "n=4"
