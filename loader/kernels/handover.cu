// The loader's hand-over in one kernel per chunk: uint8 (N, T, H, W, 3) clips from DALI ->
// (x - mean) * scale in float16 or float32, written straight into the batch tensor the
// step reads, channels-last ((N, T, H, W, C) memory, as PyTorch's channels_last_3d) or planar
// ((N, C, T, H, W), as Paddle's NCDHW).
//
// Replaces 3-4 framework kernels (concatenate the chunks, transpose, cast, subtract) that wrote
// and read every value several times on the training stream between two steps: here each uint8
// value is read once and each output value written once.
//
// Grid: x over one clip's T*H*W pixels (grid-stride), y = the chunk's clip (at most 65535).
// handover4_*: 4 pixels a thread (three 4-byte loads, three 8- or 16-byte stores), for clips of
// T*H*W divisible by 4 with src 4-byte and dst 16-byte aligned (loader/handover.py checks);
// handover_*: a pixel a thread, for any other shape.
// The arithmetic is in float32: 0-255 minus a mean already rounded to the output type (the
// caller rounds it, as the framework path does) is exact there, so with scale 1 (Hara's recipe)
// the result rounds once, as a framework's float16 subtraction does, and matches it bit for bit.
//
// loader/handover.py loads the PTX made from this file (see its docstring for the command).

__device__ __forceinline__ unsigned short to_f16(float v) {
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(v));
    return h;
}

template <typename Out, Out (*convert)(float)>
__device__ __forceinline__ void handover(const unsigned char* __restrict__ src,
                                         Out* __restrict__ dst, int plane, int first,
                                         float m0, float m1, float m2,
                                         float s0, float s1, float s2, int planar) {
    const long long clip = blockIdx.y;
    const unsigned char* in = src + clip * plane * 3LL;
    Out* out = dst + (first + clip) * plane * 3LL;  // the clip's 3 * plane values, either layout
    const long long step = planar ? plane : 1;      // between a pixel's channels
    for (int p = blockIdx.x * blockDim.x + threadIdx.x; p < plane; p += gridDim.x * blockDim.x) {
        const unsigned char* px = in + 3LL * p;
        float r = ((float)px[0] - m0) * s0;
        float g = ((float)px[1] - m1) * s1;
        float b = ((float)px[2] - m2) * s2;
        Out* o = planar ? out + p : out + 3LL * p;
        o[0] = convert(r);
        o[step] = convert(g);
        o[2 * step] = convert(b);
    }
}

__device__ __forceinline__ float to_f32(float v) { return v; }

extern "C" __global__ void handover_float16(const unsigned char* __restrict__ src,
                                            unsigned short* __restrict__ dst, int plane,
                                            int first, float m0, float m1, float m2, float s0,
                                            float s1, float s2, int planar) {
    handover<unsigned short, to_f16>(src, dst, plane, first, m0, m1, m2, s0, s1, s2, planar);
}

extern "C" __global__ void handover_float32(const unsigned char* __restrict__ src,
                                            float* __restrict__ dst, int plane, int first,
                                            float m0, float m1, float m2, float s0, float s1,
                                            float s2, int planar) {
    handover<float, to_f32>(src, dst, plane, first, m0, m1, m2, s0, s1, s2, planar);
}

__device__ __forceinline__ void store4(unsigned short* p, float a, float b, float c, float d) {
    uint2 v;
    v.x = (unsigned int)to_f16(a) | ((unsigned int)to_f16(b) << 16);
    v.y = (unsigned int)to_f16(c) | ((unsigned int)to_f16(d) << 16);
    *reinterpret_cast<uint2*>(p) = v;
}

__device__ __forceinline__ void store4(float* p, float a, float b, float c, float d) {
    *reinterpret_cast<float4*>(p) = make_float4(a, b, c, d);
}

template <typename Out>
__device__ __forceinline__ void handover4(const unsigned int* __restrict__ src,
                                          Out* __restrict__ dst, int plane, int first,
                                          float m0, float m1, float m2,
                                          float s0, float s1, float s2, int planar) {
    const int groups = plane / 4;  // of 4 pixels: 12 bytes in, 12 values out
    const long long clip = blockIdx.y;
    const unsigned int* in = src + clip * groups * 3LL;
    Out* out = dst + (first + clip) * plane * 3LL;
    const float m[3] = {m0, m1, m2}, s[3] = {s0, s1, s2};
    for (int g = blockIdx.x * blockDim.x + threadIdx.x; g < groups; g += gridDim.x * blockDim.x) {
        const unsigned int w[3] = {in[3 * g], in[3 * g + 1], in[3 * g + 2]};
        float v[12];  // pixel k's channel c at 3 * k + c, as in memory
#pragma unroll
        for (int j = 0; j < 12; ++j) {
            v[j] = ((float)((w[j / 4] >> (8 * (j % 4))) & 0xffu) - m[j % 3]) * s[j % 3];
        }
        if (planar) {
#pragma unroll
            for (int c = 0; c < 3; ++c) {
                store4(out + (long long)c * plane + 4LL * g, v[c], v[3 + c], v[6 + c], v[9 + c]);
            }
        } else {
            Out* o = out + 12LL * g;
            store4(o, v[0], v[1], v[2], v[3]);
            store4(o + 4, v[4], v[5], v[6], v[7]);
            store4(o + 8, v[8], v[9], v[10], v[11]);
        }
    }
}

extern "C" __global__ void handover4_float16(const unsigned int* __restrict__ src,
                                             unsigned short* __restrict__ dst, int plane,
                                             int first, float m0, float m1, float m2, float s0,
                                             float s1, float s2, int planar) {
    handover4<unsigned short>(src, dst, plane, first, m0, m1, m2, s0, s1, s2, planar);
}

extern "C" __global__ void handover4_float32(const unsigned int* __restrict__ src,
                                             float* __restrict__ dst, int plane, int first,
                                             float m0, float m1, float m2, float s0, float s1,
                                             float s2, int planar) {
    handover4<float>(src, dst, plane, first, m0, m1, m2, s0, s1, s2, planar);
}

// ---- crop + resize + flip + normalise in one pass (LoaderConfig.gpu_resize "kernel") ---------
// NVDEC's frames arrive whole, (T, H, W, 3) uint8 per clip, and each clip's output pixel
// (t, y, x) is sampled from its plan's crop window: bilinear, pixel centres, the source position
// clamped to the frame, as DALI's fn.resize with roi_start/roi_end and linear interpolation
// without antialiasing does in its two separable passes; the result is rounded to the nearest
// integer (DALI's second pass writes uint8) and then normalised as above. Against DALI's uint8
// clips: equal but for a value in ~500 rounded the other way (a tie, or float order), never by
// more than 1 (tests/test_handover.py; bench/gpu_check.py --only resize on real footage). A flip
// is a negative step (the window's x ends swapped, loader.augment.flip_folded).

struct CropClip {            // 32 bytes, packed by loader/handover.py (_CropClip)
    unsigned long long src;  // the clip's first byte: T frames of h x w x 3
    int h, w;
    float y0, x0;            // the window's start (x: its right end for a flip)
    float sy, sx;            // source pixels per output pixel (sx < 0: flipped)
};

#define CROP_CLIPS 32  // clips a launch (loader/handover.py CROP_CLIPS)
// a block: CROP_X columns x CROP_ROWS rows of threads (loader/handover.py CROP_BLOCK)

struct CropClips {
    CropClip c[CROP_CLIPS];
};

// Block (CROP_X, CROP_ROWS): a thread per output column (x, strided where size > CROP_X), a
// row of threads per output row; each thread works its column's sampling out once and then
// walks rows (t, y) in a grid stride, so per pixel it only interpolates. Grid: x over the
// clip's T * size rows, y = the launch's clip.
template <typename Out, Out (*convert)(float)>
__device__ __forceinline__ void crop_resize(const CropClips& clips, Out* __restrict__ dst,
                                            int frames, int size, int first, float m0, float m1,
                                            float m2, float s0, float s1, float s2, int planar) {
    const CropClip c = clips.c[blockIdx.y];
    const unsigned char* __restrict__ src = reinterpret_cast<const unsigned char*>(c.src);
    const int plane = frames * size * size, rows = frames * size;
    Out* out = dst + (first + (long long)blockIdx.y) * plane * 3LL;
    const long long step = planar ? plane : 1;
    const float m[3] = {m0, m1, m2}, s[3] = {s0, s1, s2};
    for (int ox = threadIdx.x; ox < size; ox += blockDim.x) {
        const float fx = c.x0 + (ox + 0.5f) * c.sx - 0.5f;
        const float ix = floorf(fx), wx = fx - ix;
        const int xa = 3 * min(max((int)ix, 0), c.w - 1);
        const int xb = 3 * min(max((int)ix + 1, 0), c.w - 1);
        for (int row = blockIdx.x * blockDim.y + threadIdx.y; row < rows;
             row += gridDim.x * blockDim.y) {
            const int t = row / size, oy = row - t * size;
            const float fy = c.y0 + (oy + 0.5f) * c.sy - 0.5f;
            const float iy = floorf(fy), wy = fy - iy;
            const int ya = min(max((int)iy, 0), c.h - 1), yb = min(max((int)iy + 1, 0), c.h - 1);
            const unsigned char* f = src + (long long)t * c.h * c.w * 3;
            const unsigned char* ra = f + (long long)ya * c.w * 3;
            const unsigned char* rb = f + (long long)yb * c.w * 3;
            const long long p = (long long)row * size + ox;
            Out* o = planar ? out + p : out + 3LL * p;
#pragma unroll
            for (int ch = 0; ch < 3; ++ch) {
                const float top = ra[xa + ch] + wx * (float)(ra[xb + ch] - ra[xa + ch]);
                const float bot = rb[xa + ch] + wx * (float)(rb[xb + ch] - rb[xa + ch]);
                const float v = rintf(top + wy * (bot - top));
                o[ch * step] = convert((v - m[ch]) * s[ch]);
            }
        }
    }
}

extern "C" __global__ void crop_resize_float16(const CropClips clips, unsigned short* dst,
                                               int frames, int size, int first, float m0,
                                               float m1, float m2, float s0, float s1, float s2,
                                               int planar) {
    crop_resize<unsigned short, to_f16>(clips, dst, frames, size, first, m0, m1, m2, s0, s1, s2,
                                        planar);
}

extern "C" __global__ void crop_resize_float32(const CropClips clips, float* dst, int frames,
                                               int size, int first, float m0, float m1, float m2,
                                               float s0, float s1, float s2, int planar) {
    crop_resize<float, to_f32>(clips, dst, frames, size, first, m0, m1, m2, s0, s1, s2, planar);
}
