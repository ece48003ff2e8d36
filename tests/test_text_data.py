"""The byte-level text corpus (muso_cli/corpus.py, data=pystdlib): the same bytes everywhere or a clear refusal,
a fixed split, next-byte targets, and the sequence metrics (loss per token, bits per byte) of a real run."""
from __future__ import annotations

import json
import math
import shutil

import pytest
import torch

from muso_cli import corpus, data
from muso_cli.config import compose
from muso_cli.errors import UsageError
from muso_cli.validate import validate


def test_the_pinned_corpus_is_found_and_split_by_file():
    folder = corpus.locate()
    train, test = corpus.read(folder)
    assert (len(train), len(test)) == (2_013_740, 218_070) == (corpus.TRAIN_BYTES, 2_231_810 - corpus.TRAIN_BYTES)
    assert (corpus.digest(train), corpus.digest(test)) == ("a2a1c2b0612d", "936c512c293d")
    assert test.startswith(b'"""Text wrapping and filling.')   # textwrap.py opens the test split
    assert len(corpus.FILES) == 115


def test_sequences_are_windows_and_their_next_bytes():
    x, y = corpus.sequences(b"abcdefghij", 3)
    assert x.tolist() == [list(b"abc"), list(b"def"), list(b"ghi")]
    assert y.tolist() == [list(b"bcd"), list(b"efg"), list(b"hij")]
    assert x.dtype == y.dtype == torch.int64


def test_dataset_keys_context_and_corpus_size():
    cfg = compose(["data=pystdlib", "data.context=32", "data.corpus_bytes=10000"])
    d = data.load(cfg.data)
    assert d.x_train.shape == (312, 32) and d.x_test.shape == (218_069 // 32, 32)
    assert d.num_classes == 256 and d.bytes_per_token == 1.0 and data.spec(cfg.data) == ((32,), 256)
    assert torch.equal(d.x_train[0, 1:], d.y_train[0, :-1])
    assert "sha256" in d.source


def test_a_changed_corpus_is_refused_unless_verify_is_off(tmp_path):
    copy = tmp_path / "lib"
    copy.mkdir()
    for name, _, _ in corpus.FILES:
        shutil.copy(corpus.locate() / name, copy / name)
    (copy / "heapq.py").write_bytes((copy / "heapq.py").read_bytes() + b"# changed\n")
    [problem] = [p for p in data.check(compose(["data=pystdlib", f"data.root={copy}"]).data) if p]
    assert problem.key == "data.root" and "heapq.py differs" in problem.problem and "data.verify=false" in problem.fix
    assert not any(data.check(compose(["data=pystdlib", f"data.root={copy}", "data.verify=false"]).data))
    assert corpus.locate(copy, verify=False) == copy


@pytest.mark.parametrize("override, key", [("data.context=0", "data.context"), ("data.corpus_bytes=64", "data.corpus_bytes"),
                                           ("data.verify=maybe", "data.verify")])
def test_bad_corpus_keys_name_themselves(override, key):
    with pytest.raises(UsageError) as e:
        validate(compose(["data=pystdlib", "model=gpt", override]), check_data=False)
    assert key in str(e.value)


def test_a_gpt_run_logs_loss_per_token_and_bits_per_byte(tmp_path):
    from muso_cli import train

    cfg = compose(["model=gpt", "data=pystdlib", "data.context=16", "data.corpus_bytes=20000", "data.n_test=32",
                   "model.width=32", "model.base_width=32", "model.layers=1", "optimizer=adam", "optimizer.lr=0.01",
                   "train.steps=20", "train.batch_size=8", "train.eval_every=10", "train.eval_train_samples=32",
                   "train.progress=false", "device=cpu"])
    result = train.run(cfg, tmp_path)
    assert result["status"] == "ok"
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert math.log(256) - 0.1 < rows[0]["train_loss"] < math.log(256) + 1.0   # about uniform over 256 bytes
    for row in rows:
        assert row["test_bpb"] == pytest.approx(row["test_loss"] / math.log(2))
        assert 0.0 <= row["test_acc"] <= 1.0
    assert rows[-1]["train_loss"] < rows[0]["train_loss"] - 1.0          # it learns byte statistics
