"""The benchmark's closing table (model/bench/main.py): one line per figure, fast vs baseline.

Contract: ``table(res) -> str`` formats a result dict of ``model.bench`` (missing keys show
as "-"): the engine's headline figures first, then the harness's and the backend loop's,
the HBM floor, peak memory and the agreement line; failed sections are named last.
"""
from __future__ import annotations


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.2f}"


def table(r: dict) -> str:
    base = r.get("baseline") or {}
    stream = r.get("stream") or {}
    rows = [("ENGINE decode ms/token", r.get("decode_ms_per_token"), r.get("baseline_decode_ms_per_token"), 6.5),
            ("ENGINE chunk step p50 ms", r.get("chunk_step_p50_ms"), r.get("baseline_chunk_step_p50_ms"), 25),
            ("ENGINE chunk step p99 ms", r.get("chunk_step_p99_ms"), None, 50),
            ("ENGINE chunk step max ms", r.get("chunk_step_max_ms"), base.get("chunk_step_max_ms"), None),
            ("ENGINE question TTFT ms", r.get("question_ttft_ms"), None, 40),
            ("backend decode loop ms/token", r.get("backend_decode_ms_per_token"), None, None),
            ("backend device-greedy loop ms/token", r.get("backend_greedy_ms_per_token"), None, None),
            ("harness strict chunk step p50 / p99", r.get("harness_strict_chunk_step_p50_ms"), None, None),
            ("  p99", r.get("harness_strict_chunk_step_p99_ms"), None, None),
            ("harness folded chunk step p50 / p99", r.get("harness_folded_chunk_step_p50_ms"), None, None),
            ("  p99", r.get("harness_folded_chunk_step_p99_ms"), None, None),
            ("harness cut step max (base: recompute)", max(stream.get("silent_cut_step_ms") or [0]) or None,
             base.get("window_cut_recompute_ms"), None),
            ("HBM floor ms/token", r.get("hbm_floor_ms_per_token"), None, None),
            ("peak GPU memory GB", r.get("peak_mem_gb"), r.get("baseline_peak_mem_gb"), None)]
    lines = [f"{r.get('device')}  {r.get('date')}",
             f"{'':40s}{'fast':>10s}{'baseline':>10s}{'ratio':>8s}{'target':>8s}"]
    for name, a, b, tgt in rows:
        ratio = f"{b / a:.1f}x" if a and b else "-"
        lines.append(f"{name:40s}{_fmt(a):>10s}{_fmt(b):>10s}{ratio:>8s}{_fmt(tgt):>8s}")
    ag = r.get("agreement") or {}
    if ag:
        lines.append(f"8B agreement (teacher-forced, same cache): {ag['teacher_forced_agree']}/"
                     f"{ag['teacher_forced_steps']} (sdpa vs eager reference: {ag['reference_sdpa_vs_eager_agree']}; "
                     f"{ag['near_tie_steps']} near-ties); free run identical for {ag['free_run_same_tokens']} tokens")
    for v in r.get("variants") or []:
        lines.append(f"variant {v['options']}: " + (v.get("error") or
                     f"decode {v['decode_step_ms']:.3f} ms, turn end {v['turn_end_step_ms']:.3f} ms, "
                     f"chunk@15k {v['chunk_forward_ms_ctx15000']:.2f} ms"))
    alt = r.get("engine_alt") or {}
    if alt:
        lines.append(f"engine again with {alt.get('engine_overrides')}: chunk step p50 / p99 "
                     f"{_fmt(alt.get('chunk_step_p50_ms'))} / {_fmt(alt.get('chunk_step_p99_ms'))} ms, "
                     f"decode {_fmt(alt.get('decode_ms_per_token_p50'))} ms/token")
    if r.get("errors"):
        lines.append("FAILED SECTIONS: " + ", ".join(e["section"] for e in r["errors"]))
    return "\n".join(lines)
