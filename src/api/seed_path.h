/* seed_path.h - the seed API's path parameters: the upload id and the part number.
 *
 * Pure functions of the client's text, so that the handlers (seed.c) and the fuzzer
 * (tests/fuzz/fuzz_router.c, on what the router extracts) run the same code. */
#ifndef CU_API_SEED_PATH_H
#define CU_API_SEED_PATH_H

#include "base/error.h"
#include "base/util.h"

#include <stdint.h>

/* The upload id of a path (param may be NULL), lowercased into id (ids are issued in
 * lowercase). Returns 0, or CU_ENOTFOUND ("Upload not found") when it is not a UUID. */
int seed_path_upload_id(const char *param, char id[CU_UUID_LEN + 1], cu_error *err);

/* A part number: 1 to 9 decimal digits, no sign. Returns 0 with the value in *out, or
 * CU_EINVAL quoting the text (made UTF-8, as messages go into JSON replies). */
int seed_path_part_number(const char *text, int64_t *out, cu_error *err);

#endif
