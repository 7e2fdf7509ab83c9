/* error.h - the error currency of the project.
 *
 * Library code returns 0 or a negative cu_code and fills a cu_error with a message for
 * humans. One table (CU_ERROR_TABLE) gives every code its number, a stable name for logs
 * and metrics, and the HTTP status it stands for by default; the HTTP layer alone turns a
 * code into a status (a protocol module may pick another for its own clients, e.g. tus). */
#ifndef CU_ERROR_H
#define CU_ERROR_H

/*  code              value name            status  meaning */
#define CU_ERROR_TABLE(X)                                                                          \
    X(CU_OK, 0, "ok", 200)                   /* success */                                         \
    X(CU_EINVAL, -1, "invalid", 400)         /* the request is malformed or breaks a rule */       \
    X(CU_EAUTH, -2, "unauthorized", 401)     /* missing or wrong credentials */                    \
    X(CU_ENOTFOUND, -3, "not_found", 404)    /* no such upload, file or route */                   \
    X(CU_ECONFLICT, -4, "conflict", 409)     /* the request clashes with the upload's state */     \
    X(CU_EGONE, -5, "gone", 410)             /* the upload expired or was cancelled */             \
    X(CU_ETOOLARGE, -6, "too_large", 413)    /* a size above a limit */                            \
    X(CU_ECHECKSUM, -7, "checksum", 422)     /* data does not match its declared digest */         \
    X(CU_ENOSPC, -8, "no_space", 507)        /* storage is full */                                 \
    X(CU_EIO, -9, "io", 500)                 /* storage or database failure */                     \
    X(CU_EUPSTREAM, -10, "upstream", 502)    /* a remote backend refused */                        \
    X(CU_EFORBIDDEN, -11, "forbidden", 403)  /* authenticated, but not allowed this */             \
    X(CU_EMEDIATYPE, -12, "media_type", 415) /* a content type the route does not take */          \
    X(CU_ENOTSUP, -13, "not_supported", 501) /* the storage backend lacks a capability */          \
    X(CU_EBUSY, -14, "busy", 503)            /* overloaded or a resource is held; retry later */   \
    X(CU_ELIMIT, -15, "rate_limited", 429)   /* too many requests or open uploads */               \
    X(CU_ELOCKED, -16, "locked", 423)        /* another request holds the upload */                \
    X(CU_ERANGE, -17, "range", 416)          /* a byte range outside the file */                   \
    X(CU_ETIMEOUT, -18, "timeout", 408)      /* the client was too slow */                         \
    X(CU_EPRECONDITION, -19, "precondition", 412) /* a precondition header failed */               \
    X(CU_ENOMEM, -20, "out_of_memory", 500)       /* an allocation failed */

typedef enum {
#define CU_ERROR_ENUM(code, value, name, status) code = value,
    CU_ERROR_TABLE(CU_ERROR_ENUM)
#undef CU_ERROR_ENUM
} cu_code;

typedef struct {
    int code;
    char msg[512];
} cu_error;

/* Records code and a printf-style message in err (which may be NULL); returns code. */
int cu_fail(cu_error *err, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Records an allocation failure (CU_ENOMEM, "Out of memory") in err; returns CU_ENOMEM. */
int cu_fail_oom(cu_error *err);

/* The table's name for code ("conflict"), or "unknown". */
const char *cu_error_name(int code);
/* The table's HTTP status for code; 500 for a code not in the table. */
int cu_error_status(int code);
/* The code of a table name ("conflict" -> CU_ECONFLICT); CU_EIO for a name not in the table
 * (what a record written by a newer release may hold). */
int cu_error_by_name(const char *name);

#endif
