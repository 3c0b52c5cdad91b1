# Helpers that keep each CMakeLists.txt a plain list of what it builds.

# certfleet_add_plugin(STAGE dns NAME rfc2136 SOURCES a.cpp LIBRARIES PkgConfig::LDNS
#                      [OUTPUT_DIRECTORY dir] [NO_INSTALL])
# Builds a loadable plugin named <stage>-<name>.so that links the SDK and nothing of the core.
function(certfleet_add_plugin)
  cmake_parse_arguments(ARG "NO_INSTALL" "STAGE;NAME;OUTPUT_DIRECTORY;TARGET" "SOURCES;LIBRARIES"
                        ${ARGN})
  if(NOT ARG_TARGET)
    set(ARG_TARGET plugin-${ARG_STAGE}-${ARG_NAME})
  endif()
  if(NOT ARG_OUTPUT_DIRECTORY)
    set(ARG_OUTPUT_DIRECTORY ${CERTFLEET_PLUGIN_BUILD_DIR})
  endif()
  add_library(${ARG_TARGET} MODULE ${ARG_SOURCES})
  target_link_libraries(${ARG_TARGET} PRIVATE certfleet::sdk ${ARG_LIBRARIES})
  set_target_properties(${ARG_TARGET} PROPERTIES
    PREFIX ""
    OUTPUT_NAME "${ARG_STAGE}-${ARG_NAME}"
    LIBRARY_OUTPUT_DIRECTORY ${ARG_OUTPUT_DIRECTORY}
    CXX_VISIBILITY_PRESET hidden
    VISIBILITY_INLINES_HIDDEN ON)
  if(NOT ARG_NO_INSTALL)
    install(TARGETS ${ARG_TARGET} LIBRARY DESTINATION ${CERTFLEET_PLUGIN_INSTALL_DIR})
  endif()
endfunction()

# certfleet_add_gtest(NAME unit_pipeline SOURCES a.cpp LIBRARIES certfleet_core [LABELS unit])
function(certfleet_add_gtest)
  cmake_parse_arguments(ARG "" "NAME" "SOURCES;LIBRARIES;LABELS;PROPERTIES" ${ARGN})
  add_executable(${ARG_NAME} ${ARG_SOURCES})
  target_link_libraries(${ARG_NAME} PRIVATE GTest::gtest_main ${ARG_LIBRARIES})
  add_test(NAME ${ARG_NAME} COMMAND ${ARG_NAME})
  if(ARG_LABELS)
    set_tests_properties(${ARG_NAME} PROPERTIES LABELS "${ARG_LABELS}")
  endif()
  if(ARG_PROPERTIES)
    set_tests_properties(${ARG_NAME} PROPERTIES ${ARG_PROPERTIES})
  endif()
endfunction()
