// The device code of kernels/cuda/errors.cu compiled for the host emulator (emulator.h; tests only).
#include "kernels/cuda/errors.cu"
