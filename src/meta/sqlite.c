/* sqlite.c - the embedded metadata store (SQLite in WAL mode).
 *
 * One connection writes and a pool of connections reads. SQLite lets one writer in at a
 * time whatever we do, and handing the one writer connection over with a mutex is fast
 * and fair, where several writer connections would wait on SQLite's busy handler, which
 * sleeps in steps of milliseconds. Readers never block the writer (WAL) and have enough
 * connections that a request thread rarely waits for one: with 4 shared connections, 64
 * concurrent status requests spent most of their time switching threads on the pool
 * (perf), at 8,000 requests/s. Every statement is prepared once per connection and kept.
 * With fsync on, synchronous=FULL syncs the WAL at every commit, so a part is on disk in
 * the database before it is acknowledged. */
#include "meta/meta.h"

#include "base/log.h"
#include "meta/migrations.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>

#define READERS 16
/* How long a writer waits for another process holding the database before it gives up and
 * answers "busy" (503) rather than holding a request for longer. */
#define BUSY_TIMEOUT_MS 10000
/* Free bytes on a database's disk that count as room again after it was found full. */
#define FULL_ROOM_BYTES ((int64_t)1 << 20)

#define UPLOAD_COLUMNS                                                                             \
    "id, protocol, owner, client_key, filename, content_type, metadata, total_size, chunk_size, "  \
    "layout, total_parts, uploaded_parts, durable_offset, state, checksum_sha256, webhook_url, "   \
    "storage_ref, final_path, concat_of, partial, created_at, expires_at, completed_at, "          \
    "detected_type, failure_code, failure_reason, sha256, completed_seq"
#define PART_COLUMNS "part, state, size, checksum_sha256, token_sha256, storage_ref"

typedef enum {
    S_BEGIN_WRITE,
    S_BEGIN_READ,
    S_COMMIT,
    S_ROLLBACK,
    S_UPLOAD_INSERT,
    S_PART_INSERT,
    S_UPLOAD_GET,
    S_UPLOAD_FIND,
    S_PARTS_LIST,
    S_PART_GET,
    S_PART_STORE,
    S_UPLOAD_COUNT_PART,
    S_STREAM_ADVANCE,
    S_CHUNK_PUT,
    S_DECLARE_LENGTH,
    S_TRANSITION,
    S_COMPLETE,
    S_WEBHOOK_QUEUE,
    S_END,
    S_SET_TYPE,
    S_PARTS_FORGET,
    S_DUE,
    S_TO_PURGE,
    S_MARK_PURGED,
    S_FILES,
    S_WEBHOOKS_DUE,
    S_WEBHOOK_NEXT,
    S_WEBHOOK_CLAIM,
    S_WEBHOOK_RELEASE,
    S_WEBHOOK_RESULT,
    S_OWNER_USAGE,
    S_PRUNE_PARTS,
    S_PRUNE_UPLOADS,
    S_PRUNE_WEBHOOKS,
    S_PRUNE_TOKENS,
    S_RESERVED_OF,
    S_COUNT
} stmt_id;

static const char *const stmt_sql[S_COUNT] = {
    [S_BEGIN_WRITE] = "BEGIN IMMEDIATE",
    [S_BEGIN_READ] = "BEGIN",
    [S_COMMIT] = "COMMIT",
    [S_ROLLBACK] = "ROLLBACK",
    [S_UPLOAD_INSERT] = "INSERT INTO uploads (" UPLOAD_COLUMNS ") VALUES "
                        "(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
    [S_PART_INSERT] = "INSERT INTO parts (upload_id, part, state, size, token_sha256) "
                      "VALUES (?,?,'pending',?,?)",
    [S_UPLOAD_GET] = "SELECT " UPLOAD_COLUMNS " FROM uploads WHERE id = ?",
    [S_UPLOAD_FIND] = "SELECT " UPLOAD_COLUMNS " FROM uploads WHERE owner IS ? AND protocol = ? "
                      "AND client_key = ? AND state IN ('pending', 'finalizing')",
    [S_PARTS_LIST] = "SELECT " PART_COLUMNS " FROM parts WHERE upload_id = ? ORDER BY part",
    [S_PART_GET] = "SELECT " PART_COLUMNS " FROM parts WHERE upload_id = ? AND part = ?",
    [S_PART_STORE] = "UPDATE parts SET state = 'uploaded', size = ?1, checksum_sha256 = ?2, "
                     "storage_ref = ?3, uploaded_at = strftime('%s','now') "
                     "WHERE upload_id = ?4 AND part = ?5 AND state = 'pending' AND "
                     "(SELECT state FROM uploads WHERE id = ?4) = 'pending'",
    [S_UPLOAD_COUNT_PART] = "UPDATE uploads SET uploaded_parts = uploaded_parts + 1 WHERE id = ? "
                            "RETURNING uploaded_parts",
    [S_STREAM_ADVANCE] = "UPDATE uploads SET durable_offset = ?1 WHERE id = ?2 AND "
                         "durable_offset = ?3 AND state = 'pending' AND layout = 'stream'",
    [S_CHUNK_PUT] = "INSERT OR REPLACE INTO parts (upload_id, part, state, size, checksum_sha256, "
                    "storage_ref, uploaded_at) VALUES (?,?,'uploaded',?,?,?,strftime('%s','now'))",
    [S_DECLARE_LENGTH] = "UPDATE uploads SET total_size = ?1 WHERE id = ?2 AND total_size IS NULL "
                         "AND state = 'pending'",
    [S_TRANSITION] = "UPDATE uploads SET state = ? WHERE id = ? AND state = ?",
    [S_COMPLETE] = "UPDATE uploads SET state = 'complete', final_path = ?, completed_at = ?, "
                   "sha256 = ?, completed_seq = (SELECT COALESCE(MAX(completed_seq), 0) + 1 FROM "
                   "uploads) WHERE id = ? AND state = 'finalizing'",
    [S_WEBHOOK_QUEUE] = "INSERT INTO webhooks (upload_id, url, body, next_attempt_at) "
                        "SELECT id, webhook_url, ?, ? FROM uploads WHERE id = ? AND "
                        "webhook_url IS NOT NULL",
    [S_END] = "UPDATE uploads SET state = ?1, failure_code = ?4, failure_reason = ?5, "
              "data_removed = 0, ended_at = strftime('%s','now') WHERE id = ?2 AND state = ?3",
    [S_SET_TYPE] = "UPDATE uploads SET detected_type = ? WHERE id = ? AND state = 'pending'",
    [S_PARTS_FORGET] = "DELETE FROM parts WHERE upload_id = ?",
    [S_DUE] = "SELECT " UPLOAD_COLUMNS " FROM uploads WHERE (state = 'pending' OR "
              "(state = 'complete' AND partial = 1)) AND expires_at <= ? ORDER BY expires_at "
              "LIMIT ?",
    [S_TO_PURGE] = "SELECT " UPLOAD_COLUMNS " FROM uploads WHERE state IN ('failed', "
                   "'cancelled', 'expired', 'deleted') AND data_removed = 0 LIMIT ?",
    [S_MARK_PURGED] = "UPDATE uploads SET data_removed = 1 WHERE id = ?",
    [S_FILES] = "SELECT " UPLOAD_COLUMNS " FROM uploads WHERE state = 'complete' AND partial = 0 "
                "AND (?1 IS NULL OR owner = ?1) "
                "AND (?2 IS NULL OR substr(filename, 1, length(?2)) = ?2) "
                "AND (?3 = 0 OR completed_seq < ?3) ORDER BY completed_seq DESC LIMIT ?4",
    [S_WEBHOOKS_DUE] = "SELECT id, upload_id, url, body, attempts, next_attempt_at, "
                       "COALESCE(claimed_until, 0) FROM webhooks "
                       "WHERE delivered_at IS NULL AND gave_up_at IS NULL AND "
                       "next_attempt_at <= ?1 AND (claimed_until IS NULL OR claimed_until <= ?1) "
                       "AND (?2 IS NULL OR (next_attempt_at, id) > (?2, ?3)) "
                       "ORDER BY next_attempt_at, id LIMIT ?4",
    /* A claimed delivery falls due again when its lease runs out. */
    [S_WEBHOOK_NEXT] = "SELECT MIN(MAX(next_attempt_at, COALESCE(claimed_until, 0))) FROM webhooks "
                       "WHERE delivered_at IS NULL AND gave_up_at IS NULL AND "
                       "MAX(next_attempt_at, COALESCE(claimed_until, 0)) > ?",
    [S_WEBHOOK_CLAIM] = "UPDATE webhooks SET claimed_until = ?1 WHERE id = ?2 AND "
                        "delivered_at IS NULL AND gave_up_at IS NULL AND next_attempt_at <= ?3 "
                        "AND (claimed_until IS NULL OR claimed_until <= ?3) RETURNING attempts",
    [S_WEBHOOK_RELEASE] = "UPDATE webhooks SET claimed_until = NULL WHERE id = ? AND "
                          "claimed_until = ?",
    [S_OWNER_USAGE] = "SELECT COUNT(*), COALESCE(SUM(total_size), 0) FROM uploads WHERE owner IS ? "
                      "AND state IN ('pending', 'finalizing')",
    [S_RESERVED_OF] = "SELECT owner FROM uploads WHERE id = ?",
    [S_PRUNE_PARTS] = "DELETE FROM parts WHERE upload_id IN (SELECT id FROM uploads WHERE state IN "
                      "('failed', 'cancelled', 'expired', 'deleted') AND data_removed = 1 AND "
                      "COALESCE(ended_at, expires_at) < ?1)",
    [S_PRUNE_UPLOADS] = "DELETE FROM uploads WHERE state IN ('failed', 'cancelled', 'expired', "
                        "'deleted') AND data_removed = 1 AND COALESCE(ended_at, expires_at) < ?1",
    [S_PRUNE_WEBHOOKS] = "DELETE FROM webhooks WHERE COALESCE(delivered_at, gave_up_at) < ?1",
    /* A complete file keeps its record and its parts' sizes and digests (status shows them)
     * as long as the file exists; the digests of the credentials that wrote them are no use
     * once it is complete. */
    [S_PRUNE_TOKENS] = "UPDATE parts SET token_sha256 = NULL WHERE token_sha256 IS NOT NULL AND "
                       "upload_id IN (SELECT id FROM uploads WHERE state = 'complete' AND "
                       "completed_at < ?1)",
    [S_WEBHOOK_RESULT] =
        "UPDATE webhooks SET attempts = attempts + 1, next_attempt_at = ?1, last_error = ?2, "
        "delivered_at = CASE WHEN ?3 THEN strftime('%s','now') END, "
        "gave_up_at = CASE WHEN ?4 THEN strftime('%s','now') END, claimed_until = NULL "
        "WHERE id = ?5 AND claimed_until = ?6 AND delivered_at IS NULL AND gave_up_at IS NULL",
};

typedef struct {
    sqlite3 *db;
    sqlite3_stmt *stmts[S_COUNT];
} conn;

/* Whether the database's files can be used, as the last look found them. */
enum { FILES_OK, FILES_NO_WRITES, FILES_UNUSABLE };

typedef struct {
    meta_t base;
    char *path, *wal_path, *shm_path;
    atomic_int files; /* FILES_*: what the last look at the files found (for the log) */
    atomic_bool full; /* the last write found the disk full, and none has worked since */
    conn writer;
    pthread_mutex_t write_lock;
    conn readers[READERS];
    bool reader_busy[READERS];
    pthread_mutex_t read_lock;
    pthread_cond_t read_free;
} sqlite_meta;

/* ---- connections and statements ---- */

/* The error for a failed call on c. Busy (503), full (507) and read-only (503) are the
 * caller's to answer, and logged once there (the access log); anything else is logged here
 * with SQLite's own words. An I/O error is judged by the system's errno under it: a full
 * disk is full whatever SQLite called it, a refused write is a file that cannot be written. */
static int db_fail(conn *c, cu_error *e, const char *what)
{
    int code = sqlite3_errcode(c->db), ext = sqlite3_extended_errcode(c->db);
    int sys = code == SQLITE_IOERR || code == SQLITE_CANTOPEN ? sqlite3_system_errno(c->db) : 0;
    if (code == SQLITE_BUSY || code == SQLITE_LOCKED)
        return cu_fail(e, CU_EBUSY, "The database is busy (held by another process) while %s",
                       what);
    if (code == SQLITE_FULL || sys == ENOSPC || sys == EDQUOT)
        return cu_fail(e, CU_ENOSPC, "The database's disk is full while %s", what);
    if (code == SQLITE_READONLY || sys == EPERM || sys == EACCES || sys == EROFS)
        return cu_fail(e, CU_EBUSY,
                       "The database cannot be written (%s%s%s) while %s; check DATABASE_PATH's "
                       "files and permissions",
                       sqlite3_errstr(ext), sys ? ": " : "", sys ? strerror(sys) : "", what);
    if (code == SQLITE_NOMEM || ext == SQLITE_IOERR_NOMEM)
        return cu_fail_oom(e);
    log_error("database: %s: %s (%s%s%s)", what, sqlite3_errmsg(c->db), sqlite3_errstr(ext),
              sys ? ": " : "", sys ? strerror(sys) : "");
    return cu_fail(e, CU_EIO, "Database error while %s", what);
}

/* Whether path's file is immutable or append-only (chattr +i / +a): a missing one is not. */
static bool file_frozen(const char *path)
{
    struct statx sx;
    if (statx(AT_FDCWD, path, AT_SYMLINK_NOFOLLOW, 0, &sx) != 0)
        return false;
    uint64_t frozen = STATX_ATTR_IMMUTABLE | STATX_ATTR_APPEND;
    return (sx.stx_attributes & sx.stx_attributes_mask & frozen) != 0;
}

/* Refuses a transaction the database's files cannot take now. SQLite maps the WAL index
 * (the -shm file) into memory and every transaction, reads too, writes to it: once that
 * file is immutable, the kernel answers such a write with SIGBUS, which would kill the
 * server. So it is looked at before every transaction (a statx, about a microsecond), and
 * the database and its WAL before every write, which would fail anyway; a change is logged
 * once. What this cannot see is a file made immutable in the middle of a transaction. */
static int check_files(sqlite_meta *m, bool write, const char *what, cu_error *e)
{
    const char *frozen = file_frozen(m->shm_path) ? m->shm_path : NULL;
    int state = frozen ? FILES_UNUSABLE : FILES_OK;
    if (!frozen && write) {
        frozen = file_frozen(m->wal_path) ? m->wal_path : file_frozen(m->path) ? m->path : NULL;
        state = frozen ? FILES_NO_WRITES : FILES_OK;
    }
    if (write || frozen) { /* a read sees only the -shm: it cannot say the others are fine */
        int was = atomic_exchange(&m->files, state);
        if (was != state && frozen)
            log_error("database: %s is immutable or append-only (chattr): %s refused until it "
                      "is not",
                      frozen, state == FILES_UNUSABLE ? "every request" : "every write");
        else if (was != state)
            log_info("database: its files can be written again");
    }
    if (!frozen)
        return 0;
    return cu_fail(e, CU_EBUSY,
                   "The database cannot be written (%s is immutable or append-only) while %s; "
                   "check DATABASE_PATH's files",
                   frozen, what);
}

/* The prepared statement `which` on c, reset and unbound; NULL when it cannot be prepared
 * (logged). Statements stay prepared for the connection's life. */
static sqlite3_stmt *stmt(conn *c, stmt_id which)
{
    sqlite3_stmt *st = c->stmts[which];
    if (!st) {
        if (sqlite3_prepare_v3(c->db, stmt_sql[which], -1, SQLITE_PREPARE_PERSISTENT, &st, NULL) !=
            SQLITE_OK) {
            log_error("database: preparing \"%s\": %s", stmt_sql[which], sqlite3_errmsg(c->db));
            return NULL;
        }
        c->stmts[which] = st;
    }
    return st;
}

/* Resets st for its next use. */
static void done(sqlite3_stmt *st)
{
    if (st) {
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
    }
}

/* Runs a statement that returns no rows; returns the rows changed, or -1. */
static int run(conn *c, sqlite3_stmt *st)
{
    int rc = st && sqlite3_step(st) == SQLITE_DONE ? sqlite3_changes(c->db) : -1;
    done(st);
    return rc;
}

static void bind_text(sqlite3_stmt *st, int idx, const char *s)
{
    if (s)
        sqlite3_bind_text(st, idx, s, -1, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(st, idx);
}

static void conn_close(conn *c)
{
    for (int i = 0; i < S_COUNT; i++)
        sqlite3_finalize(c->stmts[i]);
    sqlite3_close(c->db);
    memset(c, 0, sizeof *c);
}

static conn *reader_get(sqlite_meta *m)
{
    pthread_mutex_lock(&m->read_lock);
    for (;;) {
        for (int i = 0; i < READERS; i++) {
            if (!m->reader_busy[i]) {
                m->reader_busy[i] = true;
                pthread_mutex_unlock(&m->read_lock);
                return &m->readers[i];
            }
        }
        pthread_cond_wait(&m->read_free, &m->read_lock);
    }
}

static void reader_put(sqlite_meta *m, conn *c)
{
    pthread_mutex_lock(&m->read_lock);
    m->reader_busy[c - m->readers] = false;
    pthread_cond_signal(&m->read_free);
    pthread_mutex_unlock(&m->read_lock);
}

/* ---- transactions ---- */

/* A transaction's work: 0 to commit, a cu_code (with e filled) to roll back. */
typedef int (*tx_body)(conn *c, void *arg, cu_error *e);

typedef enum {
    TX_WRITE,    /* on the writer, BEGIN IMMEDIATE ... COMMIT */
    TX_SNAPSHOT, /* on a reader, several statements that must see one instant */
    TX_READ_ONE  /* on a reader, one statement (its own implicit transaction) */
} tx_kind;

/* Runs body in one transaction, with the BEGIN/COMMIT/ROLLBACK frame every operation
 * shares. */
static int in_tx(sqlite_meta *m, tx_kind kind, const char *what, tx_body body, void *arg,
                 cu_error *e)
{
    bool write = kind == TX_WRITE;
    int frc = check_files(m, write, what, e);
    if (frc)
        return frc;
    conn *c;
    if (write) {
        /* A writer waits at most BUSY_TIMEOUT_MS in all: for the writer connection here, and
         * then for SQLite's lock (another process may hold it) with what is left. */
        struct timespec start, until;
        clock_gettime(CLOCK_MONOTONIC, &start);
        until = start;
        until.tv_sec += BUSY_TIMEOUT_MS / 1000;
        if (pthread_mutex_clocklock(&m->write_lock, CLOCK_MONOTONIC, &until) != 0)
            return cu_fail(e, CU_EBUSY, "The database is busy (held by another process) while %s",
                           what);
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        int64_t left = BUSY_TIMEOUT_MS - ((now.tv_sec - start.tv_sec) * 1000 +
                                          (now.tv_nsec - start.tv_nsec) / 1000000);
        c = &m->writer;
        sqlite3_busy_timeout(c->db, left > 1 ? (int)left : 1);
    } else {
        c = reader_get(m);
    }
    if (kind == TX_READ_ONE) {
        int rc = body(c, arg, e);
        reader_put(m, c);
        return rc;
    }
    int rc = run(c, stmt(c, write ? S_BEGIN_WRITE : S_BEGIN_READ)) < 0 ? db_fail(c, e, what) : 0;
    if (rc == 0) {
        rc = body(c, arg, e);
        if (rc == 0 && run(c, stmt(c, S_COMMIT)) < 0)
            rc = db_fail(c, e, what);
        if (rc != 0 && !sqlite3_get_autocommit(c->db))
            run(c, stmt(c, S_ROLLBACK));
    }
    if (write) {
        /* A write that worked shows there is room; one that found the disk full says there
         * is none until one works again (or the check finds space, see sq_check). */
        if (rc == 0 || rc == CU_ENOSPC)
            atomic_store(&m->full, rc == CU_ENOSPC);
        pthread_mutex_unlock(&m->write_lock);
    } else {
        reader_put(m, c);
    }
    return rc;
}

/* ---- rows ---- */

static char *column_dup(sqlite3_stmt *st, int col)
{
    const unsigned char *s = sqlite3_column_text(st, col);
    return s ? strdup((const char *)s) : NULL;
}

static void read_upload(sqlite3_stmt *st, meta_upload *u)
{
    memset(u, 0, sizeof *u);
    snprintf(u->id, sizeof u->id, "%s", (const char *)sqlite3_column_text(st, 0));
    snprintf(u->protocol, sizeof u->protocol, "%s", (const char *)sqlite3_column_text(st, 1));
    u->owner = column_dup(st, 2);
    u->client_key = column_dup(st, 3);
    u->filename = column_dup(st, 4);
    u->content_type = column_dup(st, 5);
    u->metadata = column_dup(st, 6);
    u->total_size = sqlite3_column_type(st, 7) == SQLITE_NULL ? -1 : sqlite3_column_int64(st, 7);
    u->chunk_size = sqlite3_column_int64(st, 8);
    const char *layout = (const char *)sqlite3_column_text(st, 9);
    u->layout = layout && !strcmp(layout, "stream") ? UPLOAD_LAYOUT_STREAM : UPLOAD_LAYOUT_SLOTS;
    u->total_parts = sqlite3_column_int(st, 10);
    u->uploaded_parts = sqlite3_column_int(st, 11);
    u->durable_offset = sqlite3_column_int64(st, 12);
    int s = upload_state_parse((const char *)sqlite3_column_text(st, 13));
    u->state = s < 0 ? UPLOAD_FAILED : (upload_state)s;
    u->checksum_sha256 = column_dup(st, 14);
    u->webhook_url = column_dup(st, 15);
    u->storage_ref = column_dup(st, 16);
    u->final_path = column_dup(st, 17);
    u->concat_of = column_dup(st, 18);
    u->partial = sqlite3_column_int(st, 19) != 0;
    u->created_at = sqlite3_column_int64(st, 20);
    u->expires_at = sqlite3_column_int64(st, 21);
    u->completed_at = sqlite3_column_int64(st, 22);
    u->detected_type = column_dup(st, 23);
    const char *failure = (const char *)sqlite3_column_text(st, 24);
    u->failure_code = failure ? cu_error_by_name(failure) : 0;
    u->failure_reason = column_dup(st, 25);
    u->sha256 = column_dup(st, 26);
    u->completed_seq = sqlite3_column_int64(st, 27);
}

static void read_part(sqlite3_stmt *st, meta_part *p)
{
    memset(p, 0, sizeof *p);
    p->part = sqlite3_column_int(st, 0);
    const char *state = (const char *)sqlite3_column_text(st, 1);
    p->state = state && !strcmp(state, "uploaded") ? PART_UPLOADED : PART_PENDING;
    p->size = sqlite3_column_int64(st, 2);
    const unsigned char *sum = sqlite3_column_text(st, 3);
    snprintf(p->checksum_sha256, sizeof p->checksum_sha256, "%s", sum ? (const char *)sum : "");
    const unsigned char *tok = sqlite3_column_text(st, 4);
    snprintf(p->token_sha256, sizeof p->token_sha256, "%s", tok ? (const char *)tok : "");
    p->storage_ref = column_dup(st, 5);
}

/* Steps a one-row SELECT of UPLOAD_COLUMNS: 0 with out filled, CU_ENOTFOUND, or an error. */
static int one_upload(conn *c, sqlite3_stmt *st, meta_upload *out, cu_error *e, const char *what)
{
    int step = st ? sqlite3_step(st) : SQLITE_ERROR;
    int rc = step == SQLITE_ROW    ? (read_upload(st, out), 0)
             : step == SQLITE_DONE ? cu_fail(e, CU_ENOTFOUND, "Upload not found")
                                   : db_fail(c, e, what);
    done(st);
    return rc;
}

/* Steps a SELECT of UPLOAD_COLUMNS into a new list of at most limit uploads. */
static int many_uploads(conn *c, sqlite3_stmt *st, int limit, meta_upload **out, int *n,
                        cu_error *e, const char *what)
{
    *out = NULL;
    *n = 0;
    meta_upload *list = calloc((size_t)(limit > 0 ? limit : 1), sizeof *list);
    if (!st || !list) {
        done(st);
        free(list);
        return st ? cu_fail_oom(e) : db_fail(c, e, what);
    }
    int step, count = 0;
    while (count < limit && (step = sqlite3_step(st)) == SQLITE_ROW)
        read_upload(st, &list[count++]);
    int rc = count < limit && step != SQLITE_DONE ? db_fail(c, e, what) : 0;
    done(st);
    if (rc) {
        meta_uploads_free(list, count);
        return rc;
    }
    *out = list;
    *n = count;
    return 0;
}

/* ---- operations ---- */

/* What owner holds open now, within the current transaction. */
static int usage_of(conn *c, const char *owner, int *open, int64_t *reserved, cu_error *e)
{
    sqlite3_stmt *st = stmt(c, S_OWNER_USAGE);
    if (!st)
        return db_fail(c, e, "reading an owner's uploads");
    bind_text(st, 1, owner);
    int rc = sqlite3_step(st) == SQLITE_ROW
                 ? (*open = sqlite3_column_int(st, 0), *reserved = sqlite3_column_int64(st, 1), 0)
                 : db_fail(c, e, "reading an owner's uploads");
    done(st);
    return rc;
}

/* Whether owner may open one more upload (adding one) and reserve `more` bytes. */
static int check_limits(conn *c, const char *owner, const meta_limits *limits, int adding,
                        int64_t more, cu_error *e)
{
    if (!limits || (!limits->max_open && !limits->max_reserved))
        return 0;
    int open = 0;
    int64_t reserved = 0;
    int rc = usage_of(c, owner, &open, &reserved, e);
    if (rc)
        return rc;
    return meta_limits_check(limits, open, reserved, adding, more, e);
}

typedef struct {
    const meta_upload *u;
    const meta_part *parts;
    int n;
    const meta_limits *limits;
} create_args;

static int tx_create(conn *c, void *arg, cu_error *e)
{
    create_args *a = arg;
    const meta_upload *u = a->u;
    int rc = check_limits(c, u->owner, a->limits, 1, u->total_size, e);
    if (rc)
        return rc;
    sqlite3_stmt *st = stmt(c, S_UPLOAD_INSERT);
    if (!st)
        return db_fail(c, e, "creating an upload");
    sqlite3_bind_text(st, 1, u->id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, u->protocol, -1, SQLITE_TRANSIENT);
    bind_text(st, 3, u->owner);
    bind_text(st, 4, u->client_key);
    sqlite3_bind_text(st, 5, u->filename, -1, SQLITE_TRANSIENT);
    bind_text(st, 6, u->content_type);
    bind_text(st, 7, u->metadata);
    if (u->total_size >= 0)
        sqlite3_bind_int64(st, 8, u->total_size);
    sqlite3_bind_int64(st, 9, u->chunk_size);
    sqlite3_bind_text(st, 10, u->layout == UPLOAD_LAYOUT_STREAM ? "stream" : "slots", -1,
                      SQLITE_STATIC);
    sqlite3_bind_int(st, 11, u->total_parts);
    sqlite3_bind_int(st, 12, 0);
    sqlite3_bind_int64(st, 13, 0);
    sqlite3_bind_text(st, 14, upload_state_name(u->state), -1, SQLITE_STATIC);
    bind_text(st, 15, u->checksum_sha256);
    bind_text(st, 16, u->webhook_url);
    bind_text(st, 17, u->storage_ref);
    bind_text(st, 18, u->final_path);
    bind_text(st, 19, u->concat_of);
    sqlite3_bind_int(st, 20, u->partial);
    sqlite3_bind_int64(st, 21, u->created_at);
    sqlite3_bind_int64(st, 22, u->expires_at);
    if (u->completed_at)
        sqlite3_bind_int64(st, 23, u->completed_at);
    bind_text(st, 24, u->detected_type);
    bind_text(st, 27, u->sha256);
    if (u->completed_seq)
        sqlite3_bind_int64(st, 28, u->completed_seq);
    int step = sqlite3_step(st);
    done(st);
    if (step == SQLITE_CONSTRAINT)
        return cu_fail(e, CU_ECONFLICT, "An upload with this %s exists already",
                       u->client_key ? "identifier" : "id");
    if (step != SQLITE_DONE)
        return db_fail(c, e, "creating an upload");
    st = stmt(c, S_PART_INSERT);
    for (int i = 0; st && i < a->n; i++) {
        sqlite3_bind_text(st, 1, u->id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int(st, 2, a->parts[i].part);
        sqlite3_bind_int64(st, 3, a->parts[i].size);
        bind_text(st, 4, a->parts[i].token_sha256[0] ? a->parts[i].token_sha256 : NULL);
        if (run(c, st) != 1)
            return db_fail(c, e, "creating an upload's parts");
    }
    return st || a->n == 0 ? 0 : db_fail(c, e, "creating an upload's parts");
}

static int sq_upload_create(meta_t *base, const meta_upload *u, const meta_part *parts, int n,
                            const meta_limits *limits, cu_error *e)
{
    create_args a = {u, parts, n, limits};
    return in_tx((sqlite_meta *)base, TX_WRITE, "creating an upload", tx_create, &a, e);
}

typedef struct {
    const char *id;
    meta_upload *out;
    meta_part **parts;
    int *n;
    int part;
    meta_part *part_out;
    const char *owner, *protocol, *client_key;
} read_args;

static int tx_upload_get(conn *c, void *arg, cu_error *e)
{
    read_args *a = arg;
    sqlite3_stmt *st = stmt(c, S_UPLOAD_GET);
    if (st)
        sqlite3_bind_text(st, 1, a->id, -1, SQLITE_TRANSIENT);
    return one_upload(c, st, a->out, e, "reading an upload");
}

static int sq_upload_get(meta_t *base, const char *id, meta_upload *out, cu_error *e)
{
    read_args a = {.id = id, .out = out};
    return in_tx((sqlite_meta *)base, TX_READ_ONE, "reading an upload", tx_upload_get, &a, e);
}

static int tx_upload_find(conn *c, void *arg, cu_error *e)
{
    read_args *a = arg;
    sqlite3_stmt *st = stmt(c, S_UPLOAD_FIND);
    if (st) {
        bind_text(st, 1, a->owner);
        sqlite3_bind_text(st, 2, a->protocol, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 3, a->client_key, -1, SQLITE_TRANSIENT);
    }
    return one_upload(c, st, a->out, e, "finding an upload");
}

static int sq_upload_find(meta_t *base, const char *owner, const char *protocol,
                          const char *client_key, meta_upload *out, cu_error *e)
{
    read_args a = {.owner = owner, .protocol = protocol, .client_key = client_key, .out = out};
    return in_tx((sqlite_meta *)base, TX_READ_ONE, "finding an upload", tx_upload_find, &a, e);
}

static int tx_with_parts(conn *c, void *arg, cu_error *e)
{
    read_args *a = arg;
    int rc = tx_upload_get(c, arg, e);
    if (rc)
        return rc;
    sqlite3_stmt *st = stmt(c, S_PARTS_LIST);
    if (!st) {
        meta_upload_clear(a->out);
        return db_fail(c, e, "listing parts");
    }
    sqlite3_bind_text(st, 1, a->id, -1, SQLITE_TRANSIENT);
    int count = 0, cap = 0, step;
    meta_part *parts = NULL;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        if (count == cap) {
            cap = cap ? cap * 2 : 64;
            meta_part *grown = realloc(parts, (size_t)cap * sizeof *parts);
            if (!grown) {
                rc = cu_fail_oom(e);
                break;
            }
            parts = grown;
        }
        read_part(st, &parts[count++]);
    }
    if (rc == 0 && step != SQLITE_DONE)
        rc = db_fail(c, e, "listing parts");
    done(st);
    if (rc) {
        meta_parts_free(parts, count);
        meta_upload_clear(a->out);
        return rc;
    }
    *a->parts = parts;
    *a->n = count;
    return 0;
}

static int sq_upload_with_parts(meta_t *base, const char *id, meta_upload *out, meta_part **parts,
                                int *n, cu_error *e)
{
    *parts = NULL;
    *n = 0;
    read_args a = {.id = id, .out = out, .parts = parts, .n = n};
    return in_tx((sqlite_meta *)base, TX_SNAPSHOT, "reading an upload", tx_with_parts, &a, e);
}

static int tx_part_get(conn *c, void *arg, cu_error *e)
{
    read_args *a = arg;
    sqlite3_stmt *st = stmt(c, S_PART_GET);
    if (!st)
        return db_fail(c, e, "reading a part");
    sqlite3_bind_text(st, 1, a->id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int(st, 2, a->part);
    int step = sqlite3_step(st);
    int rc = step == SQLITE_ROW    ? (read_part(st, a->part_out), 0)
             : step == SQLITE_DONE ? cu_fail(e, CU_ENOTFOUND, "Part %d not found", a->part)
                                   : db_fail(c, e, "reading a part");
    done(st);
    return rc;
}

static int sq_part_get(meta_t *base, const char *id, int part, meta_part *out, cu_error *e)
{
    read_args a = {.id = id, .part = part, .part_out = out};
    return in_tx((sqlite_meta *)base, TX_READ_ONE, "reading a part", tx_part_get, &a, e);
}

typedef struct {
    const char *id;
    int part;
    int64_t size;
    const char *checksum, *storage_ref;
    int *uploaded;
} store_args;

static int tx_part_store(conn *c, void *arg, cu_error *e)
{
    store_args *a = arg;
    sqlite3_stmt *st = stmt(c, S_PART_STORE);
    if (!st)
        return db_fail(c, e, "recording a part");
    sqlite3_bind_int64(st, 1, a->size);
    sqlite3_bind_text(st, 2, a->checksum, -1, SQLITE_TRANSIENT);
    bind_text(st, 3, a->storage_ref);
    sqlite3_bind_text(st, 4, a->id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int(st, 5, a->part);
    int changed = run(c, st);
    if (changed < 0)
        return db_fail(c, e, "recording a part");
    if (changed == 0)
        return cu_fail(e, CU_ECONFLICT,
                       "Part %d was already uploaded or the upload is no longer pending", a->part);
    st = stmt(c, S_UPLOAD_COUNT_PART);
    if (!st)
        return db_fail(c, e, "recording a part");
    sqlite3_bind_text(st, 1, a->id, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(st) == SQLITE_ROW ? (*a->uploaded = sqlite3_column_int(st, 0), 0)
                                            : db_fail(c, e, "recording a part");
    done(st);
    return rc;
}

static int sq_part_store(meta_t *base, const char *id, int part, int64_t size, const char *checksum,
                         const char *storage_ref, int *uploaded, cu_error *e)
{
    store_args a = {id, part, size, checksum, storage_ref, uploaded};
    return in_tx((sqlite_meta *)base, TX_WRITE, "recording a part", tx_part_store, &a, e);
}

typedef struct {
    const char *id;
    int64_t from, to;
    const meta_part *chunks;
    int n;
} advance_args;

static int tx_stream_advance(conn *c, void *arg, cu_error *e)
{
    advance_args *a = arg;
    sqlite3_stmt *st = stmt(c, S_STREAM_ADVANCE);
    if (!st)
        return db_fail(c, e, "recording written bytes");
    sqlite3_bind_int64(st, 1, a->to);
    sqlite3_bind_text(st, 2, a->id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 3, a->from);
    int changed = run(c, st);
    if (changed < 0)
        return db_fail(c, e, "recording written bytes");
    if (changed == 0)
        return cu_fail(e, CU_ECONFLICT, "The upload moved on or ended meanwhile");
    st = stmt(c, S_CHUNK_PUT);
    for (int i = 0; st && i < a->n; i++) {
        sqlite3_bind_text(st, 1, a->id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int(st, 2, a->chunks[i].part);
        sqlite3_bind_int64(st, 3, a->chunks[i].size);
        bind_text(st, 4, a->chunks[i].checksum_sha256[0] ? a->chunks[i].checksum_sha256 : NULL);
        bind_text(st, 5, a->chunks[i].storage_ref);
        if (run(c, st) != 1)
            return db_fail(c, e, "recording stored chunks");
    }
    return st || a->n == 0 ? 0 : db_fail(c, e, "recording stored chunks");
}

static int sq_stream_advance(meta_t *base, const char *id, int64_t from, int64_t to,
                             const meta_part *chunks, int n, cu_error *e)
{
    advance_args a = {id, from, to, chunks, n};
    return in_tx((sqlite_meta *)base, TX_WRITE, "recording written bytes", tx_stream_advance, &a,
                 e);
}

typedef struct {
    const char *id;
    upload_state from, to;
    int64_t value;
    const char *text, *body, *sha256;
    int64_t when;
    const meta_limits *limits;
} update_args;

static int tx_declare_length(conn *c, void *arg, cu_error *e)
{
    update_args *a = arg;
    if (a->limits && a->limits->max_reserved) {
        sqlite3_stmt *q = stmt(c, S_RESERVED_OF);
        if (!q)
            return db_fail(c, e, "reading an upload");
        sqlite3_bind_text(q, 1, a->id, -1, SQLITE_TRANSIENT);
        char *owner = sqlite3_step(q) == SQLITE_ROW ? column_dup(q, 0) : NULL;
        done(q);
        int rc = check_limits(c, owner, a->limits, 0, a->value, e);
        free(owner);
        if (rc)
            return rc;
    }
    sqlite3_stmt *st = stmt(c, S_DECLARE_LENGTH);
    if (st) {
        sqlite3_bind_int64(st, 1, a->value);
        sqlite3_bind_text(st, 2, a->id, -1, SQLITE_TRANSIENT);
    }
    int changed = run(c, st);
    return changed < 0    ? db_fail(c, e, "recording an upload's length")
           : changed == 0 ? cu_fail(e, CU_ECONFLICT, "The upload's length is set already")
                          : 0;
}

static int sq_declare_length(meta_t *base, const char *id, int64_t total_size,
                             const meta_limits *limits, cu_error *e)
{
    update_args a = {.id = id, .value = total_size, .limits = limits};
    return in_tx((sqlite_meta *)base, TX_WRITE, "recording an upload's length", tx_declare_length,
                 &a, e);
}

static int tx_transition(conn *c, void *arg, cu_error *e)
{
    update_args *a = arg;
    sqlite3_stmt *st = stmt(c, S_TRANSITION);
    if (st) {
        sqlite3_bind_text(st, 1, upload_state_name(a->to), -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, a->id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 3, upload_state_name(a->from), -1, SQLITE_STATIC);
    }
    int changed = run(c, st);
    return changed < 0    ? db_fail(c, e, "changing an upload's state")
           : changed == 0 ? cu_fail(e, CU_ECONFLICT, "Upload is not %s", upload_state_name(a->from))
                          : 0;
}

static int sq_upload_transition(meta_t *base, const char *id, upload_state from, upload_state to,
                                cu_error *e)
{
    update_args a = {.id = id, .from = from, .to = to};
    return in_tx((sqlite_meta *)base, TX_WRITE, "changing an upload's state", tx_transition, &a, e);
}

static int tx_complete(conn *c, void *arg, cu_error *e)
{
    update_args *a = arg;
    sqlite3_stmt *st = stmt(c, S_COMPLETE);
    if (st) {
        sqlite3_bind_text(st, 1, a->text, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(st, 2, a->when);
        bind_text(st, 3, a->sha256);
        sqlite3_bind_text(st, 4, a->id, -1, SQLITE_TRANSIENT);
    }
    int changed = run(c, st);
    if (changed < 0)
        return db_fail(c, e, "completing an upload");
    if (changed == 0)
        return cu_fail(e, CU_ECONFLICT, "Upload is not being completed");
    if (!a->body)
        return 0;
    st = stmt(c, S_WEBHOOK_QUEUE);
    if (st) {
        sqlite3_bind_text(st, 1, a->body, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(st, 2, a->when);
        sqlite3_bind_text(st, 3, a->id, -1, SQLITE_TRANSIENT);
    }
    return run(c, st) < 0 ? db_fail(c, e, "queueing a webhook") : 0;
}

static int sq_upload_complete(meta_t *base, const char *id, const char *final_path,
                              int64_t completed_at, const char *sha256, const char *webhook_body,
                              cu_error *e)
{
    update_args a = {
        .id = id, .text = final_path, .when = completed_at, .sha256 = sha256, .body = webhook_body};
    return in_tx((sqlite_meta *)base, TX_WRITE, "completing an upload", tx_complete, &a, e);
}

static int tx_end(conn *c, void *arg, cu_error *e)
{
    update_args *a = arg;
    sqlite3_stmt *st = stmt(c, S_END);
    if (st) {
        sqlite3_bind_text(st, 1, upload_state_name(a->to), -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, a->id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 3, upload_state_name(a->from), -1, SQLITE_STATIC);
        if (a->to == UPLOAD_FAILED) {
            sqlite3_bind_text(st, 4, cu_error_name((int)a->value), -1, SQLITE_STATIC);
            bind_text(st, 5, a->text);
        }
    }
    int changed = run(c, st);
    if (changed < 0)
        return db_fail(c, e, "ending an upload");
    if (changed == 0)
        return cu_fail(e, CU_ECONFLICT, "Upload is not %s", upload_state_name(a->from));
    st = stmt(c, S_PARTS_FORGET);
    if (st)
        sqlite3_bind_text(st, 1, a->id, -1, SQLITE_TRANSIENT);
    return run(c, st) < 0 ? db_fail(c, e, "ending an upload") : 0;
}

static int sq_upload_end(meta_t *base, const char *id, upload_state from, upload_state to,
                         cu_error *e)
{
    update_args a = {.id = id, .from = from, .to = to};
    return in_tx((sqlite_meta *)base, TX_WRITE, "ending an upload", tx_end, &a, e);
}

static int sq_upload_fail(meta_t *base, const char *id, upload_state from, int code,
                          const char *reason, cu_error *e)
{
    update_args a = {.id = id, .from = from, .to = UPLOAD_FAILED, .value = code, .text = reason};
    return in_tx((sqlite_meta *)base, TX_WRITE, "ending an upload", tx_end, &a, e);
}

static int tx_set_type(conn *c, void *arg, cu_error *e)
{
    update_args *a = arg;
    sqlite3_stmt *st = stmt(c, S_SET_TYPE);
    if (st) {
        bind_text(st, 1, a->text);
        sqlite3_bind_text(st, 2, a->id, -1, SQLITE_TRANSIENT);
    }
    int changed = run(c, st);
    return changed < 0    ? db_fail(c, e, "recording an upload's type")
           : changed == 0 ? cu_fail(e, CU_ECONFLICT, "Upload is not pending")
                          : 0;
}

static int sq_upload_set_type(meta_t *base, const char *id, const char *detected_type, cu_error *e)
{
    update_args a = {.id = id, .text = detected_type};
    return in_tx((sqlite_meta *)base, TX_WRITE, "recording an upload's type", tx_set_type, &a, e);
}

typedef struct {
    stmt_id which;
    int64_t now;
    int limit;
    const meta_file_query *q;
    meta_upload **out;
    int *n;
    const char *what;
} list_args;

static int tx_list(conn *c, void *arg, cu_error *e)
{
    list_args *a = arg;
    sqlite3_stmt *st = stmt(c, a->which);
    if (st && a->which == S_DUE) {
        sqlite3_bind_int64(st, 1, a->now);
        sqlite3_bind_int(st, 2, a->limit);
    } else if (st && a->which == S_TO_PURGE) {
        sqlite3_bind_int(st, 1, a->limit);
    } else if (st && a->which == S_FILES) {
        bind_text(st, 1, a->q->owner);
        bind_text(st, 2, a->q->prefix);
        sqlite3_bind_int64(st, 3, a->q->after_seq);
        sqlite3_bind_int(st, 4, a->limit);
    }
    return many_uploads(c, st, a->limit, a->out, a->n, e, a->what);
}

static int list(sqlite_meta *m, list_args *a, cu_error *e)
{
    return in_tx(m, TX_READ_ONE, a->what, tx_list, a, e);
}

static int sq_uploads_due(meta_t *base, int64_t now, int limit, meta_upload **out, int *n,
                          cu_error *e)
{
    list_args a = {S_DUE, now, limit, NULL, out, n, "listing expired uploads"};
    return list((sqlite_meta *)base, &a, e);
}

static int sq_uploads_to_purge(meta_t *base, int limit, meta_upload **out, int *n, cu_error *e)
{
    list_args a = {S_TO_PURGE, 0, limit, NULL, out, n, "listing data to remove"};
    return list((sqlite_meta *)base, &a, e);
}

static int sq_files_list(meta_t *base, const meta_file_query *q, meta_upload **out, int *n,
                         cu_error *e)
{
    list_args a = {S_FILES, 0, q->limit, q, out, n, "listing files"};
    return list((sqlite_meta *)base, &a, e);
}

static int tx_mark_purged(conn *c, void *arg, cu_error *e)
{
    update_args *a = arg;
    sqlite3_stmt *st = stmt(c, S_MARK_PURGED);
    if (st)
        sqlite3_bind_text(st, 1, a->id, -1, SQLITE_TRANSIENT);
    return run(c, st) < 0 ? db_fail(c, e, "recording removed data") : 0;
}

static int sq_upload_mark_purged(meta_t *base, const char *id, cu_error *e)
{
    update_args a = {.id = id};
    return in_tx((sqlite_meta *)base, TX_WRITE, "recording removed data", tx_mark_purged, &a, e);
}

typedef struct {
    int64_t now, after, *when, id, next, lease;
    const meta_webhook *cursor;
    int limit;
    meta_webhook **out;
    int *n, *attempts;
    bool delivered, give_up;
    const char *error;
} webhook_args;

static int tx_webhooks_due(conn *c, void *arg, cu_error *e)
{
    webhook_args *a = arg;
    sqlite3_stmt *st = stmt(c, S_WEBHOOKS_DUE);
    meta_webhook *list = calloc((size_t)(a->limit > 0 ? a->limit : 1), sizeof *list);
    if (!st || !list) {
        free(list);
        return st ? cu_fail_oom(e) : db_fail(c, e, "listing webhooks");
    }
    sqlite3_bind_int64(st, 1, a->now);
    if (a->cursor) {
        sqlite3_bind_int64(st, 2, a->cursor->next_attempt_at);
        sqlite3_bind_int64(st, 3, a->cursor->id);
    }
    sqlite3_bind_int(st, 4, a->limit);
    int step = SQLITE_DONE, count = 0;
    bool oom = false;
    while (count < a->limit && (step = sqlite3_step(st)) == SQLITE_ROW) {
        meta_webhook *w = &list[count++];
        w->id = sqlite3_column_int64(st, 0);
        snprintf(w->upload_id, sizeof w->upload_id, "%s", (const char *)sqlite3_column_text(st, 1));
        w->url = column_dup(st, 2);
        w->body = column_dup(st, 3);
        oom |= !w->url || !w->body; /* both are NOT NULL columns */
        w->attempts = sqlite3_column_int(st, 4);
        w->next_attempt_at = sqlite3_column_int64(st, 5);
        w->claimed_until = sqlite3_column_int64(st, 6);
    }
    int rc = oom                                       ? cu_fail_oom(e)
             : count < a->limit && step != SQLITE_DONE ? db_fail(c, e, "listing webhooks")
                                                       : 0;
    done(st);
    if (rc) {
        meta_webhooks_free(list, count);
        return rc;
    }
    *a->out = list;
    *a->n = count;
    return 0;
}

static int sq_webhooks_due(meta_t *base, int64_t now, const meta_webhook *after, int limit,
                           meta_webhook **out, int *n, cu_error *e)
{
    *out = NULL;
    *n = 0;
    webhook_args a = {.now = now, .cursor = after, .limit = limit, .out = out, .n = n};
    return in_tx((sqlite_meta *)base, TX_READ_ONE, "listing webhooks", tx_webhooks_due, &a, e);
}

static int tx_webhook_next(conn *c, void *arg, cu_error *e)
{
    webhook_args *a = arg;
    sqlite3_stmt *st = stmt(c, S_WEBHOOK_NEXT);
    int rc;
    if (st)
        sqlite3_bind_int64(st, 1, a->after);
    if (st && sqlite3_step(st) == SQLITE_ROW) {
        rc = sqlite3_column_type(st, 0) == SQLITE_NULL
                 ? cu_fail(e, CU_ENOTFOUND, "No webhook pending")
                 : (*a->when = sqlite3_column_int64(st, 0), 0);
    } else {
        rc = db_fail(c, e, "reading webhooks");
    }
    done(st);
    return rc;
}

static int sq_webhook_next_due(meta_t *base, int64_t after, int64_t *when, cu_error *e)
{
    webhook_args a = {.after = after, .when = when};
    return in_tx((sqlite_meta *)base, TX_READ_ONE, "reading webhooks", tx_webhook_next, &a, e);
}

static int tx_webhook_claim(conn *c, void *arg, cu_error *e)
{
    webhook_args *a = arg;
    sqlite3_stmt *st = stmt(c, S_WEBHOOK_CLAIM);
    if (!st)
        return db_fail(c, e, "claiming a webhook");
    sqlite3_bind_int64(st, 1, a->lease);
    sqlite3_bind_int64(st, 2, a->id);
    sqlite3_bind_int64(st, 3, a->now);
    int step = sqlite3_step(st);
    int rc = step == SQLITE_ROW ? (*a->attempts = sqlite3_column_int(st, 0), 0)
             : step == SQLITE_DONE
                 ? cu_fail(e, CU_ECONFLICT, "Webhook delivery %lld is not due, or is claimed",
                           (long long)a->id)
                 : db_fail(c, e, "claiming a webhook");
    done(st);
    return rc;
}

static int sq_webhook_claim(meta_t *base, int64_t id, int64_t now, int64_t lease_until,
                            int *attempts, cu_error *e)
{
    webhook_args a = {.id = id, .now = now, .lease = lease_until, .attempts = attempts};
    return in_tx((sqlite_meta *)base, TX_WRITE, "claiming a webhook", tx_webhook_claim, &a, e);
}

/* Runs st, an UPDATE of delivery id that applies only while the caller's claim holds. */
static int run_claimed(conn *c, sqlite3_stmt *st, int64_t id, cu_error *e, const char *what)
{
    int changed = run(c, st);
    return changed < 0 ? db_fail(c, e, what)
           : changed == 0
               ? cu_fail(e, CU_ECONFLICT, "The claim of webhook delivery %lld is no longer held",
                         (long long)id)
               : 0;
}

static int tx_webhook_release(conn *c, void *arg, cu_error *e)
{
    webhook_args *a = arg;
    sqlite3_stmt *st = stmt(c, S_WEBHOOK_RELEASE);
    if (st) {
        sqlite3_bind_int64(st, 1, a->id);
        sqlite3_bind_int64(st, 2, a->lease);
    }
    return run_claimed(c, st, a->id, e, "releasing a webhook");
}

static int sq_webhook_release(meta_t *base, int64_t id, int64_t lease_until, cu_error *e)
{
    webhook_args a = {.id = id, .lease = lease_until};
    return in_tx((sqlite_meta *)base, TX_WRITE, "releasing a webhook", tx_webhook_release, &a, e);
}

static int tx_webhook_result(conn *c, void *arg, cu_error *e)
{
    webhook_args *a = arg;
    sqlite3_stmt *st = stmt(c, S_WEBHOOK_RESULT);
    if (st) {
        sqlite3_bind_int64(st, 1, a->next);
        bind_text(st, 2, a->error);
        sqlite3_bind_int(st, 3, a->delivered);
        sqlite3_bind_int(st, 4, a->give_up);
        sqlite3_bind_int64(st, 5, a->id);
        sqlite3_bind_int64(st, 6, a->lease);
    }
    return run_claimed(c, st, a->id, e, "recording a webhook attempt");
}

static int sq_webhook_result(meta_t *base, int64_t id, int64_t lease_until, bool delivered,
                             int64_t next_attempt_at, bool give_up, const char *error, cu_error *e)
{
    webhook_args a = {.id = id,
                      .lease = lease_until,
                      .delivered = delivered,
                      .next = next_attempt_at,
                      .give_up = give_up,
                      .error = error};
    return in_tx((sqlite_meta *)base, TX_WRITE, "recording a webhook attempt", tx_webhook_result,
                 &a, e);
}

typedef struct {
    const char *owner;
    int *open;
    int64_t *reserved;
} usage_args;

static int tx_owner_usage(conn *c, void *arg, cu_error *e)
{
    usage_args *a = arg;
    return usage_of(c, a->owner, a->open, a->reserved, e);
}

static int sq_owner_usage(meta_t *base, const char *owner, int *open, int64_t *reserved,
                          cu_error *e)
{
    usage_args a = {owner, open, reserved};
    return in_tx((sqlite_meta *)base, TX_READ_ONE, "reading an owner's uploads", tx_owner_usage, &a,
                 e);
}

typedef struct {
    int64_t before;
    int *uploads, *webhooks;
} prune_args;

static int tx_prune(conn *c, void *arg, cu_error *e)
{
    prune_args *a = arg;
    static const stmt_id steps[] = {S_PRUNE_PARTS, S_PRUNE_UPLOADS, S_PRUNE_WEBHOOKS,
                                    S_PRUNE_TOKENS};
    for (size_t i = 0; i < sizeof steps / sizeof *steps; i++) {
        sqlite3_stmt *st = stmt(c, steps[i]);
        if (st)
            sqlite3_bind_int64(st, 1, a->before);
        int changed = run(c, st);
        if (changed < 0)
            return db_fail(c, e, "pruning ended uploads");
        if (steps[i] == S_PRUNE_UPLOADS)
            *a->uploads = changed;
        else if (steps[i] == S_PRUNE_WEBHOOKS)
            *a->webhooks = changed;
    }
    return 0;
}

static int sq_prune(meta_t *base, int64_t ended_before, int *uploads, int *webhooks, cu_error *e)
{
    sqlite_meta *m = (sqlite_meta *)base;
    *uploads = *webhooks = 0;
    prune_args a = {ended_before, uploads, webhooks};
    int rc = in_tx(m, TX_WRITE, "pruning ended uploads", tx_prune, &a, e);
    if (rc == 0 && *uploads + *webhooks > 0) {
        /* Give the freed pages back to the file system, a few at a time. */
        pthread_mutex_lock(&m->write_lock);
        sqlite3_exec(m->writer.db, "PRAGMA incremental_vacuum(1000)", NULL, NULL, NULL);
        pthread_mutex_unlock(&m->write_lock);
    }
    return rc;
}

static int tx_nothing(conn *c, void *arg, cu_error *e)
{
    (void)c, (void)arg, (void)e;
    return 0;
}

static int sq_check(meta_t *base, cu_error *e)
{
    /* A write transaction begun and rolled back: the writer can take the lock and the file is
     * writable; a reader's snapshot shows reads work. */
    sqlite_meta *m = (sqlite_meta *)base;
    int rc = check_files(m, true, "checking the database", e);
    if (rc == 0)
        rc = in_tx(m, TX_SNAPSHOT, "checking the database", tx_nothing, NULL, e);
    if (rc == 0 && atomic_load(&m->full)) {
        /* The last write found the disk full. A transaction begun and rolled back writes
         * nothing, so it cannot tell; the free space can: room again means writes may work. */
        char *slash = strrchr(m->path, '/');
        char *dir =
            slash ? strndup(m->path, (size_t)(slash - m->path) + (slash == m->path)) : strdup(".");
        struct statvfs st;
        int64_t room =
            dir && statvfs(dir, &st) == 0 ? (int64_t)st.f_bavail * (int64_t)st.f_frsize : 0;
        free(dir);
        if (room < FULL_ROOM_BYTES)
            rc = cu_fail(e, CU_ENOSPC,
                         "The database's disk is full (%lld bytes free): it cannot take writes",
                         (long long)room);
    }
    if (rc == 0) {
        pthread_mutex_lock(&m->write_lock);
        sqlite3_busy_timeout(m->writer.db, 1000);
        int step = run(&m->writer, stmt(&m->writer, S_BEGIN_WRITE));
        if (step < 0)
            rc = db_fail(&m->writer, e, "checking the database");
        else
            run(&m->writer, stmt(&m->writer, S_ROLLBACK));
        sqlite3_busy_timeout(m->writer.db, BUSY_TIMEOUT_MS);
        pthread_mutex_unlock(&m->write_lock);
    }
    return rc;
}

static void sq_close(meta_t *base)
{
    sqlite_meta *m = (sqlite_meta *)base;
    conn_close(&m->writer);
    for (int i = 0; i < READERS; i++)
        conn_close(&m->readers[i]);
    pthread_mutex_destroy(&m->write_lock);
    pthread_mutex_destroy(&m->read_lock);
    pthread_cond_destroy(&m->read_free);
    free(m->path);
    free(m->wal_path);
    free(m->shm_path);
    free(m);
}

static const struct meta_ops sqlite_ops = {
    .upload_create = sq_upload_create,
    .upload_get = sq_upload_get,
    .upload_find = sq_upload_find,
    .upload_with_parts = sq_upload_with_parts,
    .part_get = sq_part_get,
    .part_store = sq_part_store,
    .stream_advance = sq_stream_advance,
    .declare_length = sq_declare_length,
    .owner_usage = sq_owner_usage,
    .prune = sq_prune,
    .check = sq_check,
    .upload_transition = sq_upload_transition,
    .upload_complete = sq_upload_complete,
    .upload_end = sq_upload_end,
    .upload_fail = sq_upload_fail,
    .upload_set_type = sq_upload_set_type,
    .uploads_due = sq_uploads_due,
    .uploads_to_purge = sq_uploads_to_purge,
    .upload_mark_purged = sq_upload_mark_purged,
    .files_list = sq_files_list,
    .webhooks_due = sq_webhooks_due,
    .webhook_next_due = sq_webhook_next_due,
    .webhook_claim = sq_webhook_claim,
    .webhook_release = sq_webhook_release,
    .webhook_result = sq_webhook_result,
    .close = sq_close,
};

/* ---- opening ---- */

int meta_sqlite_schema_version(void)
{
    return meta_sqlite_migrations[meta_sqlite_migration_count - 1].version;
}

/* Runs the migrations the database has not had yet, each in its own transaction with the
 * version it reaches. Foreign keys are off meanwhile (tables are rebuilt). */
static int migrate(sqlite3 *db, char **msg, const char *path)
{
    sqlite3_stmt *st = NULL;
    int version = 0;
    if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        version = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    if (version > meta_sqlite_schema_version()) {
        *msg = sqlite3_mprintf("the database was written by a newer release (schema %d; this "
                               "release knows %d)",
                               version, meta_sqlite_schema_version());
        return SQLITE_ERROR;
    }
    /* Pages freed by pruning go back to the file system (meta_prune runs incremental_vacuum),
     * which needs auto_vacuum set before the first table exists, or a VACUUM to switch. */
    if (version == 0 &&
        sqlite3_exec(db, "PRAGMA auto_vacuum = INCREMENTAL", NULL, NULL, msg) != SQLITE_OK)
        return SQLITE_ERROR;
    for (int i = 0; i < meta_sqlite_migration_count; i++) {
        const meta_migration *mg = &meta_sqlite_migrations[i];
        if (mg->version <= version)
            continue;
        char *tail = sqlite3_mprintf("PRAGMA user_version = %d; COMMIT;", mg->version);
        int rc = tail ? sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, msg) : SQLITE_NOMEM;
        if (rc == SQLITE_OK)
            rc = sqlite3_exec(db, mg->sql, NULL, NULL, msg);
        if (rc == SQLITE_OK)
            rc = sqlite3_exec(db, tail, NULL, NULL, msg);
        sqlite3_free(tail);
        if (rc != SQLITE_OK) {
            sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
            char *why = sqlite3_mprintf("migration %s failed: %s", mg->name, *msg ? *msg : "?");
            sqlite3_free(*msg);
            *msg = why;
            return rc;
        }
        if (version > 0)
            log_info("database %s: migrated to schema %d (%s)", path, mg->version, mg->name);
    }
    if (sqlite3_prepare_v2(db, "PRAGMA auto_vacuum", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW && sqlite3_column_int(st, 0) != 2 /* incremental */) {
        sqlite3_finalize(st);
        st = NULL;
        log_info("database %s: switching to incremental vacuum (once; rewrites the file)", path);
        if (sqlite3_exec(db, "PRAGMA auto_vacuum = INCREMENTAL; VACUUM;", NULL, NULL, msg) !=
            SQLITE_OK)
            return SQLITE_ERROR;
    }
    sqlite3_finalize(st);
    return SQLITE_OK;
}

static int conn_open(conn *c, const char *path, bool fsync, bool first, cu_error *err)
{
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
    if (sqlite3_open_v2(path, &c->db, flags, NULL) != SQLITE_OK)
        return cu_fail(err, CU_EIO, "cannot open database %s: %s", path,
                       c->db ? sqlite3_errmsg(c->db) : "out of memory");
    sqlite3_busy_timeout(c->db, BUSY_TIMEOUT_MS);
    /* SQLite quietly opens a file it may not write read-only; every write would then fail
     * later, in the middle of a request. */
    if (sqlite3_db_readonly(c->db, "main") == 1)
        return cu_fail(err, CU_EIO,
                       "database %s cannot be written (file permissions, an immutable "
                       "attribute, or a read-only file system)",
                       path);
    char *msg = NULL;
    const char *pragmas = fsync ? "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
                                : "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;";
    int rc = sqlite3_exec(c->db, pragmas, NULL, NULL, &msg);
    if (rc == SQLITE_OK && first)
        rc = migrate(c->db, &msg, path);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(c->db, "PRAGMA foreign_keys=ON;", NULL, NULL, &msg);
    if (rc != SQLITE_OK) {
        cu_fail(err, CU_EIO, "cannot prepare database %s: %s", path,
                msg ? msg : sqlite3_errmsg(c->db));
        sqlite3_free(msg);
        return CU_EIO;
    }
    return 0;
}

/* path followed by suffix (malloc'ed), or NULL when out of memory. */
static char *path_with(const char *path, const char *suffix)
{
    size_t len = strlen(path) + strlen(suffix) + 1;
    char *out = malloc(len);
    if (out)
        snprintf(out, len, "%s%s", path, suffix);
    return out;
}

int meta_sqlite_open(const char *path, bool fsync, meta_t **out, cu_error *err)
{
    assert(meta_sqlite_migration_count > 0);
    sqlite_meta *m = calloc(1, sizeof *m);
    if (!m)
        return cu_fail_oom(err);
    m->base.ops = &sqlite_ops;
    pthread_mutex_init(&m->write_lock, NULL);
    pthread_mutex_init(&m->read_lock, NULL);
    pthread_cond_init(&m->read_free, NULL);
    atomic_init(&m->files, FILES_OK);
    atomic_init(&m->full, false);
    m->path = strdup(path);
    m->wal_path = path_with(path, "-wal");
    m->shm_path = path_with(path, "-shm");
    int rc = m->path && m->wal_path && m->shm_path ? 0 : cu_fail_oom(err);
    if (rc == 0)
        rc = conn_open(&m->writer, path, fsync, true, err);
    for (int i = 0; rc == 0 && i < READERS; i++)
        rc = conn_open(&m->readers[i], path, fsync, false, err);
    if (rc) {
        sq_close(&m->base);
        return rc;
    }
    *out = &m->base;
    return 0;
}
