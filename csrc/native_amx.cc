// The "amx" build of the native recurrence (setup.py compiles native_recurrence.cc once per ISA, each through its
// own file like this one, so that builds running side by side write separate object files).
#include "native_recurrence.cc"
