"""pre_caption / pre_question follow the BLIP reference rules (expected strings worked out by hand)."""

from blip.data.text import pre_caption, pre_question, swap_left_right


def test_pre_caption_lowercases_replaces_punctuation_and_collapses_spaces():
    assert pre_caption('A Man (riding) a "horse"; on the beach!!  ') == "a man riding a horse on the beach"
    assert pre_caption("two dogs: one~brown*one#white.") == "two dogs one brown one white"
    # Characters outside the reference's list are kept.
    assert pre_caption("a dog's toy, a cat? yes-no") == "a dog's toy, a cat? yes-no"


def test_pre_caption_truncates_to_max_words():
    assert pre_caption("one two three four five", max_words=3) == "one two three"
    assert pre_caption("one two three", max_words=3) == "one two three"


def test_pre_caption_empty_and_whitespace():
    assert pre_caption("  ...  ") == ""
    assert pre_caption("a\tcat\n\non  a mat") == "a cat on a mat"


def test_pre_question_deletes_punctuation_and_keeps_question_mark():
    assert pre_question("What colour is the (small) Ball?") == "what colour is the small ball?"
    assert pre_question("is it a dog... ") == "is it a dog"
    assert pre_question("a b c d", max_words=2) == "a b"


def test_swap_left_right_only_whole_words():
    assert swap_left_right("the left image has more than the right one") == "the right image has more than the left one"
    assert swap_left_right("leftover rights") == "leftover rights"


def test_dec_and_enc_already_in_a_vocab_are_special_and_decoded_away():
    from blip.tokenizer import Tokenizer

    tok = Tokenizer.from_vocab(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "dog", "[DEC]", "[ENC]"])
    assert (len(tok), tok.dec_id, tok.enc_id) == (9, 7, 8)  # their own ids, nothing appended
    assert tok.decode([tok.dec_id, 5, 6, tok.sep_id]) == "a dog"
    assert tok.encode("[ENC] a dog") == [tok.cls_id, tok.enc_id, 5, 6, tok.sep_id]
