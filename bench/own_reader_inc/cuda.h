/* The few CUDA driver types NVDEC's headers (nvcuvid.h, cuviddec.h) name, for bench/own_reader.c,
 * which opens the driver at run time and so needs no CUDA toolkit to build. */
#ifndef UCF3D_OWN_READER_CUDA_H
#define UCF3D_OWN_READER_CUDA_H
#define CUDAAPI
typedef int CUresult;
typedef unsigned long long CUdeviceptr;
typedef struct CUctx_st *CUcontext;
typedef struct CUstream_st *CUstream;
#endif
