# Runs a command and checks its exit status and what it printed (stdout and stderr together):
# fails unless the status is EXPECT_EXIT, the output matches EXPECT, and (when given) it does
# not match REJECT.
# Usage: cmake "-DCOMMAND=prog|arg|arg" -DEXPECT_EXIT=2 "-DEXPECT=regex" "-DREJECT=regex" -P expect_exit.cmake
string(REPLACE "|" ";" command "${COMMAND}")
execute_process(COMMAND ${command} OUTPUT_VARIABLE out ERROR_VARIABLE err RESULT_VARIABLE rc)
set(all "${out}${err}")
message(NOTICE "${all}")
if(NOT rc EQUAL "${EXPECT_EXIT}")
  message(FATAL_ERROR "exit status ${rc}, expected ${EXPECT_EXIT}")
endif()
if(NOT all MATCHES "${EXPECT}")
  message(FATAL_ERROR "the output does not match \"${EXPECT}\"")
endif()
if(DEFINED REJECT AND NOT REJECT STREQUAL "" AND all MATCHES "${REJECT}")
  message(FATAL_ERROR "the output matches \"${REJECT}\", which it must not")
endif()
