# unitscale_warnings: an INTERFACE target that carries the project's warning flags.
#
# Our own targets (the library, tests, benchmarks, examples) link it PRIVATE, so the flags apply
# to our code only and never reach a consumer of unitscale::unitscale. The library links it
# through $<BUILD_INTERFACE:...> because a static library's private links still appear in its
# export set as $<LINK_ONLY:...>, and this target is deliberately not exported.
include_guard(GLOBAL)

add_library(unitscale_warnings INTERFACE)

set(_unitscale_gcc_warnings -Wall -Wextra -Wpedantic -Wconversion -Wshadow)
target_compile_options(unitscale_warnings INTERFACE
  "$<$<CXX_COMPILER_ID:GNU,Clang,AppleClang>:${_unitscale_gcc_warnings}>"
  "$<$<CXX_COMPILER_ID:MSVC>:/W4>")
unset(_unitscale_gcc_warnings)
# GCC 12 reports -Wrestrict inside libstdc++'s std::string at -O2/-O3 (GCC bug 105329), a false
# positive that would otherwise show in every release build.
if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_CXX_COMPILER_VERSION VERSION_LESS 13)
  target_compile_options(unitscale_warnings INTERFACE -Wno-restrict)
endif()
