"""A synthetic world for running the whole BLIP pipeline on a CPU with no downloads.

Images of 1-4 coloured shapes on varied backgrounds, each with a scene graph, and texts generated from a grammar
that are true of the scene graph (or, in the noisy web split, deliberately not). Everything is written in the
real formats so the real readers read it (writer.py). Deterministic: every image, video, web text and statement
has its own numpy RNG seeded by (seed, stream, index), so generation runs in parallel and gives the same bytes
every time (videos too: blip/data/video.py keeps the encoder deterministic).

On-disk layout under OUT (all paths inside JSON files are relative to OUT, which is the image/video root):

    manifest.json                 what is here: seed, noise rate, image size, split sizes, files with sizes
    images/NNNNNN.jpg             all still images (JPEG, 4:4:4 chroma so colours survive on small shapes)
    scenes.json                   scene graph per image: split, background, objects (shape, colour, size,
                                  row/col in a 3x3 grid, bbox), relations [i, "left_of"|"right_of"|"above"|"below", j]
    coco_karpathy_train.json      [{"image", "caption", "image_id"}], CAPTIONS_TRAIN captions per train image
    coco_karpathy_val.json        [{"image", "caption": [5 texts]}]   (also the retrieval / captioning eval sets)
    coco_karpathy_test.json       [{"image", "caption": [5 texts]}]
    web.json                      [{"image", "caption"}] one alt-text per web image; a fraction NOISE corrupted
    web_noise_labels.json         aligned with web.json: {"image", "caption", "noisy", "kind", "attribute",
                                  "clean_caption"}; ground truth for CapFilt studies; NO training code reads it
    pretrain.json                 [{"image", "caption"}] = Karpathy train pairs + web pairs (the pretraining list)
    vqa/vqa_{train,val,test}.json [{"question_id", "question", "answer": [10 annotator answers], "image",
                                  "dataset": "vqa"}]
    vqa/answer_list.json          every answer the questions can have
    nlvr2/nlvr_{train,dev,test}.json  [{"images": [p0, p1], "sentence", "label": "True"|"False"}]
    videos/videoNNNN.mp4          short clips (8 frames) of moving shapes
    msrvtt/videodatainfo.json     (video root: OUT/videos) official MSRVTT layout: {"videos": [{"video_id",
                                  "split"}], "sentences": [...]}
    msrvtt/msrvtt_test.jsonl      BLIP's layout: {"clip_name", "caption"} per line, test videos
    msrvtt/msrvtt_qa_{train,test}.json  MSRVTT-QA layout: [{"video": "videoNNNN.mp4", "question", "answer",
                                  "question_id"}], questions only the motion answers (colour / direction / shape
                                  of a moving object, how many move)
    video_scenes.json             per video: background and moving objects (shape, colour, direction)

Splits: `web_fraction` of the images (default half) form the web split; of the rest, 10% each (at least one) val
and test, the remainder Karpathy train.

One module per concern: vocabulary (the world's words), scenes (scene graphs), drawing (images), grammar
(captions), noise (corrupted web texts), vqa, nlvr2, video, writer (`generate`, the files on disk).
"""

from blip.data.synth.drawing import draw_shape, encode_jpeg, object_geometry, render_scene
from blip.data.synth.grammar import Caption, caption_true, make_caption, make_captions, matching, mention_true, render
from blip.data.synth.nlvr2 import make_statement
from blip.data.synth.noise import boilerplate, flip_attribute, make_web_text, truncate
from blip.data.synth.scenes import make_scene, position_true, relation_true
from blip.data.synth.video import make_video_scene, render_video, video_caption, video_question
from blip.data.synth.vocabulary import (
    ATTRIBUTES,
    BACKGROUNDS,
    CELL_NAMES,
    COLOUR_WORDS,
    COLOURS,
    MOTIONS,
    NOISE_KINDS,
    NUMBERS,
    POSITIONS,
    RELATIONS,
    SHAPE_WORDS,
    SHAPES,
    SIZE_WORDS,
    SIZES,
    TEXTURES,
    plural,
)
from blip.data.synth.vqa import annotator_answers, answer_list, make_question
from blip.data.synth.writer import generate, split_of, split_sizes

__all__ = [
    "ATTRIBUTES",
    "BACKGROUNDS",
    "CELL_NAMES",
    "COLOURS",
    "COLOUR_WORDS",
    "Caption",
    "MOTIONS",
    "NOISE_KINDS",
    "NUMBERS",
    "POSITIONS",
    "RELATIONS",
    "SHAPES",
    "SHAPE_WORDS",
    "SIZES",
    "SIZE_WORDS",
    "TEXTURES",
    "annotator_answers",
    "answer_list",
    "boilerplate",
    "caption_true",
    "draw_shape",
    "encode_jpeg",
    "flip_attribute",
    "generate",
    "make_caption",
    "make_captions",
    "make_question",
    "make_scene",
    "make_statement",
    "make_video_scene",
    "make_web_text",
    "matching",
    "mention_true",
    "object_geometry",
    "plural",
    "position_true",
    "relation_true",
    "render",
    "render_scene",
    "render_video",
    "split_of",
    "split_sizes",
    "truncate",
    "video_caption",
    "video_question",
]
