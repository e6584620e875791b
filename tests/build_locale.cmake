# Builds the de_DE.UTF-8 locale into OUT_DIR with localedef, for test_locale (which skips when the
# locale cannot be set). Never fails itself: without the locale sources there is nothing to build.
# Usage: cmake -DLOCALEDEF=... -DOUT_DIR=... -P build_locale.cmake
file(MAKE_DIRECTORY ${OUT_DIR})
execute_process(COMMAND ${LOCALEDEF} -i de_DE -f UTF-8 ${OUT_DIR}/de_DE.UTF-8 RESULT_VARIABLE rc
                OUTPUT_VARIABLE out ERROR_VARIABLE err)
message(STATUS "localedef de_DE.UTF-8: exit ${rc} ${err}")
