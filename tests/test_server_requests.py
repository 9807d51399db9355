"""The request side of `tha serve`, in process and without a model: the bodies FastAPI reads,
validates and documents, the body limits, and a one-line reason for each request refused.
(tests/test_server.py drives the whole server over real HTTP.)"""
from __future__ import annotations

import io
import wave
from pathlib import Path

import numpy as np
import pytest

from tha.models.limits import MAX_JSON_BYTES, MAX_UPLOAD_BYTES
from tha.runtime.emotions import load_emotions
from tha.runtime.live_state import ServeConfig
from tha.runtime.server import create_app
from tha.runtime.sources.animator import Animator

pytest.importorskip("httpx")
# Starlette asks for httpx2 with its test client; httpx is what this project's dev extra installs.
pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo"
JSON = {"Content-Type": "application/json"}


class RequestsOnly:
    """What the request endpoints use of LiveState; load_image keeps what it was sent."""

    def __init__(self) -> None:
        self.config = ServeConfig(model_dir=DEMO)
        self.emotion_defaults = load_emotions()
        self.animator = Animator(self.config.animator, dict(self.emotion_defaults))
        self.classifier = None
        self.images: list[bytes] = []
        self.rates: list[float] = []  # the render loop's rate after each settings load

    def retime(self) -> None:
        self.rates.append(self.animator.settings.target_fps)

    def speak(self, track) -> None:
        self.animator.speak(track, 0.0)

    def load_image(self, data: bytes) -> str:
        self.images.append(data)
        return "OK: loaded demo"


@pytest.fixture
def served():
    from fastapi.testclient import TestClient  # imported here, where the warning filter above applies

    state = RequestsOnly()
    with TestClient(create_app(state)) as client:
        yield client, state


def tone_wav(seconds: float, rate: int = 16000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as f:
        f.setnchannels(1), f.setsampwidth(2), f.setframerate(rate)
        f.writeframes((0.3 * np.sin(2 * np.pi * 220 * t) * 32767).astype("<i2").tobytes())
    return buffer.getvalue()


def test_sillytavern_calls_reach_the_animator(served):
    client, state = served
    png = (DEMO / "character.png").read_bytes()
    reply = client.post("/api/talkinghead/load", files={"file": ("talkinghead.png", png, "image/png")})
    assert (reply.status_code, reply.text, state.images) == (200, "OK: loaded demo", [png])
    assert reply.headers["content-type"].startswith("text/plain")
    assert client.post("/api/talkinghead/load_emotion_templates", content="{}", headers=JSON).text == "OK"
    templates = {"joy": {"eye_wink_left_index": 1.0, "mouth_aaa_index": 1}}
    assert client.post("/api/talkinghead/load_emotion_templates", json=templates).text == "OK"
    assert client.post("/api/talkinghead/set_emotion", json={"emotion_name": "joy"}).text == "emotion set to joy"
    assert client.post("/api/talkinghead/set_emotion", json={"emotion_name": "smug"}).text.endswith("neutral")
    reply = client.post("/api/talkinghead/load_animator_settings", json={"target_fps": 30, "postprocessor_chain": []})
    assert reply.text == "OK (ignored: postprocessor_chain)" and state.animator.settings.target_fps == 30
    assert client.post("/api/talkinghead/load_animator_settings", content=b"", headers=JSON).text == "OK"
    assert state.animator.settings.target_fps == state.config.animator.target_fps  # an empty body resets
    assert state.rates == [30, state.config.animator.target_fps]  # the render loop follows the new rate
    assert client.post("/api/tha/pose", json={"head_x": 0.25, "neck_z": -1}).json() == {"pinned": ["head_x", "neck_z"]}
    assert client.post("/api/tha/pose", content=b"").json() == {"pinned": []}
    reply = client.post("/api/tha/speak", content=tone_wav(2.0), headers={"Content-Type": "audio/wav"})
    assert reply.status_code == 200 and reply.json()["seconds"] == pytest.approx(2.0, abs=0.05)


def test_speak_takes_compressed_audio(served, tmp_path):
    from test_lipsync import encode, two_vowels

    client, _ = served
    ogg = encode(tmp_path / "speech.ogg", two_vowels(), "libopus", rate=48000).read_bytes()
    reply = client.post("/api/tha/speak", content=ogg, headers={"Content-Type": "audio/ogg"})
    assert reply.status_code == 200 and reply.json()["seconds"] == pytest.approx(3.0, abs=0.05)


def test_the_bodies_are_documented(served):
    client, _ = served
    schema = client.get("/openapi.json").json()

    def body(path: str) -> dict:
        return schema["paths"][path]["post"]["requestBody"]["content"]

    form = body("/api/talkinghead/load")["multipart/form-data"]["schema"]
    upload = schema["components"]["schemas"][form["$ref"].rsplit("/", 1)[1]]
    assert upload["required"] == ["file"]
    emotion = body("/api/talkinghead/set_emotion")["application/json"]["schema"]
    assert schema["components"]["schemas"][emotion["$ref"].rsplit("/", 1)[1]]["required"] == ["emotion_name"]
    assert body("/api/tha/pose")["application/json"]["schema"]["additionalProperties"]["type"] == "number"
    assert "application/octet-stream" in body("/api/tha/speak")


def test_bodies_past_their_limit_are_413(served):
    """JSON bodies are capped at MAX_JSON_BYTES, the image and audio uploads at MAX_UPLOAD_BYTES,
    whether the size is declared (refused before reading) or only known by counting a chunked body.
    Starlette's reply was a bare "Content Too Large": it now names the route's limit, and keeps
    the CORS header a browser needs to read it."""
    client, state = served
    big_json = b"{" + b" " * MAX_JSON_BYTES + b"}"
    png = b"\x89PNG\r\n\x1a\n" + bytes(MAX_UPLOAD_BYTES)
    origin = {"Origin": "http://localhost:8000"}
    replies = [(client.post("/api/talkinghead/load_emotion_templates", content=big_json, headers={**JSON, **origin}),
                MAX_JSON_BYTES),
               (client.post("/api/tha/pose", content=iter([big_json[:1000], big_json[1000:]]), headers=JSON),
                MAX_JSON_BYTES),
               (client.post("/api/talkinghead/load", files={"file": ("t.png", png, "image/png")}), MAX_UPLOAD_BYTES),
               (client.post("/api/tha/speak", content=bytes(MAX_UPLOAD_BYTES + 1), headers=origin), MAX_UPLOAD_BYTES),
               (client.post("/api/tha/speak", content=iter([bytes(MAX_UPLOAD_BYTES), b"1"])), MAX_UPLOAD_BYTES)]
    for reply, limit in replies:
        assert reply.status_code == 413, reply.text
        assert f"limit of {limit >> 20} MB ({limit:,} bytes)" in reply.json()["detail"], reply.text
    assert replies[0][0].headers["access-control-allow-origin"] == "*"
    assert replies[3][0].headers["access-control-allow-origin"] == "*"
    assert state.images == []
    # An upload under its own limit is over the JSON one: it reaches the endpoint all the same.
    half = client.post("/api/talkinghead/load", files={"file": ("t.png", png[: 2 * MAX_JSON_BYTES], "image/png")})
    assert half.status_code == 200 and len(state.images[0]) == 2 * MAX_JSON_BYTES


def test_malformed_bodies_are_refused_with_one_line(served):
    client, state = served
    png = (DEMO / "character.png").read_bytes()
    cases = {
        "set_emotion without its field": (client.post("/api/talkinghead/set_emotion", json={"emotion": "joy"}),
                                          422, "body.emotion_name: Field required"),
        "set_emotion empty": (client.post("/api/talkinghead/set_emotion", content=b"", headers=JSON),
                              422, "Field required"),
        "set_emotion number": (client.post("/api/talkinghead/set_emotion", json={"emotion_name": 3}),
                               422, "valid string"),
        "broken JSON": (client.post("/api/talkinghead/set_emotion", content="{not json", headers=JSON),
                        400, "not valid JSON"),
        "deep JSON": (client.post("/api/tha/pose", content="[" * 5000 + "]" * 5000, headers=JSON),
                      400, "levels deep"),
        "huge integer": (client.post("/api/tha/pose", content='{"head_x": ' + "9" * 5000 + "}", headers=JSON),
                         400, "not valid JSON"),
        # curl -d sends a form Content-Type: FastAPI then sees no JSON object, and said only that
        "JSON without its type": (client.post("/api/talkinghead/load_animator_settings", content=b'{"target_fps": 30}',
                                              headers={"Content-Type": "application/x-www-form-urlencoded"}),
                                  422, "came as application/x-www-form-urlencoded: send it with Content-Type: application/json"),
        "JSON with no type": (client.post("/api/talkinghead/set_emotion", content=b'{"emotion_name": "joy"}'),
                              422, "came as no Content-Type"),
        "templates as a list": (client.post("/api/talkinghead/load_emotion_templates", json=["joy"]),
                                422, "valid dictionary"),
        "unknown parameter": (client.post("/api/talkinghead/load_emotion_templates",
                                          json={"joy": {"no_such_parameter": 1}}), 400, "no_such_parameter"),
        "string pose value": (client.post("/api/tha/pose", json={"head_x": "0.5"}), 422, "body.head_x"),
        "boolean pose value": (client.post("/api/tha/pose", json={"head_x": True}), 422, "valid number"),
        "pose out of range": (client.post("/api/tha/pose", json={"head_x": 5}), 400, "outside"),
        "many bad values": (client.post("/api/tha/pose", json={f"p{i}": "x" for i in range(10)}), 422, "7 more"),
        "bad setting": (client.post("/api/talkinghead/load_animator_settings", json={"target_fps": 1e6}),
                        400, "target_fps"),
        "image in another field": (client.post("/api/talkinghead/load", files={"image": ("t.png", png, "image/png")}),
                                   422, "body.file: Field required"),
        "two files": (client.post("/api/talkinghead/load", files=[("file", ("a.png", png, "image/png")),
                                                                   ("file", ("b.png", png, "image/png"))]),
                      400, "Too many files"),
        "not multipart": (client.post("/api/talkinghead/load", content=b"plain", headers={"Content-Type": "text/plain"}),
                          422, "file"),
        "not a PNG": (client.post("/api/talkinghead/load", files={"file": ("t.png", b"GIF89a", "image/png")}),
                      415, "not a PNG"),
        "no audio": (client.post("/api/tha/speak", content=b""), 422, "Field required"),
        # /load takes its image as a form; the audio is the raw body, and a form said "not an audio file"
        "audio as a form": (client.post("/api/tha/speak", files={"file": ("s.wav", tone_wav(0.5), "audio/wav")}),
                            415, "raw request body, not as a form"),
        "not audio": (client.post("/api/tha/speak", content=b"RIFF not really a wave file"), 400, "not an audio file"),
    }
    for name, (reply, status, needle) in cases.items():
        detail = reply.json()["detail"]
        assert (reply.status_code, isinstance(detail, str)) == (status, True), (name, reply.status_code, detail)
        assert needle in detail and "\n" not in detail, (name, detail)
    assert state.images == []


def test_students_are_model_directories_or_folders_of_them(tmp_path, caplog):
    """--students: a model directory, or a folder whose subfolders are models; a path that is not
    there is one line, a folder with no model in it a warning (a typo would otherwise just
    leave the upload unmatched)."""
    import shutil

    from tha.models.errors import ThaError
    from tha.runtime.live_state import find_students

    shutil.copytree(DEMO, tmp_path / "models" / "demo")
    (tmp_path / "empty").mkdir()
    assert list(find_students((tmp_path / "models",)).values()) == [tmp_path / "models" / "demo"]
    assert list(find_students((DEMO,)).values()) == [DEMO]
    with pytest.raises(ThaError, match=r"--students .*nowhere: no such folder"):
        find_students((tmp_path / "nowhere",))
    with caplog.at_level("WARNING", logger="tha"):
        assert find_students((tmp_path / "empty",)) == {}
    assert "no character model (character_model.yaml) in it" in caplog.text


def test_sillytavern_in_a_browser_finds_and_may_call_the_api(served):
    """SillyTavern (a page on its own origin, http://localhost:8000) first asks /api/modules and
    calls talkinghead only if listed; its JSON POSTs are preflighted, and the browser lets the
    page read a reply only with CORS headers (as SillyTavern-extras sends them)."""
    client, state = served
    page = {"Origin": "http://localhost:8000"}
    modules = client.get("/api/modules", headers=page)
    assert modules.json() == {"modules": ["talkinghead"]}
    assert modules.headers["access-control-allow-origin"] == "*"
    preflight = client.options("/api/talkinghead/set_emotion", headers={
        **page, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,authorization,bypass-tunnel-reminder"})
    assert preflight.status_code == 200 and "POST" in preflight.headers["access-control-allow-methods"]
    allowed = preflight.headers["access-control-allow-headers"].lower()
    assert all(h in allowed for h in ("content-type", "authorization", "bypass-tunnel-reminder"))
    reply = client.post("/api/talkinghead/set_emotion", json={"emotion_name": "joy"}, headers=page)
    assert reply.text == "emotion set to joy" and reply.headers["access-control-allow-origin"] == "*"


def test_the_allowed_origins_can_be_narrowed():
    from fastapi.testclient import TestClient

    state = RequestsOnly()
    state.config = ServeConfig(model_dir=DEMO, allow_origins=("http://127.0.0.1:8000",))
    with TestClient(create_app(state)) as client:
        mine = client.get("/api/modules", headers={"Origin": "http://127.0.0.1:8000"})
        other = client.get("/api/modules", headers={"Origin": "https://elsewhere.example"})
    assert mine.headers["access-control-allow-origin"] == "http://127.0.0.1:8000"
    assert "access-control-allow-origin" not in other.headers


def test_a_partial_animator_file_completes_its_ranges(served):
    """SillyTavern sends the character's `_animator.json` as it is; one written for extras (sway
    every 5-10 s) may set only the low end above our default high end (5 s). The high end follows,
    as extras repairs such files, rather than SillyTavern's upload being refused."""
    client, state = served
    reply = client.post("/api/talkinghead/load_animator_settings", json={"sway_interval_min": 6.0})
    assert reply.status_code == 200, reply.text
    assert (state.animator.settings.sway_interval_min, state.animator.settings.sway_interval_max) == (6.0, 6.0)
    reply = client.post("/api/talkinghead/load_animator_settings", json={"blink_interval_max": 1.5})
    assert reply.status_code == 200 and state.animator.settings.blink_interval_min == 1.5
    both = client.post("/api/talkinghead/load_animator_settings",
                       json={"sway_interval_min": 6.0, "sway_interval_max": 3.0})
    assert both.status_code == 400 and "must not exceed sway_interval_max" in both.json()["detail"]


@pytest.fixture(scope="module")
def emotion_model(tmp_path_factory) -> Path:
    """A small text classifier saved as a hub model is (DistilBERT, a WordPiece vocabulary, four
    of our emotion labels), random but for a bias that makes "sadness" win: what --classify loads,
    built here because the test machines reach no model hub."""
    transformers = pytest.importorskip("transformers")
    import torch

    folder = tmp_path_factory.mktemp("emotion_model")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "i", "am", "so", "happy", "sad", "today", "!"]
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    labels = ["joy", "sadness", "anger", "neutral"]
    config = transformers.DistilBertConfig(vocab_size=len(words), dim=16, hidden_dim=32, n_layers=1, n_heads=2,
                                           max_position_embeddings=64, id2label=dict(enumerate(labels)),
                                           label2id={label: i for i, label in enumerate(labels)})
    torch.manual_seed(0)
    model = transformers.DistilBertForSequenceClassification(config)
    with torch.no_grad():
        model.classifier.bias[labels.index("sadness")] = 10.0
    model.save_pretrained(folder)
    transformers.DistilBertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    return folder


def test_classify_scores_chat_text_and_sets_the_emotion(emotion_model, monkeypatch):
    """Extras' classify module, as SillyTavern uses it: listed in /api/modules, its labels are the
    expression list, POST /api/classify scores every label (highest first) and the character takes
    the top one, as extras' talkinghead does. The model runs in a real transformers pipeline."""
    from fastapi.testclient import TestClient

    from tha.runtime.classify import EmotionClassifier

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    state = RequestsOnly()
    state.classifier = EmotionClassifier(str(emotion_model))
    with TestClient(create_app(state)) as client:
        assert client.get("/api/modules").json() == {"modules": ["talkinghead", "classify"]}
        assert client.get("/api/classify/labels").json() == {"labels": ["joy", "sadness", "anger", "neutral"]}
        reply = client.post("/api/classify", json={"text": "i am so sad today !"})
        missing = client.post("/api/classify", json={"message": "hi"})
    scores = reply.json()["classification"]
    assert [row["label"] for row in scores][0] == "sadness" and len(scores) == 4
    assert [row["score"] for row in scores] == sorted((row["score"] for row in scores), reverse=True)
    assert sum(row["score"] for row in scores) == pytest.approx(1.0, abs=1e-5)
    assert state.animator.emotion == "sadness"
    assert missing.status_code == 422 and "body.text: Field required" in missing.json()["detail"]


def test_classify_is_off_without_a_model_and_a_bad_model_is_one_line(served, monkeypatch, tmp_path):
    pytest.importorskip("transformers")
    from tha.models.errors import ThaError
    from tha.runtime.classify import EmotionClassifier

    client, _ = served
    reply = client.post("/api/classify", json={"text": "hello"})
    assert reply.status_code == 403 and "--classify MODEL" in reply.json()["detail"]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ThaError, match=r"--classify .*empty: cannot load a text-classification model"):
        EmotionClassifier(str(tmp_path / "empty"))
