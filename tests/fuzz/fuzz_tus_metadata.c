/* fuzz_tus_metadata.c - tus's Upload-Metadata header (src/api/tus_header.c).
 *
 * The input is the header's value (up to its first NUL, as a header value ends there). It is
 * read again here independently, by splitting with strtok-like loops and decoding base64 with
 * OpenSSL: elements split at commas, blanks (space, tab) around them dropped, empty ones
 * skipped; a key of visible ASCII up to the first space, then at most one value in base64
 * (padding optional). Invariants: the parser accepts exactly what this reading accepts (keys
 * unique, at most TUS_METADATA_MAX bytes and TUS_METADATA_MAX_PAIRS pairs), gives the same
 * pairs in the same order with the same decoded bytes (NUL-terminated, NULs inside kept), and
 * every refusal is CU_EINVAL with a message fit for a JSON reply. */
#include "fuzz_common.h"

#include "api/tus_header.h"

#include <openssl/evp.h>

typedef struct {
    char key[TUS_METADATA_MAX + 1];
    unsigned char value[TUS_METADATA_MAX];
    bool has_value;
    size_t value_len;
} ref_pair;

static ref_pair ref[TUS_METADATA_MAX_PAIRS + 1];

/* Standard base64, padded or not, decoded with OpenSSL; -1 when it is not base64. */
static int ref_b64(const char *s, size_t len, unsigned char *out)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t pad = 0;
    while (pad < len && s[len - 1 - pad] == '=')
        pad++;
    if (pad > 2 || (pad && len % 4))
        return -1;
    size_t chars = len - pad;
    if (chars % 4 == 1)
        return -1;
    for (size_t i = 0; i < chars; i++)
        if (!s[i] || !strchr(alphabet, s[i]))
            return -1;
    /* OpenSSL wants whole groups: pad what the client left unpadded. */
    size_t full = (chars + 3) / 4 * 4;
    char *padded = malloc(full + 1);
    FUZZ_CHECK(padded != NULL);
    memcpy(padded, s, chars);
    memset(padded + chars, '=', full - chars);
    padded[full] = '\0';
    int n = full ? EVP_DecodeBlock(out, (const unsigned char *)padded, (int)full) : 0;
    free(padded);
    FUZZ_CHECK(n >= 0);
    return n - (int)(full - chars); /* EVP counts each '=' as a zero byte */
}

/* The pairs of header, or -1 when it is to be refused. */
static int ref_parse(const char *h)
{
    if (strlen(h) > TUS_METADATA_MAX)
        return -1;
    int n = 0;
    const char *p = h;
    for (;;) {
        const char *comma = strchr(p, ',');
        const char *end = comma ? comma : p + strlen(p);
        while (p < end && (*p == ' ' || *p == '\t'))
            p++;
        while (end > p && (end[-1] == ' ' || end[-1] == '\t'))
            end--;
        if (end > p) {
            if (n == TUS_METADATA_MAX_PAIRS)
                return -1;
            const char *space = memchr(p, ' ', (size_t)(end - p));
            const char *kend = space ? space : end;
            for (const char *k = p; k < kend; k++)
                if (*k < 0x21 || *k > 0x7e)
                    return -1;
            memcpy(ref[n].key, p, (size_t)(kend - p));
            ref[n].key[kend - p] = '\0';
            for (int i = 0; i < n; i++)
                if (!strcmp(ref[i].key, ref[n].key))
                    return -1;
            ref[n].has_value = space != NULL;
            ref[n].value_len = 0;
            if (space) {
                const char *v = space + 1;
                if (memchr(v, ' ', (size_t)(end - v)))
                    return -1;
                int len = ref_b64(v, (size_t)(end - v), ref[n].value);
                if (len < 0)
                    return -1;
                ref[n].value_len = (size_t)len;
            }
            n++;
        }
        if (!comma)
            return n;
        p = comma + 1;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *header = fuzz_strndup(data, size); /* cut at a NUL, as a header value is */
    tus_metadata md = {(void *)1, 99};
    cu_error err = {0};
    int rc = tus_metadata_parse(header, &md, &err);
    int want = ref_parse(header);
    FUZZ_CHECK((rc == 0) == (want >= 0));
    if (rc) {
        FUZZ_CHECK(rc == CU_EINVAL && err.code == CU_EINVAL);
        FUZZ_CHECK(err.msg[0] && fuzz_utf8_ok(err.msg));
        FUZZ_CHECK(md.n == 0 && md.pairs == NULL);
    } else {
        FUZZ_CHECK(md.n == want);
        for (int i = 0; i < md.n; i++) {
            const tus_metadata_pair *p = &md.pairs[i];
            FUZZ_CHECK(!strcmp(p->key, ref[i].key));
            FUZZ_CHECK((p->value != NULL) == ref[i].has_value);
            FUZZ_CHECK(p->value_len == ref[i].value_len);
            if (p->value) {
                FUZZ_CHECK(!memcmp(p->value, ref[i].value, p->value_len));
                FUZZ_CHECK(p->value[p->value_len] == '\0');
            }
            FUZZ_CHECK(tus_metadata_get(&md, ref[i].key) == p);
        }
        FUZZ_CHECK(tus_metadata_get(&md, "") == NULL);
        tus_metadata_clear(&md);
    }
    FUZZ_CHECK(tus_metadata_parse(NULL, &md, &err) == 0 && md.n == 0);
    free(header);
    return 0;
}
