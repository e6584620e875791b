# Runs a command, prints its stderr and then its stdout, each whole, and fails unless the command
# exits 0 and its stdout matches EXPECT.
#
# mpirun forwards the ranks' stdout and stderr separately, so a line of stderr can land in the
# middle of the generated text; a PASS_REGULAR_EXPRESSION on the merged output then fails at random
# (and it would ignore the exit status).
# Usage: cmake "-DCOMMAND=prog|arg|arg with spaces" "-DEXPECT=regex" -P stdout_after_stderr.cmake
string(REPLACE "|" ";" command "${COMMAND}")
execute_process(COMMAND ${command} OUTPUT_VARIABLE out ERROR_VARIABLE err RESULT_VARIABLE rc)
message(NOTICE "${err}")
message(NOTICE "stdout:\n${out}")
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "exit status ${rc}")
endif()
if(NOT out MATCHES "${EXPECT}")
  message(FATAL_ERROR "stdout does not match \"${EXPECT}\"")
endif()
