"Tests for medssl.text: tokenizer, text encoder, Hugging Face hook."
import sys
import pytest
import torch
import torch.nn.functional as F
from medssl.core import seed_everything
from medssl.text import Tokenizer, TextEncoder, load_hf_text_encoder, words, report_sections, PAD, UNK, CLS, SEP, SPECIALS

CORPUS = ["No pleural effusion.", "Small right pleural effusion.", "Heart size is normal.",
          "Mild pulmonary edema. No pneumothorax.", "ET tube 4.5 cm above the carina."]


def test_words():
    assert words("No  Pneumothorax, 4.5cm!") == ["no", "pneumothorax", ",", "4.5", "cm", "!"]


def test_fit_is_deterministic_and_ranked():
    a, b = Tokenizer.fit(CORPUS, vocab_size=12), Tokenizer.fit(CORPUS[::-1], vocab_size=12)
    assert a.itos == b.itos and len(a) == 12
    assert a.itos[:5] == list(SPECIALS) and a.itos[5] == "."  # most frequent first
    assert Tokenizer(CORPUS).itos == Tokenizer.fit(CORPUS).itos
    assert "pleural" in Tokenizer.fit(CORPUS, min_freq=2).stoi and "heart" not in Tokenizer.fit(CORPUS, min_freq=2).stoi


def test_encode_shapes_mask_truncation():
    tok = Tokenizer.fit(CORPUS, max_len=10)
    ids, mask = tok.encode(CORPUS)
    assert ids.shape == mask.shape == (5, 10) and ids.dtype == torch.long and mask.dtype == torch.bool
    assert torch.equal(mask, ids != PAD) and (ids[:, 0] == CLS).all()
    assert tok.encode("hernia unknownword") .tolist()[:4] == [CLS, UNK, UNK, SEP]
    long = tok.encode(" ".join(CORPUS), max_len=6)
    assert long.tolist()[-1] == SEP and len(long) == 6
    assert tok.decode(tok.encode("No pleural effusion.")) == "no pleural effusion ."
    with pytest.raises(ValueError, match="max_len"): tok.encode("x", max_len=1)


def test_save_load(tmp_path):
    tok = Tokenizer.fit(CORPUS, vocab_size=15, max_len=12)
    tok2 = Tokenizer.load(tok.save(tmp_path / "v.json"))
    assert tok2.itos == tok.itos and tok2.max_len == 12
    assert torch.equal(tok2.encode(CORPUS)[0], tok.encode(CORPUS)[0])
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a medssl tokenizer"): Tokenizer.load(tmp_path / "bad.json")


def test_bad_arguments():
    with pytest.raises(ValueError, match="vocab_size"): Tokenizer.fit(CORPUS, vocab_size=3)
    with pytest.raises(ValueError, match="non-empty"): Tokenizer.fit([])
    with pytest.raises(ValueError, match="divisible"): TextEncoder(50, dim=10, heads=3)
    with pytest.raises(ValueError, match="pool"): TextEncoder(50, pool="max")


def test_encoder_shapes_padding_invariance_and_cls_pool():
    seed_everything(0)
    tok = Tokenizer.fit(CORPUS)
    for pool in ("mean", "cls"):
        enc = TextEncoder(len(tok), dim=16, depth=1, heads=2, max_len=32, pool=pool).eval()
        with torch.no_grad():
            z = enc(*tok.encode(CORPUS, max_len=16))
            assert z.shape == (5, 16) and enc.num_features == 16
            torch.testing.assert_close(enc(*tok.encode(CORPUS, max_len=32)), z, atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(enc(tok.encode(CORPUS, max_len=16)[0]), z)  # default mask = ids != PAD
    with pytest.raises(ValueError, match="exceeds max_len"): enc(torch.ones(1, 40, dtype=torch.long))


def test_encoder_is_deterministic_and_trains():
    tok = Tokenizer.fit(CORPUS)
    ids, mask = tok.encode(CORPUS, max_len=12)
    y = torch.tensor([0., 1., 0., 1., 0.])
    losses = []
    for _ in range(2):
        seed_everything(1)
        enc, head = TextEncoder(len(tok), dim=16, depth=1, heads=2, max_len=12), torch.nn.Linear(16, 1)
        opt = torch.optim.Adam([*enc.parameters(), *head.parameters()], lr=1e-2)
        hist = []
        for _ in range(30):
            loss = F.binary_cross_entropy_with_logits(head(enc(ids, mask)).squeeze(1), y)
            opt.zero_grad(); loss.backward(); opt.step(); hist.append(loss.item())
        losses.append(hist)
    assert losses[0] == losses[1]
    assert losses[0][-1] < 0.5 * losses[0][0]


def test_hf_hook_errors(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="never downloads"): load_hf_text_encoder(tmp_path / "missing")
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ImportError, match="pip install transformers"): load_hf_text_encoder(tmp_path)


def test_hf_hook_with_local_tiny_bert(tmp_path):
    transformers = pytest.importorskip("transformers")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "no", "pleural", "effusion", "."]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab))
    transformers.BertTokenizerFast(str(tmp_path / "vocab.txt")).save_pretrained(tmp_path)
    cfg = transformers.BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=32)
    transformers.BertModel(cfg).save_pretrained(tmp_path)
    enc = load_hf_text_encoder(tmp_path, max_len=8).eval()
    ids, mask = enc.tokenizer.encode(["No pleural effusion.", "effusion"])
    assert ids.shape == (2, 8) and enc(ids, mask).shape == (2, 16) and enc.num_features == 16


def test_report_sections():
    r = "FINAL REPORT\n EXAMINATION: CHEST (PA)\n INDICATION: cough.\n FINDINGS: \n No effusion.\n IMPRESSION: \n Normal.\n"
    assert report_sections(r) == "No effusion. Normal."
    assert report_sections(r, ("IMPRESSION", "FINDINGS")) == "Normal. No effusion."
    assert report_sections("FINDINGS:\n\n IMPRESSION: Clear.") == "Clear."
    assert report_sections("  plain   text ") == "plain text"
    with pytest.raises(ValueError, match="must be a str"): report_sections(None)


def test_phantom_reports_fit_default_length():
    phantom = pytest.importorskip("medssl.phantom")
    _, texts = phantom.study_labels(phantom.sample_cohort(20, seed=1))
    tok = Tokenizer.fit([report_sections(t) for t in texts])
    ids, mask = tok.encode([report_sections(t) for t in texts])
    assert ids.shape[1] == 128 and (ids == UNK).sum() == 0
    assert (mask.sum(1) < 128).all()  # nothing truncated


@pytest.mark.parametrize("safe", [True, False])
def test_hf_folder_by_path_as_saved(tmp_path, safe):
    "`--weights cxr_bert=DIR`: a BERT folder as `save_pretrained` writes it (safetensors or pytorch_model.bin) gives transformers' own embeddings."
    transformers = pytest.importorskip("transformers")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "no", "pleural", "effusion", "."]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab))
    transformers.BertTokenizerFast(str(tmp_path / "vocab.txt")).save_pretrained(tmp_path)
    torch.manual_seed(0)
    bert = transformers.BertModel(transformers.BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1,
                                                          num_attention_heads=2, intermediate_size=32)).eval()
    bert.save_pretrained(tmp_path, safe_serialization=safe)
    assert (tmp_path / ("model.safetensors" if safe else "pytorch_model.bin")).exists()
    enc = load_hf_text_encoder(tmp_path, max_len=8).eval()
    ids, mask = enc.tokenizer.encode(["No pleural effusion.", "effusion"])
    with torch.no_grad():
        torch.testing.assert_close(enc(ids, mask), bert(input_ids=ids, attention_mask=mask.long()).last_hidden_state[:, 0])


def test_hf_folder_errors_name_the_folder(tmp_path):
    pytest.importorskip("transformers")
    (tmp_path / "config.json").write_text('{"model_type": "bert"}'); (tmp_path / "vocab.txt").write_text("[PAD]")
    with pytest.raises(FileNotFoundError, match=f"{tmp_path} is not a complete Hugging Face model folder: no weights"):
        load_hf_text_encoder(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match=f"{tmp_path}: transformers .* cannot load"): load_hf_text_encoder(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "bert", "auto_map": {"AutoModel": "modeling.Custom"}}')
    with pytest.raises(ValueError, match="trust_remote_code=True"): load_hf_text_encoder(tmp_path)
