"""Regret of the bandit (``tsops bandit``'s Thompson sampling) replayed on M3 monthly series.

The replay of tests/monitor/test_bandit_replay.py on a bigger slice: the first
``--series`` M3 monthly series (default 480 of 1,428), forecast by two releases from 31
monthly cutoffs (2016-12 .. 2019-06, 6 steps ahead, the history up to each cutoff),
every forecast scored once by the monitor's ``realized_accuracy``. Each month the bandit
decides the weights from the forecasts scored by then (actuals one month after their
target time), the Splitter sends each series' request to one release by those weights
(seeded), and the served forecast's absolute scaled error is what users got.

Pairs of releases: Theta (statsforecast) against seasonal naive (clearly different),
naive against seasonal naive (close), and seasonal naive twice (equal: only the routing
tells them apart). For each pair and routing seed, the cumulative realized error of

- the bandit (default policy: floor 10%, max step 20%, 60 scored, 5% margin),
- the bandit without the practical-equivalence margin (margin 0),
- a fixed 50/50 split,
- the oracle (every request to the release with the lower MASE over the whole replay),

and the regret (error beyond the oracle's), the share of the 50/50 split's regret the
bandit saves, the month of its first move, the final weights and, for equal releases,
how far the weights strayed from 50/50.

Usage (from the repository root; ~1 min on one core)::

    .venv/bin/python benchmarks/bandit_replay.py
    .venv/bin/python benchmarks/bandit_replay.py --series 96 --seeds 3 --out /tmp/b.json

Results go to ``benchmarks/results/bandit_replay.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the replay harness lives with its test

PAIRS = (("seasonal_naive", "theta"), ("seasonal_naive", "naive"),
         ("seasonal_naive", "seasonal_naive"))  # fmt: skip
ARMS = {"current": "1", "candidate": "2"}


def one_pair(kinds: tuple[str, str], n_series: int, seeds: int) -> dict:
    import numpy as np
    from tests.monitor.test_bandit_replay import replay, scored

    from tsops.monitor.bandit import BanditPolicy

    started = time.perf_counter()
    table = scored(*kinds, n_series=n_series)
    mase = table.groupby("model_version")["ase"].mean()
    better = "candidate" if mase["2"] < mase["1"] else "current"
    oracle_weights = {a: 100 if a == better else 0 for a in ARMS}
    worse = next(a for a in ARMS if a != better)
    runs = []
    for seed in range(seeds):
        bandit = replay(table, ARMS, BanditPolicy(), seed=seed)
        strict = replay(table, ARMS, BanditPolicy(margin=0.0), seed=seed)
        fixed = replay(table, ARMS, seed=seed, fixed={"current": 50, "candidate": 50})
        oracle = replay(table, ARMS, seed=seed, fixed=oracle_weights)
        # what the guards allow at best: the bandit's first move in the same month, but
        # straight toward the better release, max_step a month, down to the floor
        first = bandit.moved.index(True) if any(bandit.moved) else len(bandit.moved)
        toward = [min(50 + 20 * max(m - first + 1, 0), 90) for m in range(len(bandit.moved))]
        guarded = replay(table, ARMS, seed=seed,
                         fixed=[{better: w, worse: 100 - w} for w in toward])  # fmt: skip
        candidate = np.array([w["candidate"] for w in bandit.weights])
        strict_candidate = np.array([w["candidate"] for w in strict.weights])
        gap = fixed.error - oracle.error
        runs.append(
            {
                "seed": seed,
                "error": {
                    "bandit": bandit.error,
                    "bandit_margin_0": strict.error,
                    "fixed_50_50": fixed.error,
                    "oracle": oracle.error,
                    "guarded_oracle": guarded.error,
                },
                "regret": {
                    "bandit": bandit.error - oracle.error,
                    "bandit_margin_0": strict.error - oracle.error,
                    "fixed_50_50": gap,
                },
                "saved_of_50_50_regret": (fixed.error - bandit.error) / gap if gap else None,
                "guarded_oracle_saves": (fixed.error - guarded.error) / gap if gap else None,
                "first_move_month": bandit.moved.index(True) if any(bandit.moved) else None,
                "candidate_share": candidate.tolist(),
                "candidate_share_margin_0": strict_candidate.tolist(),
                "max_distance_from_even": int(np.abs(candidate - 50).max()),
                "max_distance_from_even_margin_0": int(np.abs(strict_candidate - 50).max()),
            }
        )
    return {
        "releases": {"current": kinds[0], "candidate": kinds[1]},
        "realized_mase": {"current": float(mase["1"]), "candidate": float(mase["2"])},
        "better": better if mase["1"] != mase["2"] else None,
        "forecasts_per_release": int((table["model_version"] == "1").sum()),
        "runs": runs,
        "seconds": time.perf_counter() - started,
    }


def markdown(results: dict) -> str:
    lines = [
        f"# Bandit replay: {results['series']} M3 monthly series, {results['months']} months, "
        f"{results['seeds']} routing seeds",
        "",
        "Cumulative realized error (sum of the served forecasts' absolute scaled errors), mean "
        "over the seeds; regret = error beyond the oracle's. Saved = share of the 50/50 "
        "split's regret the bandit avoids.",
        "",
        "The guarded oracle knows the better release but moves as the guards let the "
        "bandit: from the bandit's first move on, 20 points a month, down to the floor.",
        "",
        "| current vs candidate | MASE | bandit | margin 0 | 50/50 | oracle | saved "
        "(guarded oracle) | first move | final candidate % | max from 50 (margin 0) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for pair in results["pairs"]:
        runs = pair["runs"]

        def mean(key, sub=None, runs=runs):
            values = [r[key][sub] if sub else r[key] for r in runs]
            values = [v for v in values if v is not None]
            return sum(values) / len(values) if values else float("nan")

        equal = pair["better"] is None
        saved = (
            f"{mean('saved_of_50_50_regret'):.0%} ({mean('guarded_oracle_saves'):.0%})"
            if not equal
            else "–"
        )
        lines.append(
            f"| {pair['releases']['current']} vs {pair['releases']['candidate']} "
            f"| {pair['realized_mase']['current']:.3f} / {pair['realized_mase']['candidate']:.3f} "
            f"| {mean('error', 'bandit'):.0f} | {mean('error', 'bandit_margin_0'):.0f} "
            f"| {mean('error', 'fixed_50_50'):.0f} | {mean('error', 'oracle'):.0f} "
            f"| {'–' if equal else saved} "
            f"| {mean('first_move_month'):.1f} "
            f"| {', '.join(str(r['candidate_share'][-1]) for r in runs)} "
            f"| {max(r['max_distance_from_even'] for r in runs)} "
            f"({max(r['max_distance_from_even_margin_0'] for r in runs)}) |"
        )
    lines += ["", f"Machine: {results['machine']}; {results['seconds']:.0f} s."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=480)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/bandit_replay.json")
    args = parser.parse_args()

    from dataclasses import asdict

    from tests.monitor.test_bandit_replay import N_CUTOFFS

    from tsops.monitor.bandit import BanditPolicy

    started = time.perf_counter()
    pairs = []
    for kinds in PAIRS:
        pairs.append(one_pair(kinds, args.series, args.seeds))
        print(f"{kinds}: {pairs[-1]['seconds']:.1f} s", file=sys.stderr)
    results = {
        "series": args.series,
        "months": N_CUTOFFS,
        "seeds": args.seeds,
        "policy": {k: v for k, v in asdict(BanditPolicy()).items() if k not in ("draws", "seed")},
        "machine": f"{platform.machine()}, Python {platform.python_version()}",
        "seconds": time.perf_counter() - started,
        "pairs": pairs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
