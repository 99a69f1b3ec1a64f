// Eigen's GEMM compiled with -march=native, for the gemm/eigen_native rows of bench_gemm.
// benchmarks/CMakeLists.txt adds this file to bench_gemm only and sets the flag on it alone; it is
// kept out of benchmarks/ itself so that the bench_*.cpp glob does not make it a program.
//
// Eigen is header-only, so this file and bench_gemm.cpp (compiled without -march flags) would
// instantiate the same templates (general_matrix_matrix_product, gebp_kernel, ...) under the same
// mangled names, and the linker keeps one copy of each: the eigen_default and eigen_native rows
// would then silently run the same code. Renaming Eigen's namespace for this file (the macro
// below, defined before any Eigen header; `#include <Eigen/...>` header names are not
// macro-expanded) gives its instantiations names of their own. The standard-library inline
// functions used here are still merged with the other files' copies, so the program as a whole is
// only meant to run on the machine that built it, which -march=native implies anyway.
#define Eigen UnitscaleEigenNative
#include <Eigen/Core>

// C[m, n] = A[m, k] · B[k, n], all row-major and packed.
void eigen_native_gemm(const float* a, const float* b, float* c, long m, long n, long k) {
  using Matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const Eigen::Map<const Matrix> lhs(a, m, k), rhs(b, k, n);
  Eigen::Map<Matrix> out(c, m, n);
  out.noalias() = lhs * rhs;
}

// The SIMD instruction sets Eigen uses in this file ("AVX512, FMA, AVX2, ...").
const char* eigen_native_simd() { return Eigen::SimdInstructionSetsInUse(); }
