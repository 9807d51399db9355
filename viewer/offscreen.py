"""A GL context with no window system: EGL on Mesa's surfaceless platform, drawing into a
framebuffer object. For servers, recordings and tests."""
from __future__ import annotations

import ctypes
from typing import Callable

from tha.models.errors import ThaError

_PLATFORM_SURFACELESS_MESA = 0x31DD
_CONTEXT_MAJOR_VERSION = 0x3098
_CONTEXT_MINOR_VERSION = 0x30FB
_CONTEXT_OPENGL_PROFILE_MASK = 0x30FD
_CONTEXT_OPENGL_CORE_PROFILE_BIT = 0x1


def _egl_display():
    from OpenGL import EGL
    from OpenGL.EGL.EXT.platform_base import eglGetPlatformDisplayEXT

    display = eglGetPlatformDisplayEXT(_PLATFORM_SURFACELESS_MESA, EGL.EGL_DEFAULT_DISPLAY, None)
    major, minor = EGL.EGLint(), EGL.EGLint()
    if not display or not EGL.eglInitialize(display, ctypes.pointer(major), ctypes.pointer(minor)):
        raise RuntimeError("eglInitialize failed")
    return display


class Offscreen:
    offscreen = True
    should_close = False

    def __init__(self, size: tuple[int, int]):
        import os

        if os.environ.get("PYOPENGL_PLATFORM") != "egl":
            raise ThaError("offscreen mode needs PYOPENGL_PLATFORM=egl (import tha.viewer before OpenGL)")
        from OpenGL import EGL, GL

        try:
            self.display = _egl_display()
            # Surfaceless displays have no window configs, and EGL_SURFACE_TYPE defaults to window.
            attributes = (EGL.EGLint * 5)(EGL.EGL_SURFACE_TYPE, EGL.EGL_PBUFFER_BIT,
                                          EGL.EGL_RENDERABLE_TYPE, EGL.EGL_OPENGL_BIT, EGL.EGL_NONE)
            config, count = EGL.EGLConfig(), EGL.EGLint()
            EGL.eglChooseConfig(self.display, attributes, ctypes.pointer(config), 1, ctypes.pointer(count))
            if count.value < 1:
                raise RuntimeError("no desktop-GL EGL config")
            EGL.eglBindAPI(EGL.EGL_OPENGL_API)
            context_attributes = (EGL.EGLint * 7)(
                _CONTEXT_MAJOR_VERSION, 3, _CONTEXT_MINOR_VERSION, 3,
                _CONTEXT_OPENGL_PROFILE_MASK, _CONTEXT_OPENGL_CORE_PROFILE_BIT, EGL.EGL_NONE)
            self.context = EGL.eglCreateContext(self.display, config, EGL.EGL_NO_CONTEXT, context_attributes)
            if not self.context or not EGL.eglMakeCurrent(self.display, EGL.EGL_NO_SURFACE, EGL.EGL_NO_SURFACE, self.context):
                raise RuntimeError("no OpenGL 3.3 core context")
        except Exception as err:  # PyOpenGL raises its own EGLError types; one line for the user
            raise ThaError(f"cannot make a headless OpenGL context through EGL ({err}); "
                           "install Mesa's EGL (libegl1 libegl-mesa0 libgl1-mesa-dri)") from None
        self.size = size
        self.fbo = GL.glGenFramebuffers(1)
        self.colour = GL.glGenRenderbuffers(1)
        GL.glBindRenderbuffer(GL.GL_RENDERBUFFER, self.colour)
        GL.glRenderbufferStorage(GL.GL_RENDERBUFFER, GL.GL_RGBA8, *size)
        GL.glBindFramebuffer(GL.GL_FRAMEBUFFER, self.fbo)
        GL.glFramebufferRenderbuffer(GL.GL_FRAMEBUFFER, GL.GL_COLOR_ATTACHMENT0, GL.GL_RENDERBUFFER, self.colour)
        if GL.glCheckFramebufferStatus(GL.GL_FRAMEBUFFER) != GL.GL_FRAMEBUFFER_COMPLETE:
            raise ThaError("the headless GL context cannot render to a framebuffer object")

    def request_close(self) -> None:
        self.should_close = True

    def framebuffer_size(self) -> tuple[int, int]:
        return self.size

    def bind(self) -> None:
        from OpenGL import GL

        GL.glBindFramebuffer(GL.GL_FRAMEBUFFER, self.fbo)

    def on_key(self, callback: Callable[[int, int, int], None]) -> None:
        """No keyboard without a window."""

    def poll(self) -> None:
        pass

    def present(self) -> None:
        from OpenGL import GL

        GL.glFinish()

    def close(self) -> None:
        from OpenGL import EGL

        if self.context:
            EGL.eglMakeCurrent(self.display, EGL.EGL_NO_SURFACE, EGL.EGL_NO_SURFACE, EGL.EGL_NO_CONTEXT)
            EGL.eglDestroyContext(self.display, self.context)
            self.context = None
