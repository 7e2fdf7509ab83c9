/* error.h - the error currency of the project.
 *
 * Library code returns 0 or a negative cu_code and fills a cu_error with a message for
 * humans. Only the HTTP layer turns a code into a status number (http_status_for). */
#ifndef CU_ERROR_H
#define CU_ERROR_H

typedef enum {
    CU_OK = 0,
    CU_EINVAL = -1,    /* the request is malformed or breaks a rule */
    CU_EAUTH = -2,     /* missing or wrong credentials */
    CU_ENOTFOUND = -3, /* no such upload / route */
    CU_ECONFLICT = -4, /* the request clashes with the upload's state */
    CU_EGONE = -5,     /* the upload expired or was cancelled */
    CU_ETOOLARGE = -6, /* a size above a limit */
    CU_ECHECKSUM = -7, /* data does not match its declared digest */
    CU_ENOSPC = -8,    /* storage is full */
    CU_EIO = -9,       /* storage or database failure */
    CU_EUPSTREAM = -10 /* a remote backend refused */
} cu_code;

typedef struct {
    int code;
    char msg[512];
} cu_error;

/* Records code and a printf-style message in err (which may be NULL); returns code. */
int cu_fail(cu_error *err, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
