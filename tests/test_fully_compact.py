"""The fully compact flag sets: at the README's sizes (NeXtVLAD: its authors' script's) no dense matrix
above 1 M parameters is left, which the parameter report lists; the paper's compact networks sit between."""

import shlex

import pytest
import torch

from compactvid.flags import parse_config
from compactvid.fully_compact import FAMILIES, FULLY_COMPACT, PAPER_COMPACT
from compactvid.models.registry import create_model
from compactvid.models.report import parameter_report
from seed_commands import seed_params
from test_nextvlad import THEIR_PARAMETERS

MILLION = 1_000_000


def report(flags):
    args = parse_config(seed_params() + shlex.split(THEIR_PARAMETERS) + flags)[0].model_args()
    with torch.device("meta"):
        return parameter_report(create_model(args), args)


@pytest.mark.parametrize("family", FAMILIES)
def test_fully_compact_leaves_no_dense_matrix_above_a_million(family):
    dense = report(FAMILIES[family])
    paper = report(FAMILIES[family] + PAPER_COMPACT[family])
    fully = report(FAMILIES[family] + FULLY_COMPACT[family])
    assert dense["dense_matrices"][0]["params"] > MILLION
    assert paper["dense_matrices"][0]["params"] > MILLION  # the classifier (and its gating) at least
    assert all(m["params"] <= MILLION for m in fully["dense_matrices"]), fully["dense_matrices"][:3]
    assert dense["total"] > paper["total"] > fully["total"]


def test_dense_matrices_name_every_matrix_outside_structured_layers():
    matrices = report(FAMILIES["NeXtVLAD"] + PAPER_COMPACT["NeXtVLAD"])["dense_matrices"]
    names = [m["name"] for m in matrices]
    assert "hidden.weight" not in names  # circulant: not dense
    assert matrices[0] == {"name": "classifier.linear.weight", "shape": [3862, 2048], "params": 3862 * 2048}
    assert "aggregations.video.centers" in names  # a learned [lambda F / G, K] matrix
    assert [m["params"] for m in matrices] == sorted((m["params"] for m in matrices), reverse=True)
