/* storage.h - the blob store: where upload bytes live, behind one interface.
 *
 * Every backend keeps one staging object per upload that writes land in at their byte
 * offsets as they stream in, and turns it into the final file in one step (rename, or S3
 * CompleteMultipartUpload): completion never copies data. The core operations (struct
 * storage_ops) are what every backend has; everything else is an optional capability, a
 * table of its own that is NULL where the backend lacks it (tusd's composer is the
 * model). storage_caps() derives a mask from those tables, so a protocol advertises
 * exactly what the configured backend can do (tus builds Tus-Extension from it).
 *
 * | capability            | local                 | S3                         | SMB            |
 * |-----------------------|-----------------------|----------------------------|----------------|
 * | read (range + stat)   | fd for sendfile       | ranged GET                 | smbc_read      |
 * | remove finished file  | unlink                | DeleteObject               | unlink         |
 * | concatenate           | copy_file_range       | UploadPartCopy             | server copy    |
 * | defer the length      | fallocate when known  | nothing to do              | ftruncate      |
 * | append (any size)     | pwrite                | spool until a part is full | write          |
 * | read staging back     | pread                 | (no: parts unreadable)     | smbc_read      |
 * | presigned GET URLs    | no                    | SigV4 query signing        | no             |
 *
 * Callers hold a storage_t and use the storage_* functions. All functions are
 * thread-safe; a writer or reader belongs to one thread at a time. Every function returns
 * 0 or a negative cu_code with a message in e. */
#ifndef CU_STORAGE_H
#define CU_STORAGE_H

#include "base/error.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* What a backend needs to know about an upload. */
typedef struct {
    const char *id;
    const char *key;         /* final name below the storage root: "dir/<id>_name" */
    const char *storage_ref; /* what stage_create returned, or NULL */
    int64_t total_size;      /* -1 while the client has not declared it */
    int64_t part_size;       /* slot writes start at multiples of it; S3's part size */
} storage_upload;

/* A piece of the staging object the backend needs named again at finish (an S3 part and
 * its ETag). Backends that need none return none. */
typedef struct {
    int index;    /* 0-based: S3 part number index + 1 */
    int64_t size; /* bytes */
    char *ref;    /* backend's handle (malloc'ed), e.g. the ETag */
} storage_chunk;

/* What a writer made durable. */
typedef struct {
    int64_t durable;       /* bytes from the writer's offset that survive a crash now */
    storage_chunk *chunks; /* pieces completed by this writer (malloc'ed array), or NULL */
    int nchunks;
} storage_written;

typedef struct storage storage_t;
typedef struct storage_writer storage_writer_t;
typedef struct storage_reader storage_reader_t;

struct storage_writer_ops {
    int (*write)(storage_writer_t *, const void *buf, size_t len, cu_error *);
    int (*finish)(storage_writer_t *, const unsigned char sha256[32], storage_written *,
                  cu_error *);
    void (*abort)(storage_writer_t *);
    /* Optional (NULL when every write is done once write returns and the writer holds
     * nothing that stands in another's way): see storage_writer_fence. */
    void (*fence)(storage_writer_t *);
};

/* Every backend's writer starts with this, so a writer reaches its ops on its own. */
struct storage_writer {
    const struct storage_writer_ops *ops;
};

struct storage_reader_ops {
    /* Reads up to cap bytes; returns the count, 0 at the end of the range, or a cu_code. */
    ssize_t (*read)(storage_reader_t *, void *buf, size_t cap, cu_error *);
    /* Optional (NULL when the backend has no descriptor): a descriptor and the file offset
     * where the range starts, for sendfile; the reader keeps owning the descriptor. */
    int (*fd)(storage_reader_t *, int *fd, int64_t *offset);
    void (*close)(storage_reader_t *);
};

struct storage_reader {
    const struct storage_reader_ops *ops;
};

/* What every backend does. */
struct storage_ops {
    int (*stage_create)(storage_t *, const storage_upload *, char **storage_ref, cu_error *);
    int (*writer_open)(storage_t *, const storage_upload *, int64_t offset, int64_t length,
                       storage_writer_t **, cu_error *);
    int (*finish)(storage_t *, const storage_upload *, const storage_chunk *chunks, int nchunks,
                  char **final_path, cu_error *);
    int (*abort)(storage_t *, const storage_upload *, cu_error *);
    void (*destroy)(storage_t *);
};

typedef struct {
    int64_t size;
    int64_t mtime; /* seconds since the epoch */
} storage_file_info;

/* Capability: ranged reads of finished files. */
struct storage_read_ops {
    bool zero_copy; /* its readers hand out descriptors (storage_reader_fd) */
    int (*stat)(storage_t *, const char *key, storage_file_info *out, cu_error *);
    int (*open)(storage_t *, const char *key, int64_t offset, int64_t length,
                storage_reader_t **out, cu_error *);
};

/* Capability: removing finished files. */
struct storage_remove_ops {
    int (*remove)(storage_t *, const char *key, cu_error *);
};

/* A staged upload whose every byte is written, as a source of concatenation. */
typedef struct {
    storage_upload upload;
    const storage_chunk *chunks;
    int nchunks;
} storage_source;

/* Capability: concatenation of staged uploads into another upload's staging object. */
struct storage_concat_ops {
    int (*concat)(storage_t *, const storage_upload *dst, const storage_source *srcs, int n,
                  storage_written *out, cu_error *);
};

/* Capability: creating a staging object before its size is known. */
struct storage_defer_ops {
    int (*declare_length)(storage_t *, const storage_upload *, int64_t total_size, cu_error *);
};

/* Capability: writes of any size at the durable end of the staged bytes. */
struct storage_append_ops {
    int (*open)(storage_t *, const storage_upload *, int64_t offset, storage_writer_t **,
                cu_error *);
};

/* A staging object, as a sweep lists it. */
typedef struct {
    const char *id;          /* the upload it was made for */
    const char *key;         /* its key, when the backend's name for it has one, or NULL */
    const char *storage_ref; /* the backend's handle (an S3 UploadId), or NULL */
    int64_t changed_at;      /* seconds since the epoch: when it was made or last written */
} storage_staged;

/* Capability: listing staging objects, so that those no record owns (a crash between staging
 * and recording, a database restored from an older backup) can be found and removed. */
struct storage_sweep_ops {
    /* Calls fn for every staging object; fn returns 0 to go on. */
    int (*list_staged)(storage_t *, int (*fn)(void *ctx, const storage_staged *), void *ctx,
                       cu_error *);
};

/* Capability: how many bytes new uploads may still take (free space). */
struct storage_space_ops {
    int (*available)(storage_t *, int64_t *bytes, cu_error *);
};

/* Capability: URLs that let a client fetch a finished file from the backend itself (so its
 * bytes need not pass through this server). */
struct storage_presign_ops {
    int (*presign_get)(storage_t *, const char *key, int64_t expires_in, const char *content_type,
                       const char *content_disposition, char **url, cu_error *);
};

/* Capability: reading the staging object back before it is finished. */
struct storage_stage_read_ops {
    int (*sha256)(storage_t *, const storage_upload *, unsigned char out[32], cu_error *);
};

struct storage {
    const struct storage_ops *ops;
    const struct storage_read_ops *read;             /* or NULL */
    const struct storage_remove_ops *remove;         /* or NULL */
    const struct storage_concat_ops *concat;         /* or NULL */
    const struct storage_defer_ops *defer;           /* or NULL */
    const struct storage_append_ops *append;         /* or NULL */
    const struct storage_stage_read_ops *stage_read; /* or NULL */
    const struct storage_space_ops *space;           /* or NULL */
    const struct storage_sweep_ops *sweep;           /* or NULL */
    const struct storage_presign_ops *presign;       /* or NULL */
    const char *name; /* "local", "s3", "smb": what replies call storage_backend */
    /* Characters the backend's names cannot hold (beyond the project-wide filename policy),
     * or NULL; checked at init so a name never fails only at complete. */
    const char *forbidden_name_chars;
    /* Whether a path component may end in a dot or a space (Windows servers drop them). */
    bool allows_trailing_dot_space;
    /* The smallest slot a backend can take, but for the last one (S3: 5 MiB); 0: any. */
    int64_t min_part_size;
};

enum {
    STORAGE_CAP_READ = 1 << 0,
    STORAGE_CAP_READ_FD = 1 << 1, /* reads hand out descriptors (zero copy); local only */
    STORAGE_CAP_REMOVE = 1 << 2,
    STORAGE_CAP_CONCAT = 1 << 3,
    STORAGE_CAP_DEFER_LENGTH = 1 << 4,
    STORAGE_CAP_APPEND = 1 << 5,
    STORAGE_CAP_STAGE_READ = 1 << 6,
    STORAGE_CAP_SPACE = 1 << 7,   /* knows its free space */
    STORAGE_CAP_SWEEP = 1 << 8,   /* lists its staging objects */
    STORAGE_CAP_PRESIGN = 1 << 9, /* hands out URLs to fetch finished files directly */
};

/* The capabilities s has: one bit per optional table that is not NULL. */
unsigned storage_caps(const storage_t *s);
/* "read, remove, concat, ...": the capability bits in caps as words (for logs and docs). */
void storage_caps_describe(unsigned caps, char *out, size_t cap);

/* ---- backends ---- */

/* Local disk under root: root/.staging/<id>.data while uploading, root/files/<key> after.
 * Creates the directories; fails when root is not a writable directory. durable: writes are
 * fdatasync'ed before finish returns and renames are synced. */
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
    int workers;      /* writer processes forked at open (SMB_WORKERS); 0: none */
} storage_smb_options;

/* An SMB share through libsmbclient. Checks at once that the share answers to the
 * credentials; the error says whether access was denied, the share was not found or the host
 * could not be reached. Forks opts->workers writer processes first, so call it while the
 * process has one thread (before any other starts); storage_destroy ends them. */
int storage_smb_open(const storage_smb_options *opts, storage_t **out, cu_error *err);

struct cu_config_s;
/* The backend STORAGE_BACKEND names, opened with its variables. */
int storage_open_configured(const struct cu_config_s *cfg, storage_t **out, cu_error *err);

/* ---- core operations ---- */

/* Creates the staging object for upload u (u->storage_ref is unused), preallocated where the
 * backend can and u->total_size is known; *storage_ref receives the backend's handle
 * (malloc'ed) or NULL. */
int storage_stage_create(storage_t *s, const storage_upload *u, char **storage_ref, cu_error *e);
/* Opens a writer for exactly `length` bytes at byte `offset` of the staging object: a slot,
 * starting at a multiple of u->part_size, as long as the slot (u->part_size, or what is left
 * of the file for the last one). Writes past length are refused. */
int storage_writer_open(storage_t *s, const storage_upload *u, int64_t offset, int64_t length,
                        storage_writer_t **w, cu_error *e);
/* Writes the next len bytes. */
int storage_writer_write(storage_writer_t *w, const void *buf, size_t len, cu_error *e);
/* Makes what was written durable (per the backend's durability), reports it in *out (free
 * with storage_written_clear), and frees the writer, whether it succeeds or not. sha256 is
 * the digest of all the bytes written, computed by the caller as they went by (backends
 * that send it on, like S3, need not hash again), or NULL when the caller has none (an
 * append cut short). A slot writer that got fewer than `length` bytes reports durable 0. */
int storage_writer_finish(storage_writer_t *w, const unsigned char *sha256, storage_written *out,
                          cu_error *e);
/* Ends w's writing for good, because another writer takes its range over: waits until none
 * of what was written to w is still on its way to storage (an SMB worker's frame in flight),
 * so that no byte of w's lands later, and lets go of what w holds there (a handle on the
 * share, which would stand in the way of renaming the file, a worker). w takes no more
 * writes; its owner then aborts it, which only frees it. May be called from another thread
 * while w's owner is not using it. */
void storage_writer_fence(storage_writer_t *w);
/* Frees a writer whose bytes will not be recorded (client gone, bad data). */
void storage_writer_abort(storage_writer_t *w);
void storage_written_clear(storage_written *w);
void storage_chunks_free(storage_chunk *chunks, int n);
/* Turns the staging object into the final file at u->key; chunks are every piece writers and
 * concat reported, in index order. Idempotent, so a completion cut short by a crash can be
 * run again. *final_path (malloc'ed) is what clients are told. */
int storage_finish(storage_t *s, const storage_upload *u, const storage_chunk *chunks, int nchunks,
                   char **final_path, cu_error *e);
/* Removes the staging object and everything written to it; unknown ones are not an error. */
int storage_abort(storage_t *s, const storage_upload *u, cu_error *e);
void storage_destroy(storage_t *s);

/* ---- capabilities: CU_ENOTSUP when s lacks the one asked for ---- */

/* Size and modification time of the finished file at key (CU_ENOTFOUND when none). */
int storage_stat(storage_t *s, const char *key, storage_file_info *out, cu_error *e);
/* A reader of length bytes from offset of the finished file at key. */
int storage_read_open(storage_t *s, const char *key, int64_t offset, int64_t length,
                      storage_reader_t **out, cu_error *e);
ssize_t storage_read(storage_reader_t *r, void *buf, size_t cap, cu_error *e);
/* The reader's descriptor for zero-copy sends; CU_ENOTSUP when it has none. */
int storage_reader_fd(storage_reader_t *r, int *fd, int64_t *offset);
void storage_reader_close(storage_reader_t *r);
/* Removes the finished file at key; a missing one is not an error. */
int storage_remove(storage_t *s, const char *key, cu_error *e);
/* Fills dst's staging object (created with the sources' total size) with the sources'
 * bytes, in order, where the backend can without reading them through this process; *out
 * receives the pieces for finish. The sources stay as they are: abort them afterwards. */
int storage_concat(storage_t *s, const storage_upload *dst, const storage_source *srcs, int n,
                   storage_written *out, cu_error *e);
/* Fixes the size of a staging object created with total_size -1. */
int storage_declare_length(storage_t *s, const storage_upload *u, int64_t total_size, cu_error *e);
/* Opens a writer of any number of bytes at offset, the durable end of what is staged; its
 * finish reports how many of them are durable, also after a write error or with fewer bytes
 * than hoped (the caller keeps those). */
int storage_append_open(storage_t *s, const storage_upload *u, int64_t offset, storage_writer_t **w,
                        cu_error *e);
/* Lists every staging object (see struct storage_sweep_ops). */
int storage_list_staged(storage_t *s, int (*fn)(void *ctx, const storage_staged *), void *ctx,
                        cu_error *e);
/* Bytes new uploads may still take. */
int storage_available(storage_t *s, int64_t *bytes, cu_error *e);
/* A URL (malloc'ed into *url) that GETs the finished file at key straight from the backend
 * for expires_in seconds (1 to 7 days), answering with content_type and content_disposition
 * when they are not NULL; anyone holding it can read the file until then. */
int storage_presign_get(storage_t *s, const char *key, int64_t expires_in, const char *content_type,
                        const char *content_disposition, char **url, cu_error *e);
/* SHA-256 of the first u->total_size bytes of the staging object (reads them all). */
int storage_stage_sha256(storage_t *s, const storage_upload *u, unsigned char out[32], cu_error *e);

#endif
