/* smb.c - an SMB share (Samba, Synology, QNAP, TrueNAS, Windows) as the blob store, through
 * libsmbclient, Samba's own client.
 *
 * The same O(1) design as local disk, on the share: one staging file per upload under
 * <SMB_PATH>/.staging/, sized at init; each part is written at its offset as it streams in;
 * complete renames the staging file to <SMB_PATH>/<dir>/<id>_<name> on the server.
 *
 * libsmbclient is not thread-safe, even with one context per thread: it keeps process-wide
 * state (talloc stack frames, loadparm) that concurrent calls corrupt, and Debian's build
 * exports neither smbc_thread_posix() nor smbc_thread_impl() (nm -D). So every call into it
 * is made under one lock, held for one call or one short operation, never while waiting
 * for a client's body: parts of different uploads interleave write by write. Every
 * operation (and every part writer, for its whole life) still borrows a context of its own
 * from a pool: a context whose connection broke (the NAS rebooted, the network dropped) is
 * thrown away instead of returned, so the next request connects afresh, and no writer is
 * left holding a handle of a context someone else freed.
 *
 * Where the time went (512 MiB in 50 MiB parts, 4 in parallel, against smbclient put to the
 * same smbd; bench/smb.sh): each body piece the HTTP layer handed over (~128 KiB) became
 * one smbc_write, that is one synchronous round trip under the lock plus a fresh tevent
 * loop (epoll_create, fcntl, epoll_ctl: 4,200 of each per upload, strace -c), so the four
 * parts took turns at small writes. Writers now gather pieces into SMB_WRITE_BUFFER writes
 * (with smbd on tmpfs: 2.1 s before, 1.3 s after). What is left:
 *  - one request in flight at a time, because of the lock. smbclient put keeps several
 *    writes outstanding, so smbd receives the next while its aio threads copy the last
 *    into the page cache; here the lock is held while smbd copies (that copy alone took
 *    0.1 to 1.4 s per 512 MiB in this VM, perf), which is why with the share on disk the
 *    writes' size hardly matters and smbclient stays 2-4 times faster. Only concurrent
 *    calls would help: Samba's thread hooks set from here (libsamba-util's
 *    smb_thread_set_functions, what the unexported smbc_thread_posix() is for) come too
 *    late, smbc_new_context crashed on a talloc stack key made before them; and libsmb2,
 *    whose async API needs no lock, is not in Debian 12.
 *  - CPU on a 2-core machine that also runs curl and smbd: per 512 MiB, SHA-256 of the
 *    parts 0.35 s, the kernel's copies in from curl and out to smbd 0.34 s, curl 0.35 s,
 *    smbd 0.56 s (perf); smbclient put costs its own sending (about curl's) and smbd's.
 * The protocol has nothing to give: the connection is SMB3_11, signed only at session
 * setup, unencrypted (smbstatus), and writes go out at Samba's 8 MiB maximum or below. */
#include "storage/storage.h"

#include "base/log.h"
#include "base/util.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <libsmbclient.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SMB_POOL_MAX 64
#define SMB_URL_MAX 4096

/* Writers gather the HTTP layer's small pieces (tens of KiB) into writes of this size. A
 * write is one synchronous round trip made under the one lock, so its size sets both the
 * per-call cost (a new tevent loop each time) and how long the other parts wait. 512 MiB
 * in 50 MiB parts, 4 in parallel, smbd on tmpfs, medians of 6: pieces as they came
 * (~128 KiB) 2.1 s, 1 MiB 1.47 s, 2 MiB 1.39 s, 4 MiB 1.33 s, 8 MiB (Samba's largest
 * SMB2 write) 1.27 s; smbclient put 0.65-0.9 s. 4 MiB is the knee, and a part in flight
 * costs no more memory than that (smaller slots get smaller buffers). */
#define SMB_WRITE_BUFFER ((size_t)4 << 20)

typedef struct {
    storage_t base;
    char *host, *share, *user, *password;
    char *path; /* SMB_PATH without leading/trailing slashes, may be "" */
    int port;
    char *url_base;       /* "smb://host:port/share" (share percent-encoded) */
    pthread_mutex_t lock; /* held for every libsmbclient call; guards the pool too */
    SMBCCTX *idle[SMB_POOL_MAX];
    int nidle;
} smb_storage;

typedef struct {
    struct storage_writer base;
    smb_storage *s;
    SMBCCTX *ctx; /* borrowed from the pool for the writer's life */
    SMBCFILE *file;
    unsigned char *buf; /* buf_cap bytes, gathered into one write */
    size_t buf_len, buf_cap;
    int64_t start;  /* the writer's first offset */
    int64_t offset; /* file offset of buf[0]: everything before it the server acknowledged */
    int64_t end;    /* one past the last byte it may write */
    int err;        /* the first failed write's errno value: nothing is sent after it */
    bool append;    /* an append writer: keeps what it wrote even when cut short */
    char id[CU_UUID_LEN + 1];
} smb_writer;

static const struct storage_writer_ops smb_writer_ops;

/* ---- contexts ---- */

static void auth_fn(SMBCCTX *c, const char *srv, const char *shr, char *wg, int wglen, char *un,
                    int unlen, char *pw, int pwlen)
{
    (void)srv, (void)shr, (void)wg, (void)wglen;
    smb_storage *s = smbc_getOptionUserData(c);
    snprintf(un, (size_t)unlen, "%s", s->user);
    snprintf(pw, (size_t)pwlen, "%s", s->password);
}

static SMBCCTX *ctx_new(smb_storage *s)
{
    SMBCCTX *c = smbc_new_context();
    if (!c)
        return NULL;
    smbc_setDebug(c, 0);
    smbc_setOptionDebugToStderr(c, 1);
    smbc_setOptionUserData(c, s);
    smbc_setFunctionAuthDataWithContext(c, auth_fn);
    smbc_setOptionUseKerberos(c, 0);
    smbc_setOptionNoAutoAnonymousLogin(c, 1); /* wrong credentials must fail, not go guest */
    smbc_setTimeout(c, 20000);
    smbc_setPort(c, (uint16_t)s->port);
    if (!smbc_init_context(c)) {
        smbc_free_context(c, 1);
        return NULL;
    }
    return c;
}

/* Borrows a context; the caller holds s->lock (as for every function that calls
 * libsmbclient). */
static SMBCCTX *ctx_get(smb_storage *s)
{
    return s->nidle ? s->idle[--s->nidle] : ctx_new(s);
}

/* Errors after which a context's connection cannot be trusted any more. */
static bool connection_error(int err)
{
    return err == ECONNRESET || err == EPIPE || err == ETIMEDOUT || err == ENOTCONN ||
           err == ECONNREFUSED || err == EHOSTUNREACH || err == ENETUNREACH || err == EIO ||
           err == ECONNABORTED || err == EBADF || err == ENETRESET;
}

/* Gives a context back (caller holds s->lock). After a connection error it is freed, and so
 * is every idle one: they all talked to the same server, so the next request builds a new
 * connection rather than finding each dead one in turn. */
static void ctx_put(smb_storage *s, SMBCCTX *c, int last_errno)
{
    if (!c)
        return;
    if (!connection_error(last_errno) && s->nidle < SMB_POOL_MAX) {
        s->idle[s->nidle++] = c;
        return;
    }
    smbc_free_context(c, 1);
    if (connection_error(last_errno))
        while (s->nidle)
            smbc_free_context(s->idle[--s->nidle], 1);
}

/* ---- names ---- */

/* smb://host:port/share/<rel> into out (rel relative to the share's root). */
static void share_url(const smb_storage *s, const char *rel, char out[SMB_URL_MAX])
{
    snprintf(out, SMB_URL_MAX, "%s/", s->url_base);
    util_percent_encode(out, SMB_URL_MAX, rel, true);
}

/* smb://host:port/share/<SMB_PATH>/<rel> into out. */
static void url_of(const smb_storage *s, const char *rel, char out[SMB_URL_MAX])
{
    share_url(s, s->path, out);
    if (*s->path && *rel)
        util_percent_encode(out, SMB_URL_MAX, "/", true);
    util_percent_encode(out, SMB_URL_MAX, rel, true);
}

static void staging_url(const smb_storage *s, const char *id, char out[SMB_URL_MAX])
{
    char rel[64];
    snprintf(rel, sizeof rel, ".staging/%s.data", id);
    url_of(s, rel, out);
}

static int smb_fail(cu_error *e, int err, const char *what, const char *id)
{
    log_error("smb storage: %s (%s): %s", what, id, strerror(err));
    if (err == ENOSPC || err == EDQUOT)
        return cu_fail(e, CU_ENOSPC, "The share is full while %s", what);
    if (connection_error(err))
        return cu_fail(e, CU_EUPSTREAM, "SMB server failed while %s: %s", what, strerror(err));
    return cu_fail(e, CU_EIO, "SMB error while %s: %s", what, strerror(err));
}

/* Creates every missing directory of rel with context c; rel is below SMB_PATH, or below
 * the share's root when from_share_root. */
static int mkdirs(smb_storage *s, SMBCCTX *c, const char *rel, bool from_share_root)
{
    char url[SMB_URL_MAX], part[SMB_URL_MAX];
    size_t len = strlen(rel);
    if (len >= sizeof part)
        return ENAMETOOLONG;
    for (size_t i = 1; i <= len; i++) {
        if (rel[i] != '/' && rel[i] != '\0')
            continue;
        memcpy(part, rel, i);
        part[i] = '\0';
        if (from_share_root)
            share_url(s, part, url);
        else
            url_of(s, part, url);
        if (smbc_getFunctionMkdir(c)(c, url, 0755) != 0 && errno != EEXIST) {
            int err = errno;
            struct stat st;
            if (smbc_getFunctionStat(c)(c, url, &st) == 0 && S_ISDIR(st.st_mode))
                continue;
            return err;
        }
    }
    return 0;
}

/* ---- the storage interface ---- */

/* An operation on the share with a borrowed context; returns 0 or an errno value. */
typedef int (*smb_op)(smb_storage *s, SMBCCTX *c, void *arg);

/* Runs op under the lock with a pooled context, and once more on a fresh connection if the
 * pooled one turns out to be dead (the NAS restarted since it was last used). */
static int run_op(smb_storage *s, smb_op op, void *arg)
{
    pthread_mutex_lock(&s->lock);
    int err = ENOMEM;
    for (int attempt = 0; attempt < 2; attempt++) {
        SMBCCTX *c = ctx_get(s);
        if (!c)
            break;
        err = op(s, c, arg);
        ctx_put(s, c, err);
        if (!connection_error(err))
            break;
    }
    pthread_mutex_unlock(&s->lock);
    return err;
}

/* What an operation on one file needs. */
typedef struct {
    const char *url;
    int64_t size;    /* create, declare_length: the file's size */
    const char *key; /* finish: where the staging file goes */
} file_op;

static int create_op(smb_storage *s, SMBCCTX *c, void *arg)
{
    (void)s;
    file_op *op = arg;
    int err = 0;
    SMBCFILE *f = smbc_getFunctionOpen(c)(c, op->url, O_WRONLY | O_CREAT | O_EXCL, 0640);
    if (!f)
        return errno;
    if (op->size > 0 && smbc_getFunctionFtruncate(c)(c, f, op->size) != 0)
        err = errno;
    if (smbc_getFunctionClose(c)(c, f) != 0 && !err)
        err = errno;
    if (err)
        smbc_getFunctionUnlink(c)(c, op->url);
    return err;
}

static int smb_stage_create(storage_t *base, const storage_upload *u, char **storage_ref,
                            cu_error *e)
{
    smb_storage *s = (smb_storage *)base;
    (void)storage_ref;
    char url[SMB_URL_MAX];
    staging_url(s, u->id, url);
    file_op op = {.url = url, .size = u->total_size};
    int err = run_op(s, create_op, &op);
    return err ? smb_fail(e, err, "creating the staging file", u->id) : 0;
}

/* Opens url with context c, positioned at offset; returns 0 or an errno value. */
static int open_file(SMBCCTX *c, const char *url, int flags, int64_t offset, SMBCFILE **file)
{
    SMBCFILE *f = smbc_getFunctionOpen(c)(c, url, flags, 0);
    if (!f)
        return errno ? errno : EIO;
    /* SEEK_SET only sets libsmbclient's own offset: no round trip. */
    if (smbc_getFunctionLseek(c)(c, f, offset, SEEK_SET) != offset) {
        int err = errno ? errno : EIO;
        smbc_getFunctionClose(c)(c, f);
        return err;
    }
    *file = f;
    return 0;
}

/* Opens url on a pooled context, positioned at offset (caller holds s->lock). A pooled
 * connection may have died since its last use (NAS restarted): then one more try, on a
 * fresh connection. Returns 0 or an errno value; on success *ctx and *file are the
 * caller's. */
static int open_at(smb_storage *s, const char *url, int flags, int64_t offset, SMBCCTX **ctx,
                   SMBCFILE **file)
{
    int err = ENOMEM;
    for (int attempt = 0; attempt < 2; attempt++) {
        SMBCCTX *c = ctx_get(s);
        if (!c)
            return ENOMEM;
        err = open_file(c, url, flags, offset, file);
        if (!err) {
            *ctx = c;
            return 0;
        }
        ctx_put(s, c, err);
        if (!connection_error(err))
            break;
    }
    return err;
}

/* Closes f and gives c back (thrown away after a connection error: err, or the close's);
 * returns the close's errno value, or 0. */
static int close_put(smb_storage *s, SMBCCTX *c, SMBCFILE *f, int err)
{
    pthread_mutex_lock(&s->lock);
    int close_err = smbc_getFunctionClose(c)(c, f) != 0 ? (errno ? errno : EIO) : 0;
    ctx_put(s, c, err ? err : close_err);
    pthread_mutex_unlock(&s->lock);
    return close_err;
}

static int gone(cu_error *e)
{
    return cu_fail(e, CU_EGONE, "The upload's data is gone (cancelled or expired)");
}

static int writer_new(smb_storage *s, const storage_upload *u, int64_t offset, int64_t end,
                      bool append, storage_writer_t **out, cu_error *e)
{
    assert(offset <= end);
    size_t cap =
        end - offset < (int64_t)SMB_WRITE_BUFFER ? (size_t)(end - offset) : SMB_WRITE_BUFFER;
    smb_writer *w = calloc(1, sizeof *w);
    unsigned char *buf = malloc(cap ? cap : 1);
    if (!w || !buf) {
        free(w);
        free(buf);
        return cu_fail_oom(e);
    }
    char url[SMB_URL_MAX];
    staging_url(s, u->id, url);
    pthread_mutex_lock(&s->lock);
    int err = open_at(s, url, O_WRONLY, offset, &w->ctx, &w->file);
    pthread_mutex_unlock(&s->lock);
    if (err) {
        free(w);
        free(buf);
        return err == ENOENT ? gone(e) : smb_fail(e, err, "opening the staging file", u->id);
    }
    w->base.ops = &smb_writer_ops;
    w->s = s;
    w->buf = buf;
    w->buf_cap = cap;
    w->start = w->offset = offset;
    w->end = end;
    w->append = append;
    snprintf(w->id, sizeof w->id, "%s", u->id);
    *out = &w->base;
    return 0;
}

static int smb_writer_open(storage_t *base, const storage_upload *u, int64_t offset, int64_t length,
                           storage_writer_t **out, cu_error *e)
{
    return writer_new((smb_storage *)base, u, offset, offset + length, false, out, e);
}

static int smb_append_open(storage_t *base, const storage_upload *u, int64_t offset,
                           storage_writer_t **out, cu_error *e)
{
    int64_t end = u->total_size >= 0 ? u->total_size : INT64_MAX;
    if (offset > end)
        return cu_fail(e, CU_EINVAL, "Offset %lld is past the end of the upload",
                       (long long)offset);
    return writer_new((smb_storage *)base, u, offset, end, true, out, e);
}

/* Sends the buffer as one write and waits for the server's acknowledgement. Returns 0 or
 * an errno value; after an error the writer sends nothing more (its file offset is
 * unknown), and w->offset stays at the end of what the server acknowledged. */
static int flush_buffer(smb_writer *w)
{
    if (w->err)
        return w->err;
    const unsigned char *p = w->buf;
    size_t left = w->buf_len;
    while (left > 0) {
        pthread_mutex_lock(&w->s->lock);
        ssize_t n = smbc_getFunctionWrite(w->ctx)(w->ctx, w->file, p, left);
        int err = n < 0 ? errno : EIO;
        pthread_mutex_unlock(&w->s->lock);
        if (n <= 0)
            return w->err = err ? err : EIO;
        assert((size_t)n <= left);
        p += n;
        left -= (size_t)n;
        w->offset += n;
    }
    w->buf_len = 0;
    return 0;
}

static int smb_writer_write(storage_writer_t *base, const void *buf, size_t len, cu_error *e)
{
    smb_writer *w = (smb_writer *)base;
    /* The caller checks sizes against the upload; this guards the neighbouring slots. */
    if ((int64_t)len > w->end - w->offset - (int64_t)w->buf_len)
        return cu_fail(e, CU_EINVAL, "Write past the end of the %s", w->append ? "upload" : "part");
    const unsigned char *p = buf;
    while (len > 0) {
        size_t n = w->buf_cap - w->buf_len < len ? w->buf_cap - w->buf_len : len;
        memcpy(w->buf + w->buf_len, p, n);
        w->buf_len += n;
        p += n;
        len -= n;
        if (w->buf_len == w->buf_cap) {
            int err = flush_buffer(w);
            if (err)
                return smb_fail(e, err, "writing", w->id);
        }
    }
    return 0;
}

static int writer_free(smb_writer *w, int err)
{
    int close_err = close_put(w->s, w->ctx, w->file, err);
    free(w->buf);
    free(w);
    return close_err;
}

static int smb_writer_finish(storage_writer_t *base, const unsigned char *sha256,
                             storage_written *out, cu_error *e)
{
    smb_writer *w = (smb_writer *)base;
    (void)sha256;
    int err = w->buf_len ? flush_buffer(w) : w->err;
    char id[CU_UUID_LEN + 1];
    memcpy(id, w->id, sizeof id);
    bool append = w->append;
    int64_t acked = w->offset - w->start, length = w->end - w->start;
    /* Closing the handle is where the server reports a failed write-behind. */
    int close_err = writer_free(w, err);
    if (!err)
        err = close_err;
    /* An append keeps what the server acknowledged, also when cut short or failed; a slot
     * counts only whole. */
    out->durable = append ? acked : (!err && acked == length ? acked : 0);
    return err ? smb_fail(e, err, "writing", id) : 0;
}

static void smb_writer_abort(storage_writer_t *base)
{
    /* A client that went away leaves a good connection for the next part; one that failed
     * a write (w->err) or the close is thrown away by ctx_put. */
    smb_writer *w = (smb_writer *)base;
    writer_free(w, w->err);
}

static int finish_op(smb_storage *s, SMBCCTX *c, void *arg)
{
    file_op *op = arg;
    char to[SMB_URL_MAX];
    url_of(s, op->key, to);
    const char *slash = strrchr(op->key, '/');
    if (slash) {
        char dir[SMB_URL_MAX];
        snprintf(dir, sizeof dir, "%.*s", (int)(slash - op->key), op->key);
        int err = mkdirs(s, c, dir, false);
        if (err)
            return err;
    }
    if (smbc_getFunctionRename(c)(c, op->url, c, to) != 0) {
        int err = errno;
        struct stat st;
        /* Already moved by an earlier completion that crashed before it was recorded. */
        if (err == ENOENT && smbc_getFunctionStat(c)(c, to, &st) == 0 && S_ISREG(st.st_mode))
            return 0;
        return err;
    }
    return 0;
}

static int smb_finish(storage_t *base, const storage_upload *u, const storage_chunk *chunks,
                      int nchunks, char **final_path, cu_error *e)
{
    smb_storage *s = (smb_storage *)base;
    (void)chunks, (void)nchunks;
    char url[SMB_URL_MAX];
    staging_url(s, u->id, url);
    file_op op = {.url = url, .key = u->key};
    int err = run_op(s, finish_op, &op);
    if (err == ENOTDIR || err == EEXIST)
        return cu_fail(e, CU_ECONFLICT,
                       "Cannot create the directory for %s on the share: a file is in the way",
                       u->key);
    if (err)
        return smb_fail(e, err, "moving the file into place", u->id);
    size_t len = strlen(s->host) + strlen(s->share) + strlen(s->path) + strlen(u->key) + 16;
    *final_path = malloc(len);
    if (!*final_path)
        return cu_fail_oom(e);
    snprintf(*final_path, len, "smb://%s/%s/%s%s%s", s->host, s->share, s->path,
             *s->path ? "/" : "", u->key);
    return 0;
}

/* Unlinks op->url; a missing file is not an error. */
static int unlink_op(smb_storage *s, SMBCCTX *c, void *arg)
{
    (void)s;
    file_op *op = arg;
    if (smbc_getFunctionUnlink(c)(c, op->url) == 0 || errno == ENOENT || errno == ENOTDIR)
        return 0;
    return errno;
}

static int smb_abort(storage_t *base, const storage_upload *u, cu_error *e)
{
    smb_storage *s = (smb_storage *)base;
    char url[SMB_URL_MAX];
    staging_url(s, u->id, url);
    file_op op = {.url = url};
    int err = run_op(s, unlink_op, &op);
    return err ? smb_fail(e, err, "removing the staging file", u->id) : 0;
}

/* ---- capabilities ---- */

/* Reads go straight into the caller's buffer, one smbc_read (one round trip, under the
 * lock) per call: no memory of their own, and no descriptor to hand out. */
typedef struct {
    struct storage_reader base;
    smb_storage *s;
    SMBCCTX *ctx; /* borrowed from the pool for the reader's life */
    SMBCFILE *file;
    int64_t offset, end;
    int err; /* the first failed read's errno value */
} smb_reader;

static const struct storage_reader_ops smb_reader_ops;

/* A reader of [offset, offset + length) of url; returns 0 or an errno value. */
static int reader_open(smb_storage *s, const char *url, int64_t offset, int64_t length,
                       smb_reader **out)
{
    smb_reader *r = calloc(1, sizeof *r);
    if (!r)
        return ENOMEM;
    pthread_mutex_lock(&s->lock);
    int err = open_at(s, url, O_RDONLY, offset, &r->ctx, &r->file);
    pthread_mutex_unlock(&s->lock);
    if (err) {
        free(r);
        return err;
    }
    r->base.ops = &smb_reader_ops;
    r->s = s;
    r->offset = offset;
    r->end = offset + length;
    *out = r;
    return 0;
}

static ssize_t smb_read(storage_reader_t *base, void *buf, size_t cap, cu_error *e)
{
    smb_reader *r = (smb_reader *)base;
    if ((int64_t)cap > r->end - r->offset)
        cap = (size_t)(r->end - r->offset);
    if (cap == 0)
        return 0;
    if (r->err)
        return smb_fail(e, r->err, "reading a file", "-");
    pthread_mutex_lock(&r->s->lock);
    ssize_t n = smbc_getFunctionRead(r->ctx)(r->ctx, r->file, buf, cap);
    int err = n < 0 ? errno : 0;
    pthread_mutex_unlock(&r->s->lock);
    if (n < 0)
        return smb_fail(e, r->err = err ? err : EIO, "reading a file", "-");
    if (n == 0)
        return cu_fail(e, CU_EIO, "The file is shorter than recorded");
    assert((size_t)n <= cap);
    r->offset += n;
    return n;
}

static void smb_reader_close(storage_reader_t *base)
{
    smb_reader *r = (smb_reader *)base;
    close_put(r->s, r->ctx, r->file, r->err);
    free(r);
}

static const struct storage_reader_ops smb_reader_ops = {.read = smb_read,
                                                         .close = smb_reader_close};

static int final_fail(cu_error *e, int err, const char *what, const char *key)
{
    if (err == ENOENT || err == ENOTDIR)
        return cu_fail(e, CU_ENOTFOUND, "File not found in storage");
    return smb_fail(e, err, what, key);
}

typedef struct {
    const char *url;
    struct stat st;
} stat_op_arg;

static int stat_op(smb_storage *s, SMBCCTX *c, void *arg)
{
    (void)s;
    stat_op_arg *op = arg;
    return smbc_getFunctionStat(c)(c, op->url, &op->st) == 0 ? 0 : errno;
}

static int smb_stat(storage_t *base, const char *key, storage_file_info *out, cu_error *e)
{
    smb_storage *s = (smb_storage *)base;
    char url[SMB_URL_MAX];
    url_of(s, key, url);
    stat_op_arg op = {.url = url};
    int err = run_op(s, stat_op, &op);
    if (!err && !S_ISREG(op.st.st_mode))
        err = ENOENT;
    if (err)
        return final_fail(e, err, "reading a file's size", key);
    out->size = op.st.st_size;
    out->mtime = op.st.st_mtime;
    return 0;
}

static int smb_read_open(storage_t *base, const char *key, int64_t offset, int64_t length,
                         storage_reader_t **out, cu_error *e)
{
    smb_storage *s = (smb_storage *)base;
    char url[SMB_URL_MAX];
    url_of(s, key, url);
    smb_reader *r = NULL;
    int err = reader_open(s, url, offset, length, &r);
    if (err)
        return final_fail(e, err, "opening a file", key);
    *out = &r->base;
    return 0;
}

static int smb_stage_sha256(storage_t *base, const storage_upload *u, unsigned char out[32],
                            cu_error *e)
{
    smb_storage *s = (smb_storage *)base;
    assert(u->total_size >= 0);
    char url[SMB_URL_MAX];
    staging_url(s, u->id, url);
    size_t cap = 1 << 20;
    unsigned char *buf = malloc(cap);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (!buf || !md || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(md);
        free(buf);
        return cu_fail_oom(e);
    }
    smb_reader *r = NULL;
    int err = reader_open(s, url, 0, u->total_size, &r);
    int rc = err == ENOENT ? gone(e)
             : err         ? smb_fail(e, err, "opening the staging file", u->id)
                           : 0;
    /* The lock is taken per read, so uploads go on while a large file is hashed. */
    for (ssize_t n = 1; rc == 0 && n > 0;) {
        n = smb_read(&r->base, buf, cap, e);
        if (n < 0)
            rc = (int)n;
        else
            EVP_DigestUpdate(md, buf, (size_t)n);
    }
    if (rc == 0)
        EVP_DigestFinal_ex(md, out, NULL);
    if (r)
        smb_reader_close(&r->base);
    EVP_MD_CTX_free(md);
    free(buf);
    return rc;
}

static int smb_remove(storage_t *base, const char *key, cu_error *e)
{
    smb_storage *s = (smb_storage *)base;
    char url[SMB_URL_MAX];
    url_of(s, key, url);
    file_op op = {.url = url};
    int err = run_op(s, unlink_op, &op);
    return err ? smb_fail(e, err, "removing a file", key) : 0;
}

static int truncate_op(smb_storage *s, SMBCCTX *c, void *arg)
{
    (void)s;
    file_op *op = arg;
    SMBCFILE *f = NULL;
    int err = open_file(c, op->url, O_WRONLY, 0, &f);
    if (err)
        return err;
    if (smbc_getFunctionFtruncate(c)(c, f, op->size) != 0)
        err = errno ? errno : EIO;
    if (smbc_getFunctionClose(c)(c, f) != 0 && !err)
        err = errno ? errno : EIO;
    return err;
}

static int smb_declare_length(storage_t *base, const storage_upload *u, int64_t total_size,
                              cu_error *e)
{
    smb_storage *s = (smb_storage *)base;
    char url[SMB_URL_MAX];
    staging_url(s, u->id, url);
    file_op op = {.url = url, .size = total_size};
    int err = run_op(s, truncate_op, &op);
    return err == ENOENT ? gone(e) : err ? smb_fail(e, err, "sizing the staging file", u->id) : 0;
}

/* Concatenation copies on the server: smbc splice is FSCTL_SRV_COPYCHUNK_WRITE (SMB2+),
 * so the bytes never reach this process. Against a server without it (it answers
 * STATUS_INVALID_DEVICE_REQUEST), libsmbclient itself falls back to reading and writing
 * through a 1 MiB buffer (cli_splice_fallback): bounded memory, only slower. Both files
 * must be open on one context. A splice is one synchronous call under the lock, so it goes
 * in pieces and the lock is free in between for the parts of other uploads in flight. 16
 * MiB is the most one copychunk request may copy on Samba and Windows (their total limit),
 * about 10 ms here; pieces of 8, 32 or 128 MiB copied 512 MiB at the same 1.5-1.9 GB/s. */
#define SMB_SPLICE_PIECE ((int64_t)16 << 20)

static int splice_go_on(off_t n, void *priv)
{
    (void)n, (void)priv;
    return 1;
}

/* Copies len bytes of src (from 0) to dst at `at` with c, piece by piece; returns 0 or an
 * errno value. */
static int splice_all(smb_storage *s, SMBCCTX *c, SMBCFILE *src, SMBCFILE *dst, int64_t at,
                      int64_t len)
{
    for (int64_t done = 0; done < len;) {
        int64_t piece = len - done < SMB_SPLICE_PIECE ? len - done : SMB_SPLICE_PIECE;
        pthread_mutex_lock(&s->lock);
        off_t n = -1;
        if (smbc_getFunctionLseek(c)(c, src, done, SEEK_SET) == done &&
            smbc_getFunctionLseek(c)(c, dst, at + done, SEEK_SET) == at + done)
            n = smbc_getFunctionSplice(c)(c, src, dst, piece, splice_go_on, NULL);
        int err = n < 0 ? (errno ? errno : EIO) : 0;
        pthread_mutex_unlock(&s->lock);
        if (err)
            return err;
        if (n != piece)
            return EIO; /* the source is shorter than recorded */
        done += n;
    }
    return 0;
}

static int smb_concat(storage_t *base, const storage_upload *dst, const storage_source *srcs, int n,
                      storage_written *out, cu_error *e)
{
    smb_storage *s = (smb_storage *)base;
    char url[SMB_URL_MAX];
    staging_url(s, dst->id, url);
    SMBCCTX *c = NULL;
    SMBCFILE *to = NULL;
    pthread_mutex_lock(&s->lock);
    int err = open_at(s, url, O_RDWR, 0, &c, &to);
    pthread_mutex_unlock(&s->lock);
    if (err)
        return err == ENOENT ? gone(e) : smb_fail(e, err, "opening the staging file", dst->id);
    int rc = 0;
    int64_t at = 0;
    for (int i = 0; rc == 0 && i < n; i++) {
        const storage_upload *u = &srcs[i].upload;
        assert(u->total_size >= 0);
        SMBCFILE *from = NULL;
        staging_url(s, u->id, url);
        pthread_mutex_lock(&s->lock);
        err = open_file(c, url, O_RDONLY, 0, &from);
        pthread_mutex_unlock(&s->lock);
        if (err == ENOENT) {
            rc = cu_fail(e, CU_EGONE, "The data of upload %s is gone", u->id);
            break;
        }
        if (!err)
            err = splice_all(s, c, from, to, at, u->total_size);
        if (from) {
            pthread_mutex_lock(&s->lock);
            smbc_getFunctionClose(c)(c, from);
            pthread_mutex_unlock(&s->lock);
        }
        if (err)
            rc = smb_fail(e, err, "concatenating uploads", dst->id);
        at += u->total_size;
    }
    /* The close is where the server reports a failed write-behind. */
    int close_err = close_put(s, c, to, err);
    if (rc == 0 && close_err)
        rc = smb_fail(e, close_err, "concatenating uploads", dst->id);
    if (rc == 0)
        out->durable = at;
    return rc;
}

static void smb_destroy(storage_t *base)
{
    smb_storage *s = (smb_storage *)base;
    for (int i = 0; i < s->nidle; i++)
        smbc_free_context(s->idle[i], 1);
    pthread_mutex_destroy(&s->lock);
    free(s->host);
    free(s->share);
    free(s->user);
    if (s->password)
        memset(s->password, 0, strlen(s->password));
    free(s->password);
    free(s->path);
    free(s->url_base);
    free(s);
}

static const struct storage_writer_ops smb_writer_ops = {
    .write = smb_writer_write, .finish = smb_writer_finish, .abort = smb_writer_abort};

static const struct storage_read_ops smb_read_ops = {
    .zero_copy = false, .stat = smb_stat, .open = smb_read_open};
static const struct storage_remove_ops smb_remove_ops = {.remove = smb_remove};
static const struct storage_concat_ops smb_concat_ops = {.concat = smb_concat};
static const struct storage_defer_ops smb_defer_ops = {.declare_length = smb_declare_length};
static const struct storage_append_ops smb_append_ops = {.open = smb_append_open};
static const struct storage_stage_read_ops smb_stage_read_ops = {.sha256 = smb_stage_sha256};

static const struct storage_ops smb_ops = {
    .stage_create = smb_stage_create,
    .writer_open = smb_writer_open,
    .finish = smb_finish,
    .abort = smb_abort,
    .destroy = smb_destroy,
};

/* What went wrong reaching the share, in the words of the seed's troubleshooting list. */
static const char *diagnose(int err)
{
    switch (err) {
    case EACCES:
    case EPERM:
        return "Access denied: check SMB_USER and SMB_PASS";
    case ENOENT:
    case ENODEV:
    case ENXIO:
        return "Share not found: check SMB_SHARE (and SMB_PATH)";
    case ECONNREFUSED:
        return "Connection refused: no SMB server on that host and port (check SMB_HOST, "
               "SMB_PORT, firewall)";
    case EHOSTUNREACH:
    case ENETUNREACH:
    case ETIMEDOUT:
        return "No route to host: the SMB server is unreachable (network, firewall, or macOS "
               "Local Network permission)";
    default:
        return strerror(err);
    }
}

int storage_smb_open(const storage_smb_options *o, storage_t **out, cu_error *err)
{
    smb_storage *s = calloc(1, sizeof *s);
    if (!s)
        return cu_fail(err, CU_EIO, "Out of memory");
    s->base.ops = &smb_ops;
    s->base.name = "smb";
    s->base.read = &smb_read_ops;
    s->base.remove = &smb_remove_ops;
    s->base.concat = &smb_concat_ops;
    s->base.defer = &smb_defer_ops;
    s->base.append = &smb_append_ops;
    s->base.stage_read = &smb_stage_read_ops;
    /* What Windows, and so most NAS firmware, refuses in a name; "name:x" would even open an
     * alternate data stream on a Windows server. */
    s->base.forbidden_name_chars = "\\:*?\"<>|";
    s->base.allows_trailing_dot_space = false;
    pthread_mutex_init(&s->lock, NULL);
    s->host = strdup(o->host);
    s->share = strdup(o->share);
    s->user = strdup(o->user ? o->user : "");
    s->password = strdup(o->password ? o->password : "");
    s->port = o->port;
    const char *p = o->path ? o->path : "";
    while (*p == '/' || *p == '\\')
        p++;
    s->path = strdup(p);
    for (char *q = s->path; *q; q++)
        if (*q == '\\')
            *q = '/';
    size_t len = strlen(s->path);
    while (len && s->path[len - 1] == '/')
        s->path[--len] = '\0';
    char share_enc[1024] = "";
    util_percent_encode(share_enc, sizeof share_enc, s->share, false);
    len = strlen(s->host) + strlen(share_enc) + 32;
    s->url_base = malloc(len);
    snprintf(s->url_base, len, "smb://%s:%d/%s", s->host, s->port, share_enc);

    /* Reach the share, make SMB_PATH/.staging, and say plainly what failed if it does. */
    pthread_mutex_lock(&s->lock);
    SMBCCTX *c = ctx_get(s);
    int e = c ? 0 : ENOMEM;
    char url[SMB_URL_MAX];
    if (!e) {
        url_of(s, "", url);
        SMBCFILE *d = smbc_getFunctionOpendir(c)(c, url);
        if (!d && *s->path && errno == ENOENT) {
            /* The share is there but SMB_PATH is not: create it. */
            char root[SMB_URL_MAX];
            share_url(s, "", root);
            d = smbc_getFunctionOpendir(c)(c, root);
            if (d) {
                smbc_getFunctionClosedir(c)(c, d);
                d = NULL;
                e = mkdirs(s, c, s->path, true);
            } else {
                e = errno;
            }
        } else if (!d) {
            e = errno;
        } else {
            smbc_getFunctionClosedir(c)(c, d);
        }
    }
    if (!e)
        e = mkdirs(s, c, ".staging", false);
    ctx_put(s, c, e);
    pthread_mutex_unlock(&s->lock);
    if (e) {
        cu_fail(err, CU_EUPSTREAM, "SMB: cannot use //%s/%s%s%s (port %d) as %s: %s", s->host,
                s->share, *s->path ? "/" : "", s->path, s->port, *s->user ? s->user : "guest",
                diagnose(e));
        smb_destroy(&s->base);
        return CU_EUPSTREAM;
    }
    *out = &s->base;
    return 0;
}
