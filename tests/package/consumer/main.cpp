// Consumer used by the package tests: it must compile and link against unitscale::unitscale,
// whether unitscale was added with add_subdirectory or found with find_package.
#include <iostream>
#include <unitscale/unitscale.hpp>

int main() {
  unitscale::float8_e4m3fn x(1.5f);
  std::cout << static_cast<float>(x) << '\n';
  return 0;
}
