// The device code of kernels/cuda/attention.cu compiled for the host emulator (emulator.h; tests only).
#include "kernels/cuda/attention.cu"
