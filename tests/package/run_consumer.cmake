# Configures, builds and runs tests/package/consumer against unitscale; fails on any error.
# Run by CTest (see CMakeLists.txt beside this file) as
#   cmake -DMODE=add_subdirectory|find_package -D... -P run_consumer.cmake
cmake_minimum_required(VERSION 3.25)

foreach(var MODE CONSUMER_SOURCE_DIR WORK_DIR UNITSCALE_SOURCE_DIR UNITSCALE_BINARY_DIR
            GENERATOR CXX_COMPILER EXPECTED)
  if(NOT DEFINED ${var} OR "${${var}}" STREQUAL "")
    message(FATAL_ERROR "run_consumer.cmake: -D${var}=... is required")
  endif()
endforeach()

# Runs a command with its output streaming to the test log; stops the test if it fails.
function(run step)
  message(STATUS "[package ${MODE}] ${step}")
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    list(JOIN ARGN " " cmd)
    message(FATAL_ERROR "[package ${MODE}] ${step} FAILED (${rc}):\n  ${cmd}")
  endif()
endfunction()

# Start from scratch so a stale cache or an old install cannot make the test pass.
file(REMOVE_RECURSE "${WORK_DIR}")
set(build_dir "${WORK_DIR}/build")

set(configure_args
  -S "${CONSUMER_SOURCE_DIR}" -B "${build_dir}"
  -G "${GENERATOR}"
  "-DCMAKE_CXX_COMPILER=${CXX_COMPILER}"
  "-DCMAKE_BUILD_TYPE=${BUILD_TYPE}"
  "-DCMAKE_CXX_FLAGS=${CXX_FLAGS}"
  "-DCMAKE_EXE_LINKER_FLAGS=${EXE_LINKER_FLAGS}")
if(MAKE_PROGRAM)
  list(APPEND configure_args "-DCMAKE_MAKE_PROGRAM=${MAKE_PROGRAM}")
endif()

if(MODE STREQUAL "add_subdirectory")
  # This mode proves the CMake integration: the project configures as a subproject, and the
  # consumer compiles against unitscale::unitscale's usage requirements (headers, C++20). Linking
  # would compile the whole library again (4 minutes on 2 cores) to prove what the find_package
  # mode proves already, so with Ninja only the consumer's object file is built.
  list(APPEND configure_args
    "-DUNITSCALE_SOURCE_DIR=${UNITSCALE_SOURCE_DIR}"
    "-DUNITSCALE_NATIVE=${UNITSCALE_NATIVE}"
    -DCMAKE_BUILD_TYPE=None)
elseif(MODE STREQUAL "find_package")
  set(prefix "${WORK_DIR}/prefix")
  set(install_args --install "${UNITSCALE_BINARY_DIR}" --prefix "${prefix}")
  if(BUILD_TYPE)
    list(APPEND install_args --config "${BUILD_TYPE}")
  endif()
  run("install unitscale into ${prefix}" "${CMAKE_COMMAND}" ${install_args})
  # Only the fresh prefix may satisfy find_package(unitscale): no user package registry.
  list(APPEND configure_args
    "-DCMAKE_PREFIX_PATH=${prefix}"
    -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF)
else()
  message(FATAL_ERROR "run_consumer.cmake: unknown MODE '${MODE}'")
endif()

run("configure consumer" "${CMAKE_COMMAND}" ${configure_args})

if(MODE STREQUAL "find_package")
  file(STRINGS "${build_dir}/CMakeCache.txt" found_dir REGEX "^unitscale_DIR:")
  string(REGEX REPLACE "^[^=]*=" "" found_dir "${found_dir}")
  cmake_path(IS_PREFIX prefix "${found_dir}" NORMALIZE found_in_prefix)
  if(NOT found_in_prefix)
    message(FATAL_ERROR "[package ${MODE}] unitscale was found in '${found_dir}', not in ${prefix}")
  endif()
endif()

if(MODE STREQUAL "add_subdirectory" AND GENERATOR STREQUAL "Ninja")
  run("compile consumer" "${CMAKE_COMMAND}" --build "${build_dir}"
      --target CMakeFiles/consumer.dir/main.cpp.o)
  if(NOT EXISTS "${build_dir}/CMakeFiles/consumer.dir/main.cpp.o")
    message(FATAL_ERROR "[package ${MODE}] the consumer's object file was not built")
  endif()
  message(STATUS "[package ${MODE}] consumer compiled against unitscale::unitscale")
  return()
endif()
run("build consumer" "${CMAKE_COMMAND}" --build "${build_dir}")

message(STATUS "[package ${MODE}] run consumer")
execute_process(COMMAND "${build_dir}/consumer"
  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
string(STRIP "${out}" out)
if(NOT rc EQUAL 0 OR NOT out STREQUAL EXPECTED)
  message(FATAL_ERROR "[package ${MODE}] consumer exited with ${rc} and printed '${out}' "
                      "(expected '${EXPECTED}')\n${err}")
endif()
message(STATUS "[package ${MODE}] consumer printed '${out}' as expected")
