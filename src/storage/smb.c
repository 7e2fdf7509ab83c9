/* smb.c - an SMB share (Samba, Synology, QNAP, TrueNAS, Windows) as the blob store, through
 * libsmbclient, Samba's own client.
 *
 * The same O(1) design as local disk, on the share: one staging file per upload under
 * <SMB_PATH>/.staging/, sized at init; each part is written at its offset as it streams in;
 * complete renames the staging file to <SMB_PATH>/<dir>/<id>_<name> on the server.
 *
 * libsmbclient is not thread-safe, even with one context per thread: it keeps process-wide
 * state (talloc stack frames, loadparm) that concurrent calls corrupt, and Debian's build
 * exports neither smbc_thread_posix() nor smbc_thread_impl() (nm -D). So in one process
 * every call into it is made under one lock, held for one call or one short operation, never
 * while waiting for a client's body, and the process has one SMB request in flight at a
 * time. Part writes, where the time goes, are therefore made by worker processes forked at
 * open (SMB_WORKERS, "workers" below), each with a libsmbclient of its own, so that several
 * parts reach the NAS at once. What stays in-process (create, rename, remove, reads,
 * server-side copies, and parts that find no worker free) borrows a context of its own from
 * a pool, for one operation or a writer's whole life: a context whose connection broke (the
 * NAS rebooted, the network dropped) is thrown away instead of returned, so the next request
 * connects afresh, and no writer is left holding a handle of a context someone else freed.
 *
 * Where the time goes (512 MiB in 50 MiB parts, 4 in parallel with curl, against smbclient
 * put to the same smbd, share on disk, on this 2-core VM; medians of 5 runs taken while
 * nothing else ran, CPU from /proc per process):
 *
 *                   wall    CPU-s: all   smbd  client  server  workers
 *    smbclient put  1.31 s        1.73   1.34    0.38
 *    in-process     2.11 s        2.88   1.54    0.38    0.89
 *    4 workers      1.83 s        3.08   1.58    0.40    0.72     0.14
 *
 *  - In-process, the lock kept one request in flight: smbclient put keeps several writes
 *    outstanding, so smbd receives the next while its aio threads copy the last into the
 *    page cache, where here the lock was held while smbd copied. Gathering the body's
 *    pieces (~128 KiB) into SMB_WRITE_BUFFER writes had helped with smbd on tmpfs (2.1 s to
 *    1.3 s), hardly with the share on disk. With workers, four writes are in flight at once
 *    (test_smb.py's SmbParallelWritesTest, behind a proxy that delays replies: four parts
 *    take about the time of one, where in-process they take four times as long).
 *  - What is left is CPU: 3.08 CPU-s on 2 cores is 1.54 s at the very least, 1.18 times
 *    smbclient's 1.31 s, and at the 84% the pipeline keeps both cores busy, 1.83 s. Against
 *    smbclient the server adds the SHA-256 of every byte (about 0.33 CPU-s, perf), receiving
 *    the body over HTTP, and smbd spends more with four writers in one file (ext4's inode
 *    lock: rwsem_spin_on_owner); the workers cost 0.14 CPU-s, since frames reach them
 *    through shared memory (through the socket pair, in runs beside other jobs, they cost
 *    0.29 and the server 0.09 more). On a machine with cores to spare the ratio to
 *    smbclient goes down; on this one 1.2 is out of reach without less work per byte.
 * Tried and not taken: Samba's thread hooks set from here (libsamba-util's
 * smb_thread_set_functions, what the unexported smbc_thread_posix() is for) come too late,
 * smbc_new_context crashed on a talloc stack key made before them; libsmb2, whose async API
 * needs no lock, is not in Debian 12; libsmbclient loaded again per thread with
 * dlmopen(LM_ID_NEWLM), reported to crash in lp_load_global, did connect from four threads
 * at once in a test of its own (with and without ASan, beside a copy in the base), but each
 * namespace brings its own libc (malloc, stdio, the single-threaded flags), glibc allows 15
 * of them, and sanitizers do not see into them, where a fork gives the same independence
 * with nothing shared. The protocol has nothing to give: the connection is SMB3_11, signed
 * only at session setup, unencrypted (smbstatus), and writes go out at Samba's 8 MiB
 * maximum or below. */
#include "storage/storage.h"

#include "base/log.h"
#include "base/util.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <libsmbclient.h>
#include <openssl/evp.h>
#include <dirent.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifdef __SANITIZE_ADDRESS__
#include <sanitizer/lsan_interface.h>
#endif

#define SMB_POOL_MAX 64
#define SMB_URL_MAX 4096

/* Writers gather the HTTP layer's small pieces (tens of KiB) into writes of this size. In
 * process, a write is one synchronous round trip made under the one lock, so its size sets
 * both the per-call cost (a new tevent loop each time) and how long the other parts wait.
 * 512 MiB in 50 MiB parts, 4 in parallel, smbd on tmpfs, medians of 6: pieces as they came
 * (~128 KiB) 2.1 s, 1 MiB 1.47 s, 2 MiB 1.39 s, 4 MiB 1.33 s, 8 MiB (Samba's largest
 * SMB2 write) 1.27 s; smbclient put 0.65-0.9 s. 4 MiB is the knee. Through a worker it is
 * the frame the worker writes while the next is gathered: two of them per worker, shared
 * with it; an in-process part costs one (smaller slots get smaller buffers). */
#define SMB_WRITE_BUFFER ((size_t)4 << 20)

/* A writer process (see "workers" below), as the server sees it. */
typedef struct {
    pid_t pid;            /* -1 once reaped */
    int fd;               /* the server's end of its socket pair; -1 once the worker is gone */
    bool busy;            /* lent to a writer, which alone uses fd and slots meanwhile */
    int index;            /* for the log */
    unsigned char *slots; /* SMB_WORKER_SLOTS buffers of SMB_WRITE_BUFFER, shared with it */
} smb_worker;

typedef struct {
    storage_t base;
    char *host, *share, *user, *password;
    char *path; /* SMB_PATH without leading/trailing slashes, may be "" */
    int port;
    char *url_base;       /* "smb://host:port/share" (share percent-encoded) */
    pthread_mutex_t lock; /* held for every libsmbclient call; guards the pool too */
    SMBCCTX *idle[SMB_POOL_MAX];
    int nidle;
    /* Lending workers takes only this lock, never the one above: a part gets a worker while
     * another thread waits on the share in-process. */
    pthread_mutex_t workers_lock;
    smb_worker *workers; /* nworkers of them, forked at open */
    int nworkers;
} smb_storage;

typedef struct {
    struct storage_writer base;
    smb_storage *s;
    smb_worker *worker; /* the worker it writes through, lent for its life; or NULL: */
    SMBCCTX *ctx;       /* in-process, on a context borrowed from the pool for its life */
    SMBCFILE *file;
    unsigned char *buf; /* buf_cap bytes, gathered into one write: its own, or a worker's slot */
    size_t buf_len, buf_cap;
    unsigned char *own_buf; /* in-process: buf, malloc'ed; NULL through a worker */
    int slot;               /* through a worker: which of its slots buf is */
    size_t in_flight;       /* bytes handed to the worker whose acknowledgement is not read yet */
    int64_t start;          /* the writer's first offset */
    int64_t offset;         /* end of what the server acknowledged: then in_flight, then buf */
    int64_t end;            /* one past the last byte it may write */
    int err;                /* the first failed write's errno value: nothing is sent after it */
    bool append;            /* an append writer: keeps what it wrote even when cut short */
    bool lost;              /* its worker died under it (err is set too) */
    bool fenced;            /* another writer took over: closed, takes no more writes */
    char id[CU_UUID_LEN + 1];
} smb_writer;

static const struct storage_writer_ops smb_writer_ops;
static int writer_fail(const smb_writer *w, int err, cu_error *e);

/* Frees a writer whose file is closed (or was never opened). A worker's slot stays with the
 * worker, also when the worker is gone: it is unmapped with the storage. */
static void writer_free(smb_writer *w)
{
    assert(!w->worker && !w->file);
    free(w->own_buf);
    free(w);
}
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
    if (err == EFBIG)
        return cu_fail(e, CU_ETOOLARGE, "The file is too large for the share while %s", what);
    if (err == EBUSY) /* a sharing violation: someone has the file open */
        return cu_fail(e, CU_EBUSY, "The file is in use on the share while %s; try again", what);
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

/* ---- workers ----
 *
 * libsmbclient takes one call at a time per process (above), so several parts reach the
 * share at once only from several processes. At open, before this process makes its first
 * libsmbclient call and while it has one thread, SMB_WORKERS children are forked; each makes * its
 * own libsmbclient context and serves one writer at a time over a socket pair: OPEN the staging
 * file at an offset, WRITE frames of the gathered buffer, CLOSE (which reports what the server
 * said). The frames' bytes do not go through the socket: the writer gathers the body straight into
 * one of two buffers shared with its worker, and a WRITE names the buffer, so the worker writes
 * from it while the writer fills the other. Through the socket pair every byte was copied twice
 * more (into the socket and out of it): 0.12 CPU-s per 512 MiB (perf), on a machine where CPU is
 * what runs out first (see the head of this file). A part writer borrows a free worker for its
 * whole life; one that finds none writes in-process as before, rather than wait. Everything else
 * (create, finish, abort, reads, concatenation) stays in-process: it is not where the time goes.
 *
 * A fork from a threaded process could copy a lock some other thread held, so there is no
 * fork later: a worker that dies fails the writer it served, with a clear error, and is
 * never lent again; the others and the in-process path carry on. */

enum { WORKER_OPEN = 1, WORKER_WRITE = 2, WORKER_CLOSE = 3 };

/* One request; the same binary is at both ends, so structs go as they are. */
typedef struct {
    uint32_t op;
    uint32_t len;   /* OPEN: bytes of the URL that follow, with its NUL; WRITE: bytes to write */
    int64_t offset; /* OPEN: the file offset writes start at */
    uint32_t slot;  /* WRITE: the shared buffer that holds them */
    uint32_t unused;
} worker_request;

/* Two buffers per worker: one written by the worker, one filled by its writer. */
#define SMB_WORKER_SLOTS 2

typedef struct {
    int32_t err; /* the operation's errno value, or 0 */
    uint32_t unused;
    int64_t done; /* WRITE: bytes the server acknowledged */
} worker_reply;

/* How long the server waits for a worker to take a request or answer one before it gives
 * up on the worker. A worker's own SMB requests time out after 20 s (smbc_setTimeout), and an
 * OPEN may connect twice; only a worker that is stuck for good takes longer. */
#define SMB_WORKER_TIMEOUT_S 120

/* Reads exactly len bytes of fd; returns 0 or an errno value (EPIPE when the other end
 * closed, EAGAIN when SO_RCVTIMEO passed). */
static int read_full(int fd, void *buf, size_t len)
{
    unsigned char *p = buf;
    while (len > 0) {
        ssize_t n = read(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return errno;
        if (n == 0)
            return EPIPE;
        assert((size_t)n <= len);
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Sends head and then len bytes of data; returns 0 or an errno value. MSG_NOSIGNAL: a dead
 * peer is an error to handle, not a SIGPIPE for the whole process. */
static int send_full(int fd, const void *head, size_t head_len, const void *data, size_t len)
{
    struct iovec iov[2] = {{(void *)head, head_len}, {(void *)data, len}};
    struct msghdr msg = {.msg_iov = iov, .msg_iovlen = 2};
    while (msg.msg_iovlen > 0) {
        ssize_t n = sendmsg(fd, &msg, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return errno;
        size_t sent = (size_t)n;
        while (msg.msg_iovlen > 0 && sent >= msg.msg_iov[0].iov_len) {
            sent -= msg.msg_iov[0].iov_len;
            msg.msg_iov++;
            msg.msg_iovlen--;
        }
        if (msg.msg_iovlen > 0) {
            msg.msg_iov[0].iov_base = (char *)msg.msg_iov[0].iov_base + sent;
            msg.msg_iov[0].iov_len -= sent;
        }
    }
    return 0;
}

/* -- in the worker -- */

typedef struct {
    smb_storage *s; /* the worker's copy of the server's, for ctx_new and its auth_fn */
    int fd;
    int index;
    SMBCCTX *ctx;               /* its own context, kept between writers, or NULL */
    SMBCFILE *file;             /* the file a writer has open, or NULL */
    int file_err;               /* the first error on that file */
    const unsigned char *slots; /* shared with the server */
} worker_state;

/* Opens url at offset with the worker's context, and once more on a fresh connection when
 * the old one turns out to be dead (the NAS restarted since the last writer). */
static int worker_open(worker_state *ws, const char *url, int64_t offset)
{
    assert(!ws->file);
    int err = ENOMEM;
    for (int attempt = 0; attempt < 2; attempt++) {
        if (!ws->ctx && !(ws->ctx = ctx_new(ws->s)))
            return ENOMEM;
        err = open_file(ws->ctx, url, O_WRONLY, offset, &ws->file);
        if (!err) {
            ws->file_err = 0;
            return 0;
        }
        if (!connection_error(err))
            break;
        smbc_free_context(ws->ctx, 1);
        ws->ctx = NULL;
    }
    return err;
}

/* Writes len bytes of buf; returns how many the server acknowledged, *err set when fewer. */
static int64_t worker_write(worker_state *ws, const unsigned char *buf, size_t len, int *err)
{
    *err = ws->file_err;
    size_t done = 0;
    while (!*err && done < len) {
        ssize_t n = smbc_getFunctionWrite(ws->ctx)(ws->ctx, ws->file, buf + done, len - done);
        if (n <= 0)
            *err = ws->file_err = n < 0 && errno ? errno : EIO;
        else
            done += (size_t)n;
    }
    assert(done <= len);
    return (int64_t)done;
}

/* Closes the file; a context whose connection failed is thrown away, so the next writer
 * connects afresh. Returns the close's errno value, or 0. */
static int worker_close(worker_state *ws)
{
    int err = smbc_getFunctionClose(ws->ctx)(ws->ctx, ws->file) != 0 ? (errno ? errno : EIO) : 0;
    ws->file = NULL;
    if (connection_error(ws->file_err) || connection_error(err)) {
        smbc_free_context(ws->ctx, 1);
        ws->ctx = NULL;
    }
    return err;
}

/* Serves requests until the server closes its end; returns 0 then, or an errno value
 * (EPROTO for a request out of place: a bug, the worker ends). */
static int worker_serve(worker_state *ws)
{
    for (;;) {
        worker_request req;
        int err = read_full(ws->fd, &req, sizeof req);
        if (err)
            return err == EPIPE ? 0 : err;
        worker_reply reply = {0};
        switch (req.op) {
        case WORKER_OPEN: {
            char url[SMB_URL_MAX];
            if (ws->file || req.len == 0 || req.len > sizeof url)
                return EPROTO;
            if ((err = read_full(ws->fd, url, req.len)) != 0)
                return err;
            if (url[req.len - 1] != '\0' || req.offset < 0)
                return EPROTO;
            reply.err = worker_open(ws, url, req.offset);
            break;
        }
        case WORKER_WRITE:
            if (!ws->file || req.len > SMB_WRITE_BUFFER || req.slot >= SMB_WORKER_SLOTS)
                return EPROTO;
            reply.done = worker_write(ws, ws->slots + req.slot * SMB_WRITE_BUFFER, req.len, &err);
            reply.err = err;
            break;
        case WORKER_CLOSE:
            if (!ws->file || req.len != 0)
                return EPROTO;
            reply.err = worker_close(ws);
            break;
        default:
            return EPROTO;
        }
        if ((err = send_full(ws->fd, &reply, sizeof reply, NULL, 0)) != 0)
            return err;
    }
}

/* The worker's life, in the child: never returns. */
__attribute__((noreturn)) static void
worker_main(smb_storage *s, int fd, const unsigned char *slots, int index, pid_t server)
{
    /* Dies with the server (even by SIGKILL), which forked it from its only thread. */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != server)
        _exit(1);
    /* The server decides when a worker ends, by closing its socket: a SIGTERM or Ctrl-C
     * meant for the service (systemd signals the whole cgroup) waits for it. */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGHUP);
    if (sigprocmask(SIG_BLOCK, &stop, NULL) != 0 || signal(SIGPIPE, SIG_IGN) == SIG_ERR)
        _exit(1);
    /* Keeps its socket and the standard descriptors (the log) only. The other workers'
     * sockets above all: a copy here would keep them open after the server closes them. */
    for (int i = 0; i < s->nworkers; i++)
        if (close(s->workers[i].fd) != 0 ||
            munmap(s->workers[i].slots, SMB_WORKER_SLOTS * SMB_WRITE_BUFFER) != 0)
            _exit(1);
    if ((fd > 3 && close_range(3, (unsigned)fd - 1, 0) != 0) ||
        close_range((unsigned)fd + 1, ~0U, 0) != 0)
        log_warn("smb worker %d: closing inherited descriptors: %s", index, strerror(errno));
    worker_state ws = {.s = s, .fd = fd, .index = index, .slots = slots};
    int err = worker_serve(&ws);
    if (err)
        log_error("smb worker %d: %s", index, err == EPROTO ? "bad request" : strerror(err));
    if (ws.file)
        smbc_getFunctionClose(ws.ctx)(ws.ctx, ws.file);
    if (ws.ctx)
        smbc_free_context(ws.ctx, 1);
    close(fd);
    /* _exit, not exit: exit would run the handlers the server registered (OpenSSL, curl)
     * and flush stdio buffers copied from it at fork, printing its output twice. So
     * LeakSanitizer, which runs at exit, is asked here. */
#ifdef __SANITIZE_ADDRESS__
    __lsan_do_leak_check();
#endif
    _exit(err ? 1 : 0);
}

/* -- in the server -- */

/* Threads in this process, or -1 when /proc cannot tell. */
static int process_threads(void)
{
    DIR *d = opendir("/proc/self/task");
    if (!d)
        return -1;
    int n = 0;
    for (struct dirent *de; (de = readdir(d));)
        n += de->d_name[0] != '.';
    closedir(d);
    return n;
}

static void describe_exit(int status, char *out, size_t cap)
{
    if (WIFSIGNALED(status))
        snprintf(out, cap, "killed by signal %d", WTERMSIG(status));
    else
        snprintf(out, cap, "exit status %d", WEXITSTATUS(status));
}

/* Forks n workers (fewer when fork fails: logged). The caller holds no lock and has made
 * no libsmbclient call yet. */
static void workers_start(smb_storage *s, int n)
{
    assert(n > 0 && !s->workers);
    int threads = process_threads();
    if (threads != 1) {
        /* fork copies only the calling thread: a lock another one held stays held. */
        log_warn("smb storage: %d threads at start-up, so no SMB workers: every SMB call is made "
                 "from the server process",
                 threads);
        return;
    }
    s->workers = calloc((size_t)n, sizeof *s->workers);
    if (!s->workers) {
        log_warn("smb storage: out of memory, so no SMB workers");
        return;
    }
    pid_t server = getpid();
    /* What the server's stdio holds would be written again by every child. */
    fflush(NULL);
    for (int i = 0; i < n; i++) {
        int sv[2];
        /* Shared with this worker only; its pages are taken as they are first written. */
        unsigned char *slots = mmap(NULL, SMB_WORKER_SLOTS * SMB_WRITE_BUFFER,
                                    PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (slots == MAP_FAILED) {
            log_warn("smb storage: %d of %d SMB workers: mmap: %s", i, n, strerror(errno));
            return;
        }
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
            log_warn("smb storage: %d of %d SMB workers: socketpair: %s", i, n, strerror(errno));
            munmap(slots, SMB_WORKER_SLOTS * SMB_WRITE_BUFFER);
            return;
        }
        pid_t pid = fork();
        if (pid == 0) {
            close(sv[0]);
            worker_main(s, sv[1], slots, i, server);
        }
        int err = pid < 0 ? errno : 0;
        close(sv[1]);
        struct timeval limit = {.tv_sec = SMB_WORKER_TIMEOUT_S};
        if (!err && (setsockopt(sv[0], SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit) != 0 ||
                     setsockopt(sv[0], SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof limit) != 0)) {
            err = errno;
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
        }
        if (err) {
            close(sv[0]);
            munmap(slots, SMB_WORKER_SLOTS * SMB_WRITE_BUFFER);
            log_warn("smb storage: %d of %d SMB workers: %s", i, n, strerror(err));
            return;
        }
        s->workers[s->nworkers++] =
            (smb_worker){.pid = pid, .fd = sv[0], .index = i, .slots = slots};
    }
}

/* Waits for a worker that was told to end (its socket closed), SIGKILL after a few seconds. */
static void worker_reap(smb_worker *wk)
{
    assert(wk->pid > 0 && wk->fd < 0);
    int status = 0;
    for (int waited_ms = 0;; waited_ms += 10) {
        pid_t r = waitpid(wk->pid, &status, WNOHANG);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) { /* ECHILD: someone set SIGCHLD to SIG_IGN, so it reaped itself */
            wk->pid = -1;
            return;
        }
        if (r == wk->pid)
            break;
        if (waited_ms >= 5000) {
            log_warn("smb storage: worker %d (pid %d) did not end: killing it", wk->index,
                     (int)wk->pid);
            kill(wk->pid, SIGKILL);
            while (waitpid(wk->pid, &status, 0) < 0 && errno == EINTR)
                ;
            break;
        }
        nanosleep(&(struct timespec){.tv_nsec = 10 * 1000 * 1000}, NULL);
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        char how[64];
        describe_exit(status, how, sizeof how);
        log_warn("smb storage: worker %d (pid %d) ended with %s", wk->index, (int)wk->pid, how);
    }
    wk->pid = -1;
}

/* Ends every worker: each reads the end of its socket, drops its connection and exits. */
static void workers_stop(smb_storage *s)
{
    for (int i = 0; i < s->nworkers; i++) {
        assert(!s->workers[i].busy); /* no writer outlives the storage */
        if (s->workers[i].fd >= 0) {
            close(s->workers[i].fd);
            s->workers[i].fd = -1;
        }
    }
    for (int i = 0; i < s->nworkers; i++) {
        if (s->workers[i].pid > 0)
            worker_reap(&s->workers[i]);
        munmap(s->workers[i].slots, SMB_WORKER_SLOTS * SMB_WRITE_BUFFER);
    }
    free(s->workers);
    s->workers = NULL;
    s->nworkers = 0;
}

/* A free worker, now lent to the caller, or NULL when every one is busy or gone. The lowest
 * free one: the busier a worker, the more likely its connection is warm. */
static smb_worker *worker_borrow(smb_storage *s)
{
    smb_worker *wk = NULL;
    pthread_mutex_lock(&s->workers_lock);
    for (int i = 0; i < s->nworkers && !wk; i++)
        if (s->workers[i].fd >= 0 && !s->workers[i].busy)
            wk = &s->workers[i];
    if (wk)
        wk->busy = true;
    pthread_mutex_unlock(&s->workers_lock);
    return wk;
}

static void worker_return(smb_storage *s, smb_worker *wk)
{
    pthread_mutex_lock(&s->workers_lock);
    assert(wk->busy && wk->fd >= 0);
    wk->busy = false;
    pthread_mutex_unlock(&s->workers_lock);
}

/* The writer's worker failed to take a request or answer one (err): it died, or is stuck
 * and is killed now. It is reaped and never lent again; the writer fails. Logged once,
 * here, as the worker can be lost only once. */
static void writer_lose_worker(smb_writer *w, int err)
{
    smb_storage *s = w->s;
    smb_worker *wk = w->worker;
    assert(wk && wk->busy && wk->fd >= 0);
    if (kill(wk->pid, SIGKILL) != 0 && errno != ESRCH)
        log_warn("smb storage: killing worker %d: %s", wk->index, strerror(errno));
    int status = 0;
    pid_t r;
    while ((r = waitpid(wk->pid, &status, 0)) < 0 && errno == EINTR)
        ;
    char how[64] = "gone";
    if (r == wk->pid)
        describe_exit(status, how, sizeof how);
    pthread_mutex_lock(&s->workers_lock);
    close(wk->fd);
    wk->fd = -1;
    wk->busy = false;
    wk->pid = -1;
    int left = 0;
    for (int i = 0; i < s->nworkers; i++)
        left += s->workers[i].fd >= 0;
    pthread_mutex_unlock(&s->workers_lock);
    log_error("smb storage: worker %d (%s) lost while writing %s: %s; %d of %d workers left%s",
              wk->index, how, w->id, err == EAGAIN ? "no answer in time" : strerror(err), left,
              s->nworkers, left ? "" : ": every SMB call is now made from the server process");
    w->worker = NULL;
    w->lost = true;
    if (!w->err)
        w->err = EPIPE;
}

/* Sends a request (with len bytes of data for OPEN) to the writer's worker; returns 0, or -1
 * after losing the worker. */
static int worker_send(smb_writer *w, const worker_request *req, const void *data, size_t len)
{
    assert(w->worker);
    int err = send_full(w->worker->fd, req, sizeof *req, data, len);
    if (err)
        writer_lose_worker(w, err);
    return err ? -1 : 0;
}

/* Reads the worker's reply to the request sent last; returns 0, or -1 after losing it. */
static int worker_receive(smb_writer *w, worker_reply *reply)
{
    assert(w->worker);
    int err = read_full(w->worker->fd, reply, sizeof *reply);
    if (err)
        writer_lose_worker(w, err);
    return err ? -1 : 0;
}

/* Reads the acknowledgement of the frame in flight, if there is one. */
static void worker_settle(smb_writer *w)
{
    if (!w->in_flight)
        return;
    size_t sent = w->in_flight;
    w->in_flight = 0;
    worker_reply reply;
    if (worker_receive(w, &reply) != 0)
        return;
    assert(reply.done >= 0 && (size_t)reply.done <= sent);
    w->offset += reply.done;
    if (!w->err && (reply.err || (size_t)reply.done != sent))
        w->err = reply.err ? reply.err : EIO;
}

/* Opens url at offset on a free worker for writer w. Returns 0 (w->worker is set), an errno
 * value the server answered, or -1 when no worker could take it. */
static int worker_open_for(smb_writer *w, const char *url, int64_t offset)
{
    while ((w->worker = worker_borrow(w->s)) != NULL) {
        worker_reply reply;
        size_t len = strlen(url) + 1;
        worker_request req = {.op = WORKER_OPEN, .len = (uint32_t)len, .offset = offset};
        if (worker_send(w, &req, url, len) == 0 && worker_receive(w, &reply) == 0) {
            if (reply.err == 0)
                return 0;
            worker_return(w->s, w->worker);
            w->worker = NULL;
            return reply.err;
        }
        /* Lost before any byte was written: nothing failed yet, try another. */
        w->lost = false;
        w->err = 0;
    }
    return -1;
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
    if (!w)
        return cu_fail_oom(e);
    w->base.ops = &smb_writer_ops;
    w->s = s;
    w->buf_cap = cap;
    w->start = w->offset = offset;
    w->end = end;
    w->append = append;
    snprintf(w->id, sizeof w->id, "%s", u->id);
    char url[SMB_URL_MAX];
    staging_url(s, u->id, url);
    int err = worker_open_for(w, url, offset);
    if (err == 0) {
        w->buf = w->worker->slots;
    } else if (err < 0) { /* no worker free: in-process, one call at a time */
        if (!(w->buf = w->own_buf = malloc(cap ? cap : 1))) {
            free(w);
            return cu_fail_oom(e);
        }
        pthread_mutex_lock(&s->lock);
        err = open_at(s, url, O_WRONLY, offset, &w->ctx, &w->file);
        pthread_mutex_unlock(&s->lock);
    }
    if (err) {
        writer_free(w);
        return err == ENOENT ? gone(e) : smb_fail(e, err, "opening the staging file", u->id);
    }
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

/* Sends the buffer as one write. In-process, it waits for the server's acknowledgement.
 * Through a worker it first reads the acknowledgement of the frame before (at most one is
 * in flight, so memory stays bounded), then hands the buffer over and returns: the next one
 * is gathered from the body while the worker writes this one. Returns 0 or an errno value;
 * after an error the writer sends nothing more (its file offset is unknown), and w->offset
 * stays at the end of what the server acknowledged. */
static int flush_buffer(smb_writer *w)
{
    if (w->worker)
        worker_settle(w);
    if (w->err)
        return w->err;
    if (w->worker) {
        worker_request req = {
            .op = WORKER_WRITE, .len = (uint32_t)w->buf_len, .slot = (uint32_t)w->slot};
        if (worker_send(w, &req, NULL, 0) != 0)
            return w->err;
        w->in_flight = w->buf_len;
        w->buf_len = 0;
        w->slot = (w->slot + 1) % SMB_WORKER_SLOTS;
        w->buf = w->worker->slots + (size_t)w->slot * SMB_WRITE_BUFFER;
        return 0;
    }
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
    if ((int64_t)len > w->end - w->offset - (int64_t)w->in_flight - (int64_t)w->buf_len)
        return cu_fail(e, CU_EINVAL, "Write past the end of the %s", w->append ? "upload" : "part");
    if (w->fenced)
        return cu_fail(e, CU_ECONFLICT, "Another request took this %s over",
                       w->append ? "upload" : "part");
    if (w->err) /* nothing is sent after a failed write */
        return writer_fail(w, w->err, e);
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
                return writer_fail(w, err, e);
        }
    }
    return 0;
}

static int writer_fail(const smb_writer *w, int err, cu_error *e)
{
    if (!w->lost)
        return smb_fail(e, err, "writing", w->id);
    return cu_fail(e, CU_EIO, "The SMB worker process writing the %s is gone; send it again",
                   w->append ? "upload" : "part");
}

/* Closes the writer's file, once whatever is in flight is acknowledged, and gives its worker
 * or context back; returns the close's errno value, or 0. */
static int writer_close(smb_writer *w)
{
    if (w->worker) {
        worker_settle(w);
        worker_reply reply;
        worker_request req = {.op = WORKER_CLOSE};
        if (w->worker && worker_send(w, &req, NULL, 0) == 0 && worker_receive(w, &reply) == 0) {
            worker_return(w->s, w->worker);
            w->worker = NULL;
            return reply.err;
        }
    }
    assert(!w->worker && !w->in_flight);
    if (w->lost)
        return EPIPE; /* the worker's connection is gone, and with it the file */
    int err = close_put(w->s, w->ctx, w->file, w->err);
    w->ctx = NULL;
    w->file = NULL;
    return err;
}

static int smb_writer_finish(storage_writer_t *base, const unsigned char *sha256,
                             storage_written *out, cu_error *e)
{
    smb_writer *w = (smb_writer *)base;
    (void)sha256;
    if (w->fenced) {
        out->durable = 0;
        int rc = cu_fail(e, CU_ECONFLICT, "Another request took this %s over",
                         w->append ? "upload" : "part");
        writer_free(w);
        return rc;
    }
    if (w->buf_len)
        flush_buffer(w);
    /* Closing the handle is where the server reports a failed write-behind. */
    int close_err = writer_close(w);
    int err = w->err ? w->err : close_err;
    int64_t acked = w->offset - w->start, length = w->end - w->start;
    /* An append keeps what the server acknowledged, also when cut short or failed; a slot
     * counts only whole. */
    out->durable = w->append ? acked : (!err && acked == length ? acked : 0);
    int rc = err ? writer_fail(w, err, e) : 0;
    writer_free(w);
    return rc;
}

static void smb_writer_fence(storage_writer_t *base)
{
    /* What is gathered but not sent is dropped; what is in flight is waited for by the close,
     * which also gives the handle (a rename of the file fails while it is open) and the
     * worker back. */
    smb_writer *w = (smb_writer *)base;
    if (w->fenced)
        return;
    w->fenced = true;
    w->buf_len = 0;
    writer_close(w);
}

static void smb_writer_abort(storage_writer_t *base)
{
    /* A client that went away leaves a good connection for the next part, in its worker or
     * in the pool; one that failed a write (w->err) or the close is thrown away. */
    smb_writer *w = (smb_writer *)base;
    if (!w->fenced)
        writer_close(w);
    writer_free(w);
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
    /* libsmbclient's rename replaces what is at the target when it can, an empty directory
     * too (a local rename refuses that): a directory in the way is a conflict, never lost. */
    struct stat st;
    if (smbc_getFunctionStat(c)(c, to, &st) == 0 && S_ISDIR(st.st_mode))
        return EISDIR;
    if (smbc_getFunctionRename(c)(c, op->url, c, to) != 0) {
        int err = errno;
        bool there = smbc_getFunctionStat(c)(c, to, &st) == 0;
        /* Already moved by an earlier completion that crashed before it was recorded. */
        if (err == ENOENT && there && S_ISREG(st.st_mode))
            return 0;
        return there && S_ISDIR(st.st_mode) ? EISDIR : err;
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
    if (err == EISDIR || err == ENOTEMPTY)
        return cu_fail(e, CU_ECONFLICT, "Cannot complete %s: a directory is in the way", u->key);
    if (err == ENOTDIR || err == EEXIST)
        return cu_fail(e, CU_ECONFLICT,
                       "Cannot complete %s on the share: a file or directory of that name is in "
                       "the way",
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

typedef struct {
    char url[SMB_URL_MAX];
    struct statvfs st;
} statvfs_op_arg;

static int statvfs_op(smb_storage *s, SMBCCTX *c, void *arg)
{
    (void)s;
    statvfs_op_arg *op = arg;
    return smbc_getFunctionStatVFS(c)(c, op->url, &op->st) == 0 ? 0 : errno;
}

/* The share's free space as the server reports it for the staging directory (its quota
 * for this user, where it has one). */
static int smb_available(storage_t *base, int64_t *bytes, cu_error *e)
{
    smb_storage *s = (smb_storage *)base;
    statvfs_op_arg op;
    url_of(s, ".staging", op.url);
    int err = run_op(s, statvfs_op, &op);
    if (err)
        return smb_fail(e, err, "reading the free space", "-");
    /* libsmbclient fills these from the server's FileFsFullSizeInformation its own way:
     * f_bsize is the bytes per sector and f_frsize the sectors per allocation unit (not
     * bytes, as statvfs would have it), f_bavail the units this user may still take. */
    uint64_t unit = (uint64_t)op.st.f_bsize * (op.st.f_frsize ? op.st.f_frsize : 1);
    uint64_t avail = (uint64_t)op.st.f_bavail;
    *bytes = unit && avail > (uint64_t)INT64_MAX / unit ? INT64_MAX : (int64_t)(avail * unit);
    return 0;
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
    workers_stop(s);
    for (int i = 0; i < s->nidle; i++)
        smbc_free_context(s->idle[i], 1);
    pthread_mutex_destroy(&s->workers_lock);
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

static const struct storage_writer_ops smb_writer_ops = {.write = smb_writer_write,
                                                         .finish = smb_writer_finish,
                                                         .abort = smb_writer_abort,
                                                         .fence = smb_writer_fence};

static const struct storage_read_ops smb_read_ops = {
    .zero_copy = false, .stat = smb_stat, .open = smb_read_open};
static const struct storage_remove_ops smb_remove_ops = {.remove = smb_remove};
static const struct storage_concat_ops smb_concat_ops = {.concat = smb_concat};
static const struct storage_defer_ops smb_defer_ops = {.declare_length = smb_declare_length};
static const struct storage_append_ops smb_append_ops = {.open = smb_append_open};
static const struct storage_stage_read_ops smb_stage_read_ops = {.sha256 = smb_stage_sha256};
static const struct storage_space_ops smb_space_ops = {.available = smb_available};

/* ---- sweep ---- */

typedef struct {
    char id[CU_UUID_LEN + 1];
    int64_t changed_at;
} staged_entry;

typedef struct {
    staged_entry *items;
    size_t n, cap;
} staged_list;

/* Lists <SMB_PATH>/.staging: every "<uuid>.data" with its modification time. The listing is
 * collected under the lock and handed out after, so the caller may remove what it finds. */
static int list_staged_op(smb_storage *s, SMBCCTX *c, void *arg)
{
    staged_list *out = arg;
    out->n = 0;
    char dir_url[SMB_URL_MAX];
    url_of(s, ".staging", dir_url);
    SMBCFILE *dir = smbc_getFunctionOpendir(c)(c, dir_url);
    if (!dir)
        return errno == ENOENT ? 0 : errno; /* nothing staged yet */
    int err = 0;
    struct smbc_dirent *ent;
    while ((ent = smbc_getFunctionReaddir(c)(c, dir)) != NULL) {
        if (ent->smbc_type != SMBC_FILE || strlen(ent->name) != CU_UUID_LEN + 5 ||
            strcmp(ent->name + CU_UUID_LEN, ".data"))
            continue; /* anything else (the write probe, strangers) is not ours to judge */
        staged_entry e = {.changed_at = 0};
        memcpy(e.id, ent->name, CU_UUID_LEN);
        if (!util_is_uuid(e.id))
            continue;
        if (out->n == out->cap) {
            size_t cap = out->cap ? out->cap * 2 : 64;
            staged_entry *items = realloc(out->items, cap * sizeof *items);
            if (!items) {
                err = ENOMEM;
                break;
            }
            out->items = items;
            out->cap = cap;
        }
        out->items[out->n++] = e;
    }
    smbc_getFunctionClosedir(c)(c, dir);
    /* Times come from a stat of each file: a directory entry carries none. */
    for (size_t i = 0; i < out->n && !err; i++) {
        char url[SMB_URL_MAX];
        staging_url(s, out->items[i].id, url);
        struct stat st;
        if (smbc_getFunctionStat(c)(c, url, &st) == 0)
            out->items[i].changed_at = st.st_mtime;
        else if (errno != ENOENT)
            err = errno;
        else
            out->items[i].id[0] = '\0'; /* gone meanwhile */
    }
    return err;
}

static int smb_list_staged(storage_t *base, int (*fn)(void *ctx, const storage_staged *), void *ctx,
                           cu_error *e)
{
    smb_storage *s = (smb_storage *)base;
    staged_list list = {0};
    int err = run_op(s, list_staged_op, &list);
    int rc = err ? smb_fail(e, err, "listing the staging directory", "-") : 0;
    for (size_t i = 0; i < list.n && rc == 0; i++) {
        if (!list.items[i].id[0])
            continue;
        storage_staged st = {.id = list.items[i].id, .changed_at = list.items[i].changed_at};
        rc = fn(ctx, &st);
    }
    free(list.items);
    return rc;
}

static const struct storage_sweep_ops smb_sweep_ops = {.list_staged = smb_list_staged};

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
        return cu_fail_oom(err);
    s->base.ops = &smb_ops;
    s->base.name = "smb";
    s->base.read = &smb_read_ops;
    s->base.remove = &smb_remove_ops;
    s->base.concat = &smb_concat_ops;
    s->base.defer = &smb_defer_ops;
    s->base.append = &smb_append_ops;
    s->base.stage_read = &smb_stage_read_ops;
    s->base.sweep = &smb_sweep_ops;
    s->base.space = &smb_space_ops;
    /* What Windows, and so most NAS firmware, refuses in a name; "name:x" would even open an
     * alternate data stream on a Windows server. */
    s->base.forbidden_name_chars = "\\:*?\"<>|";
    s->base.allows_trailing_dot_space = false;
    pthread_mutex_init(&s->lock, NULL);
    pthread_mutex_init(&s->workers_lock, NULL);
    s->host = strdup(o->host);
    s->share = strdup(o->share);
    s->user = strdup(o->user ? o->user : "");
    s->password = strdup(o->password ? o->password : "");
    s->port = o->port;
    const char *p = o->path ? o->path : "";
    while (*p == '/' || *p == '\\')
        p++;
    s->path = strdup(p);
    if (!s->host || !s->share || !s->user || !s->password || !s->path) {
        smb_destroy(&s->base);
        return cu_fail_oom(err);
    }
    for (char *q = s->path; *q; q++)
        if (*q == '\\')
            *q = '/';
    size_t len = strlen(s->path);
    while (len && s->path[len - 1] == '/')
        s->path[--len] = '\0';
    char share_enc[1024] = "";
    util_percent_encode(share_enc, sizeof share_enc, s->share, false);
    len = strlen(s->host) + strlen(share_enc) + 32;
    if (!(s->url_base = malloc(len))) {
        smb_destroy(&s->base);
        return cu_fail_oom(err);
    }
    snprintf(s->url_base, len, "smb://%s:%d/%s", s->host, s->port, share_enc);

    /* First, while this is the process's only thread and before its first libsmbclient call:
     * what the workers copy must be nothing libsmbclient made. */
    if (o->workers > 0)
        workers_start(s, o->workers);

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
