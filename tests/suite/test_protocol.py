"""``torch_clip.suite.protocol``: the fair protocol's statistics against independent computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from torch_clip.suite import protocol as P


def test_half_decade_grid_has_mantissas_one_and_three_between_its_bounds():
    assert P.half_decade_grid(1e-3, 1.0) == [0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0]
    assert P.half_decade_grid(3e-5, 1e-4) == [3e-5, 1e-4]
    with pytest.raises(ValueError, match="low=0"):
        P.half_decade_grid(0, 1.0)


def test_geometric_grid_and_the_settings_count_are_the_product_of_the_axes():
    assert P.geometric_grid(0.1, 2.0, 4) == [0.1, 0.2, 0.4, 0.8]
    lr = P.Axis("step_rule.lr", tuple(P.half_decade_grid(1e-3, 1.0)))
    lam = P.Axis("optimizer.clipping_level", (0.1, 0.3, 1.0))
    assert P.settings_count([lr, lam]) == 21 == len(P.settings([lr, lam]))
    assert P.settings([lr, lam])[:4] == [(0.001, 0.1), (0.001, 0.3), (0.001, 1.0), (0.003, 0.1)]
    assert P.unequal_counts({"norm": [lr, lam], "auto": [lr, lam], "SGD": [lr]}) == {"SGD": 7}
    assert P.unequal_counts({"norm": [lr, lam], "auto": [lr, lam]}) == {}


def test_an_axis_is_named_by_its_key_with_a_list_index_kept():
    # a β₂ knob (step_rule.betas.1) printed as "1=0.999" told the reader nothing
    assert P.Axis("step_rule.betas.1", (0.99, 0.999)).name == "betas[1]"
    assert P.Axis("optimizer.clipping_level", (0.1,)).name == "clipping_level"
    assert P.Axis("lr", (0.1,)).name == "lr"


def test_an_axis_refuses_unsorted_values_and_unknown_scales():
    with pytest.raises(ValueError, match="increasing"):
        P.Axis("x", (0.3, 0.1))
    with pytest.raises(ValueError, match="scale"):
        P.Axis("x", (0.1, 0.3), scale="cubic")


def test_selection_by_median_ignores_one_outlier_seed_that_the_mean_follows():
    # A's third seed is a catastrophe (0.10): the mean prefers B, the median A
    results = {("A",): {0: 0.80, 6: 0.81, 7: 0.10}, ("B",): {0: 0.75, 6: 0.76, 7: 0.77}}
    means = {k: np.mean(list(v.values())) for k, v in results.items()}
    assert max(means, key=means.get) == ("B",)
    chosen = P.select(results, [0, 6, 7], lower_is_better=False)
    medians = {k: np.median(list(v.values())) for k, v in results.items()}
    assert chosen.setting == max(medians, key=medians.get) == ("A",)
    assert chosen.score == pytest.approx(-0.80) and chosen.tied == 1


def test_a_diverged_seed_scores_worst_and_an_incomplete_setting_is_no_candidate():
    results = {
        (0.1,): {0: 0.5, 6: math.nan},  # diverged on one of two seeds: its median is +inf
        (0.3,): {0: 0.9},  # seed 6 not finished
        (0.01,): {0: 0.8, 6: 0.7},
    }
    chosen = P.select(results, [0, 6], lower_is_better=True)
    assert chosen.setting == (0.01,) and chosen.score == pytest.approx(0.75)
    assert chosen.scores[(0.1,)] == math.inf and (0.3,) not in chosen.scores
    # three seeds, one diverged: the median is the worse of the two finite values
    three = P.select({"x": {0: 1.0, 1: math.inf, 2: 2.0}}, [0, 1, 2], lower_is_better=True)
    assert three.score == 2.0
    assert P.select({"x": {0: 1.0}}, [0, 1], lower_is_better=True) is None


def test_ties_are_broken_by_the_median_validation_loss_then_by_grid_order():
    plateau = {"lr0.1": {0: 0.0, 1: 0.0}, "lr0.01": {0: 0.0, 1: 0.0}, "lr1": {0: 0.0, 1: 0.0}}
    loss = {"lr0.1": {0: 0.62, 1: 0.60}, "lr0.01": {0: 0.61, 1: 0.61}, "lr1": {0: 0.9, 1: 0.2}}
    chosen = P.select(plateau, [0, 1], lower_is_better=False, tie_break=loss)
    # medians of the loss: 0.61, 0.61, 0.55 -> lr1
    assert chosen.setting == "lr1" and chosen.tied == 3 and chosen.rule == P.TIE_RULE
    no_loss = P.select(plateau, [0, 1], lower_is_better=False)
    assert no_loss.setting == "lr0.1"  # the first in grid order


def test_edge_flags_for_every_axis_and_the_extension_loop():
    lr = P.Axis("lr", (0.001, 0.003, 0.01))
    lam = P.Axis("lam", (0.2, 0.5, 0.9))
    assert P.edge_flags([lr, lam], (0.001, 0.5)) == {"lr": "low", "lam": ""}
    assert P.edge_flags([lr, lam], (0.003, 0.9)) == {"lr": "", "lam": "high"}
    assert P.edge_flag((0.1,), 0.1) == "only"
    with pytest.raises(ValueError, match=r"0\.7"):
        P.edge_flag((0.1, 0.3), 0.7)
    grown, stuck = P.extensions([lr, lam], (0.01, 0.2))
    assert grown[0].values == (0.001, 0.003, 0.01, 0.03)  # the next half-decade value
    assert grown[1].values == pytest.approx((0.2 * 0.2 / 0.5, 0.2, 0.5, 0.9))  # the end ratio
    assert stuck == {}
    # β₂ steps in 1 − β₂; below 0.9 the step would reach 0, outside (0, 1): a flag that stays
    beta2 = P.Axis("beta2", (0.9, 0.99, 0.999), scale="log1m", bounds=(0.0, 1.0))
    assert P.extend_axis(beta2, "high").values[-1] == pytest.approx(0.9999)
    grown, stuck = P.extensions([beta2], (0.9,))
    assert grown == [beta2] and stuck == {"beta2": "low"}
    lam = P.Axis("lam", (0.40, 0.43, 0.45), step=10**0.5)  # close quantiles: half-decade steps
    assert P.extend_axis(lam, "low").values[0] == pytest.approx(0.40 / 10**0.5, rel=5e-3)
    assert P.extend_axis(P.Axis("lam", (0.4,), step=10.0), "high").values == (0.4, 4.0)
    z = P.Axis("z", (2.0, 2.5, 3.0), scale="linear")
    assert P.extend_axis(z, "low").values == (1.5, 2.0, 2.5, 3.0)


def test_summary_matches_numpy_and_scipy_bootstrap():
    x = [0.81, 0.79, 0.84, 0.80, 0.86, math.nan]
    s = P.summarize(x)
    ok = np.array(x[:-1])
    assert (s.n, s.failed) == (6, 1)
    assert s.mean == pytest.approx(ok.mean()) and s.median == pytest.approx(np.median(ok))
    ref = stats.bootstrap((ok,), np.mean, confidence_level=0.9, n_resamples=9999, method="BCa",
                          rng=np.random.default_rng(0)).confidence_interval  # fmt: skip
    assert (s.low, s.high) == pytest.approx((ref.low, ref.high))
    assert s.interval == "BCa" and s.low < ok.mean() < s.high
    const = P.summarize([0.5, 0.5, 0.5])
    assert (const.low, const.high, const.interval) == (0.5, 0.5, "constant")


def test_paired_difference_matches_scipy_and_the_verdict_needs_the_interval_to_exclude_zero():
    base = {1: 0.80, 2: 0.81, 3: 0.82, 4: 0.80, 5: 0.81}
    better = {1: 0.85, 2: 0.86, 3: 0.84, 4: 0.87, 5: 0.85}
    p = P.paired_difference(better, base, lower_is_better=False)
    d = np.array([better[s] - base[s] for s in base])
    assert p.mean == pytest.approx(d.mean()) and p.median == pytest.approx(np.median(d))
    assert p.p_t == pytest.approx(
        stats.ttest_rel(list(better.values()), list(base.values())).pvalue
    )
    assert p.p_wilcoxon == pytest.approx(stats.wilcoxon(d).pvalue) == pytest.approx(2 / 32)
    assert p.low > 0 and p.verdict == "holds: better"
    # the same differences on a loss (lower is better): the method is worse
    assert P.paired_difference(better, base, lower_is_better=True).verdict == "holds: worse"
    # noisy differences of both signs: the interval covers 0
    noisy = {1: 0.90, 2: 0.70, 3: 0.85, 4: 0.76, 5: 0.83}
    q = P.paired_difference(noisy, base, lower_is_better=False)
    assert q.low < 0 < q.high and q.verdict == "not established"
    # a diverged seed of the method: dropped, counted, and no verdict that it holds
    broken = {**better, 5: math.nan}
    r = P.paired_difference(broken, base, lower_is_better=False)
    assert (r.n, r.dropped) == (4, 1) and r.verdict == "not established"
    assert P.paired_difference({1: 0.9, 2: 0.9}, {1: 0.8, 2: 0.8}, False).verdict == "too few pairs"


def test_the_verdict_also_needs_the_paired_t_test():
    # one large difference and four small ones: a bootstrap interval of five values excludes 0,
    # the t-test (p > 0.1) does not agree
    base = dict.fromkeys(range(5), 0.0)
    method = {0: 0.01, 1: 0.012, 2: 0.009, 3: 0.011, 4: 0.2}
    p = P.paired_difference(method, base, lower_is_better=False)
    assert p.low > 0
    assert p.p_t == pytest.approx(stats.ttest_1samp(list(method.values()), 0).pvalue)
    assert p.p_t > 0.1
    assert p.verdict == "not established"


def test_best_baseline_is_the_best_median_and_counts_failures_first():
    s = {"SGD": P.summarize([0.80, 0.81, 0.79]), "Adam": P.summarize([0.84, 0.83, 0.85]),
         "norm": P.summarize([0.9, 0.9, 0.9])}  # fmt: skip
    assert P.best_baseline(s, ["SGD", "Adam"], lower_is_better=False) == "Adam"
    assert P.best_baseline(s, ["SGD", "Adam"], lower_is_better=True) == "SGD"
    s["Adam"] = P.summarize([0.95, 0.95, math.nan])
    assert P.best_baseline(s, ["SGD", "Adam"], lower_is_better=False) == "SGD"
    assert P.best_baseline(s, ["AdamW"], lower_is_better=False) is None


def test_adjusted_p_is_benjamini_hochberg():
    p = [0.01, 0.04, math.nan, 0.03, 0.5]
    adj = P.adjusted_p(p)
    # by hand: sorted 0.01, 0.03, 0.04, 0.5 (m = 4): p·m/rank, then the running minimum from the top
    assert adj[0] == pytest.approx(0.04) and adj[3] == pytest.approx(0.04 * 4 / 3)
    assert adj[1] == pytest.approx(0.04 * 4 / 3) and adj[4] == pytest.approx(0.5)
    assert math.isnan(adj[2])


def test_normalised_scores_map_the_references_to_zero_and_one():
    assert P.normalized(np.array([0.8, 0.9]), 0.8, 0.9) == pytest.approx([0.0, 1.0])
    assert P.normalized(np.array([2.0, 1.0]), 2.0, 1.0) == pytest.approx([0.0, 1.0])  # a loss
    with pytest.raises(ValueError, match="low=1"):
        P.normalized(np.array([1.0]), 1, 1)


def test_iqm_and_profiles_through_rliable_match_a_hand_computation():
    rng = np.random.default_rng(3)
    scores = {"A": rng.normal(0.5, 0.2, size=(8, 3)), "B": rng.normal(0.8, 0.1, size=(8, 3))}
    iqm = P.aggregate_iqm(scores, reps=300)
    for name, x in scores.items():
        # the IQM by hand: the mean of the middle half of all runs × tasks (scipy's trim_mean)
        assert iqm[name][0] == pytest.approx(stats.trim_mean(x.ravel(), 0.25))
        assert iqm[name][1] <= iqm[name][0] <= iqm[name][2]
    assert P.aggregate_iqm(scores, reps=300) == iqm  # seeded
    taus = [0.3, 0.6, 0.9]
    prof = P.score_profiles(scores, taus, reps=300)
    for name, x in scores.items():
        assert prof[name][0] == pytest.approx([(x > t).mean() for t in taus])
        assert np.all(prof[name][1] <= prof[name][0] + 1e-12)
        assert np.all(prof[name][0] <= prof[name][2] + 1e-12)
