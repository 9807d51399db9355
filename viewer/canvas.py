"""The character on screen: one RGBA texture, fed through double-buffered pixel-buffer uploads
(or CUDA-GL interop), drawn aspect-fit over a background by a small shader."""
from __future__ import annotations

import ctypes
from dataclasses import dataclass

import numpy as np
from OpenGL import GL

from tha.models.errors import ThaError

_VERTEX = """
#version 330 core
uniform vec4 rect;  // x0, y0, x1, y1 in clip space
out vec2 uv;
void main() {
    vec2 corner = vec2(gl_VertexID & 1, gl_VertexID >> 1);
    uv = vec2(corner.x, 1.0 - corner.y);  // texture row 0 is the image's top row
    gl_Position = vec4(mix(rect.xy, rect.zw, corner), 0.0, 1.0);
}
"""

_FRAGMENT = """
#version 330 core
uniform sampler2D frame;
uniform vec3 solid;
uniform int checker;
uniform vec2 origin;  // the image's lower-left corner in window pixels
in vec2 uv;
out vec4 colour;
void main() {
    vec4 c = texture(frame, uv);
    vec3 back = solid;
    if (checker == 1) {
        vec2 cell = floor((gl_FragCoord.xy - origin) / 16.0);
        back = mod(cell.x + cell.y, 2.0) < 1.0 ? vec3(0.8) : vec3(1.0);
    }
    colour = vec4(mix(back, c.rgb, c.a), 1.0);  // straight alpha over an opaque background
}
"""


@dataclass(frozen=True)
class Background:
    name: str
    colour: tuple[int, int, int] | None = None  # None: transparent checkerboard


BACKGROUNDS = (
    Background("checkerboard"),
    Background("green screen", (0, 255, 0)),
    Background("white", (255, 255, 255)),
    Background("black", (0, 0, 0)),
)


def _compile(kind: int, source: str) -> int:
    shader = GL.glCreateShader(kind)
    GL.glShaderSource(shader, source)
    GL.glCompileShader(shader)
    if not GL.glGetShaderiv(shader, GL.GL_COMPILE_STATUS):
        raise ThaError(f"the viewer's shader does not compile on this GL: {GL.glGetShaderInfoLog(shader).decode().strip()}")
    return shader


def _program() -> int:
    program = GL.glCreateProgram()
    for kind, source in ((GL.GL_VERTEX_SHADER, _VERTEX), (GL.GL_FRAGMENT_SHADER, _FRAGMENT)):
        GL.glAttachShader(program, _compile(kind, source))
    GL.glLinkProgram(program)
    if not GL.glGetProgramiv(program, GL.GL_LINK_STATUS):
        raise ThaError(f"the viewer's shader does not link: {GL.glGetProgramInfoLog(program).decode().strip()}")
    return program


def fit_rect(view: tuple[int, int], image: tuple[int, int], left: int = 0) -> tuple[int, int, int, int]:
    """The largest (x, y, w, h) with the image's aspect centred in ``view`` (both (w, h)) right
    of its first ``left`` columns, x/y from the top-left, whole pixels so a 1:1 draw maps
    texels onto pixels exactly."""
    width = view[0] - left
    scale = min(width / image[0], view[1] / image[1])
    w, h = max(1, round(image[0] * scale)), max(1, round(image[1] * scale))
    return left + (width - w) // 2, (view[1] - h) // 2, w, h


def read_pixels(width: int, height: int) -> np.ndarray:
    """The bound read framebuffer's (0,0,w,h) as top-down (h,w,4) uint8."""
    GL.glPixelStorei(GL.GL_PACK_ALIGNMENT, 1)
    data = GL.glReadPixels(0, 0, width, height, GL.GL_RGBA, GL.GL_UNSIGNED_BYTE)
    return np.frombuffer(data, np.uint8).reshape(height, width, 4)[::-1].copy()


class Canvas:
    """Owns the texture, two pixel buffers, the shader, and a framebuffer for composites."""

    def __init__(self, size: tuple[int, int] = (512, 512)):
        self.program = _program()
        self.vao = GL.glGenVertexArrays(1)
        self.texture = GL.glGenTextures(1)
        self.pbos = list(GL.glGenBuffers(2))
        self._next_pbo = 0
        self.fbo = GL.glGenFramebuffers(1)
        self.fbo_colour = GL.glGenRenderbuffers(1)
        self.size = (0, 0)
        self.background = BACKGROUNDS[0]
        self.interop = None  # set on the first CUDA frame
        self._uniforms = {n: GL.glGetUniformLocation(self.program, n) for n in ("rect", "frame", "solid", "checker", "origin")}
        self._allocate(size)

    def _allocate(self, size: tuple[int, int]) -> None:
        w, h = size
        GL.glBindTexture(GL.GL_TEXTURE_2D, self.texture)
        GL.glTexImage2D(GL.GL_TEXTURE_2D, 0, GL.GL_RGBA8, w, h, 0, GL.GL_RGBA, GL.GL_UNSIGNED_BYTE, None)
        for param, value in ((GL.GL_TEXTURE_MIN_FILTER, GL.GL_LINEAR), (GL.GL_TEXTURE_MAG_FILTER, GL.GL_LINEAR),
                             (GL.GL_TEXTURE_WRAP_S, GL.GL_CLAMP_TO_EDGE), (GL.GL_TEXTURE_WRAP_T, GL.GL_CLAMP_TO_EDGE)):
            GL.glTexParameteri(GL.GL_TEXTURE_2D, param, value)
        GL.glBindRenderbuffer(GL.GL_RENDERBUFFER, self.fbo_colour)
        GL.glRenderbufferStorage(GL.GL_RENDERBUFFER, GL.GL_RGBA8, w, h)
        GL.glBindFramebuffer(GL.GL_FRAMEBUFFER, self.fbo)
        GL.glFramebufferRenderbuffer(GL.GL_FRAMEBUFFER, GL.GL_COLOR_ATTACHMENT0, GL.GL_RENDERBUFFER, self.fbo_colour)
        GL.glBindFramebuffer(GL.GL_FRAMEBUFFER, 0)
        if self.interop is not None:  # the registration names the old texture storage
            self.interop.close()
            self.interop = None
        self.size = (w, h)

    def upload(self, rgba: np.ndarray) -> None:
        """Host frame -> texture through the next of two pixel buffers: the driver copies from
        one while we fill the other, so a new frame never waits on the previous upload."""
        h, w = rgba.shape[:2]
        if (w, h) != self.size:
            self._allocate((w, h))
        data = np.ascontiguousarray(rgba, dtype=np.uint8)
        pbo = self.pbos[self._next_pbo]
        self._next_pbo ^= 1
        GL.glBindBuffer(GL.GL_PIXEL_UNPACK_BUFFER, pbo)
        # Orphan the old storage so mapping does not stall on a read still in flight.
        GL.glBufferData(GL.GL_PIXEL_UNPACK_BUFFER, data.nbytes, None, GL.GL_STREAM_DRAW)
        target = GL.glMapBufferRange(GL.GL_PIXEL_UNPACK_BUFFER, 0, data.nbytes,
                                     GL.GL_MAP_WRITE_BIT | GL.GL_MAP_INVALIDATE_BUFFER_BIT)
        if not target:
            GL.glBindBuffer(GL.GL_PIXEL_UNPACK_BUFFER, 0)
            raise ThaError("the GL driver could not map a pixel buffer; the GL context was probably lost")
        ctypes.memmove(target, data.ctypes.data, data.nbytes)
        GL.glUnmapBuffer(GL.GL_PIXEL_UNPACK_BUFFER)
        GL.glBindTexture(GL.GL_TEXTURE_2D, self.texture)
        GL.glPixelStorei(GL.GL_UNPACK_ALIGNMENT, 1)
        GL.glTexSubImage2D(GL.GL_TEXTURE_2D, 0, 0, 0, w, h, GL.GL_RGBA, GL.GL_UNSIGNED_BYTE, ctypes.c_void_p(0))
        GL.glBindBuffer(GL.GL_PIXEL_UNPACK_BUFFER, 0)

    def upload_device(self, rgba) -> None:
        """CUDA (H,W,4) uint8 tensor -> texture with no host round trip."""
        h, w = rgba.shape[:2]
        if (w, h) != self.size:
            self._allocate((w, h))
        if self.interop is None:
            from tha.viewer.interop import TextureInterop

            self.interop = TextureInterop(self.texture, self.size)
        self.interop.copy(rgba)

    def draw(self, view: tuple[int, int], left: int = 0) -> tuple[int, int, int, int]:
        """Clear the bound framebuffer (``view`` = its (w, h)) and draw the frame aspect-fit
        right of its first ``left`` columns. Returns the image's rect (x, y, w, h) from the top-left."""
        x, y, w, h = fit_rect(view, self.size, left)
        GL.glViewport(0, 0, view[0], view[1])
        GL.glDisable(GL.GL_BLEND)
        GL.glDisable(GL.GL_SCISSOR_TEST)
        solid = self.background.colour or (0, 0, 0)
        GL.glClearColor(*(c / 255.0 for c in solid), 1.0)
        GL.glClear(GL.GL_COLOR_BUFFER_BIT)
        bottom = view[1] - y - h
        GL.glUseProgram(self.program)
        u = self._uniforms
        GL.glUniform4f(u["rect"], 2 * x / view[0] - 1, 2 * bottom / view[1] - 1,
                       2 * (x + w) / view[0] - 1, 2 * (bottom + h) / view[1] - 1)
        GL.glUniform1i(u["frame"], 0)
        GL.glUniform3f(u["solid"], *(c / 255.0 for c in solid))
        GL.glUniform1i(u["checker"], int(self.background.colour is None))
        GL.glUniform2f(u["origin"], float(x), float(bottom))
        GL.glActiveTexture(GL.GL_TEXTURE0)
        GL.glBindTexture(GL.GL_TEXTURE_2D, self.texture)
        GL.glBindVertexArray(self.vao)
        GL.glDrawArrays(GL.GL_TRIANGLE_STRIP, 0, 4)
        GL.glBindVertexArray(0)
        GL.glUseProgram(0)
        return x, y, w, h

    def composite(self) -> np.ndarray:
        """The frame over the background at the frame's own size, with no overlay: what
        screenshots hold, and recordings to formats without alpha (those with alpha take the bare
        frame). Restores the caller's framebuffer binding."""
        previous = GL.glGetIntegerv(GL.GL_FRAMEBUFFER_BINDING)
        GL.glBindFramebuffer(GL.GL_FRAMEBUFFER, self.fbo)
        self.draw(self.size)
        pixels = read_pixels(*self.size)
        GL.glBindFramebuffer(GL.GL_FRAMEBUFFER, int(previous))
        return pixels

    def close(self) -> None:
        if self.interop is not None:
            self.interop.close()
            self.interop = None
