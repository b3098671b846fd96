/* A reader of our own on NVDEC, the least GPU work a clip can cost: decode a clip's packets,
 * map only the window's frames (the driver's one kernel each), hold them mapped, unmap them.
 * With a conversion (own_reader_convert.cu), one kernel a clip then reads the mapped frames, as
 * a reader for training would. bench/own_reader.py builds it (cc, NVDEC's headers from the DALI
 * package), drives it from Python threads through ctypes (which lets go of Python's lock for the
 * length of each call) and measures it beside the training step. Not part of the loader: a probe
 * of what a reader of our own would cost (docs/BENCHMARKS.md, "Nineteenth round").
 *
 * The driver's libraries are opened at run time (dlopen), so building needs no CUDA toolkit; the
 * few CUDA types NVDEC's headers use come from own_reader_inc/cuda.h. One `nvr` per thread: its own
 * parser (made per clip), decoder (kept while the coded size holds), stream and context lock,
 * all on the device's primary context.
 */
#include <dlfcn.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nvcuvid.h"

#define NVR_MAX_OUT 32 /* frames held mapped at once: the decoder's output surfaces */
#define NVR_SURFACES 32 /* decode surfaces: a clip (7 frames before its window at GOP 8, and 16)
                         * never has the parser reuse one while a frame of it is still mapped */

typedef int CUdevice;
typedef CUresult (*f_cuInit)(unsigned int);
typedef CUresult (*f_cuDeviceGet)(CUdevice *, int);
typedef CUresult (*f_cuDevicePrimaryCtxRetain)(CUcontext *, CUdevice);
typedef CUresult (*f_cuDevicePrimaryCtxRelease)(CUdevice);
typedef CUresult (*f_cuCtxPushCurrent)(CUcontext);
typedef CUresult (*f_cuCtxPopCurrent)(CUcontext *);
typedef CUresult (*f_cuStreamCreateWithPriority)(CUstream *, unsigned int, int);
typedef CUresult (*f_cuStreamDestroy)(CUstream);
typedef CUresult (*f_cuStreamSynchronize)(CUstream);
typedef CUresult (*f_cuGetErrorString)(CUresult, const char **);
typedef struct CUmod_st *CUmodule;
typedef struct CUfunc_st *CUfunction;
typedef CUresult (*f_cuModuleLoadData)(CUmodule *, const void *);
typedef CUresult (*f_cuModuleGetFunction)(CUfunction *, CUmodule, const char *);
typedef CUresult (*f_cuModuleUnload)(CUmodule);
typedef CUresult (*f_cuLaunchKernel)(CUfunction, unsigned int, unsigned int, unsigned int,
                                     unsigned int, unsigned int, unsigned int, unsigned int,
                                     CUstream, void **, void **);
typedef CUresult (*f_cuMemAlloc)(CUdeviceptr *, size_t);
typedef CUresult (*f_cuMemFree)(CUdeviceptr);

/* own_reader_convert.cu's argument: the clip's mapped frames */
typedef struct {
  unsigned long long y[NVR_MAX_OUT];
  unsigned int pitch[NVR_MAX_OUT];
} Frames;
#define CONVERT_THREADS 256

static struct {
  int loaded;
  char error[256];
  f_cuInit cuInit;
  f_cuDeviceGet cuDeviceGet;
  f_cuDevicePrimaryCtxRetain cuDevicePrimaryCtxRetain;
  f_cuDevicePrimaryCtxRelease cuDevicePrimaryCtxRelease;
  f_cuCtxPushCurrent cuCtxPushCurrent;
  f_cuCtxPopCurrent cuCtxPopCurrent;
  f_cuStreamCreateWithPriority cuStreamCreateWithPriority;
  f_cuStreamDestroy cuStreamDestroy;
  f_cuStreamSynchronize cuStreamSynchronize;
  f_cuGetErrorString cuGetErrorString;
  f_cuModuleLoadData cuModuleLoadData;
  f_cuModuleGetFunction cuModuleGetFunction;
  f_cuModuleUnload cuModuleUnload;
  f_cuLaunchKernel cuLaunchKernel;
  f_cuMemAlloc cuMemAlloc;
  f_cuMemFree cuMemFree;
  __typeof__(cuvidCreateVideoParser) *cuvidCreateVideoParser;
  __typeof__(cuvidParseVideoData) *cuvidParseVideoData;
  __typeof__(cuvidDestroyVideoParser) *cuvidDestroyVideoParser;
  __typeof__(cuvidCreateDecoder) *cuvidCreateDecoder;
  __typeof__(cuvidDestroyDecoder) *cuvidDestroyDecoder;
  __typeof__(cuvidDecodePicture) *cuvidDecodePicture;
  __typeof__(cuvidMapVideoFrame64) *cuvidMapVideoFrame64;
  __typeof__(cuvidUnmapVideoFrame64) *cuvidUnmapVideoFrame64;
  __typeof__(cuvidCtxLockCreate) *cuvidCtxLockCreate;
  __typeof__(cuvidCtxLockDestroy) *cuvidCtxLockDestroy;
} api;

typedef struct nvr {
  CUdevice device;
  CUcontext ctx;
  CUvideoctxlock lock;
  CUstream stream;
  CUvideodecoder decoder;
  CUVIDEOFORMAT format; /* the decoder's, to tell when it must be made again */
  int surfaces;         /* its decode surfaces */
  int height, width;    /* its output frames' */
  /* the conversion (nvr_open with PTX): one kernel a clip into `out` */
  CUmodule module;
  CUfunction convert;
  CUdeviceptr out;
  int out_h, out_w;
  /* the clip being decoded */
  int first_out, n_out, mapped, failed;
  unsigned long long ptr[NVR_MAX_OUT];
  unsigned int pitch[NVR_MAX_OUT];
  char error[512];
} nvr;

static int fail(nvr *r, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(r->error, sizeof r->error, fmt, ap);
  va_end(ap);
  r->failed = 1;
  return -1;
}

static const char *cu_name(CUresult e) {
  const char *s = NULL;
  if (api.cuGetErrorString) api.cuGetErrorString(e, &s);
  return s ? s : "unknown CUDA error";
}

#define CU(r, call)                                                                  \
  do {                                                                               \
    CUresult e_ = (call);                                                            \
    if (e_ != 0) return fail((r), "%s failed: %s (%d)", #call, cu_name(e_), (int)e_); \
  } while (0)

static void load_once(void);
static pthread_once_t loaded_once = PTHREAD_ONCE_INIT;

static int load(void) { /* every thread may open a reader at once: the driver is opened once */
  pthread_once(&loaded_once, load_once);
  return api.loaded > 0 ? 0 : -1;
}

static int load_symbols(void);

static void load_once(void) {
  api.loaded = load_symbols() == 0 ? 1 : -1;
}

static int load_symbols(void) {
  void *cuda = dlopen("libcuda.so.1", RTLD_NOW | RTLD_GLOBAL);
  if (!cuda) {
    snprintf(api.error, sizeof api.error, "no CUDA driver: %s", dlerror());
    return -1;
  }
  void *cuvid = dlopen("libnvcuvid.so.1", RTLD_NOW);
  if (!cuvid) {
    snprintf(api.error, sizeof api.error, "no NVDEC library: %s", dlerror());
    return -1;
  }
#define SYM(lib, name, sym)                                                          \
  do {                                                                               \
    *(void **)&api.name = dlsym((lib), (sym));                                        \
    if (!api.name) {                                                                 \
      snprintf(api.error, sizeof api.error, "the driver has no %s", (sym));          \
      return -1;                                                                     \
    }                                                                                \
  } while (0)
  SYM(cuda, cuInit, "cuInit");
  SYM(cuda, cuDeviceGet, "cuDeviceGet");
  SYM(cuda, cuDevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain");
  SYM(cuda, cuDevicePrimaryCtxRelease, "cuDevicePrimaryCtxRelease_v2");
  SYM(cuda, cuCtxPushCurrent, "cuCtxPushCurrent_v2");
  SYM(cuda, cuCtxPopCurrent, "cuCtxPopCurrent_v2");
  SYM(cuda, cuStreamCreateWithPriority, "cuStreamCreateWithPriority");
  SYM(cuda, cuStreamDestroy, "cuStreamDestroy_v2");
  SYM(cuda, cuStreamSynchronize, "cuStreamSynchronize");
  SYM(cuda, cuGetErrorString, "cuGetErrorString");
  SYM(cuda, cuModuleLoadData, "cuModuleLoadData");
  SYM(cuda, cuModuleGetFunction, "cuModuleGetFunction");
  SYM(cuda, cuModuleUnload, "cuModuleUnload");
  SYM(cuda, cuLaunchKernel, "cuLaunchKernel");
  SYM(cuda, cuMemAlloc, "cuMemAlloc_v2");
  SYM(cuda, cuMemFree, "cuMemFree_v2");
  SYM(cuvid, cuvidCreateVideoParser, "cuvidCreateVideoParser");
  SYM(cuvid, cuvidParseVideoData, "cuvidParseVideoData");
  SYM(cuvid, cuvidDestroyVideoParser, "cuvidDestroyVideoParser");
  SYM(cuvid, cuvidCreateDecoder, "cuvidCreateDecoder");
  SYM(cuvid, cuvidDestroyDecoder, "cuvidDestroyDecoder");
  SYM(cuvid, cuvidDecodePicture, "cuvidDecodePicture");
  SYM(cuvid, cuvidMapVideoFrame64, "cuvidMapVideoFrame64");
  SYM(cuvid, cuvidUnmapVideoFrame64, "cuvidUnmapVideoFrame64");
  SYM(cuvid, cuvidCtxLockCreate, "cuvidCtxLockCreate");
  SYM(cuvid, cuvidCtxLockDestroy, "cuvidCtxLockDestroy");
#undef SYM
  return 0;
}

/* Why the last nvr_open could not open a reader (the library or driver missing). */
const char *nvr_load_error(void) { return api.error; }

const char *nvr_error(nvr *r) { return r->error; }

/* Free whatever of a reader was made (its context retained last, released last). */
static void teardown(nvr *r) {
  if (r->ctx && api.cuCtxPushCurrent(r->ctx) == 0) {
    if (r->decoder) api.cuvidDestroyDecoder(r->decoder);
    if (r->out) api.cuMemFree(r->out);
    if (r->module) api.cuModuleUnload(r->module);
    if (r->lock) api.cuvidCtxLockDestroy(r->lock);
    if (r->stream) api.cuStreamDestroy(r->stream);
    CUcontext popped;
    api.cuCtxPopCurrent(&popped);
  }
  if (r->ctx) api.cuDevicePrimaryCtxRelease(r->device);
  free(r);
}

/* A reader on `device`; with `ptx` (own_reader_convert.cu's), each clip's mapped frames are also
 * converted into an out_h x out_w fp16 RGB clip by one kernel. Its stream (where the driver maps
 * the frames, and the conversion runs) has `priority` (CUDA's: lower is sooner, 0 the default;
 * the driver clamps it to the device's range). */
nvr *nvr_open(int device, const char *ptx, int out_h, int out_w, int priority) {
  if (load() != 0) return NULL;
  nvr *r = calloc(1, sizeof *r);
  if (!r) return NULL;
  CUresult e = api.cuInit(0);
  if (e == 0) e = api.cuDeviceGet(&r->device, device);
  if (e == 0) e = api.cuDevicePrimaryCtxRetain(&r->ctx, r->device);
  if (e == 0) e = api.cuCtxPushCurrent(r->ctx);
  if (e == 0) {
    e = api.cuStreamCreateWithPriority(&r->stream, 0x1 /* CU_STREAM_NON_BLOCKING */, priority);
    if (e == 0) e = api.cuvidCtxLockCreate(&r->lock, r->ctx);
    if (e == 0 && ptx) {
      r->out_h = out_h;
      r->out_w = out_w;
      e = api.cuModuleLoadData(&r->module, ptx);
      if (e == 0) e = api.cuModuleGetFunction(&r->convert, r->module, "nv12_clip");
      if (e == 0) e = api.cuMemAlloc(&r->out, (size_t)NVR_MAX_OUT * out_h * out_w * 3 * 2);
    }
    CUcontext popped;
    api.cuCtxPopCurrent(&popped);
  }
  if (e != 0) {
    snprintf(api.error, sizeof api.error, "could not open device %d: %s (%d)", device,
             cu_name(e), (int)e);
    teardown(r);
    return NULL;
  }
  return r;
}

static int CUDAAPI on_sequence(void *user, CUVIDEOFORMAT *f) {
  nvr *r = user;
  int surfaces = f->min_num_decode_surfaces + 4 > NVR_SURFACES ? f->min_num_decode_surfaces + 4
                                                                 : NVR_SURFACES;
  if (r->decoder && r->format.coded_width == f->coded_width &&
      r->format.coded_height == f->coded_height && r->format.codec == f->codec &&
      r->format.chroma_format == f->chroma_format && r->surfaces >= surfaces &&
      !memcmp(&r->format.display_area, &f->display_area, sizeof f->display_area))
    return r->surfaces; /* the same decoder serves the next video of the same size */
  if (f->chroma_format != cudaVideoChromaFormat_420 || f->bit_depth_luma_minus8 != 0) {
    fail(r, "only 8-bit 4:2:0 video is read (chroma format %d, %d bits)", (int)f->chroma_format,
         8 + f->bit_depth_luma_minus8);
    return 0;
  }
  if (r->decoder) {
    api.cuvidDestroyDecoder(r->decoder);
    r->decoder = NULL;
  }
  CUVIDDECODECREATEINFO ci;
  memset(&ci, 0, sizeof ci);
  ci.ulWidth = f->coded_width;
  ci.ulHeight = f->coded_height;
  ci.ulNumDecodeSurfaces = surfaces;
  ci.CodecType = f->codec;
  ci.ChromaFormat = f->chroma_format;
  ci.ulCreationFlags = cudaVideoCreate_PreferCUVID;
  ci.bitDepthMinus8 = 0;
  ci.ulMaxWidth = f->coded_width;
  ci.ulMaxHeight = f->coded_height;
  ci.display_area.left = (short)f->display_area.left;
  ci.display_area.top = (short)f->display_area.top;
  ci.display_area.right = (short)f->display_area.right;
  ci.display_area.bottom = (short)f->display_area.bottom;
  ci.OutputFormat = cudaVideoSurfaceFormat_NV12;
  ci.DeinterlaceMode = cudaVideoDeinterlaceMode_Weave;
  ci.ulTargetWidth = f->display_area.right - f->display_area.left;
  ci.ulTargetHeight = f->display_area.bottom - f->display_area.top;
  ci.ulNumOutputSurfaces = NVR_MAX_OUT;
  ci.vidLock = r->lock;
  CUresult e = api.cuvidCreateDecoder(&r->decoder, &ci);
  if (e != 0) { /* where the driver refuses that many: the SDK's usual decode surfaces, a clip's
                 * worth of output ones */
    surfaces = f->min_num_decode_surfaces + 4;
    ci.ulNumDecodeSurfaces = surfaces;
    ci.ulNumOutputSurfaces = 16;
    e = api.cuvidCreateDecoder(&r->decoder, &ci);
  }
  if (e != 0) {
    fail(r, "cuvidCreateDecoder (%ux%u) failed: %s (%d)", f->coded_width, f->coded_height,
         cu_name(e), (int)e);
    r->decoder = NULL;
    return 0;
  }
  r->format = *f;
  r->surfaces = surfaces;
  r->height = (int)ci.ulTargetHeight;
  r->width = (int)ci.ulTargetWidth;
  return surfaces;
}

static int CUDAAPI on_decode(void *user, CUVIDPICPARAMS *p) {
  nvr *r = user;
  CUresult e = api.cuvidDecodePicture(r->decoder, p);
  if (e != 0) {
    fail(r, "cuvidDecodePicture failed: %s (%d)", cu_name(e), (int)e);
    return 0;
  }
  return 1;
}

static int CUDAAPI on_display(void *user, CUVIDPARSERDISPINFO *d) {
  nvr *r = user;
  int frame = (int)d->timestamp; /* the packet's index in the video, as fed */
  int slot = frame - r->first_out;
  if (slot < 0 || slot >= r->n_out) return 1; /* decoded for the frames after it, not wanted */
  if (r->ptr[slot]) {
    fail(r, "frame %d shown twice", frame);
    return 0;
  }
  CUVIDPROCPARAMS pp;
  memset(&pp, 0, sizeof pp);
  pp.progressive_frame = d->progressive_frame;
  pp.top_field_first = d->top_field_first;
  pp.output_stream = r->stream;
  CUresult e = api.cuvidMapVideoFrame64(r->decoder, d->picture_index, &r->ptr[slot],
                                        &r->pitch[slot], &pp);
  if (e != 0) {
    fail(r, "cuvidMapVideoFrame64 (frame %d) failed: %s (%d)", frame, cu_name(e), (int)e);
    return 0;
  }
  r->mapped++;
  return 1;
}

/* Unmap whatever the last clip left mapped (its stream done first). */
int nvr_release(nvr *r) {
  if (!r->mapped) return 0;
  CU(r, api.cuCtxPushCurrent(r->ctx));
  CUresult e = api.cuStreamSynchronize(r->stream);
  for (int i = 0; i < r->n_out; i++)
    if (r->ptr[i]) {
      CUresult u = api.cuvidUnmapVideoFrame64(r->decoder, r->ptr[i]);
      if (e == 0) e = u;
      r->ptr[i] = 0;
    }
  r->mapped = 0;
  CUcontext popped;
  api.cuCtxPopCurrent(&popped);
  if (e != 0) return fail(r, "unmapping: %s (%d)", cu_name(e), (int)e);
  return 0;
}

/* Decode `n_packets` packets of one video (`data` + `offsets`/`sizes`, packet i being frame
 * `first_packet + i`, from a keyframe on) and map frames first_out .. first_out + n_out - 1:
 * their NV12 surfaces in `ptr`, their pitches in `pitch`, held until nvr_release (called here
 * first). Returns the frames mapped (n_out), or -1 with nvr_error saying why. */
int nvr_clip(nvr *r, const unsigned char *data, const long long *offsets, const int *sizes,
             int n_packets, int first_packet, int first_out, int n_out,
             unsigned long long *ptr, unsigned int *pitch) {
  r->failed = 0;
  r->error[0] = 0;
  if (nvr_release(r) != 0) return -1;
  if (n_out < 1 || n_out > NVR_MAX_OUT)
    return fail(r, "%d frames asked, 1 to %d can be held", n_out, NVR_MAX_OUT);
  r->first_out = first_out;
  r->n_out = n_out;
  memset(r->ptr, 0, sizeof r->ptr);
  CU(r, api.cuCtxPushCurrent(r->ctx));
  CUVIDPARSERPARAMS pp;
  memset(&pp, 0, sizeof pp);
  pp.CodecType = cudaVideoCodec_VP9;
  pp.ulMaxNumDecodeSurfaces = 1; /* the sequence callback says how many */
  pp.ulClockRate = 0; /* timestamps pass through: they are frame numbers here */
  pp.ulMaxDisplayDelay = 0;
  pp.pUserData = r;
  pp.pfnSequenceCallback = on_sequence;
  pp.pfnDecodePicture = on_decode;
  pp.pfnDisplayPicture = on_display;
  CUvideoparser parser = NULL;
  CUresult e = api.cuvidCreateVideoParser(&parser, &pp);
  for (int i = 0; e == 0 && !r->failed && i <= n_packets; i++) {
    CUVIDSOURCEDATAPACKET pk;
    memset(&pk, 0, sizeof pk);
    if (i < n_packets) {
      pk.flags = CUVID_PKT_TIMESTAMP;
      pk.payload = data + offsets[i];
      pk.payload_size = (unsigned long)sizes[i];
      pk.timestamp = first_packet + i;
    } else {
      pk.flags = CUVID_PKT_ENDOFSTREAM; /* the parser hands out what it still holds */
    }
    e = api.cuvidParseVideoData(parser, &pk);
  }
  if (parser) api.cuvidDestroyVideoParser(parser);
  if (e == 0 && !r->failed && r->mapped == n_out && r->convert) {
    Frames frames;
    memset(&frames, 0, sizeof frames);
    memcpy(frames.y, r->ptr, n_out * sizeof *r->ptr);
    memcpy(frames.pitch, r->pitch, n_out * sizeof *r->pitch);
    void *args[] = {&frames, &r->height, &r->width, &r->out_h, &r->out_w, &r->out};
    unsigned int pixels = (unsigned int)(r->out_h * r->out_w);
    e = api.cuLaunchKernel(r->convert, (pixels + CONVERT_THREADS - 1) / CONVERT_THREADS,
                           (unsigned int)n_out, 1, CONVERT_THREADS, 1, 1, 0, r->stream, args,
                           NULL);
    if (e != 0) fail(r, "the conversion kernel failed to launch: %s (%d)", cu_name(e), (int)e);
  }
  CUcontext popped;
  api.cuCtxPopCurrent(&popped);
  if (r->failed) return -1;
  if (e != 0) return fail(r, "cuvidParseVideoData failed: %s (%d)", cu_name(e), (int)e);
  if (r->mapped != n_out)
    return fail(r, "%d of the %d frames from %d were shown by the decoder", r->mapped, n_out,
                first_out);
  memcpy(ptr, r->ptr, n_out * sizeof *ptr);
  memcpy(pitch, r->pitch, n_out * sizeof *pitch);
  return n_out;
}

/* The coded size of the last video decoded. */
void nvr_size(nvr *r, int *width, int *height) {
  *width = (int)r->format.coded_width;
  *height = (int)r->format.coded_height;
}

void nvr_close(nvr *r) {
  if (!r) return;
  nvr_release(r);
  teardown(r);
}
