/* migrations.h - a database backend's schema history, as SQL files compiled in.
 *
 * Each backend keeps its migrations in src/meta/migrations/<backend>/NNN_what.sql; the
 * build turns them into a table in version order. A database records the last version it
 * ran, and opening it runs the rest, each in its own transaction. */
#ifndef CU_META_MIGRATIONS_H
#define CU_META_MIGRATIONS_H

typedef struct {
    int version;
    const char *name;
    const char *sql;
} meta_migration;

extern const meta_migration meta_sqlite_migrations[];
extern const int meta_sqlite_migration_count;

#endif
