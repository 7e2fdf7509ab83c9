/* reaper.h - the expiry thread: every CLEANUP_INTERVAL_SECONDS it removes uploads that were
 * not completed within UPLOAD_TTL_HOURS, data and parts. */
#ifndef CU_REAPER_H
#define CU_REAPER_H

#include "core/upload.h"

typedef struct reaper reaper;

reaper *reaper_start(upload_service *svc, double interval_seconds);
void reaper_stop(reaper *r);

#endif
