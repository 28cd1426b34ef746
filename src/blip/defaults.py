"""The reference's defaults (configs/pretrain_vit_b_14m.yaml, retrieval_coco.yaml), each in one place.

Free of torch, so the command line's parsers and the inference API can use them without importing training code.
"""

QUEUE_SIZE = 57_600  # ITC feature queue of pretraining and retrieval fine-tuning
MOMENTUM = 0.995  # EMA of the momentum encoders
ALPHA = 0.4  # weight of the momentum distillation targets
TEXT_TOKENS = 35  # retrieval texts and VQA questions: [CLS]/[ENC] + words + [SEP], truncated to 35 tokens
CAPTION_WORDS = 30  # image captions are cleaned to 30 words (pre_caption)
PROMPT = "a picture of "  # the captioner's prompt, excluded from its loss
K_TEST = 256  # image-text retrieval: each query's ITC top k re-ranked by ITM
