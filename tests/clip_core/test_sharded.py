"""FSDP2 (fully_shard, DTensor) with 2 gloo processes: exact whole-model clipping, state, refusals.

One spawned process group runs every case (tests/sharded_worker.py); the tests compare its
results: the sharded model against the same model trained whole on the same global batch, and
ClippedSGD(norm) against torch's clip_grad_norm_ on DTensor gradients + torch.optim.SGD.
"""

from __future__ import annotations

import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from tests import sharded_worker

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("sharded")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.start_processes(sharded_worker.run, args=(2, port, str(out)), nprocs=2, start_method="spawn")
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]


def _assert_params_close(a, b):
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_allclose(
            a[key].numpy(), b[key].numpy(), rtol=1e-5, atol=1e-6, err_msg=key
        )


@pytest.mark.parametrize("case", sorted(sharded_worker.factories()))
def test_sharded_equals_whole_model_and_ranks_agree(ranks, case):
    results = [r["equivalence"][case] for r in ranks]
    for result in results:
        _assert_params_close(result["whole"], result["sharded"])
        # grad_norm, threshold, clip_fraction of every step, as the whole model's
        np.testing.assert_allclose(result["sharded_stats"], result["whole_stats"], rtol=1e-5)
    assert results[0]["sharded_stats"] == results[1]["sharded_stats"]  # bit-identical telemetry
    if not case.endswith("/none"):
        assert max(s[2] for s in results[0]["whole_stats"]) > 0.05  # the rule did clip


def test_stochastic_cases_take_both_decisions(ranks):
    """Above the threshold, the stochastic global rules both clip and let steps through here."""
    outcomes = set()
    for case, result in ranks[0]["equivalence"].items():
        if "stoch_norm" in case:
            outcomes |= {frac > 0 for norm, level, frac in result["whole_stats"] if norm > level}
    assert outcomes == {True, False}


def test_norm_equals_torch_clip_grad_norm_on_dtensor(ranks):
    for r in ranks:
        base = r["torch_baseline"]
        _assert_params_close(base["ours"], base["torch"])
        np.testing.assert_allclose(
            [s[0] for s in base["ours_stats"]], base["torch_norms"], rtol=1e-5
        )


@pytest.mark.parametrize("case", ["sgd/quadratic_stoch_auto", "adamw/auto", "sstm/auto"])
def test_full_state_dict_and_dcp_resume_exactly(ranks, case):
    for r in ranks:
        result = r["resume"][case]
        for way in ("full", "dcp"):
            assert result[f"{way}_stats"] == result["straight_stats"], way
            for key, value in result["straight"].items():
                assert torch.equal(value, result[way][key]), (way, key)
        assert result["torch_helper_keys"] == ["param_groups", "state"]


def test_refusals_are_clear(ranks):
    refused = ranks[0]["refusals"]
    assert "cannot run inside ZeroRedundancyOptimizer" in refused["zero"]
    assert "FSDP2" in refused["zero"] and "DistributedDataParallel" in refused["zero"]
    assert "a mix of DTensor (sharded) and plain parameters" in refused["mixed"]
    assert "stochastic per-coordinate clipping is not supported" in refused["coord_stoch"]


def test_seed_none_agrees_across_ranks(ranks):
    assert ranks[0]["seed_none"] == ranks[1]["seed_none"]
