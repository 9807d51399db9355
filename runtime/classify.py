"""Chat text -> emotion scores: what SillyTavern-extras' `classify` module does, so SillyTavern's
expressions extension can make the character's emotion follow the chat.

A Hugging Face text-classification model (a hub name or a local folder), run by a transformers
pipeline on the CPU. Extras' default is ``joeddav/distilbert-base-uncased-go-emotions-student``:
its 28 GoEmotions labels are the names of our emotion presets (``configs/emotions.json``).
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from tha.models.errors import ThaError, short_reason

EXTRAS_DEFAULT_MODEL = "joeddav/distilbert-base-uncased-go-emotions-student"
MAX_TEXT_CHARS = 20_000  # a chat message, not a book: longer text is cut (the model truncates to 512 tokens anyway)


@dataclass(frozen=True)
class Score:
    label: str
    score: float


class EmotionClassifier:
    """``scores(text)``: every label of the model with its probability, highest first."""

    def __init__(self, model: str):
        try:
            from transformers import pipeline
        except ImportError:
            raise ThaError("--classify needs transformers: install tha's classify extra (`pip install -e '.[classify]'` in tha's folder)") from None
        # huggingface_hub prints through a handler of its own and also passes each record on to
        # ours: every retry of an offline download came out twice
        logging.getLogger("huggingface_hub").handlers.clear()
        try:
            self._pipe = pipeline("text-classification", model=model, top_k=None, device="cpu")
        except (OSError, ValueError) as err:
            raise ThaError(f"--classify {model}: cannot load a text-classification model "
                           f"({short_reason(err, 300)}); give a "
                           f"Hugging Face model name such as {EXTRAS_DEFAULT_MODEL} or a folder saved by "
                           "save_pretrained") from None
        self.labels = [self._pipe.model.config.id2label[i] for i in sorted(self._pipe.model.config.id2label)]
        self._lock = threading.Lock()  # one pipeline, requests on several threads

    def scores(self, text: str) -> list[Score]:
        with self._lock:
            output = self._pipe(text[:MAX_TEXT_CHARS], truncation=True)
        rows = output[0] if output and isinstance(output[0], list) else output
        return sorted((Score(row["label"], float(row["score"])) for row in rows), key=lambda s: -s.score)
