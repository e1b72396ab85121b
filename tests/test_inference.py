"""Kaggle CSV predictions: the row format, test files without labels, streaming."""

from __future__ import annotations

import io

import torch

from compactvid.cli import main
from compactvid.inference import HEADER, format_rows, write_predictions
from tiny_dataset import CLASSES, train_tiny_run, write_tiny_dataset


def test_rows_hold_the_top_k_labels_by_descending_score():
    predictions = torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.25, 0.125]])
    assert format_rows(["a", "b"], predictions, 2) == ["a,1 0.7 2 0.2\n", "b,0 0.5 1 0.25\n"]
    assert format_rows(["c"], torch.tensor([[1e-7, 0.123456789]]), 20) == ["c,1 0.123457 0 1e-07\n"]


def test_rows_are_written_batch_by_batch():
    """Rows of a batch are in the file before the next batch is read: memory does not grow with videos."""
    out = io.StringIO()

    def batches():
        for i in range(3):
            if i:
                assert out.getvalue().count("\n") == 1 + 2 * i  # header + the rows so far
            yield {"frames": torch.rand(2, 4), "num_frames": torch.ones(2, dtype=torch.int64), "ids": [f"v{i}a", f"v{i}b"]}

    assert write_predictions(torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Sigmoid()), batches(), out) == 6
    assert out.getvalue().startswith(HEADER)


def test_inference_on_test_files_without_labels(tmp_path, capsys):
    train_tiny_run(str(tmp_path / "run"), str(tmp_path / "data"))
    ids = write_tiny_dataset(str(tmp_path / "data"), 7, prefix="test", labels=False, seed=2)
    out = tmp_path / "predictions.csv"
    assert main(["inference", f"--train_dir={tmp_path / 'run'}", f"--input_data_pattern={tmp_path}/data/test*",
                 f"--output_file={out}", "--top_k=3", "--batch_size=2"]) == 0
    lines = out.read_text().splitlines()
    assert lines[0] == "VideoId,LabelConfidencePairs"
    assert [line.split(",")[0] for line in lines[1:]] == ids
    for line in lines[1:]:
        fields = line.split(",")[1].split(" ")
        labels, scores = [int(x) for x in fields[0::2]], [float(x) for x in fields[1::2]]
        assert len(labels) == 3 and len(set(labels)) == 3 and all(0 <= c < CLASSES for c in labels)
        assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
