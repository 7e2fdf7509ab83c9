/* storage.c - dispatch from the storage interface to the backend. */
#include "storage/storage.h"

#include <stdlib.h>

int storage_stage_create(storage_t *s, const storage_upload *u, char **storage_ref, cu_error *e)
{
    *storage_ref = NULL;
    return s->ops->stage_create(s, u, storage_ref, e);
}

int storage_writer_open(storage_t *s, const storage_upload *u, int part, int64_t offset,
                        int64_t length, storage_writer_t **w, cu_error *e)
{
    return s->ops->writer_open(s, u, part, offset, length, w, e);
}

int storage_writer_write(storage_writer_t *w, const void *buf, size_t len, cu_error *e)
{
    return w->ops->writer_write(w, buf, len, e);
}

int storage_writer_finish(storage_writer_t *w, const unsigned char sha256[32], char **part_ref,
                          cu_error *e)
{
    *part_ref = NULL;
    return w->ops->writer_finish(w, sha256, part_ref, e);
}

void storage_writer_abort(storage_writer_t *w)
{
    if (w)
        w->ops->writer_abort(w);
}

int storage_stage_sha256(storage_t *s, const storage_upload *u, unsigned char out[32], cu_error *e)
{
    return s->ops->stage_sha256(s, u, out, e);
}

int storage_finish(storage_t *s, const storage_upload *u, const char *const *part_refs, int nparts,
                   char **final_path, cu_error *e)
{
    *final_path = NULL;
    return s->ops->finish(s, u, part_refs, nparts, final_path, e);
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
