"""The viewer: a GLFW window (or an EGL offscreen context) that shows posed frames.

PyOpenGL binds its GL entry points once, at first import, for one platform. Every context
the viewer makes is an EGL context (GLFW is asked for EGL too), so both the window and the
headless path work in one process; pick EGL before anything imports OpenGL.
"""
import os

os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
