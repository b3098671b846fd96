// The one kernel a clip that bench/own_reader.c launches after mapping the clip's frames, in the
// place of the kernel a reader for training would launch there (convert, crop, resize, flip,
// normalise into the batch): the same launches and about the same reads and writes, nearest
// sampling of the whole frame, BT.601 limited-range colour, fp16 RGB out. A probe's stand-in:
// its output is not checked against DALI's. PTX beside it: python -m bench.own_reader ptx.
#include <cuda_fp16.h>

#define MAX_FRAMES 32  // own_reader.c's NVR_MAX_OUT

struct Frames {
  unsigned long long y[MAX_FRAMES];  // each mapped NV12 surface (its luma plane)
  unsigned int pitch[MAX_FRAMES];
};

// grid: (ceil(out_h * out_w / blockDim.x), frames); out: (frames, out_h, out_w, 3)
extern "C" __global__ void nv12_clip(Frames f, int h, int w, int out_h, int out_w, __half *out) {
  const int t = blockIdx.y;
  const int p = blockIdx.x * blockDim.x + threadIdx.x;
  if (p >= out_h * out_w) return;
  const int oy = p / out_w, ox = p - oy * out_w;
  const int sy = oy * h / out_h, sx = ox * w / out_w;
  const unsigned char *luma = reinterpret_cast<const unsigned char *>(f.y[t]);
  const unsigned int pitch = f.pitch[t];
  const unsigned char *uv = luma + (size_t)pitch * ((h + 1) & ~1);
  const float y = 1.164f * (luma[(size_t)sy * pitch + sx] - 16.f);
  const size_t c = (size_t)(sy >> 1) * pitch + (sx & ~1);
  const float u = uv[c] - 128.f, v = uv[c + 1] - 128.f;
  __half *o = out + ((size_t)t * out_h * out_w + p) * 3;
  o[0] = __float2half((y + 1.596f * v) * (1.f / 255.f));
  o[1] = __float2half((y - 0.392f * u - 0.813f * v) * (1.f / 255.f));
  o[2] = __float2half((y + 2.017f * u) * (1.f / 255.f));
}
