/* flow.c - flow.js and resumable.js on the engine.
 *
 * An upload here is slots of the client's chunk size, the last one absorbing the remainder
 * unless the client forces its chunk size (flow_params.h). The client's identifier is the
 * upload's client key, looked up among the uploads of the request's principal, so that two
 * credentials choosing the same identifier never meet (and so that the database's
 * uniqueness of (owner, protocol, key) holds: it does not hold for a NULL owner). The first
 * chunk of an identifier to arrive creates the upload, fixing the file's size, name and
 * chunks; every later chunk must agree. A chunk is written at its slot as it streams; the
 * one that stores the last missing slot completes the file and answers with it.
 *
 * Statuses: flow.js gives up on 404, 413, 415, 500 and 501 (its permanentErrors; anything
 * else it retries within maxChunkRetries), resumable.js on 400, 404, 415, 500 and 501 (it
 * retries the rest up to 100 times). So a failure that may pass (storage or database
 * trouble, memory) is 503 here, never 500; an upload that expired is 404; a chunk that is
 * stored already is 200, whatever the client sends with it. */
#include "api/flow.h"

#include "api/auth.h"
#include "api/file_reply.h"
#include "api/flow_params.h"
#include "base/log.h"
#include "base/util.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define FLOW_PROTOCOL "flow"
#define FLOW_PATH "/api/files/upload/chunked"
/* The form part that holds the chunk (both libraries' fileParameterName). */
#define CHUNK_PART "file"
/* What a form carries besides the chunk: its fields and their part headers. */
#define FORM_OVERHEAD (64 * 1024)
/* A chunk whose slot another request is writing waits this long for it to finish or give
 * up (a browser that reloads abandons its requests, and the server learns it a moment
 * later), then is answered 409. */
#define CLAIM_WAIT_SECONDS 2.0
#define CLAIM_WAIT_STEP 0.05

/* Errors as these clients should read them (see the top of the file). */
static int for_client(cu_error *err)
{
    if (err->code == CU_EIO || err->code == CU_ENOMEM)
        err->code = CU_EBUSY;
    else if (err->code == CU_EGONE)
        err->code = CU_ENOTFOUND;
    return err->code;
}

static void reply_error(http_request *req, cu_error *err)
{
    for_client(err);
    http_reply_cu_error(req, err);
}

/* ---- a chunk's parameters ---- */

/* One request's state. The form's fields are kept (bounded) until the chunk's part begins;
 * then the chunk's upload is found or created and its bytes go to the engine. */
typedef struct {
    flow_api *api;
    http_request *req;
    char values[FLOW_DIALECTS][FLOW_FIELDS][FLOW_VALUE_MAX];
    size_t lens[FLOW_DIALECTS][FLOW_FIELDS];
    bool sent[FLOW_DIALECTS][FLOW_FIELDS];
    enum { PART_NONE, PART_FIELD, PART_DROP, PART_CHUNK } part;
    flow_dialect field_dialect; /* PART_FIELD: which field is arriving */
    flow_field field;
    bool chunk_seen;
    flow_chunk chunk;
    char upload_id[CU_UUID_LEN + 1];
    upload_write *w; /* the chunk's write, while its bytes arrive */
    bool stored;     /* the chunk was stored before: its bytes are read and dropped */
    char stored_checksum[CU_SHA256_HEX_LEN + 1];
    int64_t received; /* the chunk's bytes so far */
} chunk_req;

/* The chunk's fields: the form's (c may be NULL: none), else the query string's (resumable.js
 * puts them in both; flow.js's octet mode only in the query). */
static void values_of(const chunk_req *c, http_request *req, flow_values *v)
{
    for (int d = 0; d < FLOW_DIALECTS; d++)
        for (int f = 0; f < FLOW_FIELDS; f++) {
            const char *q;
            if (c && c->sent[d][f]) {
                v->value[d][f] = c->values[d][f];
                v->len[d][f] = c->lens[d][f];
            } else if ((q = http_query(req, flow_field_name(d, f))) != NULL) {
                v->value[d][f] = q;
                v->len[d][f] = strlen(q);
            } else {
                v->value[d][f] = NULL;
                v->len[d][f] = 0;
            }
        }
}

/* ---- the upload of an identifier ---- */

/* Refuses a chunk that describes another file than the one its identifier's first chunk
 * created. */
static int check_same_file(const meta_upload *u, const flow_chunk *c, cu_error *err)
{
    flow_field what;
    int64_t said, now;
    if (u->total_size != c->total_size)
        what = FLOW_FIELD_TOTAL_SIZE, said = u->total_size, now = c->total_size;
    else if (u->chunk_size != c->chunk_size)
        what = FLOW_FIELD_CHUNK_SIZE, said = u->chunk_size, now = c->chunk_size;
    else if (u->total_parts != c->total_chunks)
        what = FLOW_FIELD_TOTAL_CHUNKS, said = u->total_parts, now = c->total_chunks;
    else
        return 0;
    return cu_fail(err, CU_EINVAL,
                   "%s is %lld, but the first chunk of this identifier said %lld: a file keeps "
                   "its size and chunks (a changed file needs a new identifier)",
                   flow_field_name(c->dialect, what), (long long)now, (long long)said);
}

static int find_upload(flow_api *api, http_request *req, const flow_chunk *c, meta_upload *u,
                       cu_error *err)
{
    int rc = upload_find(api->uploads, http_principal(req), FLOW_PROTOCOL, c->identifier, u, err);
    if (rc == 0 && (rc = check_same_file(u, c, err)) != 0)
        meta_upload_clear(u);
    return rc;
}

/* The upload of c's identifier, created by whichever chunk comes first. Two first chunks at
 * once (simultaneousUploads): one creates it, the other finds the identifier taken and reads
 * it. part_type is the chunk part's declared type (flow.js sends no type field). */
static int find_or_create(flow_api *api, http_request *req, const flow_chunk *c,
                          const char *part_type, meta_upload *u, cu_error *err)
{
    char type[FLOW_TYPE_MAX + 1] = "";
    if (c->type) {
        memcpy(type, c->type, c->type_len);
        type[c->type_len] = '\0';
    } else if (part_type && strcasecmp(part_type, "application/octet-stream") != 0 &&
               flow_type_ok(part_type, strlen(part_type))) {
        snprintf(type, sizeof type, "%s", part_type);
    }
    upload_create_request cr = {
        .protocol = FLOW_PROTOCOL,
        .owner = http_principal(req),
        .filename = c->filename,
        .filename_len = c->filename_len,
        .content_type = type[0] ? type : NULL,
        .client_key = c->identifier,
        .total_size = c->total_size,
        .layout = UPLOAD_LAYOUT_SLOTS,
        .slot_size = c->chunk_size,
        .last_slot_absorbs = c->last_slot_absorbs,
    };
    for (int attempt = 0; attempt < 3; attempt++) {
        int rc = find_upload(api, req, c, u, err);
        if (rc != CU_ENOTFOUND)
            return rc;
        rc = upload_create(api->uploads, &cr, u, err);
        if (rc != CU_ECONFLICT) /* the identifier was taken meanwhile: read it */
            return rc;
    }
    return cu_fail(err, CU_EBUSY, "The upload of this identifier is changing; try again");
}

/* Opens the write of c's slot, or finds it stored (c->stored). A slot another request is
 * writing is waited for a little (see CLAIM_WAIT_SECONDS). */
static int claim_slot(chunk_req *c, cu_error *err)
{
    upload_service *svc = c->api->uploads;
    double deadline = util_monotonic() + CLAIM_WAIT_SECONDS;
    for (;;) {
        meta_part part;
        int rc = upload_slot_get(svc, c->upload_id, c->chunk.slot, &part, err);
        if (rc)
            return rc;
        bool stored = part.state == PART_UPLOADED;
        memcpy(c->stored_checksum, part.checksum_sha256, sizeof c->stored_checksum);
        free(part.storage_ref);
        if (stored) {
            c->stored = true;
            return 0;
        }
        upload_write_request wr = {.id = c->upload_id,
                                   .owner = auth_scope_owner(c->req),
                                   .slot = c->chunk.slot,
                                   .length = -1};
        rc = upload_write_begin(svc, &wr, &c->w, err);
        if (rc != CU_ECONFLICT)
            return rc;
        /* Stored meanwhile (the next look sees it), completed, or being written. */
        meta_upload u;
        if (upload_get(svc, c->upload_id, NULL, &u, NULL) == 0) {
            bool done = u.state == UPLOAD_COMPLETE || u.state == UPLOAD_FINALIZING;
            meta_upload_clear(&u);
            if (done) {
                c->stored = true;
                c->stored_checksum[0] = '\0';
                return 0;
            }
        }
        if (util_monotonic() >= deadline)
            return rc;
        util_sleep(CLAIM_WAIT_STEP);
    }
}

/* The chunk's parameters, from the form's fields (c's) and the query string. */
static int chunk_params(chunk_req *c, cu_error *err)
{
    flow_values v;
    values_of(c, c->req, &v);
    return flow_chunk_parse(&v, c->api->cfg->chunk_size, &c->chunk, err);
}

/* Everything the chunk needs before its first byte, once its parameters are read: its
 * upload, its slot. */
static int chunk_open(chunk_req *c, const char *part_type, cu_error *err)
{
    meta_upload u;
    int rc = find_or_create(c->api, c->req, &c->chunk, part_type, &u, err);
    if (rc)
        return rc;
    memcpy(c->upload_id, u.id, sizeof c->upload_id);
    if (upload_check_writable(&u, err) == CU_EGONE) /* until the reaper ends it */
        rc = CU_EGONE;
    meta_upload_clear(&u);
    if (rc)
        return rc;
    /* The filename and type point into the values, which the rest of the request does not
     * need. */
    c->chunk.filename = c->chunk.type = NULL;
    return claim_slot(c, err);
}

static int chunk_data(chunk_req *c, const char *buf, size_t len, cu_error *err)
{
    if ((int64_t)len > c->chunk.current_chunk_size - c->received)
        return cu_fail(err, CU_ETOOLARGE, "Chunk %lld must be %lld bytes; more came",
                       (long long)c->chunk.chunk_number, (long long)c->chunk.current_chunk_size);
    c->received += (int64_t)len;
    if (c->stored)
        return 0;
    if (upload_write_data(c->w, buf, len, err) != 0)
        return for_client(err);
    return 0;
}

static void chunk_free(chunk_req *c)
{
    if (!c)
        return;
    upload_write_abort(c->w);
    free(c);
}

/* ---- replies ---- */

/* A stored chunk: its upload, and once that is complete the file, as the seed's complete
 * reply has it. */
static json_t *chunk_reply(const flow_api *api, const meta_upload *u, const flow_chunk *c,
                           const char *checksum)
{
    json_t *reply;
    if (u->state == UPLOAD_COMPLETE)
        reply = file_reply_complete(u, upload_storage_name(api->uploads));
    else
        reply = json_pack("{s:s, s:s}", "file_id", u->id, "status", "uploaded");
    if (!reply)
        return NULL;
    json_object_set_new(reply, "identifier", json_string(c->identifier));
    json_object_set_new(reply, "chunk_number", json_integer(c->chunk_number));
    if (checksum && checksum[0])
        json_object_set_new(reply, "checksum_sha256", json_string(checksum));
    json_object_set_new(reply, "uploaded_chunks", json_integer(u->uploaded_parts));
    json_object_set_new(reply, "total_chunks", json_integer(u->total_parts));
    return reply;
}

/* Completes u once no slot is missing: the write that stored the last one does, and so does
 * any later request about a stored chunk if that completion failed (the client retries, or
 * tests its chunks again after a reload, and is never told of a file that is not there). */
static int complete_if_whole(upload_service *svc, http_request *req, meta_upload *u, cu_error *err)
{
    if (u->state != UPLOAD_PENDING || u->uploaded_parts < u->total_parts)
        return 0;
    meta_upload done;
    int rc = upload_complete(svc, u->id, auth_scope_owner(req), &done, err);
    if (rc == 0) {
        meta_upload_clear(u);
        *u = done;
    }
    return rc;
}

/* Stores the chunk (or finds it stored), completes the file when no slot is missing any more,
 * and answers. Frees c. */
static void chunk_end(chunk_req *c, http_request *req)
{
    upload_service *svc = c->api->uploads;
    cu_error err;
    meta_upload u = {0};
    const char *checksum = c->stored_checksum;
    upload_write_result res = {0};
    int rc = 0;
    if (c->received != c->chunk.current_chunk_size) {
        rc = cu_fail(&err, CU_EINVAL, "Chunk %lld must be %lld bytes, the body had %lld",
                     (long long)c->chunk.chunk_number, (long long)c->chunk.current_chunk_size,
                     (long long)c->received);
    } else if (!c->stored) {
        rc = upload_write_end(c->w, &res, &err);
        c->w = NULL;
        if (rc == 0) {
            u = res.upload;
            memset(&res.upload, 0, sizeof res.upload);
            checksum = res.checksum_sha256;
        }
    } else {
        rc = upload_get(svc, c->upload_id, auth_scope_owner(req), &u, &err);
    }
    if (rc == 0)
        rc = complete_if_whole(svc, req, &u, &err);
    if (rc == 0) {
        http_reply_json(req, 200, chunk_reply(c->api, &u, &c->chunk, checksum));
    } else {
        reply_error(req, &err);
    }
    upload_write_result_clear(&res);
    meta_upload_clear(&u);
    chunk_free(c);
}

/* ---- the chunk as a form ---- */

/* Which field a form part is: true with its dialect and field. */
static bool field_of(const char *name, flow_dialect *d, flow_field *f)
{
    for (int i = 0; i < FLOW_DIALECTS; i++)
        for (int j = 0; j < FLOW_FIELDS; j++)
            if (strcmp(name, flow_field_name(i, j)) == 0) {
                *d = i;
                *f = j;
                return true;
            }
    return false;
}

static int form_field(void *state, const char *name, const char *filename, const char *content_type,
                      cu_error *err)
{
    (void)filename;
    chunk_req *c = state;
    if (c->chunk_seen) { /* parts after the chunk are read and dropped */
        c->part = PART_DROP;
        return 0;
    }
    if (strcmp(name, CHUNK_PART) == 0) {
        c->chunk_seen = true;
        c->part = PART_CHUNK;
        int rc = chunk_params(c, err);
        if (rc == 0)
            rc = chunk_open(c, content_type, err);
        return rc ? for_client(err) : 0;
    }
    if (!field_of(name, &c->field_dialect, &c->field)) {
        c->part = PART_DROP; /* a field of the page's own (the libraries' `query` option) */
        return 0;
    }
    c->part = PART_FIELD;
    c->sent[c->field_dialect][c->field] = true; /* sent twice: the last one counts */
    c->lens[c->field_dialect][c->field] = 0;
    return 0;
}

static int form_data(void *state, const char *buf, size_t len, cu_error *err)
{
    chunk_req *c = state;
    switch (c->part) {
    case PART_FIELD: {
        size_t *have = &c->lens[c->field_dialect][c->field];
        if (len > FLOW_VALUE_MAX - *have)
            return cu_fail(err, CU_EINVAL, "%s is longer than %d bytes",
                           flow_field_name(c->field_dialect, c->field), FLOW_VALUE_MAX);
        memcpy(c->values[c->field_dialect][c->field] + *have, buf, len);
        *have += len;
        return 0;
    }
    case PART_CHUNK:
        return chunk_data(c, buf, len, err);
    default:
        return 0;
    }
}

static void form_end(void *state, http_request *req)
{
    chunk_req *c = state;
    if (!c->chunk_seen) {
        http_reply_error(req, 400,
                         "No chunk: the form needs a part named \"" CHUNK_PART
                         "\" holding it, after the chunk's fields");
        chunk_free(c);
        return;
    }
    chunk_end(c, req);
}

static void form_abort(void *state)
{
    chunk_free(state);
}

static const http_multipart_ops form_ops = {
    .field = form_field, .data = form_data, .end = form_end, .abort = form_abort};

/* ---- the chunk as the body (method: 'octet') ---- */

static int body_data(void *state, const char *buf, size_t len, cu_error *err)
{
    return chunk_data(state, buf, len, err);
}

static void body_end(void *state, http_request *req)
{
    chunk_end(state, req);
}

static const http_stream_ops body_ops = {.data = body_data, .end = body_end, .abort = form_abort};

/* ---- handlers ---- */

/* The chunk test (testChunks): 200 when the chunk is stored, 204 when not (both libraries
 * then send it). */
static void handle_test(void *ctx, http_request *req)
{
    flow_api *api = ctx;
    flow_values v;
    flow_chunk c;
    cu_error err;
    values_of(NULL, req, &v);
    if (flow_chunk_parse(&v, api->cfg->chunk_size, &c, &err) != 0) {
        reply_error(req, &err);
        return;
    }
    meta_upload u;
    int rc = find_upload(api, req, &c, &u, &err);
    if (rc == CU_ENOTFOUND) {
        http_reply_empty(req, 204);
        return;
    }
    if (rc) {
        reply_error(req, &err);
        return;
    }
    meta_part part = {0};
    rc = upload_slot_get(api->uploads, u.id, c.slot, &part, &err);
    /* An expired upload keeps nothing for the client: its chunks are not there to skip. */
    bool stored =
        rc == 0 && part.state == PART_UPLOADED && upload_check_writable(&u, NULL) != CU_EGONE;
    if (stored)
        rc = complete_if_whole(api->uploads, req, &u, &err);
    if (rc)
        reply_error(req, &err);
    else if (stored)
        http_reply_json(req, 200, chunk_reply(api, &u, &c, part.checksum_sha256));
    else
        http_reply_empty(req, 204);
    free(part.storage_ref);
    meta_upload_clear(&u);
}

static void handle_chunk(void *ctx, http_request *req)
{
    flow_api *api = ctx;
    chunk_req *c = calloc(1, sizeof *c);
    if (!c) {
        http_reply_error(req, 503, "Out of memory");
        return;
    }
    c->api = api;
    c->req = req;
    const char *ct = http_header(req, "Content-Type");
    if (ct && strncasecmp(ct, "multipart/form-data", 19) == 0) {
        if (http_want_multipart(req, &form_ops, c) != 0)
            chunk_free(c);
        return;
    }
    cu_error err;
    flow_values v;
    values_of(NULL, req, &v);
    if (!v.value[FLOW_DIALECT_FLOW][FLOW_FIELD_CHUNK_NUMBER] &&
        !v.value[FLOW_DIALECT_RESUMABLE][FLOW_FIELD_CHUNK_NUMBER]) {
        http_reply_error(req, 415,
                         "This takes multipart/form-data (the chunk's fields, then the chunk in "
                         "a part named \"" CHUNK_PART "\"), or the chunk as the body with its "
                         "fields in the query string, not %s",
                         ct ? ct : "a body without a Content-Type");
        chunk_free(c);
        return;
    }
    int64_t length = http_content_length(req);
    int rc = chunk_params(c, &err);
    if (rc == 0 && length >= 0 && length != c->chunk.current_chunk_size)
        rc = cu_fail(&err, length > c->chunk.current_chunk_size ? CU_ETOOLARGE : CU_EINVAL,
                     "Chunk %lld must be %lld bytes, Content-Length is %lld",
                     (long long)c->chunk.chunk_number, (long long)c->chunk.current_chunk_size,
                     (long long)length);
    if (rc == 0)
        rc = chunk_open(c, NULL, &err);
    if (rc) {
        reply_error(req, &err);
        chunk_free(c);
        return;
    }
    http_want_stream(req, &body_ops, c);
}

static const http_route flow_routes[FLOW_ROUTES] = {
    {.method = "GET",
     .pattern = FLOW_PATH,
     .auth = HTTP_AUTH_API_KEY,
     .name = "flow.test",
     .handle = handle_test},
    {.method = "POST",
     .pattern = FLOW_PATH,
     .body = HTTP_BODY_MULTIPART,
     .auth = HTTP_AUTH_API_KEY,
     .name = "flow.chunk",
     .handle = handle_chunk},
};

int flow_api_register(flow_api *api, http_router *router)
{
    for (int i = 0; i < FLOW_ROUTES; i++) {
        api->routes[i] = flow_routes[i];
        api->routes[i].ctx = api;
        /* The largest chunk is the last of the default cut: twice the chunk size less a byte. */
        if (api->routes[i].body == HTTP_BODY_MULTIPART)
            api->routes[i].body_max = 2 * api->cfg->chunk_size + FORM_OVERHEAD;
        if (http_router_add(router, &api->routes[i]) != 0)
            return -1;
    }
    return 0;
}
