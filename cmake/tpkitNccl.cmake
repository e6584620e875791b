# Defines tpkit::nccl_library, an imported target for the NCCL library beside the CUDA toolkit
# (CUDAToolkit must be found first), when NCCL is there. Used by tpkit's own build and by its
# package config, so that tpkit::nccl finds NCCL the same way in both.
if(NOT TARGET tpkit::nccl_library AND CUDAToolkit_FOUND)
  find_library(TPKIT_NCCL_LIBRARY nccl HINTS ${CUDAToolkit_LIBRARY_DIR})
  find_path(TPKIT_NCCL_INCLUDE_DIR nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS})
  if(TPKIT_NCCL_LIBRARY AND TPKIT_NCCL_INCLUDE_DIR)
    add_library(tpkit::nccl_library UNKNOWN IMPORTED GLOBAL)
    set_target_properties(tpkit::nccl_library PROPERTIES IMPORTED_LOCATION ${TPKIT_NCCL_LIBRARY}
                          INTERFACE_INCLUDE_DIRECTORIES ${TPKIT_NCCL_INCLUDE_DIR})
  endif()
endif()
