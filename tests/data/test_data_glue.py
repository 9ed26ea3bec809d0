"""GLUE TSV layout with the built-in tokenizer (offline) and, if present, an HF tokenizer."""

import pytest
import torch

from samkit.data import WordTokenizer, load_dataset
from samkit.errors import SamkitError


@pytest.fixture
def glue_root(tmp_path):
    sst = tmp_path / "SST-2"
    sst.mkdir()
    (sst / "train.tsv").write_text(
        'sentence\tlabel\na great movie \t1\nawful , "truly awful\t0\nbroken row\ngreat fun\t1\n'
    )
    (sst / "dev.tsv").write_text("sentence\tlabel\nan unseen word great\t1\n")
    mrpc = tmp_path / "MRPC"
    mrpc.mkdir()
    header = "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
    (mrpc / "train.tsv").write_text(
        header + "1\t1\t2\tthe cat sat\tthe cat sat down\n0\t3\t4\ta b c d e f\tg\n",
        encoding="utf-8",
    )
    (mrpc / "dev.tsv").write_text(header + "1\t5\t6\tcat\tdog\n", encoding="utf-8")
    return tmp_path


def test_sst2_builtin_tokenizer(glue_root):
    ds = load_dataset("glue:sst2", root=glue_root, max_length=8)
    assert ds.num_classes == 2 and ds.input_shape == (8,) and len(ds.train) == 3
    assert ds.info["skipped_rows"] == {"train": 1, "test": 0}
    assert ds.train.targets.tolist() == [1, 0, 1]
    ids = ds.train.inputs["input_ids"]
    assert ids.shape == (3, 8) and torch.equal(ds.train.inputs["attention_mask"], (ids != 0).long())
    # "awful" and "great" appear twice (most frequent; tie broken alphabetically) -> ids 4, 5.
    assert ids[1, 0] == 2 and ids[1, 1] == ids[1, 5] == 4 and ids[0, 2] == ids[2, 1] == 5
    assert ids[0, 4] == 3 and ids[0, 5] == 0  # [SEP] then padding
    test_ids = ds.test.inputs["input_ids"][0].tolist()
    assert test_ids[2] == 1  # "unseen" was not in the training set -> [UNK]


def test_mrpc_pairs_token_types_and_truncation(glue_root):
    ds = load_dataset("glue:mrpc", root=glue_root, max_length=6)
    assert ds.train.targets.tolist() == [1, 0]
    inputs = ds.train.inputs
    # Pair 2 is "a b c d e f" / "g": longest-first truncation keeps 2 + 1 words in 6 slots.
    assert inputs["input_ids"][1].tolist()[0] == 2 and inputs["input_ids"][1, 3] == 3
    assert inputs["token_type_ids"][1].tolist() == [0, 0, 0, 0, 1, 1]
    assert int(inputs["attention_mask"][1].sum()) == 6


def test_word_tokenizer_round_trip_is_deterministic():
    a = WordTokenizer.fit(["b a b", "c a"], max_vocab=6)
    b = WordTokenizer.fit(["c a", "b a b"], max_vocab=6)
    assert a.vocab == b.vocab == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "b"]
    assert a.ids("A b C") == [4, 5, 1]


def test_glue_errors(glue_root):
    with pytest.raises(SamkitError, match=r"RTE/train.tsv"):
        load_dataset("glue:rte", root=glue_root)
    with pytest.raises(SamkitError, match="unknown GLUE task.*sst2"):
        load_dataset("glue:sts9", root=glue_root)
    with pytest.raises(SamkitError, match="needs root"):
        load_dataset("glue:sst2")


@pytest.mark.skipif(
    __import__("importlib").util.find_spec("transformers") is None, reason="needs transformers"
)
def test_hf_tokenizer_from_local_path(glue_root, tmp_path):
    from transformers import BertTokenizer

    vocab = tmp_path / "vocab.txt"
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "down", "dog"]
    vocab.write_text("\n".join(words) + "\n")
    BertTokenizer(str(vocab)).save_pretrained(tmp_path / "tok")
    ds = load_dataset("glue:mrpc", root=glue_root, tokenizer=str(tmp_path / "tok"), max_length=10)
    first = ds.train.inputs["input_ids"][0].tolist()
    assert first == [2, 5, 6, 7, 3, 5, 6, 7, 8, 3]  # [CLS] the cat sat [SEP] the cat sat down [SEP]
    assert ds.train.inputs["token_type_ids"][0].tolist() == [0] * 5 + [1] * 5
    assert ds.info["tokenizer"]["vocab_size"] == len(words)
