"""The idle animator over simulated time: blink, breathing and sway statistics match their
settings; emotions ease in; the talking mouth moves; the shipped presets cover SillyTavern."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

from tha.models.errors import ThaError
from tha.models.pose import index_of, neutral_pose
from tha.runtime.emotions import DEFAULT_EMOTIONS_FILE, EMOTION_LABELS, load_emotions, parse_emotions
from tha.runtime.sources.animator import MOUTH_SHAPES, Animator, AnimatorSettings, settings_from_dict

FPS = 60.0


def simulate(animator: Animator, seconds: float, start: float = 1000.0) -> tuple[np.ndarray, np.ndarray]:
    times = start + np.arange(int(seconds * FPS)) / FPS
    return times, np.stack([animator.read(t) for t in times])


def rising_edges(signal: np.ndarray, threshold: float) -> int:
    above = signal > threshold
    return int(np.count_nonzero(above[1:] & ~above[:-1]))


@pytest.mark.parametrize("low,high", [(2.0, 4.0), (5.0, 7.0)])
def test_blink_rate_matches_intervals(low, high):
    settings = AnimatorSettings(blink_interval_min=low, blink_interval_max=high, blink_duration=0.2, seed=1)
    _, poses = simulate(Animator(settings), 60)
    wink = poses[:, index_of("eye_wink_left")]
    blinks = rising_edges(wink, 0.5)
    expected = 60 / ((low + high) / 2 + 0.2)
    assert abs(blinks - expected) <= 0.3 * expected + 1
    assert wink.max() == pytest.approx(1.0, abs=0.02)  # full closure at the blink's middle
    assert np.array_equal(wink, poses[:, index_of("eye_wink_right")])
    assert np.mean(wink > 0.05) < 0.2  # eyes are open most of the time


@pytest.mark.parametrize("period,strength", [(3.0, 1.0), (5.0, 0.6)])
def test_breathing_cycle_period_and_strength(period, strength):
    _, poses = simulate(Animator(AnimatorSettings(breathing_cycle_duration=period, breathing_strength=strength,
                                                  seed=2)), 60)
    breathing = poses[:, index_of("breathing")]
    spectrum = np.abs(np.fft.rfft(breathing - breathing.mean()))
    freqs = np.fft.rfftfreq(len(breathing), 1 / FPS)
    assert 1 / freqs[spectrum.argmax()] == pytest.approx(period, rel=0.05)
    assert breathing.max() - breathing.min() == pytest.approx(strength, rel=0.02)


@pytest.mark.parametrize("macro", [0.1, 0.4])
def test_sway_amplitude_and_pace(macro):
    micro = 0.01
    settings = AnimatorSettings(sway_macro_strength=macro, sway_micro_strength=micro, sway_interval_min=2.0,
                                sway_interval_max=4.0, seed=3)
    times, poses = simulate(Animator(settings), 60)
    for name, scale in (("head_x", 1.0), ("neck_z", 1.0), ("body_y", 0.5)):
        track = poses[:, index_of(name)]
        assert np.abs(track).max() <= scale * (macro + micro) + 1e-5
        assert np.abs(track).max() >= 0.5 * scale * macro  # it really sways that far
        # Slow: no frame-to-frame jump beyond what a smoothstep over >=2 s allows.
        assert np.abs(np.diff(track)).max() < scale * (2 * macro * 1.5 / 2.0 / FPS + 2 * micro * 6 / FPS)
    # Without micro-motion, turning points come at most once per new target, about every 3 s.
    _, still = simulate(Animator(AnimatorSettings(sway_macro_strength=macro, sway_micro_strength=0,
                                                  sway_interval_min=2.0, sway_interval_max=4.0, seed=3)), 60)
    head = still[:, index_of("head_y")]
    turns = np.count_nonzero(np.diff(np.sign(np.diff(head))) != 0)
    assert 60 / 4.0 * 0.25 <= turns <= 60 / 2.0 + 1


@pytest.mark.parametrize("period", [0.8, 2.0])
def test_micro_motion_amplitude_and_period(period):
    settings = AnimatorSettings(sway_macro_strength=0, sway_micro_strength=0.05, sway_micro_period=period, seed=8)
    _, poses = simulate(Animator(settings), 60)
    head = poses[:, index_of("head_x")]
    assert 0.8 * 0.05 <= np.abs(head).max() <= 0.05 + 1e-6
    spectrum = np.abs(np.fft.rfft(head))
    freqs = np.fft.rfftfreq(len(head), 1 / FPS)
    fast = freqs > 0.7 / period
    assert 1 / freqs[fast][spectrum[fast].argmax()] == pytest.approx(period, rel=0.05)

def test_emotion_eases_in_with_transition_time_and_unknown_is_neutral():
    animator = Animator(AnimatorSettings(transition_time=0.5, sway_macro_strength=0, sway_micro_strength=0,
                                         blink_interval_min=100, blink_interval_max=100, seed=4))
    animator.read(0.0)
    assert animator.set_emotion("anger") == "anger"
    target = animator.emotions["anger"][index_of("eyebrow_angry_left")]
    value = lambda t: animator.read(t)[index_of("eyebrow_angry_left")]
    assert value(0.5) == pytest.approx(target * (1 - np.exp(-1)), rel=0.05)
    assert value(4.0) == pytest.approx(target, abs=1e-3)
    assert animator.set_emotion("no-such-feeling") == "neutral"
    assert value(8.0) == pytest.approx(0.0, abs=1e-3)


def test_talking_moves_the_mouth_and_stopping_closes_it():
    animator = Animator(AnimatorSettings(talking_fps=10, seed=5))
    mouth = [index_of(n) for n in MOUTH_SHAPES]
    _, quiet = simulate(animator, 2, start=0)
    assert quiet[:, mouth].max() == 0
    animator.start_talking()
    _, talking = simulate(animator, 3, start=2)
    openness = talking[:, mouth].sum(axis=1)
    assert openness.max() > 0.3 and openness.std() > 0.05
    animator.stop_talking()
    _, after = simulate(animator, 2, start=5)
    assert after[-1, mouth].max() < 1e-3


def test_overrides_pin_parameters_and_release():
    animator = Animator(AnimatorSettings(sway_macro_strength=0, sway_micro_strength=0, transition_time=0, seed=6))
    animator.set_overrides({"iris_rotation_x": 0.7})
    assert animator.read(0.0)[index_of("iris_rotation_x")] == pytest.approx(0.7)
    animator.set_overrides({})
    assert animator.read(0.1)[index_of("iris_rotation_x")] == pytest.approx(0.0)
    with pytest.raises(ThaError, match="unknown pose parameter"):
        animator.set_overrides({"head_xx": 0.1})


def test_pinned_parameters_hold_exactly_while_the_rest_animates():
    """Pins hold against sway, breathing, blinks and the talking mouth; the rest keeps moving."""
    animator = Animator(AnimatorSettings(blink_interval_min=0.5, blink_interval_max=1.0, seed=7))
    pins = {"head_x": 0.3, "breathing": 0.0, "eye_wink_left": 0.0, "mouth_aaa": 0.25}
    animator.set_overrides(pins)
    animator.start_talking()
    _, poses = simulate(animator, 8, start=0)
    for name, value in pins.items():
        assert np.all(poses[:, index_of(name)] == np.float32(value)), name
    for name in ("head_y", "eye_wink_right", "mouth_iii"):  # unpinned: sway, blinks, talking
        assert np.ptp(poses[:, index_of(name)]) > 0.05, name
    animator.set_overrides({})  # released: head_x sways and breathing breathes again
    _, after = simulate(animator, 8, start=8)
    assert np.ptp(after[:, index_of("head_x")]) > 0.05
    assert after[:, index_of("breathing")].max() > 0.9


def test_same_seed_same_animation():
    a, b = Animator(AnimatorSettings(seed=9)), Animator(AnimatorSettings(seed=9))
    assert np.array_equal(simulate(a, 5)[1], simulate(b, 5)[1])


def test_shipped_presets_cover_the_sillytavern_labels_and_differ():
    emotions = load_emotions()
    assert set(EMOTION_LABELS) <= set(emotions) and len(EMOTION_LABELS) == 28
    assert np.array_equal(emotions["neutral"], neutral_pose())
    others = [emotions[e] for e in EMOTION_LABELS if e != "neutral"]
    assert all(np.abs(p - neutral_pose()).max() > 0.2 for p in others)
    assert len({p.tobytes() for p in others}) == len(others)
    assert json.loads(DEFAULT_EMOTIONS_FILE.read_text())  # valid JSON people can edit


def test_extras_style_templates_and_bad_templates():
    emotions = parse_emotions({"joy": {"eyebrow_happy_left_index": 0.9, "head_x_index": 0.2}})
    assert emotions["joy"][index_of("eyebrow_happy_left")] == pytest.approx(0.9)
    with pytest.raises(ThaError, match="unknown pose parameter"):
        parse_emotions({"joy": {"smile": 1}})
    with pytest.raises(ThaError, match="JSON object"):
        parse_emotions([1, 2])


def test_settings_from_dict_ignores_extras_keys_and_refuses_the_rest():
    """An `_animator.json` written for SillyTavern-extras loads with its extras-only keys named in a
    warning; a typo is an error naming the key it resembles; bad values are one line."""
    extras = {"target_fps": 25, "blink_interval_min": 1.0, "blink_probability": 0.03, "postprocessor_chain": []}
    with pytest.warns(UserWarning, match="ignoring blink_probability, postprocessor_chain"):
        settings, ignored = settings_from_dict(extras)
    assert settings.blink_interval_min == 1.0 and ignored == ["blink_probability", "postprocessor_chain"]
    assert settings_from_dict({}) == (AnimatorSettings(), [])
    assert settings_from_dict({"seed": 4}, base=AnimatorSettings(breathing_strength=0.5))[0] == \
        AnimatorSettings(breathing_strength=0.5, seed=4)
    for data, message in [({"blink_intervl_min": 1.0}, "unknown key 'blink_intervl_min'; did you mean 'blink_interval_min'"),
                          ({"blink_interval_min": 9.0, "blink_interval_max": 2.0}, "blink_interval_min must not exceed"),
                          ({"breathing_strength": "lots"}, "breathing_strength: Value 'lots'"),
                          ({"seed": 1.5}, "seed: "),
                          ({"target_fps": 1e6}, "target_fps=1000000.0 is outside"),
                          ({"seed": "${oc.env:HOME}"}, "interpolation is not taken"),
                          # numpy's generator takes no negative seed; a cycle of 1e-310 s made cos(inf)
                          # fail every frame of a running server
                          ({"seed": -1}, "seed=-1 must be a whole number >= 0"),
                          ({"breathing_cycle_duration": 1e-310}, "breathing_cycle_duration=1e-310 must be at least"),
                          ({"sway_interval_min": 0, "sway_interval_max": 0.01}, "sway_interval_max=0.01 must be at least"),
                          ([1, 2], "must be a mapping")]:
        with pytest.raises(ThaError, match=re.escape(message)) as err:
            settings_from_dict(data)
        assert "\n" not in str(err.value)


def test_animator_file_warns_about_extras_keys_and_refuses_typos(tmp_path):
    """`--animator FILE` as the CLI reads it: errors and warnings name the file."""
    from tha.models.files import read_json
    from tha.runtime.sources.animator import load_animator_settings

    path = tmp_path / "_animator.json"

    def load(data: dict) -> AnimatorSettings:
        path.write_text(json.dumps(data))
        return load_animator_settings(read_json(path, "animator settings file"), str(path))

    with pytest.warns(UserWarning, match=f"{re.escape(str(path))}: ignoring crop_left"):
        assert load({"sway_macro_strength": 0.1, "crop_left": 0.0}) == AnimatorSettings(sway_macro_strength=0.1)
    with pytest.raises(ThaError, match=f"{re.escape(str(path))}: unknown key .* did you mean 'sway_macro_strength'"):
        load({"sway_macro_strenght": 0.1})
