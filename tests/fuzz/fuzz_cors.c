/* fuzz_cors.c - CORS_ALLOWED_ORIGINS and the Origin header (src/http/cors.c).
 *
 * The input is the configuration text, a NUL, then an Origin value.
 * Invariants: a parse error is CU_EINVAL (or CU_ENOMEM) with a message and no list; an
 * allowed origin (which the filter echoes in a reply header) holds no byte outside
 * [A-Za-z0-9:/.[\]-] and starts with http:// or https://; a configured list allows exactly
 * its entries, without case; an origin that `*` allows is allowed by a list of itself. */
#include "fuzz_common.h"

#include "http/cors.h"

#include <ctype.h>
#include <strings.h>

static bool echo_safe(const char *origin)
{
    if (strncasecmp(origin, "http://", 7) != 0 && strncasecmp(origin, "https://", 8) != 0)
        return false;
    for (const char *p = origin; *p; p++)
        if (!isalnum((unsigned char)*p) && !strchr(":/.[]-", *p))
            return false;
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *config = fuzz_take_until(&data, &size, 0);
    char *origin = fuzz_strndup(data, size);
    http_cors *c = NULL, *any = NULL, *self = NULL;
    cu_error err = {0};
    int rc = http_cors_parse(config, &c, &err);
    if (rc != 0)
        FUZZ_CHECK((rc == CU_EINVAL || rc == CU_ENOMEM) && err.code == rc && err.msg[0] && !c);
    if (http_cors_allows(c, origin)) {
        FUZZ_CHECK(echo_safe(origin));
        /* Allowed by a list: the list names it (the config text holds it, in some case). */
        bool star = false;
        for (const char *p = config; *p; p++)
            star |= *p == '*';
        if (!star) {
            char *lower_config = strdup(config), *lower_origin = strdup(origin);
            FUZZ_CHECK(lower_config && lower_origin);
            for (char *p = lower_config; *p; p++)
                *p = (char)tolower((unsigned char)*p);
            for (char *p = lower_origin; *p; p++)
                *p = (char)tolower((unsigned char)*p);
            FUZZ_CHECK(strstr(lower_config, lower_origin) != NULL);
            free(lower_config);
            free(lower_origin);
        }
    }
    FUZZ_CHECK(http_cors_parse("*", &any, &err) == 0 && any);
    if (http_cors_allows(any, origin) && !strchr(origin, ',')) {
        FUZZ_CHECK(http_cors_parse(origin, &self, &err) == 0 && self);
        FUZZ_CHECK(http_cors_allows(self, origin));
    }
    http_cors_free(self);
    http_cors_free(any);
    http_cors_free(c);
    free(origin);
    free(config);
    return 0;
}
