"""A resizable GLFW window with an OpenGL 3.3 core context (made through EGL, see __init__)."""
from __future__ import annotations

import os
from typing import Callable

import glfw

from tha.models.errors import ThaError


def _glfw_error(code: int, description: bytes) -> None:
    # GLFW reports through this callback; failures surface below as ThaError instead.
    pass


def require_display() -> None:
    """Fail before any slow work (loading a model) when no window can open."""
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        raise ThaError("no display: DISPLAY is not set; run under X (or Xvfb), or use --offscreen")


class Window:
    offscreen = False

    def __init__(self, size: tuple[int, int], title: str):
        require_display()
        glfw.set_error_callback(_glfw_error)
        if not glfw.init():
            raise ThaError(f"cannot open the display {os.environ.get('DISPLAY', '')!r}; "
                           "check that the X server runs, or use --offscreen")
        glfw.default_window_hints()
        glfw.window_hint(glfw.CONTEXT_CREATION_API, glfw.EGL_CONTEXT_API)
        glfw.window_hint(glfw.CONTEXT_VERSION_MAJOR, 3)
        glfw.window_hint(glfw.CONTEXT_VERSION_MINOR, 3)
        glfw.window_hint(glfw.OPENGL_PROFILE, glfw.OPENGL_CORE_PROFILE)
        glfw.window_hint(glfw.OPENGL_FORWARD_COMPAT, True)
        self.handle = glfw.create_window(size[0], size[1], title, None, None)
        if not self.handle:
            glfw.terminate()
            raise ThaError("cannot create an OpenGL 3.3 window on this display (is Mesa's libEGL installed?); "
                           "or use --offscreen")
        glfw.make_context_current(self.handle)
        glfw.swap_interval(1)  # draw at display rate

    @property
    def should_close(self) -> bool:
        return bool(glfw.window_should_close(self.handle))

    def request_close(self) -> None:
        glfw.set_window_should_close(self.handle, True)

    def framebuffer_size(self) -> tuple[int, int]:
        return tuple(glfw.get_framebuffer_size(self.handle))

    def bind(self) -> None:
        from OpenGL import GL

        GL.glBindFramebuffer(GL.GL_FRAMEBUFFER, 0)

    def on_key(self, callback: Callable[[int, int, int], None]) -> None:
        """Chain ``callback(key, action, mods)`` after the key callback already installed (ImGui's)."""
        previous = glfw.set_key_callback(self.handle, None)

        def both(window, key, scancode, action, mods):
            if previous is not None:
                previous(window, key, scancode, action, mods)
            callback(key, action, mods)

        glfw.set_key_callback(self.handle, both)

    def poll(self) -> None:
        glfw.poll_events()

    def present(self) -> None:
        glfw.swap_buffers(self.handle)

    def close(self) -> None:
        if self.handle:
            glfw.destroy_window(self.handle)
            self.handle = None
            glfw.terminate()
