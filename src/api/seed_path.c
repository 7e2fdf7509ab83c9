/* seed_path.c - reading the seed API's path parameters. */
#include "api/seed_path.h"

#include <string.h>

int seed_path_upload_id(const char *param, char id[CU_UUID_LEN + 1], cu_error *err)
{
    if (!param || strlen(param) != CU_UUID_LEN || !util_is_uuid(param))
        return cu_fail(err, CU_ENOTFOUND, "Upload not found");
    for (int i = 0; i <= CU_UUID_LEN; i++)
        id[i] = (char)(param[i] >= 'A' && param[i] <= 'F' ? param[i] - 'A' + 'a' : param[i]);
    return 0;
}

int seed_path_part_number(const char *text, int64_t *out, cu_error *err)
{
    if (util_parse_i64(text, out) != 0 || text[0] == '+' || text[0] == '-' || strlen(text) > 9) {
        cu_fail(err, CU_EINVAL, "Part number must be a whole number, got \"%s\"", text);
        if (err)
            util_utf8_scrub(err->msg);
        return CU_EINVAL;
    }
    return 0;
}
