// A test parameterised by ISA level that runs a kernel family's own path at that level: skipped
// by name when this CPU lacks the level or when the family has no path of its own there (its
// dispatch falls back to a lower one), else run with the process-wide cap lowered to the level
// and restored after the test.
#pragma once

#include <gtest/gtest.h>

#include <string>

#include "kernels/cpu_features.h"

namespace edgegen::kernels::testing {

class IsaCappedTest : public ::testing::TestWithParam<Isa> {
 protected:
  // The level the family dispatches to under the current cap, and its name for the skip message.
  virtual Isa family_isa() const = 0;
  virtual const char* family_name() const = 0;

  void SetUp() override {
    if (!cpu_supports(GetParam())) GTEST_SKIP() << "this CPU lacks " << isa_name(GetParam());
    previous_ = max_isa();
    set_max_isa(GetParam());
    capped_ = true;
    if (family_isa() != GetParam())
      GTEST_SKIP() << "no " << family_name() << " path of its own at " << isa_name(GetParam());
  }
  void TearDown() override {
    if (capped_) set_max_isa(previous_);
  }

 private:
  Isa previous_ = Isa::Scalar;
  bool capped_ = false;
};

// The test-name suffix of an ISA parameter ("avx512_vnni").
inline std::string isa_param_name(const ::testing::TestParamInfo<Isa>& info) { return isa_name(info.param); }

}  // namespace edgegen::kernels::testing
