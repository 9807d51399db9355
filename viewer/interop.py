"""CUDA -> OpenGL texture copies with no host round trip (cuda-python's runtime API).

The texture is registered with CUDA once; each frame maps it, copies the CUDA tensor into
its array on torch's current stream, and unmaps it before GL samples it. Imported only when
a backend hands over a CUDA frame."""
from __future__ import annotations

from tha.models.errors import ThaError
from tha.runtime.backends.cudart import cudart


def _check(result, what: str):
    err, *rest = result
    if int(err) != 0:
        raise ThaError(f"CUDA-GL interop failed at {what} ({err}); the GL context must be on the CUDA GPU "
                       "(NVIDIA's libEGL), or use a CPU backend")
    return rest[0] if rest else None


class TextureInterop:
    """One GL_TEXTURE_2D of ``size`` (w, h), RGBA8, registered for CUDA writes."""

    def __init__(self, texture: int, size: tuple[int, int]):
        from OpenGL import GL

        self.cudart = cudart()
        self.size = size
        flags = self.cudart.cudaGraphicsRegisterFlags.cudaGraphicsRegisterFlagsWriteDiscard
        self.resource = _check(self.cudart.cudaGraphicsGLRegisterImage(int(texture), GL.GL_TEXTURE_2D, int(flags)),
                               "cudaGraphicsGLRegisterImage")

    def copy(self, rgba) -> None:
        """(H,W,4) uint8 CUDA tensor -> the texture. Blocks the GL thread only until the copy
        is queued; unmapping orders it before GL's next use of the texture."""
        import torch

        w, h = self.size
        if tuple(rgba.shape) != (h, w, 4) or rgba.dtype != torch.uint8 or not rgba.is_cuda:
            raise ThaError(f"interop needs a ({h},{w},4) uint8 CUDA frame, got {tuple(rgba.shape)} {rgba.dtype}")
        rgba = rgba.contiguous()
        stream = torch.cuda.current_stream(rgba.device).cuda_stream
        rt = self.cudart
        _check(rt.cudaGraphicsMapResources(1, self.resource, stream), "cudaGraphicsMapResources")
        try:
            array = _check(rt.cudaGraphicsSubResourceGetMappedArray(self.resource, 0, 0),
                           "cudaGraphicsSubResourceGetMappedArray")
            _check(rt.cudaMemcpy2DToArrayAsync(array, 0, 0, rgba.data_ptr(), w * 4, w * 4, h,
                                               rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice, stream),
                   "cudaMemcpy2DToArrayAsync")
        finally:
            _check(rt.cudaGraphicsUnmapResources(1, self.resource, stream), "cudaGraphicsUnmapResources")

    def close(self) -> None:
        if self.resource is not None:
            self.cudart.cudaGraphicsUnregisterResource(self.resource)
            self.resource = None
