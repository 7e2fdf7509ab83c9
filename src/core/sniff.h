/* sniff.h - what a file's first bytes say it is (libmagic).
 *
 * Magic numbers sit at the start of a file, so the engine hands the sniffer at most the first
 * SNIFF_WINDOW bytes of an upload as they arrive and never reads a file back. libmagic's
 * handle is not thread-safe; loading one takes about 4 ms and its compiled database is mapped,
 * not copied (8 handles: 3.3 MiB of RSS in all), so the sniffer keeps a few handles, loaded
 * once at start, each lent to one caller at a time. A sniff of 64 KiB takes 0.03 ms for a
 * PNG, 0.24 ms for random bytes and 1.3 ms for text (libmagic's text tests are the slow
 * part), once per upload. */
#ifndef CU_SNIFF_H
#define CU_SNIFF_H

#include "base/error.h"
#include "base/filetype.h"

#include <stddef.h>

/* The most bytes of a file that are sniffed. */
#define SNIFF_WINDOW (64 * 1024)

typedef struct content_sniffer content_sniffer;

/* Opens `handles` (at least 1) libmagic handles on its default database ($MAGIC when set).
 * CU_EIO with libmagic's reason when the database cannot be loaded. */
int sniff_open(int handles, content_sniffer **out, cu_error *err);
/* The media type libmagic finds in len bytes (at most SNIFF_WINDOW of them; 0 is an empty
 * file, "application/x-empty"), as an essence, into out. Thread-safe; waits for a free handle. */
int sniff_type(content_sniffer *s, const void *buf, size_t len, char out[FILETYPE_MAX],
               cu_error *err);
void sniff_close(content_sniffer *s);

#endif
