/* sqlite.c - the embedded metadata store (SQLite in WAL mode).
 *
 * A small pool of connections serves the request threads and the background threads, so a
 * long read (the status of a 10,000-part upload) never holds up a part being recorded.
 * Writers take BEGIN IMMEDIATE and wait on SQLite's busy timeout; readers never block
 * writers in WAL mode. With fsync on, synchronous=FULL syncs the WAL at every commit, so a
 * part is on disk in the database before it is acknowledged. */
#include "meta/meta.h"

#include "base/log.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define POOL_SIZE 4

typedef struct {
    meta_t base;
    sqlite3 *conns[POOL_SIZE];
    bool busy[POOL_SIZE];
    pthread_mutex_t lock;
    pthread_cond_t freed;
} sqlite_meta;

static const char schema[] =
    "CREATE TABLE IF NOT EXISTS uploads ("
    "  id TEXT PRIMARY KEY,"
    "  protocol TEXT NOT NULL,"
    "  filename TEXT NOT NULL,"
    "  total_size INTEGER NOT NULL,"
    "  chunk_size INTEGER NOT NULL,"
    "  total_parts INTEGER NOT NULL,"
    "  uploaded_parts INTEGER NOT NULL DEFAULT 0,"
    "  state TEXT NOT NULL,"
    "  checksum_sha256 TEXT,"
    "  webhook_url TEXT,"
    "  storage_ref TEXT,"
    "  final_path TEXT,"
    "  created_at INTEGER NOT NULL,"
    "  expires_at INTEGER NOT NULL,"
    "  completed_at INTEGER,"
    "  data_removed INTEGER NOT NULL DEFAULT 0);"
    "CREATE INDEX IF NOT EXISTS uploads_by_expiry ON uploads(state, expires_at);"
    "CREATE TABLE IF NOT EXISTS parts ("
    "  upload_id TEXT NOT NULL REFERENCES uploads(id),"
    "  part INTEGER NOT NULL,"
    "  state TEXT NOT NULL,"
    "  size INTEGER,"
    "  checksum_sha256 TEXT,"
    "  token_sha256 TEXT NOT NULL,"
    "  storage_ref TEXT,"
    "  uploaded_at INTEGER,"
    "  PRIMARY KEY (upload_id, part)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS webhooks ("
    "  id INTEGER PRIMARY KEY,"
    "  upload_id TEXT NOT NULL,"
    "  url TEXT NOT NULL,"
    "  body TEXT NOT NULL,"
    "  attempts INTEGER NOT NULL DEFAULT 0,"
    "  next_attempt_at INTEGER NOT NULL,"
    "  delivered_at INTEGER,"
    "  gave_up_at INTEGER,"
    "  last_error TEXT);"
    "CREATE INDEX IF NOT EXISTS webhooks_due ON webhooks(next_attempt_at) "
    "  WHERE delivered_at IS NULL AND gave_up_at IS NULL;"
    "PRAGMA user_version = 2;";

/* Databases made by version 1 of the schema lack the data_removed column. */
static const char migrate_1_to_2[] =
    "ALTER TABLE uploads ADD COLUMN data_removed INTEGER NOT NULL DEFAULT 0;"
    "PRAGMA user_version = 2;";

static sqlite3 *acquire(sqlite_meta *m)
{
    pthread_mutex_lock(&m->lock);
    for (;;) {
        for (int i = 0; i < POOL_SIZE; i++) {
            if (!m->busy[i]) {
                m->busy[i] = true;
                pthread_mutex_unlock(&m->lock);
                return m->conns[i];
            }
        }
        pthread_cond_wait(&m->freed, &m->lock);
    }
}

static void release(sqlite_meta *m, sqlite3 *db)
{
    pthread_mutex_lock(&m->lock);
    for (int i = 0; i < POOL_SIZE; i++)
        if (m->conns[i] == db)
            m->busy[i] = false;
    pthread_cond_signal(&m->freed);
    pthread_mutex_unlock(&m->lock);
}

static int db_fail(sqlite3 *db, cu_error *e, const char *what)
{
    log_error("database: %s: %s", what, sqlite3_errmsg(db));
    return cu_fail(e, CU_EIO, "Database error while %s", what);
}

static sqlite3_stmt *prepare(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        log_error("database: preparing \"%s\": %s", sql, sqlite3_errmsg(db));
        return NULL;
    }
    return st;
}

static int exec(sqlite3 *db, const char *sql)
{
    return sqlite3_exec(db, sql, NULL, NULL, NULL);
}

static void bind_text_or_null(sqlite3_stmt *st, int idx, const char *s)
{
    if (s)
        sqlite3_bind_text(st, idx, s, -1, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(st, idx);
}

static char *column_dup(sqlite3_stmt *st, int col)
{
    const unsigned char *s = sqlite3_column_text(st, col);
    return s ? strdup((const char *)s) : NULL;
}

#define UPLOAD_COLUMNS                                                                             \
    "id, protocol, filename, total_size, chunk_size, total_parts, uploaded_parts, state, "         \
    "checksum_sha256, webhook_url, storage_ref, final_path, created_at, expires_at, completed_at"

static void read_upload(sqlite3_stmt *st, meta_upload *u)
{
    memset(u, 0, sizeof *u);
    snprintf(u->id, sizeof u->id, "%s", (const char *)sqlite3_column_text(st, 0));
    snprintf(u->protocol, sizeof u->protocol, "%s", (const char *)sqlite3_column_text(st, 1));
    u->filename = column_dup(st, 2);
    u->total_size = sqlite3_column_int64(st, 3);
    u->chunk_size = sqlite3_column_int64(st, 4);
    u->total_parts = sqlite3_column_int(st, 5);
    u->uploaded_parts = sqlite3_column_int(st, 6);
    int s = upload_state_parse((const char *)sqlite3_column_text(st, 7));
    u->state = s < 0 ? UPLOAD_FAILED : (upload_state)s;
    u->checksum_sha256 = column_dup(st, 8);
    u->webhook_url = column_dup(st, 9);
    u->storage_ref = column_dup(st, 10);
    u->final_path = column_dup(st, 11);
    u->created_at = sqlite3_column_int64(st, 12);
    u->expires_at = sqlite3_column_int64(st, 13);
    u->completed_at = sqlite3_column_int64(st, 14);
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

#define PART_COLUMNS "part, state, size, checksum_sha256, token_sha256, storage_ref"

static int sq_upload_create(meta_t *base, const meta_upload *u, const meta_part *parts, int n,
                            cu_error *e)
{
    sqlite_meta *m = (sqlite_meta *)base;
    sqlite3 *db = acquire(m);
    int rc = 0;
    sqlite3_stmt *st = NULL;
    if (exec(db, "BEGIN IMMEDIATE") != SQLITE_OK) {
        rc = db_fail(db, e, "creating an upload");
        goto out;
    }
    st = prepare(db, "INSERT INTO uploads (" UPLOAD_COLUMNS ") VALUES "
                     "(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)");
    if (!st)
        goto fail;
    sqlite3_bind_text(st, 1, u->id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, u->protocol, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 3, u->filename, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 4, u->total_size);
    sqlite3_bind_int64(st, 5, u->chunk_size);
    sqlite3_bind_int(st, 6, u->total_parts);
    sqlite3_bind_int(st, 7, 0);
    sqlite3_bind_text(st, 8, upload_state_name(u->state), -1, SQLITE_STATIC);
    bind_text_or_null(st, 9, u->checksum_sha256);
    bind_text_or_null(st, 10, u->webhook_url);
    bind_text_or_null(st, 11, u->storage_ref);
    bind_text_or_null(st, 12, u->final_path);
    sqlite3_bind_int64(st, 13, u->created_at);
    sqlite3_bind_int64(st, 14, u->expires_at);
    sqlite3_bind_null(st, 15);
    if (sqlite3_step(st) != SQLITE_DONE)
        goto fail;
    sqlite3_finalize(st);
    st = prepare(db, "INSERT INTO parts (upload_id, part, state, size, token_sha256) "
                     "VALUES (?,?,'pending',?,?)");
    if (!st)
        goto fail;
    for (int i = 0; i < n; i++) {
        sqlite3_reset(st);
        sqlite3_bind_text(st, 1, u->id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int(st, 2, parts[i].part);
        sqlite3_bind_int64(st, 3, parts[i].size);
        sqlite3_bind_text(st, 4, parts[i].token_sha256, -1, SQLITE_TRANSIENT);
        if (sqlite3_step(st) != SQLITE_DONE)
            goto fail;
    }
    if (exec(db, "COMMIT") != SQLITE_OK)
        goto fail;
    goto out;
fail:
    rc = db_fail(db, e, "creating an upload");
    exec(db, "ROLLBACK");
out:
    sqlite3_finalize(st);
    release(m, db);
    return rc;
}

static int sq_upload_get(meta_t *base, const char *id, meta_upload *out, cu_error *e)
{
    sqlite_meta *m = (sqlite_meta *)base;
    sqlite3 *db = acquire(m);
    int rc;
    sqlite3_stmt *st = prepare(db, "SELECT " UPLOAD_COLUMNS " FROM uploads WHERE id = ?");
    if (!st) {
        rc = db_fail(db, e, "reading an upload");
        goto out;
    }
    sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
    int step = sqlite3_step(st);
    if (step == SQLITE_ROW) {
        read_upload(st, out);
        rc = 0;
    } else if (step == SQLITE_DONE) {
        rc = cu_fail(e, CU_ENOTFOUND, "Upload not found");
    } else {
        rc = db_fail(db, e, "reading an upload");
    }
out:
    sqlite3_finalize(st);
    release(m, db);
    return rc;
}

static int sq_parts_list(meta_t *base, const char *id, meta_part **out, int *n, cu_error *e)
{
    sqlite_meta *m = (sqlite_meta *)base;
    sqlite3 *db = acquire(m);
    int rc = 0, count = 0, cap = 0;
    meta_part *parts = NULL;
    sqlite3_stmt *st =
        prepare(db, "SELECT " PART_COLUMNS " FROM parts WHERE upload_id = ? ORDER BY part");
    if (!st) {
        rc = db_fail(db, e, "listing parts");
        goto out;
    }
    sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
    int step;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        if (count == cap) {
            cap = cap ? cap * 2 : 64;
            meta_part *grown = realloc(parts, (size_t)cap * sizeof *parts);
            if (!grown) {
                rc = cu_fail(e, CU_EIO, "Out of memory");
                goto out;
            }
            parts = grown;
        }
        read_part(st, &parts[count++]);
    }
    if (step != SQLITE_DONE)
        rc = db_fail(db, e, "listing parts");
out:
    sqlite3_finalize(st);
    release(m, db);
    if (rc) {
        meta_parts_free(parts, count);
        parts = NULL;
        count = 0;
    }
    *out = parts;
    *n = count;
    return rc;
}

static int sq_part_get(meta_t *base, const char *id, int part, meta_part *out, cu_error *e)
{
    sqlite_meta *m = (sqlite_meta *)base;
    sqlite3 *db = acquire(m);
    int rc;
    sqlite3_stmt *st =
        prepare(db, "SELECT " PART_COLUMNS " FROM parts WHERE upload_id = ? AND part = ?");
    if (!st) {
        rc = db_fail(db, e, "reading a part");
        goto out;
    }
    sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int(st, 2, part);
    int step = sqlite3_step(st);
    if (step == SQLITE_ROW) {
        read_part(st, out);
        rc = 0;
    } else if (step == SQLITE_DONE) {
        rc = cu_fail(e, CU_ENOTFOUND, "Part %d not found", part);
    } else {
        rc = db_fail(db, e, "reading a part");
    }
out:
    sqlite3_finalize(st);
    release(m, db);
    return rc;
}

/* Runs a one-row UPDATE/INSERT prepared in st; returns the number of rows changed or -1. */
static int step_changes(sqlite3 *db, sqlite3_stmt *st)
{
    if (!st || sqlite3_step(st) != SQLITE_DONE)
        return -1;
    return sqlite3_changes(db);
}

static int sq_part_mark_uploaded(meta_t *base, const char *id, int part, int64_t size,
                                 const char *checksum, const char *storage_ref, int *uploaded,
                                 cu_error *e)
{
    sqlite_meta *m = (sqlite_meta *)base;
    sqlite3 *db = acquire(m);
    int rc = 0;
    sqlite3_stmt *st = NULL;
    if (exec(db, "BEGIN IMMEDIATE") != SQLITE_OK) {
        rc = db_fail(db, e, "recording a part");
        goto out;
    }
    st = prepare(db, "UPDATE parts SET state = 'uploaded', size = ?1, checksum_sha256 = ?2, "
                     "storage_ref = ?3, uploaded_at = strftime('%s','now') "
                     "WHERE upload_id = ?4 AND part = ?5 AND state = 'pending' AND "
                     "(SELECT state FROM uploads WHERE id = ?4) = 'pending'");
    if (!st)
        goto fail;
    sqlite3_bind_int64(st, 1, size);
    sqlite3_bind_text(st, 2, checksum, -1, SQLITE_TRANSIENT);
    bind_text_or_null(st, 3, storage_ref);
    sqlite3_bind_text(st, 4, id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int(st, 5, part);
    int changed = step_changes(db, st);
    sqlite3_finalize(st);
    st = NULL;
    if (changed < 0)
        goto fail;
    if (changed == 0) {
        exec(db, "ROLLBACK");
        rc = cu_fail(e, CU_ECONFLICT,
                     "Part %d was already uploaded or the upload is no longer "
                     "pending",
                     part);
        goto out;
    }
    st = prepare(db, "UPDATE uploads SET uploaded_parts = uploaded_parts + 1 WHERE id = ? "
                     "RETURNING uploaded_parts");
    if (!st)
        goto fail;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
    if (sqlite3_step(st) != SQLITE_ROW)
        goto fail;
    *uploaded = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    st = NULL;
    if (exec(db, "COMMIT") != SQLITE_OK)
        goto fail;
    goto out;
fail:
    rc = db_fail(db, e, "recording a part");
    exec(db, "ROLLBACK");
out:
    sqlite3_finalize(st);
    release(m, db);
    return rc;
}

static int sq_upload_transition(meta_t *base, const char *id, upload_state from, upload_state to,
                                cu_error *e)
{
    sqlite_meta *m = (sqlite_meta *)base;
    sqlite3 *db = acquire(m);
    sqlite3_stmt *st = prepare(db, "UPDATE uploads SET state = ? WHERE id = ? AND state = ?");
    if (st) {
        sqlite3_bind_text(st, 1, upload_state_name(to), -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 3, upload_state_name(from), -1, SQLITE_STATIC);
    }
    int changed = step_changes(db, st);
    int rc = changed < 0    ? db_fail(db, e, "changing an upload's state")
             : changed == 0 ? cu_fail(e, CU_ECONFLICT, "Upload is not %s", upload_state_name(from))
                            : 0;
    sqlite3_finalize(st);
    release(m, db);
    return rc;
}

static int sq_upload_complete(meta_t *base, const char *id, const char *final_path,
                              int64_t completed_at, const char *webhook_body, cu_error *e)
{
    sqlite_meta *m = (sqlite_meta *)base;
    sqlite3 *db = acquire(m);
    int rc = 0;
    sqlite3_stmt *st = NULL;
    if (exec(db, "BEGIN IMMEDIATE") != SQLITE_OK) {
        rc = db_fail(db, e, "completing an upload");
        goto out;
    }
    st = prepare(db, "UPDATE uploads SET state = 'complete', final_path = ?, completed_at = ? "
                     "WHERE id = ? AND state = 'finalizing'");
    if (st) {
        sqlite3_bind_text(st, 1, final_path, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(st, 2, completed_at);
        sqlite3_bind_text(st, 3, id, -1, SQLITE_TRANSIENT);
    }
    int changed = step_changes(db, st);
    sqlite3_finalize(st);
    st = NULL;
    if (changed < 0)
        goto fail;
    if (changed == 0) {
        exec(db, "ROLLBACK");
        rc = cu_fail(e, CU_ECONFLICT, "Upload is not being completed");
        goto out;
    }
    if (webhook_body) {
        st = prepare(db, "INSERT INTO webhooks (upload_id, url, body, next_attempt_at) "
                         "SELECT id, webhook_url, ?, ? FROM uploads WHERE id = ? AND "
                         "webhook_url IS NOT NULL");
        if (st) {
            sqlite3_bind_text(st, 1, webhook_body, -1, SQLITE_TRANSIENT);
            sqlite3_bind_int64(st, 2, completed_at);
            sqlite3_bind_text(st, 3, id, -1, SQLITE_TRANSIENT);
        }
        if (step_changes(db, st) < 0)
            goto fail;
    }
    if (exec(db, "COMMIT") != SQLITE_OK)
        goto fail;
    goto out;
fail:
    rc = db_fail(db, e, "completing an upload");
    exec(db, "ROLLBACK");
out:
    sqlite3_finalize(st);
    release(m, db);
    return rc;
}

static int sq_upload_end(meta_t *base, const char *id, upload_state from, upload_state to,
                         cu_error *e)
{
    sqlite_meta *m = (sqlite_meta *)base;
    sqlite3 *db = acquire(m);
    int rc = 0;
    sqlite3_stmt *st = NULL;
    if (exec(db, "BEGIN IMMEDIATE") != SQLITE_OK) {
        rc = db_fail(db, e, "ending an upload");
        goto out;
    }
    st = prepare(db, "UPDATE uploads SET state = ? WHERE id = ? AND state = ?");
    if (st) {
        sqlite3_bind_text(st, 1, upload_state_name(to), -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 3, upload_state_name(from), -1, SQLITE_STATIC);
    }
    int changed = step_changes(db, st);
    sqlite3_finalize(st);
    st = NULL;
    if (changed < 0)
        goto fail;
    if (changed == 0) {
        exec(db, "ROLLBACK");
        rc = cu_fail(e, CU_ECONFLICT, "Upload is not %s", upload_state_name(from));
        goto out;
    }
    st = prepare(db, "DELETE FROM parts WHERE upload_id = ?");
    if (st)
        sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
    if (step_changes(db, st) < 0)
        goto fail;
    if (exec(db, "COMMIT") != SQLITE_OK)
        goto fail;
    goto out;
fail:
    rc = db_fail(db, e, "ending an upload");
    exec(db, "ROLLBACK");
out:
    sqlite3_finalize(st);
    release(m, db);
    return rc;
}

/* Runs a SELECT of UPLOAD_COLUMNS into a list. Its parameters: the time (when now is not
 * NULL), then the limit. */
static int list_uploads(sqlite_meta *m, const char *sql, const int64_t *now, int limit,
                        meta_upload **out, int *n, cu_error *e, const char *what)
{
    sqlite3 *db = acquire(m);
    int rc = 0, count = 0;
    meta_upload *list = calloc((size_t)limit, sizeof *list);
    sqlite3_stmt *st = prepare(db, sql);
    if (!st || !list) {
        rc = db_fail(db, e, what);
        goto out;
    }
    if (now)
        sqlite3_bind_int64(st, 1, *now);
    sqlite3_bind_int(st, now ? 2 : 1, limit);
    int step;
    while ((step = sqlite3_step(st)) == SQLITE_ROW && count < limit)
        read_upload(st, &list[count++]);
    if (step != SQLITE_DONE && step != SQLITE_ROW)
        rc = db_fail(db, e, what);
out:
    sqlite3_finalize(st);
    release(m, db);
    *out = list;
    *n = count;
    return rc;
}

static int sq_uploads_due(meta_t *base, int64_t now, int limit, meta_upload **out, int *n,
                          cu_error *e)
{
    return list_uploads((sqlite_meta *)base,
                        "SELECT " UPLOAD_COLUMNS " FROM uploads WHERE state = 'pending' AND "
                        "expires_at <= ? ORDER BY expires_at LIMIT ?",
                        &now, limit, out, n, e, "listing expired uploads");
}

static int sq_uploads_to_purge(meta_t *base, int limit, meta_upload **out, int *n, cu_error *e)
{
    return list_uploads((sqlite_meta *)base,
                        "SELECT " UPLOAD_COLUMNS " FROM uploads WHERE state IN ('cancelled', "
                        "'expired') AND data_removed = 0 LIMIT ?",
                        NULL, limit, out, n, e, "listing uploads whose data is to be removed");
}

static int sq_upload_mark_purged(meta_t *base, const char *id, cu_error *e)
{
    sqlite_meta *m = (sqlite_meta *)base;
    sqlite3 *db = acquire(m);
    sqlite3_stmt *st = prepare(db, "UPDATE uploads SET data_removed = 1 WHERE id = ?");
    if (st)
        sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
    int rc = step_changes(db, st) < 0 ? db_fail(db, e, "recording removed data") : 0;
    sqlite3_finalize(st);
    release(m, db);
    return rc;
}

static int sq_webhooks_due(meta_t *base, int64_t now, int limit, meta_webhook **out, int *n,
                           cu_error *e)
{
    sqlite_meta *m = (sqlite_meta *)base;
    sqlite3 *db = acquire(m);
    int rc = 0, count = 0;
    meta_webhook *list = calloc((size_t)limit, sizeof *list);
    sqlite3_stmt *st = prepare(db, "SELECT id, upload_id, url, body, attempts FROM webhooks "
                                   "WHERE delivered_at IS NULL AND gave_up_at IS NULL AND "
                                   "next_attempt_at <= ? ORDER BY next_attempt_at LIMIT ?");
    if (!st || !list) {
        rc = db_fail(db, e, "listing webhooks");
        goto out;
    }
    sqlite3_bind_int64(st, 1, now);
    sqlite3_bind_int(st, 2, limit);
    int step;
    while ((step = sqlite3_step(st)) == SQLITE_ROW && count < limit) {
        meta_webhook *w = &list[count++];
        w->id = sqlite3_column_int64(st, 0);
        snprintf(w->upload_id, sizeof w->upload_id, "%s", (const char *)sqlite3_column_text(st, 1));
        w->url = column_dup(st, 2);
        w->body = column_dup(st, 3);
        w->attempts = sqlite3_column_int(st, 4);
    }
    if (step != SQLITE_DONE && step != SQLITE_ROW)
        rc = db_fail(db, e, "listing webhooks");
out:
    sqlite3_finalize(st);
    release(m, db);
    *out = list;
    *n = count;
    return rc;
}

static int sq_webhook_next_due(meta_t *base, int64_t *when, cu_error *e)
{
    sqlite_meta *m = (sqlite_meta *)base;
    sqlite3 *db = acquire(m);
    int rc;
    sqlite3_stmt *st = prepare(db, "SELECT MIN(next_attempt_at) FROM webhooks WHERE "
                                   "delivered_at IS NULL AND gave_up_at IS NULL");
    if (st && sqlite3_step(st) == SQLITE_ROW) {
        if (sqlite3_column_type(st, 0) == SQLITE_NULL) {
            rc = cu_fail(e, CU_ENOTFOUND, "No webhook pending");
        } else {
            *when = sqlite3_column_int64(st, 0);
            rc = 0;
        }
    } else {
        rc = db_fail(db, e, "reading webhooks");
    }
    sqlite3_finalize(st);
    release(m, db);
    return rc;
}

static int sq_webhook_result(meta_t *base, int64_t id, bool delivered, int64_t next_attempt_at,
                             bool give_up, const char *error, cu_error *e)
{
    sqlite_meta *m = (sqlite_meta *)base;
    sqlite3 *db = acquire(m);
    sqlite3_stmt *st = prepare(
        db, "UPDATE webhooks SET attempts = attempts + 1, next_attempt_at = ?, last_error = ?, "
            "delivered_at = CASE WHEN ? THEN strftime('%s','now') END, "
            "gave_up_at = CASE WHEN ? THEN strftime('%s','now') END WHERE id = ?");
    if (st) {
        sqlite3_bind_int64(st, 1, next_attempt_at);
        bind_text_or_null(st, 2, error);
        sqlite3_bind_int(st, 3, delivered);
        sqlite3_bind_int(st, 4, give_up);
        sqlite3_bind_int64(st, 5, id);
    }
    int rc = step_changes(db, st) < 0 ? db_fail(db, e, "recording a webhook attempt") : 0;
    sqlite3_finalize(st);
    release(m, db);
    return rc;
}

static void sq_close(meta_t *base)
{
    sqlite_meta *m = (sqlite_meta *)base;
    for (int i = 0; i < POOL_SIZE; i++)
        sqlite3_close(m->conns[i]);
    pthread_mutex_destroy(&m->lock);
    pthread_cond_destroy(&m->freed);
    free(m);
}

static const struct meta_ops sqlite_ops = {
    .upload_create = sq_upload_create,
    .upload_get = sq_upload_get,
    .parts_list = sq_parts_list,
    .part_get = sq_part_get,
    .part_mark_uploaded = sq_part_mark_uploaded,
    .upload_transition = sq_upload_transition,
    .upload_complete = sq_upload_complete,
    .upload_end = sq_upload_end,
    .uploads_due = sq_uploads_due,
    .uploads_to_purge = sq_uploads_to_purge,
    .upload_mark_purged = sq_upload_mark_purged,
    .webhooks_due = sq_webhooks_due,
    .webhook_next_due = sq_webhook_next_due,
    .webhook_result = sq_webhook_result,
    .close = sq_close,
};

/* Brings an older database up to the current schema, then makes sure everything exists. */
static int migrate(sqlite3 *db, char **msg)
{
    sqlite3_stmt *st = prepare(db, "PRAGMA user_version");
    int version = st && sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int(st, 0) : 0;
    sqlite3_finalize(st);
    if (version == 1) {
        int rc = sqlite3_exec(db, migrate_1_to_2, NULL, NULL, msg);
        if (rc != SQLITE_OK)
            return rc;
    }
    return sqlite3_exec(db, schema, NULL, NULL, msg);
}

int meta_sqlite_open(const char *path, bool fsync, meta_t **out, cu_error *err)
{
    sqlite_meta *m = calloc(1, sizeof *m);
    if (!m)
        return cu_fail(err, CU_EIO, "Out of memory");
    m->base.ops = &sqlite_ops;
    pthread_mutex_init(&m->lock, NULL);
    pthread_cond_init(&m->freed, NULL);
    for (int i = 0; i < POOL_SIZE; i++) {
        int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
        if (sqlite3_open_v2(path, &m->conns[i], flags, NULL) != SQLITE_OK) {
            cu_fail(err, CU_EIO, "cannot open database %s: %s", path,
                    m->conns[i] ? sqlite3_errmsg(m->conns[i]) : "out of memory");
            sq_close(&m->base);
            return err ? err->code : CU_EIO;
        }
        sqlite3 *db = m->conns[i];
        sqlite3_busy_timeout(db, 30000);
        char *msg = NULL;
        const char *pragmas = fsync ? "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; "
                                      "PRAGMA foreign_keys=ON;"
                                    : "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; "
                                      "PRAGMA foreign_keys=ON;";
        if (sqlite3_exec(db, pragmas, NULL, NULL, &msg) != SQLITE_OK ||
            (i == 0 && migrate(db, &msg) != SQLITE_OK)) {
            cu_fail(err, CU_EIO, "cannot prepare database %s: %s", path, msg ? msg : "?");
            sqlite3_free(msg);
            sq_close(&m->base);
            return err ? err->code : CU_EIO;
        }
    }
    *out = &m->base;
    return 0;
}
