/* log.c - stderr logger. */
#include "base/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* Written once in main() before any thread starts, read-only afterwards. */
static int log_threshold = LOG_INFO;

void log_set_level(int level)
{
    log_threshold = level;
}

int log_level_parse(const char *name)
{
    if (!strcasecmp(name, "debug") || !strcasecmp(name, "trace"))
        return LOG_DEBUG;
    if (!strcasecmp(name, "info"))
        return LOG_INFO;
    if (!strcasecmp(name, "warn") || !strcasecmp(name, "warning"))
        return LOG_WARN;
    if (!strcasecmp(name, "error"))
        return LOG_ERROR;
    return -1;
}

void log_msg(int level, const char *fmt, ...)
{
    static const char *const names[] = {"DEBUG", "INFO", "WARN", "ERROR"};
    if (level < log_threshold)
        return;
    char line[2048];
    struct timespec now;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    int n = (int)strftime(line, sizeof line, "%Y-%m-%dT%H:%M:%S", &tm);
    n += snprintf(line + n, sizeof line - (size_t)n, ".%03ldZ %-5s ", now.tv_nsec / 1000000,
                  names[level]);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s\n", line);
}

bool log_enabled(int level)
{
    return level >= log_threshold;
}

char *log_escape(const char *text, char *out, size_t cap)
{
    size_t o = 0;
    if (cap == 0)
        return out;
    for (const unsigned char *p = (const unsigned char *)(text ? text : ""); *p; p++) {
        bool plain = *p >= 0x20 && *p != 0x7f && *p != '"' && *p != '\\';
        size_t need = plain ? 1 : 4;
        if (o + need + 4 > cap) { /* room for "..." and the NUL */
            if (cap >= 4) {
                memcpy(out + (o < cap - 4 ? o : cap - 4), "...", 4);
                return out;
            }
            break;
        }
        if (plain)
            out[o++] = (char)*p;
        else
            o += (size_t)snprintf(out + o, cap - o, "\\x%02x", *p);
    }
    out[o < cap ? o : cap - 1] = '\0';
    return out;
}
