/* storage.c - dispatch from the storage interface to the backend, and capability checks. */
#include "storage/storage.h"

#include "base/config.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

unsigned storage_caps(const storage_t *s)
{
    unsigned caps = 0;
    if (s->read) {
        caps |= STORAGE_CAP_READ;
        if (s->read->zero_copy)
            caps |= STORAGE_CAP_READ_FD;
    }
    if (s->remove)
        caps |= STORAGE_CAP_REMOVE;
    if (s->concat)
        caps |= STORAGE_CAP_CONCAT;
    if (s->defer)
        caps |= STORAGE_CAP_DEFER_LENGTH;
    if (s->append)
        caps |= STORAGE_CAP_APPEND;
    if (s->stage_read)
        caps |= STORAGE_CAP_STAGE_READ;
    if (s->space)
        caps |= STORAGE_CAP_SPACE;
    if (s->sweep)
        caps |= STORAGE_CAP_SWEEP;
    if (s->presign)
        caps |= STORAGE_CAP_PRESIGN;
    return caps;
}

void storage_caps_describe(unsigned caps, char *out, size_t cap)
{
    static const struct {
        unsigned bit;
        const char *name;
    } names[] = {{STORAGE_CAP_READ, "read"},
                 {STORAGE_CAP_READ_FD, "zero-copy read"},
                 {STORAGE_CAP_REMOVE, "remove"},
                 {STORAGE_CAP_CONCAT, "concatenate"},
                 {STORAGE_CAP_DEFER_LENGTH, "deferred length"},
                 {STORAGE_CAP_APPEND, "append"},
                 {STORAGE_CAP_STAGE_READ, "read staging"},
                 {STORAGE_CAP_SPACE, "free space"},
                 {STORAGE_CAP_SWEEP, "sweep"},
                 {STORAGE_CAP_PRESIGN, "presigned URLs"}};
    size_t len = 0;
    if (cap)
        out[0] = '\0';
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (caps & names[i].bit)
            len += (size_t)snprintf(out + len, len < cap ? cap - len : 0, "%s%s", len ? ", " : "",
                                    names[i].name);
}

static int unsupported(const storage_t *s, cu_error *e, const char *what)
{
    return cu_fail(e, CU_ENOTSUP, "%s storage cannot %s", s->name, what);
}

int storage_stage_create(storage_t *s, const storage_upload *u, char **storage_ref, cu_error *e)
{
    *storage_ref = NULL;
    if (u->total_size < 0 && !s->defer)
        return unsupported(s, e, "stage an upload of unknown length");
    return s->ops->stage_create(s, u, storage_ref, e);
}

int storage_writer_open(storage_t *s, const storage_upload *u, int64_t offset, int64_t length,
                        storage_writer_t **w, cu_error *e)
{
    assert(offset >= 0 && length >= 0);
    assert(u->part_size > 0 && offset % u->part_size == 0);
    assert(u->total_size < 0 || offset + length <= u->total_size);
    *w = NULL;
    return s->ops->writer_open(s, u, offset, length, w, e);
}

int storage_writer_write(storage_writer_t *w, const void *buf, size_t len, cu_error *e)
{
    return w->ops->write(w, buf, len, e);
}

int storage_writer_finish(storage_writer_t *w, const unsigned char *sha256, storage_written *out,
                          cu_error *e)
{
    memset(out, 0, sizeof *out);
    return w->ops->finish(w, sha256, out, e);
}

void storage_writer_fence(storage_writer_t *w)
{
    if (w->ops->fence)
        w->ops->fence(w);
}

void storage_writer_abort(storage_writer_t *w)
{
    if (w)
        w->ops->abort(w);
}

void storage_chunks_free(storage_chunk *chunks, int n)
{
    for (int i = 0; i < n; i++)
        free(chunks[i].ref);
    free(chunks);
}

void storage_written_clear(storage_written *w)
{
    storage_chunks_free(w->chunks, w->nchunks);
    memset(w, 0, sizeof *w);
}

int storage_finish(storage_t *s, const storage_upload *u, const storage_chunk *chunks, int nchunks,
                   char **final_path, cu_error *e)
{
    *final_path = NULL;
    assert(u->total_size >= 0);
    return s->ops->finish(s, u, chunks, nchunks, final_path, e);
}

int storage_abort(storage_t *s, const storage_upload *u, cu_error *e)
{
    return s->ops->abort(s, u, e);
}

void storage_destroy(storage_t *s)
{
    if (s)
        s->ops->destroy(s);
}

int storage_stat(storage_t *s, const char *key, storage_file_info *out, cu_error *e)
{
    if (!s->read)
        return unsupported(s, e, "read files");
    return s->read->stat(s, key, out, e);
}

int storage_read_open(storage_t *s, const char *key, int64_t offset, int64_t length,
                      storage_reader_t **out, cu_error *e)
{
    assert(offset >= 0 && length >= 0);
    *out = NULL;
    if (!s->read)
        return unsupported(s, e, "read files");
    return s->read->open(s, key, offset, length, out, e);
}

ssize_t storage_read(storage_reader_t *r, void *buf, size_t cap, cu_error *e)
{
    return r->ops->read(r, buf, cap, e);
}

int storage_reader_fd(storage_reader_t *r, int *fd, int64_t *offset)
{
    if (!r->ops->fd)
        return CU_ENOTSUP;
    return r->ops->fd(r, fd, offset);
}

void storage_reader_close(storage_reader_t *r)
{
    if (r)
        r->ops->close(r);
}

int storage_remove(storage_t *s, const char *key, cu_error *e)
{
    if (!s->remove)
        return unsupported(s, e, "remove files");
    return s->remove->remove(s, key, e);
}

int storage_concat(storage_t *s, const storage_upload *dst, const storage_source *srcs, int n,
                   storage_written *out, cu_error *e)
{
    memset(out, 0, sizeof *out);
    if (!s->concat)
        return unsupported(s, e, "concatenate uploads");
    return s->concat->concat(s, dst, srcs, n, out, e);
}

int storage_declare_length(storage_t *s, const storage_upload *u, int64_t total_size, cu_error *e)
{
    assert(total_size >= 0);
    if (!s->defer)
        return unsupported(s, e, "declare a length later");
    return s->defer->declare_length(s, u, total_size, e);
}

int storage_append_open(storage_t *s, const storage_upload *u, int64_t offset, storage_writer_t **w,
                        cu_error *e)
{
    assert(offset >= 0);
    *w = NULL;
    if (!s->append)
        return unsupported(s, e, "append");
    return s->append->open(s, u, offset, w, e);
}

int storage_list_staged(storage_t *s, int (*fn)(void *ctx, const storage_staged *), void *ctx,
                        cu_error *e)
{
    if (!s->sweep)
        return unsupported(s, e, "list its staging objects");
    return s->sweep->list_staged(s, fn, ctx, e);
}

int storage_available(storage_t *s, int64_t *bytes, cu_error *e)
{
    if (!s->space)
        return unsupported(s, e, "tell its free space");
    return s->space->available(s, bytes, e);
}

int storage_presign_get(storage_t *s, const char *key, int64_t expires_in, const char *content_type,
                        const char *content_disposition, char **url, cu_error *e)
{
    *url = NULL;
    if (!s->presign)
        return unsupported(s, e, "hand out URLs to its files");
    return s->presign->presign_get(s, key, expires_in, content_type, content_disposition, url, e);
}

int storage_stage_sha256(storage_t *s, const storage_upload *u, unsigned char out[32], cu_error *e)
{
    if (!s->stage_read)
        return unsupported(s, e, "read an upload back before it is complete");
    return s->stage_read->sha256(s, u, out, e);
}

int storage_open_configured(const cu_config *cfg, storage_t **out, cu_error *err)
{
    switch (cfg->storage_backend) {
    case STORAGE_S3: {
        storage_s3_options o = {.endpoint = cfg->s3_endpoint,
                                .bucket = cfg->s3_bucket,
                                .region = cfg->s3_region,
                                .prefix = cfg->s3_prefix,
                                .access_key_id = cfg->aws_access_key_id,
                                .secret_access_key = cfg->aws_secret_access_key,
                                .session_token = cfg->aws_session_token,
                                .spool_dir = cfg->temp_storage_path};
        return storage_s3_open(&o, out, err);
    }
    case STORAGE_SMB: {
        storage_smb_options o = {.host = cfg->smb_host,
                                 .port = cfg->smb_port,
                                 .user = cfg->smb_user,
                                 .password = cfg->smb_pass,
                                 .share = cfg->smb_share,
                                 .path = cfg->smb_path,
                                 .workers = cfg->smb_workers};
        return storage_smb_open(&o, out, err);
    }
    default:
        return storage_local_open(cfg->local_storage_path, cfg->durability_fsync, out, err);
    }
}
