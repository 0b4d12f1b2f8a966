# Included by the message packages in tools/ after their find_package() calls (see
# scripts/build_msgs.sh): the ROS 2 PyPI wheels' exported targets carry the include dirs of the
# box they were built on (/opt/python/cp3XX-cp3XX/...). Point them at this interpreter's Python
# and NumPy headers.
find_package(Python3 REQUIRED COMPONENTS Interpreter Development.Module NumPy)

get_property(_imported_targets DIRECTORY PROPERTY IMPORTED_TARGETS)
foreach(_target IN LISTS _imported_targets)
  get_target_property(_dirs ${_target} INTERFACE_INCLUDE_DIRECTORIES)
  if(NOT _dirs)
    continue()
  endif()
  set(_kept ${_dirs})
  list(FILTER _kept EXCLUDE REGEX "^/opt/python/")
  if(NOT _kept STREQUAL _dirs)
    list(APPEND _kept ${Python3_INCLUDE_DIRS} ${Python3_NumPy_INCLUDE_DIRS})
    set_target_properties(${_target} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${_kept}")
  endif()
endforeach()
