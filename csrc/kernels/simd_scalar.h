// Width-1 SIMD policy: the portable path, and the tail of every vector loop.
// Included inside an ISA namespace (see kd_loss_impl.h), so each ISA's TU owns its copy.
struct Scalar {
  using F = float;
  static constexpr int W = 1;
  static F set1(float v) { return v; }
  static F zero() { return 0.0f; }
  template <typename T> static F load(const T* p) { return to_float(*p); }
  template <typename T> static void store(T* p, F v) { store_float(p, v); }
  static F add(F a, F b) { return a + b; }
  static F sub(F a, F b) { return a - b; }
  static F mul(F a, F b) { return a * b; }
  static F fmadd(F a, F b, F c) { return a * b + c; }
  static F max(F a, F b) { return b > a ? b : a; }
  static F exp(F x) { return std::exp(x); }
  static F log(F x) { return std::log(x); }
  // v where e > 0, else 0: drops 0 * (-inf) terms of entries with no probability mass.
  static F where_positive(F e, F v) { return e > 0.0f ? v : 0.0f; }
  // 1.0 in the lane holding index `hot` of the W lanes starting at `base`, else 0.
  static F onehot(int64_t base, int64_t hot) { return base == hot ? 1.0f : 0.0f; }
  static float hsum(F v) { return v; }
  static float hmax(F v) { return v; }
};
