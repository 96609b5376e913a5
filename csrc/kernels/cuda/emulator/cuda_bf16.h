// Stands in for the CUDA toolkit's <cuda_bf16.h> when kernels/cuda runs on the host emulator (tests only).
#pragma once
#include "emulator.h"
