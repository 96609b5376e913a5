// The device code of kernels/cuda/kd_loss.cu compiled for the host emulator (emulator.h; tests only).
#include "kernels/cuda/kd_loss.cu"
