/* local.c - local disk storage.
 *
 * Each upload gets one staging file, preallocated to its full size, under
 * <root>/.staging/<id>.data; writes are pwrite()n at their offsets as they stream in.
 * Completing renames the staging file to <root>/files/<dir>/<id>_<name> - the same
 * filesystem, so it costs the same for 1 KB as for 1 TB. Every file below the root is
 * opened without following symbolic links, and directories below files/ are opened one
 * component at a time with O_NOFOLLOW, so a symlink planted inside the tree cannot send a
 * write, a read or a file outside the storage root.
 *
 * Writes go through a buffer that belongs to the writer (so only to a request that is
 * streaming a body): the HTTP layer hands over bodies in pieces of its small per-connection
 * buffer, and one large write per DIRECT_BUFFER keeps the syscall count low. */
#include "storage/storage.h"

#include "base/log.h"
#include "base/util.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <pthread.h>
#include <sys/statvfs.h>
#include <unistd.h>

typedef struct {
    storage_t base;
    char *root; /* as configured, without a trailing slash: final paths are reported under it */
    int staging_fd;
    int files_fd;
    bool durable;
} local_storage;

/* Writes bypass the page cache: O_DIRECT writes from an aligned bounce buffer go to the disk
 * while the body streams in, so the fdatasync that acknowledges a durable write has next to
 * nothing left to do (here: 2.1 GB/s direct against 0.54 GB/s for buffered writes plus
 * fdatasync), and no CPU is spent on page-cache copies and writeback. Without durability
 * the writes are direct too, only never synced: buffered, four parts into one file
 * serialize on its inode lock, and on this VM copying into fresh page-cache pages ran at
 * about 450 MB/s (copy_folio_from_iter_atomic, perf), so 1 GiB took 3.8 s once the first
 * upload had filled the cache, against 1.9 s direct (the previous release behaved the same).
 * Slot offsets are multiples of the chunk size (whole MiB), so only the file's last few
 * bytes can be unaligned; those go through the ordinary descriptor. */
#define DIRECT_ALIGN 4096
#define WRITE_BUFFER (512 * 1024)

/* Write-behind: a direct write waits for the disk, and a request that wrote its buffers
 * itself could not take in body bytes meanwhile, so one stream (a tus PATCH, one part) ran
 * at receive time plus disk time: 256 MiB in 0.47 s here, of which 0.27 s was the disk
 * (dd with O_DIRECT). From its second buffer on, a writer hands each full buffer to a thread
 * of its own and fills the other one; the request waits only when the disk is slower than
 * the network. A writer that never fills two buffers starts no thread. */
typedef struct {
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool tried;               /* write_behind_start was called */
    bool running;             /* the thread exists */
    bool busy;                /* a buffer is handed over and not written yet */
    bool stop;                /* the thread is to end once idle */
    const unsigned char *buf; /* the buffer handed over */
    size_t len;
    int rc; /* the first failed write's -errno: the writer fails at its next step */
} write_behind;

typedef struct {
    struct storage_writer base;
    local_storage *s;
    int fd;               /* buffered descriptor (always open) */
    int direct_fd;        /* O_DIRECT descriptor, or -1 when writing through the page cache */
    unsigned char *buf;   /* the buffer being filled: WRITE_BUFFER bytes, DIRECT_ALIGN-aligned */
    unsigned char *spare; /* the other one, once write-behind runs */
    size_t buf_len;
    int64_t start;  /* the writer's first offset */
    int64_t offset; /* file offset up to which everything is written (guarded by wb.lock
                       while write-behind runs) */
    int64_t queued; /* file offset of buf[0]: what is before it is written or handed over */
    int64_t end;    /* one past the last byte it may write */
    bool append;    /* an append writer: keeps what it wrote even when cut short */
    write_behind wb;
    char id[CU_UUID_LEN + 1];
} local_writer;

typedef struct {
    struct storage_reader base;
    int fd;
    int64_t offset, end;
} local_reader;

static const struct storage_writer_ops local_writer_ops;
static const struct storage_reader_ops local_reader_ops;

static int io_fail(cu_error *e, int err, const char *what, const char *id)
{
    log_error("local storage: %s (%s): %s", what, id, strerror(err));
    if (err == ENOSPC || err == EDQUOT)
        return cu_fail(e, CU_ENOSPC, "Storage is full while %s", what);
    if (err == EFBIG)
        return cu_fail(e, CU_ETOOLARGE, "The file is too large for the storage's filesystem");
    return cu_fail(e, CU_EIO, "Storage error while %s: %s", what, strerror(err));
}

static void staging_name(const char *id, char out[64])
{
    snprintf(out, 64, "%s.data", id);
}

/* Opens an upload's staging file; ENOENT means its data is gone (cancelled, expired). */
static int open_staging(local_storage *s, const char *id, int flags)
{
    char name[64];
    staging_name(id, name);
    return openat(s->staging_fd, name, flags | O_NOFOLLOW | O_CLOEXEC, 0640);
}

/* Reserves [0, size) of fd. Reserving the space turns a full disk into a clear 507 when
 * the size becomes known instead of a failure halfway through a 10 GB upload, and keeps the
 * file unfragmented. Returns 0 or an errno value. */
static int reserve(int fd, int64_t size)
{
    if (size <= 0)
        return 0;
    int err = posix_fallocate(fd, 0, size);
    if (err == EOPNOTSUPP || err == EINVAL)
        err = ftruncate(fd, size) == 0 ? 0 : errno;
    return err;
}

static int local_stage_create(storage_t *base, const storage_upload *u, char **storage_ref,
                              cu_error *e)
{
    local_storage *s = (local_storage *)base;
    (void)storage_ref;
    int fd = open_staging(s, u->id, O_WRONLY | O_CREAT | O_EXCL);
    if (fd < 0)
        return io_fail(e, errno, "creating the staging file", u->id);
    int rc = 0, err = reserve(fd, u->total_size);
    if (err)
        rc = io_fail(e, err, "reserving space for the upload", u->id);
    else if (s->durable && (fsync(fd) != 0 || fsync(s->staging_fd) != 0))
        rc = io_fail(e, errno, "syncing the staging file", u->id);
    close(fd);
    if (rc) {
        char name[64];
        staging_name(u->id, name);
        unlinkat(s->staging_fd, name, 0);
    }
    return rc;
}

static int writer_new(local_storage *s, const storage_upload *u, int64_t offset, int64_t end,
                      bool append, storage_writer_t **out, cu_error *e)
{
    int fd = open_staging(s, u->id, O_WRONLY);
    if (fd < 0) {
        if (errno == ENOENT)
            return cu_fail(e, CU_EGONE, "The upload's data is gone (cancelled or expired)");
        return io_fail(e, errno, "opening the staging file", u->id);
    }
    local_writer *w = calloc(1, sizeof *w);
    if (!w || posix_memalign((void **)&w->buf, DIRECT_ALIGN, WRITE_BUFFER) != 0) {
        free(w);
        close(fd);
        return cu_fail_oom(e);
    }
    w->base.ops = &local_writer_ops;
    w->s = s;
    w->fd = fd;
    w->direct_fd = -1;
    w->start = w->offset = w->queued = offset;
    w->end = end;
    w->append = append;
    snprintf(w->id, sizeof w->id, "%s", u->id);
    if (offset % DIRECT_ALIGN == 0) {
        /* Filesystems without O_DIRECT (older tmpfs, some FUSE) refuse the open: then the
         * page cache it is. */
        w->direct_fd = open_staging(s, u->id, O_WRONLY | O_DIRECT);
    }
    *out = &w->base;
    return 0;
}

static int local_writer_open(storage_t *base, const storage_upload *u, int64_t offset,
                             int64_t length, storage_writer_t **out, cu_error *e)
{
    return writer_new((local_storage *)base, u, offset, offset + length, false, out, e);
}

static int local_append_open(storage_t *base, const storage_upload *u, int64_t offset,
                             storage_writer_t **out, cu_error *e)
{
    int64_t end = u->total_size >= 0 ? u->total_size : INT64_MAX;
    if (offset > end)
        return cu_fail(e, CU_EINVAL, "Offset %lld is past the end of the upload",
                       (long long)offset);
    return writer_new((local_storage *)base, u, offset, end, true, out, e);
}

/* pwrite()s all of len bytes at off. */
static int write_all(int fd, const unsigned char *p, size_t len, int64_t off)
{
    while (len > 0) {
        ssize_t n = pwrite(fd, p, len, off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += n;
        len -= (size_t)n;
        off += n;
    }
    return 0;
}

/* Writes len bytes of buf at off: with O_DIRECT their aligned head and (only at the end of
 * a write) an unaligned tail through the page cache; without, all of it through the page
 * cache. Falls back to buffered writes for good if the filesystem turns O_DIRECT down at
 * write time. Only one write of a writer runs at a time (the write-behind thread's, or the
 * writer's own once that thread is idle), so the descriptors need no lock. */
static int write_out(local_writer *w, const unsigned char *buf, size_t len, int64_t off)
{
    size_t aligned = w->direct_fd >= 0 ? len & ~(size_t)(DIRECT_ALIGN - 1) : 0;
    int rc = 0;
    if (aligned) {
        rc = write_all(w->direct_fd, buf, aligned, off);
        if (rc == -EINVAL) {
            close(w->direct_fd);
            w->direct_fd = -1;
            rc = write_all(w->fd, buf, aligned, off);
        }
    }
    if (rc == 0 && len > aligned)
        rc = write_all(w->fd, buf + aligned, len - aligned, off + (int64_t)aligned);
    return rc;
}

static void *write_behind_main(void *arg)
{
    local_writer *w = arg;
    write_behind *wb = &w->wb;
    pthread_mutex_lock(&wb->lock);
    for (;;) {
        while (!wb->busy && !wb->stop)
            pthread_cond_wait(&wb->cond, &wb->lock);
        if (!wb->busy)
            break;
        const unsigned char *buf = wb->buf;
        size_t len = wb->len;
        int64_t off = w->offset;
        pthread_mutex_unlock(&wb->lock);
        int rc = wb->rc ? wb->rc : write_out(w, buf, len, off);
        pthread_mutex_lock(&wb->lock);
        if (rc == 0)
            w->offset += (int64_t)len;
        else if (!wb->rc)
            wb->rc = rc;
        wb->busy = false;
        pthread_cond_broadcast(&wb->cond);
    }
    pthread_mutex_unlock(&wb->lock);
    return NULL;
}

/* Waits until no buffer is in flight; returns the write-behind's error, if any. */
static int write_behind_wait(local_writer *w)
{
    write_behind *wb = &w->wb;
    if (!wb->running)
        return 0;
    pthread_mutex_lock(&wb->lock);
    while (wb->busy)
        pthread_cond_wait(&wb->cond, &wb->lock);
    int rc = wb->rc;
    pthread_mutex_unlock(&wb->lock);
    return rc;
}

/* Ends the write-behind thread once its buffer is written (the writer's own writes follow). */
static void write_behind_stop(local_writer *w)
{
    write_behind *wb = &w->wb;
    if (!wb->running)
        return;
    pthread_mutex_lock(&wb->lock);
    wb->stop = true;
    pthread_cond_broadcast(&wb->cond);
    pthread_mutex_unlock(&wb->lock);
    pthread_join(wb->thread, NULL);
    pthread_mutex_destroy(&wb->lock);
    pthread_cond_destroy(&wb->cond);
    wb->running = false;
}

/* Starts write-behind for a writer that filled its first buffer: the second buffer and the
 * thread. Returns false (the writer then writes its buffers itself) when either is not to be
 * had. */
static bool write_behind_start(local_writer *w)
{
    write_behind *wb = &w->wb;
    if (posix_memalign((void **)&w->spare, DIRECT_ALIGN, WRITE_BUFFER) != 0) {
        w->spare = NULL;
        return false;
    }
    pthread_mutex_init(&wb->lock, NULL);
    pthread_cond_init(&wb->cond, NULL);
    if (pthread_create(&wb->thread, NULL, write_behind_main, w) != 0) {
        pthread_mutex_destroy(&wb->lock);
        pthread_cond_destroy(&wb->cond);
        free(w->spare);
        w->spare = NULL;
        return false;
    }
    wb->running = true;
    return true;
}

/* The buffer is full: hand it to the write-behind thread and fill the other one, or (without
 * write-behind) write it now. */
static int flush_full_buffer(local_writer *w)
{
    assert(w->buf_len == WRITE_BUFFER);
    write_behind *wb = &w->wb;
    if (!wb->tried && w->queued > w->start) {
        wb->tried = true;
        write_behind_start(w); /* when it cannot start, the writer goes on writing itself */
    }
    if (!wb->running) {
        int rc = write_out(w, w->buf, w->buf_len, w->queued);
        if (rc == 0) {
            w->offset += (int64_t)w->buf_len;
            w->queued += (int64_t)w->buf_len;
            w->buf_len = 0;
        }
        return rc;
    }
    int rc = write_behind_wait(w);
    if (rc)
        return rc;
    pthread_mutex_lock(&wb->lock);
    wb->buf = w->buf;
    wb->len = w->buf_len;
    wb->busy = true;
    pthread_cond_broadcast(&wb->cond);
    pthread_mutex_unlock(&wb->lock);
    unsigned char *next = w->spare;
    w->spare = w->buf;
    w->buf = next;
    w->queued += (int64_t)w->buf_len;
    w->buf_len = 0;
    return 0;
}

/* Writes what is handed over and what is buffered, and stops write-behind: afterwards
 * w->offset is where the written bytes end. */
static int flush_all(local_writer *w)
{
    int rc = write_behind_wait(w);
    write_behind_stop(w);
    if (rc == 0 && w->buf_len) {
        rc = write_out(w, w->buf, w->buf_len, w->queued);
        if (rc == 0) {
            w->offset += (int64_t)w->buf_len;
            w->queued += (int64_t)w->buf_len;
            w->buf_len = 0;
        }
    }
    return rc;
}

static int local_writer_write(storage_writer_t *base, const void *buf, size_t len, cu_error *e)
{
    local_writer *w = (local_writer *)base;
    /* The caller checks sizes against the upload; this guards the neighbouring slots. */
    if ((int64_t)len > w->end - w->queued - (int64_t)w->buf_len)
        return cu_fail(e, CU_EINVAL, "Write past the end of the %s", w->append ? "upload" : "part");
    const unsigned char *p = buf;
    while (len > 0) {
        size_t n = WRITE_BUFFER - w->buf_len;
        if (n > len)
            n = len;
        memcpy(w->buf + w->buf_len, p, n);
        w->buf_len += n;
        p += n;
        len -= n;
        if (w->buf_len == WRITE_BUFFER) {
            int rc = flush_full_buffer(w);
            if (rc)
                return io_fail(e, -rc, "writing", w->id);
        }
    }
    return 0;
}

static void writer_free(local_writer *w)
{
    write_behind_wait(w);
    write_behind_stop(w);
    if (w->direct_fd >= 0)
        close(w->direct_fd);
    close(w->fd);
    free(w->buf);
    free(w->spare);
    free(w);
}

static int local_writer_finish(storage_writer_t *base, const unsigned char *sha256,
                               storage_written *out, cu_error *e)
{
    local_writer *w = (local_writer *)base;
    (void)sha256;
    int rc = flush_all(w);
    if (rc)
        rc = io_fail(e, -rc, "writing", w->id);
    /* What reached the file is made durable even after a failed flush: an append keeps it. */
    if (w->offset > w->start && w->s->durable && fdatasync(w->fd) != 0 && rc == 0)
        rc = io_fail(e, errno, "syncing", w->id);
    if (rc == 0 || w->append)
        out->durable = w->offset - w->start;
    if (rc && !w->append)
        out->durable = 0;
    writer_free(w);
    return rc;
}

static void local_writer_abort(storage_writer_t *base)
{
    writer_free((local_writer *)base);
}

static const struct storage_writer_ops local_writer_ops = {
    .write = local_writer_write, .finish = local_writer_finish, .abort = local_writer_abort};

static int local_stage_sha256(storage_t *base, const storage_upload *u, unsigned char out[32],
                              cu_error *e)
{
    local_storage *s = (local_storage *)base;
    int fd = open_staging(s, u->id, O_RDONLY);
    if (fd < 0)
        return io_fail(e, errno, "opening the staging file", u->id);
    posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    size_t cap = 1 << 20;
    unsigned char *buf = malloc(cap);
    int rc = 0;
    if (!ctx || !buf || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
        rc = cu_fail_oom(e);
        goto out;
    }
    int64_t left = u->total_size, off = 0;
    while (left > 0) {
        ssize_t n = pread(fd, buf, left < (int64_t)cap ? (size_t)left : cap, off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            rc = io_fail(e, n < 0 ? errno : EIO, "reading the staging file", u->id);
            goto out;
        }
        EVP_DigestUpdate(ctx, buf, (size_t)n);
        off += n;
        left -= n;
    }
    EVP_DigestFinal_ex(ctx, out, NULL);
out:
    EVP_MD_CTX_free(ctx);
    free(buf);
    close(fd);
    return rc;
}

/* Opens the directory dir (dir_len bytes, '/'-separated, already checked by the filename
 * policy) below files/, creating missing components when create. Returns a directory fd or
 * -errno. */
static int open_final_dir(local_storage *s, const char *dir, size_t dir_len, bool create)
{
    int fd = dup(s->files_fd);
    size_t start = 0;
    while (fd >= 0 && start < dir_len) {
        const char *slash = memchr(dir + start, '/', dir_len - start);
        size_t end = slash ? (size_t)(slash - dir) : dir_len;
        char comp[256];
        size_t clen = end - start;
        if (clen == 0 || clen >= sizeof comp) {
            close(fd);
            return -EINVAL;
        }
        memcpy(comp, dir + start, clen);
        comp[clen] = '\0';
        bool created = false;
        if (create) {
            if (mkdirat(fd, comp, 0750) == 0)
                created = true;
            else if (errno != EEXIST) {
                int err = errno;
                close(fd);
                return -err;
            }
        }
        int next = openat(fd, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        int err = errno;
        if (created && s->durable)
            fsync(fd);
        close(fd);
        if (next < 0)
            return -err;
        fd = next;
        start = end + 1;
    }
    return fd < 0 ? -errno : fd;
}

/* Splits key into its directory (opened, created when create) and leaf. Returns a
 * directory fd or -errno. */
static int open_key_dir(local_storage *s, const char *key, bool create, const char **leaf)
{
    const char *slash = strrchr(key, '/');
    *leaf = slash ? slash + 1 : key;
    return open_final_dir(s, key, slash ? (size_t)(slash - key) : 0, create);
}

static int local_finish(storage_t *base, const storage_upload *u, const storage_chunk *chunks,
                        int nchunks, char **final_path, cu_error *e)
{
    local_storage *s = (local_storage *)base;
    (void)chunks, (void)nchunks;
    const char *leaf;
    int dirfd = open_key_dir(s, u->key, true, &leaf);
    if (dirfd < 0) {
        log_error("local storage: creating directory for %s: %s", u->key, strerror(-dirfd));
        if (dirfd == -ENOTDIR || dirfd == -ELOOP || dirfd == -EEXIST)
            return cu_fail(e, CU_ECONFLICT,
                           "Cannot create the directory for %s: a file of that name is in the way",
                           u->key);
        return io_fail(e, -dirfd, "creating the destination directory", u->id);
    }
    char name[64];
    staging_name(u->id, name);
    int rc = 0;
    if (renameat(s->staging_fd, name, dirfd, leaf) != 0) {
        int err = errno;
        struct stat st;
        /* Already moved by an earlier completion that crashed before it was recorded. */
        if (!(err == ENOENT && fstatat(dirfd, leaf, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
              S_ISREG(st.st_mode))) {
            rc = err == EISDIR || err == ENOTEMPTY
                     ? cu_fail(e, CU_ECONFLICT, "Cannot complete %s: a directory is in the way",
                               u->key)
                     : io_fail(e, err, "moving the file into place", u->id);
            goto out;
        }
    }
    if (s->durable && (fsync(dirfd) != 0 || fsync(s->staging_fd) != 0)) {
        rc = io_fail(e, errno, "syncing the destination directory", u->id);
        goto out;
    }
    if (asprintf(final_path, "%s/files/%s", s->root, u->key) < 0) {
        *final_path = NULL;
        rc = cu_fail_oom(e);
    }
out:
    close(dirfd);
    return rc;
}

static int local_abort(storage_t *base, const storage_upload *u, cu_error *e)
{
    local_storage *s = (local_storage *)base;
    char name[64];
    staging_name(u->id, name);
    if (unlinkat(s->staging_fd, name, 0) != 0 && errno != ENOENT)
        return io_fail(e, errno, "removing the staging file", u->id);
    return 0;
}

/* ---- capabilities ---- */

/* Opens the finished file at key for reading (-errno on failure). */
static int open_final(local_storage *s, const char *key)
{
    const char *leaf;
    int dirfd = open_key_dir(s, key, false, &leaf);
    if (dirfd < 0)
        return dirfd;
    int fd = openat(dirfd, leaf, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    int err = errno;
    close(dirfd);
    return fd < 0 ? -err : fd;
}

static int final_fail(cu_error *e, int err, const char *key)
{
    if (err == ENOENT || err == ENOTDIR || err == ELOOP)
        return cu_fail(e, CU_ENOTFOUND, "File not found in storage");
    return io_fail(e, err, "opening a file", key);
}

static int local_stat(storage_t *base, const char *key, storage_file_info *out, cu_error *e)
{
    int fd = open_final((local_storage *)base, key);
    if (fd < 0)
        return final_fail(e, -fd, key);
    struct stat st;
    int rc = fstat(fd, &st) != 0    ? io_fail(e, errno, "reading a file's size", key)
             : !S_ISREG(st.st_mode) ? cu_fail(e, CU_ENOTFOUND, "File not found in storage")
                                    : 0;
    if (rc == 0) {
        out->size = st.st_size;
        out->mtime = st.st_mtim.tv_sec;
    }
    close(fd);
    return rc;
}

static int local_read_open(storage_t *base, const char *key, int64_t offset, int64_t length,
                           storage_reader_t **out, cu_error *e)
{
    int fd = open_final((local_storage *)base, key);
    if (fd < 0)
        return final_fail(e, -fd, key);
    local_reader *r = calloc(1, sizeof *r);
    if (!r) {
        close(fd);
        return cu_fail_oom(e);
    }
    r->base.ops = &local_reader_ops;
    r->fd = fd;
    r->offset = offset;
    r->end = offset + length;
    posix_fadvise(fd, offset, length, POSIX_FADV_SEQUENTIAL);
    *out = &r->base;
    return 0;
}

static ssize_t local_read(storage_reader_t *base, void *buf, size_t cap, cu_error *e)
{
    local_reader *r = (local_reader *)base;
    if ((int64_t)cap > r->end - r->offset)
        cap = (size_t)(r->end - r->offset);
    if (cap == 0)
        return 0;
    for (;;) {
        ssize_t n = pread(r->fd, buf, cap, r->offset);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return io_fail(e, errno, "reading a file", "-");
        if (n == 0)
            return cu_fail(e, CU_EIO, "The file is shorter than recorded");
        r->offset += n;
        return n;
    }
}

static int local_reader_fd(storage_reader_t *base, int *fd, int64_t *offset)
{
    local_reader *r = (local_reader *)base;
    *fd = r->fd;
    *offset = r->offset;
    return 0;
}

static void local_reader_close(storage_reader_t *base)
{
    local_reader *r = (local_reader *)base;
    close(r->fd);
    free(r);
}

static const struct storage_reader_ops local_reader_ops = {
    .read = local_read, .fd = local_reader_fd, .close = local_reader_close};

static int local_remove(storage_t *base, const char *key, cu_error *e)
{
    local_storage *s = (local_storage *)base;
    const char *leaf;
    int dirfd = open_key_dir(s, key, false, &leaf);
    if (dirfd == -ENOENT)
        return 0;
    if (dirfd < 0)
        return io_fail(e, -dirfd, "opening a file's directory", key);
    int rc = 0;
    if (unlinkat(dirfd, leaf, 0) != 0 && errno != ENOENT)
        rc = io_fail(e, errno, "removing a file", key);
    else if (s->durable)
        fsync(dirfd);
    close(dirfd);
    return rc;
}

/* Copies len bytes from in (at in_off) to out (at out_off) inside the kernel: a reflink
 * or server-side copy where the filesystem has one, never through this process. */
static int copy_range(int in, int64_t in_off, int out, int64_t out_off, int64_t len)
{
    loff_t ioff = in_off, ooff = out_off;
    while (len > 0) {
        size_t want = len > (int64_t)1 << 30 ? (size_t)1 << 30 : (size_t)len;
        ssize_t n = copy_file_range(in, &ioff, out, &ooff, want, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            return -EIO; /* the source is shorter than recorded */
        len -= n;
    }
    return 0;
}

static int local_concat(storage_t *base, const storage_upload *dst, const storage_source *srcs,
                        int n, storage_written *out, cu_error *e)
{
    local_storage *s = (local_storage *)base;
    int fd = open_staging(s, dst->id, O_WRONLY);
    if (fd < 0)
        return io_fail(e, errno, "opening the staging file", dst->id);
    int rc = 0;
    int64_t at = 0;
    for (int i = 0; rc == 0 && i < n; i++) {
        int in = open_staging(s, srcs[i].upload.id, O_RDONLY);
        if (in < 0) {
            rc = errno == ENOENT
                     ? cu_fail(e, CU_EGONE, "The data of upload %s is gone", srcs[i].upload.id)
                     : io_fail(e, errno, "opening a partial upload", srcs[i].upload.id);
            break;
        }
        int err = -copy_range(in, 0, fd, at, srcs[i].upload.total_size);
        close(in);
        if (err)
            rc = io_fail(e, err, "concatenating uploads", dst->id);
        at += srcs[i].upload.total_size;
    }
    if (rc == 0 && s->durable && fdatasync(fd) != 0)
        rc = io_fail(e, errno, "syncing", dst->id);
    close(fd);
    if (rc == 0)
        out->durable = at;
    return rc;
}

static int local_declare_length(storage_t *base, const storage_upload *u, int64_t total_size,
                                cu_error *e)
{
    local_storage *s = (local_storage *)base;
    int fd = open_staging(s, u->id, O_WRONLY);
    if (fd < 0)
        return errno == ENOENT
                   ? cu_fail(e, CU_EGONE, "The upload's data is gone (cancelled or expired)")
                   : io_fail(e, errno, "opening the staging file", u->id);
    int err = reserve(fd, total_size);
    int rc = err ? io_fail(e, err, "reserving space for the upload", u->id) : 0;
    close(fd);
    return rc;
}

static int local_available(storage_t *base, int64_t *bytes, cu_error *e)
{
    local_storage *s = (local_storage *)base;
    struct statvfs st;
    if (fstatvfs(s->staging_fd, &st) != 0)
        return io_fail(e, errno, "reading the free space", "-");
    *bytes = (int64_t)st.f_bavail * (int64_t)st.f_frsize;
    return 0;
}

static int local_list_staged(storage_t *base, int (*fn)(void *ctx, const storage_staged *),
                             void *ctx, cu_error *e)
{
    local_storage *s = (local_storage *)base;
    int fd = openat(s->staging_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        if (fd >= 0)
            close(fd);
        return io_fail(e, errno, "listing the staging directory", "-");
    }
    int rc = 0;
    struct dirent *ent;
    while (rc == 0 && (ent = readdir(d)) != NULL) {
        /* "<uuid>.data": anything else (the write probe, strangers) is not ours to judge */
        char id[CU_UUID_LEN + 1];
        if (strlen(ent->d_name) != CU_UUID_LEN + 5 || strcmp(ent->d_name + CU_UUID_LEN, ".data"))
            continue;
        memcpy(id, ent->d_name, CU_UUID_LEN);
        id[CU_UUID_LEN] = '\0';
        struct stat st;
        if (!util_is_uuid(id) || fstatat(s->staging_fd, ent->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0)
            continue;
        storage_staged staged = {.id = id, .changed_at = st.st_mtim.tv_sec};
        rc = fn(ctx, &staged);
    }
    closedir(d);
    return rc;
}

static void local_destroy(storage_t *base)
{
    local_storage *s = (local_storage *)base;
    if (s->staging_fd >= 0)
        close(s->staging_fd);
    if (s->files_fd >= 0)
        close(s->files_fd);
    free(s->root);
    free(s);
}

static const struct storage_ops local_ops = {
    .stage_create = local_stage_create,
    .writer_open = local_writer_open,
    .finish = local_finish,
    .abort = local_abort,
    .destroy = local_destroy,
};
static const struct storage_read_ops local_read_ops = {
    .zero_copy = true, .stat = local_stat, .open = local_read_open};
static const struct storage_remove_ops local_remove_ops = {.remove = local_remove};
static const struct storage_concat_ops local_concat_ops = {.concat = local_concat};
static const struct storage_defer_ops local_defer_ops = {.declare_length = local_declare_length};
static const struct storage_append_ops local_append_ops = {.open = local_append_open};
static const struct storage_stage_read_ops local_stage_read_ops = {.sha256 = local_stage_sha256};
static const struct storage_space_ops local_space_ops = {.available = local_available};
static const struct storage_sweep_ops local_sweep_ops = {.list_staged = local_list_staged};

static int open_subdir(int parent, const char *name)
{
    if (mkdirat(parent, name, 0750) != 0 && errno != EEXIST)
        return -1;
    return openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
}

int storage_local_open(const char *root, bool durable, storage_t **out, cu_error *err)
{
    local_storage *s = calloc(1, sizeof *s);
    if (!s)
        return cu_fail_oom(err);
    s->base.ops = &local_ops;
    s->base.read = &local_read_ops;
    s->base.remove = &local_remove_ops;
    s->base.concat = &local_concat_ops;
    s->base.defer = &local_defer_ops;
    s->base.append = &local_append_ops;
    s->base.stage_read = &local_stage_read_ops;
    s->base.space = &local_space_ops;
    s->base.sweep = &local_sweep_ops;
    s->base.name = "local";
    s->base.allows_trailing_dot_space = true;
    s->durable = durable;
    s->staging_fd = s->files_fd = -1;
    s->root = strdup(root);
    if (!s->root) {
        free(s);
        return cu_fail_oom(err);
    }
    size_t len = strlen(s->root);
    while (len > 1 && s->root[len - 1] == '/')
        s->root[--len] = '\0';

    int rc = util_mkdir_p(s->root, 0750);
    int rootfd = -1;
    if (rc == 0) {
        rootfd = open(s->root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        rc = rootfd < 0 ? -errno : 0;
    }
    if (rc == 0) {
        s->staging_fd = open_subdir(rootfd, ".staging");
        s->files_fd = s->staging_fd < 0 ? -1 : open_subdir(rootfd, "files");
        rc = s->files_fd < 0 ? -errno : 0;
    }
    if (rc == 0) {
        /* Root bypasses permission bits, so probe with a real file instead of access(). */
        int fd = openat(s->staging_fd, ".probe",
                        O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
        rc = fd < 0 ? -errno : 0;
        if (fd >= 0) {
            if (write(fd, "x", 1) != 1)
                rc = -errno;
            close(fd);
            unlinkat(s->staging_fd, ".probe", 0);
        }
    }
    if (rootfd >= 0)
        close(rootfd);
    if (rc != 0) {
        cu_fail(err, CU_EIO, "LOCAL_STORAGE_PATH: %s is not a writable directory: %s", root,
                strerror(-rc));
        local_destroy(&s->base);
        return CU_EIO;
    }
    *out = &s->base;
    return 0;
}
