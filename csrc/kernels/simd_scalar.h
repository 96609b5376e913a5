// Width-1 SIMD policy over R (float, or double for float64 inputs): the portable path, and the
// tail of every vector loop. Included inside an ISA namespace (see kd_loss_impl.h), so each
// ISA's TU owns its copy.
// Coefficients (constant term first) of the vector policies' exp_nonpos: minimax fits of e^r for
// |r| <= ln2/2 by relative error (Lawson's iteration), made for this project. Degree 6: 3e-9 with
// the decimal coefficients, 2e-8 once rounded to float (the linear one rounds to 1), both under
// half a float ulp. Degree 4, for 16-bit inputs: 2.9e-6.
constexpr float kExpPoly6[7] = {1.0f, 1.0f, 4.9999991802e-01f, 1.6666407647e-01f, 4.1668217027e-02f,
                                8.3757444749e-03f, 1.3840252675e-03f};
constexpr float kExpPoly4[5] = {9.9999920248e-01f, 9.9996043878e-01f, 5.0004355040e-01f, 1.6794978136e-01f,
                                4.1478398295e-02f};
// exp()'s degree-7 Taylor polynomial (truncation error below 6e-9 relative).
constexpr float kExpTaylor7[8] = {1.0f,         1.0f,          0.5f,           1.0f / 6.0f,
                                  1.0f / 24.0f, 1.0f / 120.0f, 1.0f / 720.0f, 1.0f / 5040.0f};

template <typename Real>
struct ScalarOf {
  using R = Real;
  using F = Real;
  static constexpr int W = 1;
  static F set1(R v) { return v; }
  static F zero() { return R(0); }
  template <typename T> static F load(const T* p) { return R(to_float(*p)); }
  template <typename T> static void store(T* p, F v) { store_float(p, v); }
  static F add(F a, F b) { return a + b; }
  static F sub(F a, F b) { return a - b; }
  static F mul(F a, F b) { return a * b; }
  static F fmadd(F a, F b, F c) { return a * b + c; }
  static F fnmadd(F a, F b, F c) { return c - a * b; }
  static F fmsub(F a, F b, F c) { return a * b - c; }
  static F max(F a, F b) { return b > a ? b : a; }
  static F exp(F x) { return std::exp(x); }
  static F exp_nonpos(F x) { return std::exp(x); }
  static F exp_nonpos_coarse(F x) { return std::exp(x); }
  static F log(F x) { return std::log(x); }
  // acc + e v where e > 0, else acc: drops 0 * (-inf) terms of entries with no probability mass.
  static F fmadd_where_positive(F e, F v, F acc) { return e > R(0) ? acc + e * v : acc; }
  // 1 in the lane holding index `hot` of the W lanes starting at `base`, else 0.
  static F onehot(int64_t base, int64_t hot) { return base == hot ? R(1) : R(0); }
  static R hsum(F v) { return v; }
  static R hmax(F v) { return v; }
};
using Scalar = ScalarOf<float>;
