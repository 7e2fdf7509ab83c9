/* storage.h - the blob store: where upload bytes live, behind one interface.
 *
 * Every backend (local disk now; S3 and SMB next) keeps one staging object per upload that
 * parts are written into at their offsets as they stream in, and turns it into the final
 * file in one step (rename, or S3 CompleteMultipartUpload): completion never copies data.
 * Callers hold a storage_t and use the storage_* functions; a backend fills in struct
 * storage_ops. All functions are thread-safe; a writer belongs to one thread. */
#ifndef CU_STORAGE_H
#define CU_STORAGE_H

#include "base/error.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* What a backend needs to know about an upload. */
typedef struct {
    const char *id;
    const char *key;         /* final name below the storage root: "dir/<id>_name" */
    const char *storage_ref; /* what stage_create returned, or NULL */
    int64_t total_size;
    int total_parts;
} storage_upload;

typedef struct storage storage_t;
typedef struct storage_writer storage_writer_t;

struct storage_ops {
    int (*stage_create)(storage_t *, const storage_upload *, char **storage_ref, cu_error *);
    int (*writer_open)(storage_t *, const storage_upload *, int part, int64_t offset,
                       int64_t length, storage_writer_t **, cu_error *);
    int (*writer_write)(storage_writer_t *, const void *buf, size_t len, cu_error *);
    int (*writer_finish)(storage_writer_t *, const unsigned char sha256[32], char **part_ref,
                         cu_error *);
    void (*writer_abort)(storage_writer_t *);
    int (*stage_sha256)(storage_t *, const storage_upload *, unsigned char out[32], cu_error *);
    int (*finish)(storage_t *, const storage_upload *, const char *const *part_refs, int nparts,
                  char **final_path, cu_error *);
    int (*abort)(storage_t *, const storage_upload *, cu_error *);
    void (*destroy)(storage_t *);
};

/* Every backend's writer starts with this, so a writer reaches its ops on its own. */
struct storage_writer {
    const struct storage_ops *ops;
};

struct storage {
    const struct storage_ops *ops;
    const char *name; /* "local", "s3", "smb": what replies call storage_backend */
    /* Whether stage_sha256 can read a staging object back before it is finished (S3
     * cannot: parts of a multipart upload are not readable until it completes). */
    bool can_read_staging;
    /* Characters the backend's names cannot hold (beyond the project-wide filename policy),
     * or NULL; checked at init so a name never fails only at complete. */
    const char *forbidden_name_chars;
    /* Whether a path component may end in a dot or a space (Windows servers drop them). */
    bool allows_trailing_dot_space;
};

/* Local disk under root: root/.staging/<id>.data while uploading, root/files/<key> after.
 * Creates the directories; fails when root is not a writable directory. durable: writes are
 * fdatasync'ed before writer_finish returns and renames are synced. */
int storage_local_open(const char *root, bool durable, storage_t **out, cu_error *err);

typedef struct {
    const char *endpoint; /* NULL or "": AWS itself (virtual-host style); else path style */
    const char *bucket;
    const char *region;
    const char *prefix; /* key prefix, may be NULL */
    const char *access_key_id;
    const char *secret_access_key;
    const char *session_token; /* may be NULL */
    const char *spool_dir;     /* local scratch for part bodies (TEMP_STORAGE_PATH) */
} storage_s3_options;

/* Where requests for bucket go (malloc'ed, NULL when out of memory): path style
 * "<endpoint>/<bucket>" when an endpoint is given; for AWS itself, virtual-host style
 * "https://<bucket>.s3.<region>.amazonaws.com", or path style for bucket names with dots. */
char *storage_s3_base_url(const char *endpoint, const char *bucket, const char *region);
/* The endpoint as messages name it: the given one without trailing slashes, or AWS's. */
char *storage_s3_endpoint(const char *endpoint, const char *region);

/* S3 multipart uploads in a bucket. Checks at once that the bucket answers to the
 * credentials; fails with the endpoint, bucket and S3's error code otherwise. */
int storage_s3_open(const storage_s3_options *opts, storage_t **out, cu_error *err);

typedef struct {
    const char *host;
    int port;
    const char *user;
    const char *password;
    const char *share;
    const char *path; /* directory within the share, may be "" */
} storage_smb_options;

/* An SMB share through libsmbclient. Checks at once that the share answers to the
 * credentials; the error says whether access was denied, the share was not found or the host
 * could not be reached. */
int storage_smb_open(const storage_smb_options *opts, storage_t **out, cu_error *err);

/* Creates the staging object for upload u (u->storage_ref is unused), preallocated where the
 * backend can; *storage_ref receives the backend's handle (malloc'ed) or NULL. */
int storage_stage_create(storage_t *s, const storage_upload *u, char **storage_ref, cu_error *e);
/* Opens a writer for `length` bytes of part `part` at byte `offset` of the staging object. */
int storage_writer_open(storage_t *s, const storage_upload *u, int part, int64_t offset,
                        int64_t length, storage_writer_t **w, cu_error *e);
/* Writes the next len bytes of the part. */
int storage_writer_write(storage_writer_t *w, const void *buf, size_t len, cu_error *e);
/* Makes what was written durable (per the backend's durability) and frees the writer, whether
 * it succeeds or not. sha256 is the part's digest, computed by the caller as the bytes went
 * by (backends that send it on, like S3, need not hash again); *part_ref receives the
 * backend's handle for the part or NULL. */
int storage_writer_finish(storage_writer_t *w, const unsigned char sha256[32], char **part_ref,
                          cu_error *e);
/* Frees a writer whose part will not be recorded (client gone, bad data). */
void storage_writer_abort(storage_writer_t *w);
/* SHA-256 of the whole staging object (reads it all). */
int storage_stage_sha256(storage_t *s, const storage_upload *u, unsigned char out[32], cu_error *e);
/* Turns the staging object into the final file at u->key; part_refs are the parts' handles
 * from writer_finish, in order. Idempotent, so a completion cut short by a crash can be run
 * again. *final_path (malloc'ed) is what clients are told. */
int storage_finish(storage_t *s, const storage_upload *u, const char *const *part_refs, int nparts,
                   char **final_path, cu_error *e);
/* Removes the staging object and everything written to it; unknown ones are not an error. */
int storage_abort(storage_t *s, const storage_upload *u, cu_error *e);
void storage_destroy(storage_t *s);

#endif
