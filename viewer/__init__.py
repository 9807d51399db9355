"""The viewer: a GLFW window (or an EGL offscreen context) that shows posed frames.

PyOpenGL binds its GL entry points once, at first import, for one platform. Every context
the viewer makes is an EGL context (GLFW is asked for EGL too), so both the window and the
headless path work in one process; pick EGL before anything imports OpenGL.

Triton (the cuda-fused backend) and Mesa's software GL each load their own LLVM: Triton loaded
after a Mesa context exists crashes the process in its import (measured here), loaded before
it works. So load it now, when it is installed (0.2-0.3 s).
"""
import importlib.util
import os

os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
if importlib.util.find_spec("triton") is not None:
    try:
        import triton  # noqa: F401
    except Exception:  # a broken install: `tha doctor` says what is wrong with it
        pass
