/* log.h - the one logger: timestamped lines on stderr, filtered by LOG_LEVEL.
 *
 * The level is process-wide configuration set once at start-up (log_set_level) before
 * threads exist; writing a line is thread-safe (one fprintf per line). */
#ifndef CU_LOG_H
#define CU_LOG_H

#include <stdbool.h>
#include <stddef.h>

enum { LOG_DEBUG = 0, LOG_INFO = 1, LOG_WARN = 2, LOG_ERROR = 3 };

void log_set_level(int level);
/* Parses "debug", "info", "warn"/"warning", "error"; returns the level or -1. */
int log_level_parse(const char *name);
void log_msg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Whether a message of level would be written. */
bool log_enabled(int level);
/* Copies text from a client into out (capacity cap) so that it cannot forge log lines:
 * control characters, '"' and '\\' become \xNN escapes; stops early rather than overflow,
 * marking a cut with "...". Returns out. */
char *log_escape(const char *text, char *out, size_t cap);

#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)

#endif
