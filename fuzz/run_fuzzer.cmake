# Runs a libFuzzer target for CTest and prints a summary instead of its status line per new input:
#
#   cmake -DFUZZER=<exe> -DLOG=<file> "-DARGS=<arg;arg;...>" -P run_fuzzer.cmake
#
# The full output goes to LOG. On success this prints the seed, the final "DONE" status line (the
# number of executions, cov: and ft:) and libFuzzer's final stats; on failure (a crash, a
# sanitizer report or a failed check) the end of the output, which holds the report, the graph and
# the path of the saved input, and then fails.
#
# The output is searched with regexes rather than split into a CMake list: libFuzzer's lines hold
# unbalanced brackets, which CMake's list splitting does not survive.
foreach(var IN ITEMS FUZZER LOG)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "run_fuzzer.cmake: -D${var}=... is required")
  endif()
endforeach()

execute_process(COMMAND "${FUZZER}" ${ARGS}
  RESULT_VARIABLE result
  OUTPUT_VARIABLE output
  ERROR_VARIABLE output)
file(WRITE "${LOG}" "${output}")

if(NOT result EQUAL 0)
  string(LENGTH "${output}" length)
  set(keep 16000)
  if(length GREATER keep)
    math(EXPR begin "${length} - ${keep}")
    string(SUBSTRING "${output}" ${begin} -1 output)
    set(output "[... the beginning is in ${LOG}]\n${output}")
  endif()
  message("${output}")
  message(FATAL_ERROR "${FUZZER} failed (exit code ${result}); full output in ${LOG}")
endif()

string(REGEX MATCH "INFO: Seed: [0-9]+" seed "${output}")
string(REGEX MATCH "#[0-9]+[ \t]+DONE[^\n]*" done "${output}")
string(REGEX MATCHALL "stat::[a-z_]+:[ \t]*[0-9]+" stats "${output}")
list(JOIN stats "\n" stats)
message("${seed}\n${done}\n${stats}\n(full output in ${LOG})")
