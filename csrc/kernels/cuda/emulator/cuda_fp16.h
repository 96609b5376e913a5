// Stands in for the CUDA toolkit's <cuda_fp16.h> when kernels/cuda runs on the host emulator (tests only).
#pragma once
#include "emulator.h"
