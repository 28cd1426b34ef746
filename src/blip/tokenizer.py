"""BERT WordPiece tokenizer on the `tokenizers` library, with BLIP's [DEC] and [ENC] added and their ids exposed."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import WordPiece

from blip.errors import BlipError

SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
BLIP_TOKENS = ("[DEC]", "[ENC]")


class Tokenizer:
    """Text -> (ids, mask) with [CLS] first and [SEP] last; ids of [PAD], [CLS], [SEP], [DEC] and [ENC]."""

    def __init__(self, tok: HFTokenizer):
        # Adding is idempotent: a tokenizer saved by us (or one that already has them) keeps its ids, and a vocabulary
        # that lists them as plain words gets them marked special, so decode() drops them.
        tok.add_special_tokens(list(BLIP_TOKENS))
        self.tok = tok
        ids = {t: tok.token_to_id(t) for t in ("[PAD]", "[CLS]", "[SEP]") + BLIP_TOKENS}
        missing = [t for t, i in ids.items() if i is None]
        if missing:
            raise BlipError(f"tokenizer vocabulary lacks {', '.join(missing)}")
        self.pad_id, self.cls_id, self.sep_id = ids["[PAD]"], ids["[CLS]"], ids["[SEP]"]
        self.dec_id, self.enc_id = ids["[DEC]"], ids["[ENC]"]
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", self.cls_id), ("[SEP]", self.sep_id)]
        )
        tok.no_truncation()
        tok.no_padding()

    @classmethod
    def from_vocab(cls, vocab: Sequence[str] | Path | str, lowercase: bool = True) -> Tokenizer:
        """A BERT tokenizer from a vocab.txt path or a list of tokens (specials included)."""
        if isinstance(vocab, (str, Path)):
            tokens = Path(vocab).read_text(encoding="utf-8").splitlines()
        else:
            tokens = list(vocab)
        model = WordPiece({t: i for i, t in enumerate(tokens)}, unk_token="[UNK]", max_input_chars_per_word=100)
        tok = HFTokenizer(model)
        tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase, strip_accents=None, clean_text=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)
        # [PAD], [CLS], ... must be atomic even inside text, as in BertTokenizer.
        tok.add_special_tokens([t for t in SPECIALS if t in tok.get_vocab()])
        return cls(tok)

    @classmethod
    def from_pretrained(cls, path: str | Path) -> Tokenizer:
        """Read tokenizer.json or vocab.txt from a file or a folder."""
        path = Path(path)
        candidates = [path] if path.is_file() else [path / "tokenizer.json", path / "vocab.txt"]
        for p in candidates:
            if p.is_file():
                if p.suffix == ".json":
                    return cls(HFTokenizer.from_file(str(p)))
                return cls.from_vocab(p)
        raise BlipError(f"{path}: no tokenizer.json or vocab.txt found")

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> Tokenizer:
        """A whole-word vocabulary of every word in `texts` (deterministic; for small closed worlds)."""
        probe = cls.from_vocab(list(SPECIALS))
        words: set[str] = set()
        for text in texts:
            normal = probe.tok.normalizer.normalize_str(text)
            words.update(w for w, _ in probe.tok.pre_tokenizer.pre_tokenize_str(normal))
        return cls.from_vocab(list(SPECIALS) + sorted(words - set(SPECIALS)))

    def __len__(self) -> int:
        return self.tok.get_vocab_size(with_added_tokens=True)

    def save(self, folder: str | Path) -> None:
        """Write tokenizer.json (with [DEC]/[ENC]) and vocab.txt to a folder."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.tok.save(str(folder / "tokenizer.json"))
        vocab = sorted(self.tok.get_vocab(with_added_tokens=True).items(), key=lambda kv: kv[1])
        (folder / "vocab.txt").write_text("".join(t + "\n" for t, _ in vocab), encoding="utf-8")

    def encode(self, text: str) -> list[int]:
        """[CLS] text [SEP] ids, untruncated."""
        return self.tok.encode(text).ids

    def __call__(self, texts: Sequence[str], max_length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch of texts -> (ids, mask), each (B, longest), right-padded, truncated to max_length with [SEP] kept."""
        rows = []
        for enc in self.tok.encode_batch(list(texts)):
            ids = enc.ids
            if max_length is not None and len(ids) > max_length:
                ids = ids[: max_length - 1] + [self.sep_id]
            rows.append(ids)
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = 1
        return ids, mask

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        """Text of ids with every special token dropped."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        return self.tok.decode(list(ids), skip_special_tokens=True).strip()
