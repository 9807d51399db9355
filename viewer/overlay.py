"""The ImGui panel over the picture: pose sliders grouped as upstream's manual posers group
them, file actions, and the readout. It edits a pose copy and names actions; the viewer
applies both."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from imgui_bundle import imgui

from tha.models.pose import POSE_PARAMETERS, Category, PoseGroup, groups_in, index_of

PANEL_X, PANEL_WIDTH = 8, 300  # where the panel first opens (the user may move it)
PANEL_COLUMN = PANEL_X + PANEL_WIDTH + 8  # the window's left column it covers, kept clear of the character

# Categories shown as "pick a shape, then its left/right values" (upstream's choice panels).
CHOOSERS = (Category.EYEBROW, Category.EYE, Category.MOUTH)
# Categories shown as plain sliders, one per parameter.
PLAIN = (Category.IRIS_MORPH, Category.IRIS_ROTATION, Category.FACE_ROTATION,
         Category.BODY_ROTATION, Category.BREATHING)
TITLES = {Category.EYEBROW: "Eyebrow", Category.EYE: "Eye", Category.MOUTH: "Mouth",
          Category.IRIS_MORPH: "Iris", Category.IRIS_ROTATION: "Iris rotation",
          Category.FACE_ROTATION: "Head", Category.BODY_ROTATION: "Body", Category.BREATHING: "Breathing"}

SHORTCUTS = (("H", "hide/show this panel"), ("R", "reset the pose"), ("S", "screenshot to PNG"),
             ("B", "next background"), ("C", "calibrate: take the tracked face as rest"),
             ("Ctrl+S / Ctrl+O", "save / load the pose JSON"), ("Esc, Q", "quit"))


@dataclass
class Readout:
    backend: str = "?"
    source: str = "?"
    fps: float = 0.0
    backend_ms: float = 0.0
    draw_ms: float = 0.0
    message: str = ""


@dataclass
class Edit:
    pose: np.ndarray | None = None  # a changed pose, if the user moved a slider
    actions: list[str] = field(default_factory=list)


def _short(group: PoseGroup, category: Category) -> str:
    prefix = {Category.EYEBROW: "eyebrow_", Category.EYE: "eye_", Category.MOUTH: "mouth_"}.get(category, "")
    return group.name.removeprefix(prefix)


class Overlay:
    def __init__(self, window_handle=None):
        self.context = imgui.create_context()
        imgui.get_io().set_ini_filename("")  # no imgui.ini dropped in the user's folder
        if window_handle is not None:
            from imgui_bundle.python_backends.glfw_backend import GlfwRenderer

            self.renderer = GlfwRenderer(window_handle)
        else:
            from imgui_bundle.python_backends.opengl_backend_programmable import ProgrammablePipelineRenderer

            self.renderer = ProgrammablePipelineRenderer()
        self.windowed = window_handle is not None
        self.visible = True
        self.choice = {c: 0 for c in CHOOSERS}
        self.linked = {c: True for c in (*CHOOSERS, Category.IRIS_MORPH)}
        self.pose_path = "pose.json"
        self.backgrounds: list[str] = []
        self.background = 0

    @property
    def wants_keyboard(self) -> bool:
        return self.visible and imgui.get_io().want_capture_keyboard

    def draw(self, pose: np.ndarray, readout: Readout, size: tuple[int, int]) -> Edit:
        """Lay out and render the panel into the bound framebuffer of ``size`` (w, h)."""
        edit = Edit()
        if not self.visible:
            return edit
        imgui.set_current_context(self.context)
        if self.windowed:
            self.renderer.process_inputs()
        else:
            io = imgui.get_io()
            io.display_size = imgui.ImVec2(*size)
            io.delta_time = 1.0 / 60.0
        imgui.new_frame()
        imgui.set_next_window_pos(imgui.ImVec2(PANEL_X, PANEL_X), imgui.Cond_.first_use_ever)
        imgui.set_next_window_size(imgui.ImVec2(PANEL_WIDTH, min(size[1] - 16, 620)), imgui.Cond_.first_use_ever)
        imgui.set_next_window_bg_alpha(0.85)
        imgui.begin("tha")
        self._readout(readout, edit)
        work = np.array(pose, dtype=np.float32, copy=True)
        changed = False
        for category in CHOOSERS:
            changed |= self._chooser(category, work)
        for category in PLAIN:
            changed |= self._plain(category, work)
        self._files(edit)
        imgui.end()
        imgui.render()
        self.renderer.render(imgui.get_draw_data())
        if changed:
            edit.pose = work
        return edit

    def _readout(self, r: Readout, edit: Edit) -> None:
        imgui.text_wrapped(f"backend {r.backend}")
        imgui.text_wrapped(f"source {r.source}")  # iFacialMocap's counters make it long
        imgui.text(f"{r.fps:5.1f} fps   model {r.backend_ms:.1f} ms")
        imgui.text(f"upload+draw {r.draw_ms:.2f} ms")
        if r.message:
            imgui.text_wrapped(r.message)
        if self.backgrounds:
            picked, index = imgui.combo("background", self.background, self.backgrounds)
            if picked:
                edit.actions.append(f"background:{index}")
        if imgui.button("Reset"):
            edit.actions.append("reset")
        imgui.same_line()
        if imgui.button("Screenshot"):
            edit.actions.append("screenshot")

    def _slider(self, label: str, pose: np.ndarray, name: str) -> bool:
        p = POSE_PARAMETERS[index_of(name)]
        moved, value = imgui.slider_float(label, float(pose[p.index]), p.lower, p.upper, "%.3f")
        if moved:
            pose[p.index] = value
        return moved

    def _pair(self, category: Category, group: PoseGroup, pose: np.ndarray) -> bool:
        """Left/right sliders with a link toggle; a linked pair moves together."""
        left, right = group.parameter_names
        _, self.linked[category] = imgui.checkbox(f"link##{category.value}", self.linked[category])
        moved_left = self._slider(f"left##{category.value}", pose, left)
        moved_right = self._slider(f"right##{category.value}", pose, right)
        if self.linked[category]:
            if moved_left:
                pose[index_of(right)] = pose[index_of(left)]
            elif moved_right:
                pose[index_of(left)] = pose[index_of(right)]
        return moved_left or moved_right

    def _chooser(self, category: Category, pose: np.ndarray) -> bool:
        if not imgui.collapsing_header(TITLES[category], imgui.TreeNodeFlags_.default_open):
            return False
        groups = groups_in(category)
        _, self.choice[category] = imgui.combo(f"shape##{category.value}", self.choice[category],
                                               [_short(g, category) for g in groups])
        group = groups[self.choice[category]]
        if group.arity == 2:
            return self._pair(category, group, pose)
        return self._slider(f"value##{category.value}", pose, group.name)

    def _plain(self, category: Category, pose: np.ndarray) -> bool:
        if not imgui.collapsing_header(TITLES[category], imgui.TreeNodeFlags_.default_open):
            return False
        moved = False
        for group in groups_in(category):
            if group.arity == 2:
                moved |= self._pair(category, group, pose)
            else:
                moved |= self._slider(group.name, pose, group.name)
        return moved

    def _files(self, edit: Edit) -> None:
        if not imgui.collapsing_header("Files and keys", imgui.TreeNodeFlags_.default_open):
            return
        _, self.pose_path = imgui.input_text("pose JSON", self.pose_path)
        if imgui.button("Save pose"):
            edit.actions.append("save_pose")
        imgui.same_line()
        if imgui.button("Load pose"):
            edit.actions.append("load_pose")
        for keys, what in SHORTCUTS:
            imgui.text(f"{keys:>16}  {what}")

    def close(self) -> None:
        imgui.set_current_context(self.context)
        self.renderer.shutdown()
        imgui.destroy_context(self.context)

