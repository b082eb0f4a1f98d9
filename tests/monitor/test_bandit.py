"""decide_weights: Thompson sampling on per-target-time mean losses, within the guards."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tsops.monitor.bandit import (
    BanditPolicy,
    decide_weights,
    largest_remainder,
    long_run_covariance,
)
from tsops.monitor.errors import MonitorError

ARMS = {"current": "1", "candidate": "2"}
EVEN = {"current": 50, "candidate": 50}


def scored_frame(losses: dict[str, np.ndarray], role: str | None = None) -> pd.DataFrame:
    """``AccuracyResult.scored``-like rows from per-version losses of shape (T, S): one
    one-step forecast per target time and series, made the month before."""
    months = pd.date_range("2020-01-01", periods=len(next(iter(losses.values()))), freq="MS")
    rows = []
    for version, values in losses.items():
        for (t, s), loss in np.ndenumerate(values.reshape(len(months), -1)):
            rows.append(
                {
                    "model_name": "m3-monthly" if version == "1" else "m3-monthly-candidate",
                    "model_version": version,
                    "unique_id": f"{version}-s{s}",  # the arms are split: different series
                    "cutoff": months[t] - pd.DateOffset(months=1),
                    "ds": months[t],
                    "step": 1,
                    "served_at": months[t] - pd.Timedelta(days=20),
                    "ase": loss,
                    **({"role": role} if role else {}),
                }
            )
    return pd.DataFrame(rows)


def noisy(rng, mean: float, n_targets: int = 24, n_series: int = 5) -> np.ndarray:
    return rng.gamma(4.0, mean / 4.0, size=(n_targets, n_series))


def test_a_clearly_better_arm_gains_one_max_step():
    rng = np.random.default_rng(0)
    frame = scored_frame({"1": noisy(rng, 1.0), "2": noisy(rng, 0.6)})
    decision = decide_weights(frame, ARMS, EVEN)
    assert decision.moved
    assert decision.weights == {"current": 30, "candidate": 70}
    evidence = decision.evidence.set_index("arm")
    assert evidence.loc["candidate", "p_best"] > 0.99
    assert evidence.loc["current", "mean_loss"] > evidence.loc["candidate", "mean_loss"]
    assert evidence["n_scored"].tolist() == [120, 120]
    assert evidence["n_targets"].tolist() == [24, 24]
    # the Thompson target: the floor plus the rest by P(best)
    assert evidence.loc["candidate", "target"] == pytest.approx(
        10 + 80 * evidence.loc["candidate", "p_best"]
    )
    assert "candidate is the best arm" in decision.reason
    # next update, from 30/70: one more step, then the floor holds
    second = decide_weights(frame, ARMS, decision.weights)
    assert second.weights == {"current": 10, "candidate": 90}
    third = decide_weights(frame, ARMS, second.weights)
    assert third.weights == second.weights and not third.moved
    assert third.reason.startswith("no move: the weights are at the Thompson target")


def test_no_move_until_every_arm_has_min_scored_forecasts():
    rng = np.random.default_rng(1)
    frame = scored_frame({"1": noisy(rng, 1.0), "2": noisy(rng, 0.5, n_series=2)})
    decision = decide_weights(frame, ARMS, EVEN, BanditPolicy(min_scored=60))
    assert not decision.moved and decision.weights == EVEN
    assert "candidate have 48 scored forecast(s)" in decision.reason
    assert decision.evidence["p_best"].isna().all()
    assert decide_weights(frame, ARMS, EVEN, BanditPolicy(min_scored=48)).moved


def test_no_move_before_twelve_common_target_times():
    rng = np.random.default_rng(2)
    frame = scored_frame({"1": noisy(rng, 1.0, n_targets=11, n_series=10),
                          "2": noisy(rng, 0.5, n_targets=11, n_series=10)})  # fmt: skip
    decision = decide_weights(frame, ARMS, EVEN)
    assert not decision.moved
    assert "11 target time(s) have scored forecasts of every arm; a move needs 12" in (
        decision.reason
    )


def test_target_times_of_one_arm_only_are_not_evidence():
    rng = np.random.default_rng(3)
    base = scored_frame({"1": noisy(rng, 1.0), "2": noisy(rng, 1.0)})
    # the candidate also has a year of easy months before the current arm was scored
    early = scored_frame({"2": np.full((12, 5), 0.1)})
    early["ds"] -= pd.DateOffset(years=2)
    decision = decide_weights(pd.concat([base, early]), ARMS, EVEN)
    evidence = decision.evidence.set_index("arm")
    assert evidence.loc["candidate", "n_targets"] == 36
    assert decision.n_targets == 24
    assert evidence.loc["candidate", "mase"] < evidence.loc["candidate", "mean_loss"]
    assert abs(decision.weights["candidate"] - 50) < 20


def test_a_shock_common_to_every_arm_is_not_noise():
    # every month has its own difficulty (a shock to all forecasts of that target time);
    # the candidate is 10% better in every month. Independent posteriors per arm would
    # see two overlapping clouds, the joint one sees the consistent difference.
    rng = np.random.default_rng(4)
    shock = rng.lognormal(0, 0.8, size=(24, 1))
    frame = scored_frame({"1": shock * np.ones((24, 5)), "2": 0.9 * shock * np.ones((24, 5))})
    decision = decide_weights(frame, ARMS, EVEN)
    assert decision.evidence.set_index("arm").loc["candidate", "p_best"] > 0.99
    assert decision.weights["candidate"] == 70


def test_equal_arms_within_the_margin_share_the_traffic():
    rng = np.random.default_rng(5)
    shock = rng.lognormal(0, 0.5, size=(36, 1))
    frame = scored_frame({"1": shock * np.ones((36, 5)), "2": 1.02 * shock * np.ones((36, 5))})
    decision = decide_weights(frame, ARMS, {"current": 70, "candidate": 30})
    # 2% apart, less than the 5% margin: equally good, so back toward even
    assert decision.weights == EVEN
    assert decision.evidence["p_best"].tolist() == pytest.approx([0.5, 0.5])
    strict = decide_weights(frame, ARMS, EVEN, BanditPolicy(margin=0.0))
    assert strict.weights == {"current": 70, "candidate": 30}


def test_shadow_copies_are_not_evidence_and_role_defaults_to_live():
    rng = np.random.default_rng(6)
    live = scored_frame({"1": noisy(rng, 1.0), "2": noisy(rng, 1.0)})
    shadow = scored_frame({"2": np.full((24, 5), 9.0)}, role="shadow")
    decision = decide_weights(pd.concat([live, shadow]), ARMS, EVEN)
    assert decision.evidence["n_scored"].tolist() == [120, 120]


def test_three_arms_keep_the_floor_and_sum_to_100():
    rng = np.random.default_rng(7)
    arms = {"current": "1", "candidate": "2", "third": "3"}
    frame = scored_frame({"1": noisy(rng, 1.0), "2": noisy(rng, 0.5), "3": noisy(rng, 1.1)})
    weights = {"current": 34, "candidate": 33, "third": 33}
    policy = BanditPolicy(floor=0.15, max_step=0.25)
    for _ in range(5):
        decision = decide_weights(frame, arms, weights, policy)
        assert sum(decision.weights.values()) == 100
        assert min(decision.weights.values()) >= 15
        assert max(abs(decision.weights[a] - weights[a]) for a in arms) <= 25
        weights = decision.weights
    assert weights == {"current": 15, "candidate": 70, "third": 15}


def test_an_arm_below_the_floor_in_git_is_lifted_toward_it():
    rng = np.random.default_rng(8)
    frame = scored_frame({"1": noisy(rng, 1.0), "2": noisy(rng, 0.5)})
    decision = decide_weights(frame, ARMS, {"current": 2, "candidate": 98})
    assert decision.weights == {"current": 10, "candidate": 90}


def test_same_evidence_same_weights_and_the_seed_is_the_only_randomness():
    rng = np.random.default_rng(9)
    frame = scored_frame({"1": noisy(rng, 1.0), "2": noisy(rng, 0.95)})
    first = decide_weights(frame, ARMS, EVEN)
    shuffled = frame.sample(frac=1.0, random_state=1)
    again = decide_weights(shuffled, ARMS, EVEN)
    assert first.weights == again.weights
    pd.testing.assert_frame_equal(first.evidence, again.evidence)
    other = decide_weights(frame, ARMS, EVEN, BanditPolicy(seed=1))
    p = first.evidence["p_best"].to_numpy()
    assert other.evidence["p_best"].to_numpy() == pytest.approx(p, abs=0.02)


def test_the_report_is_json():
    rng = np.random.default_rng(10)
    frame = scored_frame({"1": noisy(rng, 1.0), "2": noisy(rng, 0.5, n_series=1)})
    document = decide_weights(frame, ARMS, EVEN).to_dict()  # held: p_best is null
    document = json.loads(json.dumps(document, allow_nan=False))
    assert document["weights"] == EVEN and document["moved"] is False
    assert document["policy"]["floor"] == 0.1
    assert [e["arm"] for e in document["evidence"]] == ["current", "candidate"]
    assert document["evidence"][1]["p_best"] is None


def test_largest_remainder_sums_to_100_and_is_stable():
    assert largest_remainder(np.array([33.3, 33.3, 33.4])) == [33, 33, 34]
    assert largest_remainder(np.array([100 / 3] * 3)) == [34, 33, 33]
    assert largest_remainder(np.array([10.5, 89.5])) == [11, 89]


def test_long_run_covariance_is_newey_west_with_bartlett_weights():
    rng = np.random.default_rng(11)
    x = rng.normal(size=(30, 2))
    x[:, 1] += x[:, 0]
    lags, dev = 3, x - x.mean(axis=0)

    def gamma(j: int, a: int, b: int) -> float:
        return sum(dev[t, a] * dev[t - j, b] for t in range(j, 30)) / 30

    for a in range(2):
        for b in range(2):
            expected = gamma(0, a, b) + sum(
                (1 - j / (lags + 1)) * (gamma(j, a, b) + gamma(j, b, a)) for j in (1, 2, 3)
            )
            assert long_run_covariance(x, lags)[a, b] == pytest.approx(expected)


@pytest.mark.parametrize(
    ("arms", "current", "policy", "message"),
    [
        ({"current": "1"}, {"current": 100}, BanditPolicy(), "two or more arms"),
        ({"a": "1", "b": "1"}, {"a": 50, "b": 50}, BanditPolicy(), "same model version"),
        (ARMS, {"current": 50, "other": 50}, BanditPolicy(), "one weight per arm"),
        (ARMS, {"current": 50, "candidate": 40}, BanditPolicy(), "sum is 90"),
        (ARMS, EVEN, BanditPolicy(floor=0.6), "at most 50%"),
        (ARMS, EVEN, BanditPolicy(floor=0.125), "whole percent"),
        (ARMS, EVEN, BanditPolicy(max_step=0), "max_step must be above 0"),
        (ARMS, EVEN, BanditPolicy(min_scored=0), "min_scored must be at least 1"),
        (ARMS, EVEN, BanditPolicy(margin=-0.1), "margin is a share"),
    ],
)
def test_bad_input_says_what_to_fix(arms, current, policy, message):
    frame = scored_frame({"1": np.ones((12, 1)), "2": np.ones((12, 1))})
    with pytest.raises(MonitorError, match=message):
        decide_weights(frame, arms, current, policy)


def test_policy_from_git_with_overrides():
    policy = BanditPolicy.from_dict({"floor": 0.2, "max_step": 0.1, "min_scored": 30}, floor=0.05,
                                    max_step=None)  # fmt: skip
    assert (policy.floor, policy.max_step, policy.min_scored) == (0.05, 0.1, 30)
    with pytest.raises(MonitorError, match="unknown bandit policy key"):
        BanditPolicy.from_dict({"flor": 0.1})
