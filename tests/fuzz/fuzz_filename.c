/* fuzz_filename.c - the filename policy (src/core/filename.c) on arbitrary bytes.
 *
 * The input is the name, NULs included, with no terminator: filename_check must read only
 * the len bytes it is given (ASan sees past them). Every verdict is held to an independent
 * statement of the policy (filename_oracle.h), in both directions: an accepted name never
 * holds a NUL, a control character, a backslash, an empty, "." or ".." component, and a
 * refused one breaks a rule. */
#include "filename_oracle.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    oracle_check_filename((const char *)data, size);
    return 0;
}
