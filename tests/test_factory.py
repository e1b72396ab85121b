"""make_compact_linear: the kind, its arguments, and the sizes chosen within a parameter budget."""

import math

import pytest

from compactvid.layers import CirculantLinear, LowRankLinear, MonarchLinear
from compactvid.layers.factory import circulant_weights, make_compact_linear


def _monarch_weights(i: int, o: int, k: int) -> int:  # Dao et al.'s padded blocks, written out
    p, s = -(-i // k), -(-o // k)
    return k * min(p, s) * (p + s)


def test_circulant_kind_is_the_papers_layer():
    layer = make_compact_linear("circulant", 64, 200, True, diag="sign", k_factor=2, device="meta")
    assert isinstance(layer, CirculantLinear)
    assert (layer.diag_variant, layer.k_factor, layer.bias is not None) == ("sign", 2, True)


@pytest.mark.parametrize("diag,k,expected", [("learned", 1, 2 * 8192), ("sign", 1, 8192), ("none", 1, 8192),
                                             ("learned", 3, 6 * 8192)])
def test_circulant_weights(diag, k, expected):
    assert circulant_weights(8192, 512, diag, k) == expected
    assert circulant_weights(1024, 19310, diag, k) == math.ceil(19310 / 1024) * expected // 8


def test_explicit_rank_and_blocks_win_over_the_budget():
    lowrank = make_compact_linear("lowrank", 64, 32, False, rank=5, budget=100.0, device="meta")
    assert isinstance(lowrank, LowRankLinear) and lowrank.rank == 5 and lowrank.bias is None
    monarch = make_compact_linear("monarch", 64, 32, True, nblocks=8, device="meta")
    assert isinstance(monarch, MonarchLinear) and monarch.nblocks == 8 and monarch.bias is not None


# The FC after DBoF (8192 -> 512) against its learned-diagonal circulant layer (16,384 weights).
@pytest.mark.parametrize("budget,rank", [(1, 1), (4, 7), (16, 30)])
def test_lowrank_within_budget(budget, rank):
    layer = make_compact_linear("lowrank", 8192, 512, False, budget=budget, device="meta")
    assert layer.rank == rank  # floor(budget * 16384 / (8192 + 512)), at least 1
    assert layer.num_compact_parameters() <= max(budget * 16384, 8704)


@pytest.mark.parametrize("shape", [(8192, 512), (1024, 8192), (1024, 19310), (100, 37)])
@pytest.mark.parametrize("budget", [1, 4, 16])
def test_monarch_within_budget_is_the_largest(shape, budget):
    i, o = shape
    weights = budget * circulant_weights(i, o)
    layer = make_compact_linear("monarch", i, o, False, budget=budget, device="meta")
    counts = {k: _monarch_weights(i, o, k) for k in range(1, min(i, o) + 1)}
    assert layer.num_compact_parameters() == counts[layer.nblocks]
    fitting = [c for c in counts.values() if c <= weights]
    assert counts[layer.nblocks] == (max(fitting) if fitting else min(counts.values()))


def test_budget_follows_the_circulant_variant():
    learned = make_compact_linear("lowrank", 8192, 512, False, diag="learned", budget=16, device="meta")
    sign = make_compact_linear("lowrank", 8192, 512, False, diag="sign", budget=16, device="meta")
    assert (learned.rank, sign.rank) == (30, 15)


def test_bad_kind_and_budget_raise():
    with pytest.raises(ValueError, match="kind"):
        make_compact_linear("butterfly", 8, 8, False)
    with pytest.raises(ValueError, match="budget"):
        make_compact_linear("monarch", 8, 8, False, budget=0)
