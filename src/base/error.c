/* error.c - filling cu_error, and reading the error table. */
#include "base/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

typedef struct {
    int code;
    const char *name;
    int status;
} error_entry;

static const error_entry error_table[] = {
#define CU_ERROR_ENTRY(code, value, name, status) {value, name, status},
    CU_ERROR_TABLE(CU_ERROR_ENTRY)
#undef CU_ERROR_ENTRY
};

static const error_entry *entry_for(int code)
{
    for (size_t i = 0; i < sizeof error_table / sizeof *error_table; i++)
        if (error_table[i].code == code)
            return &error_table[i];
    return NULL;
}

int cu_fail(cu_error *err, int code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        err->code = code;
    }
    return code;
}

int cu_fail_oom(cu_error *err)
{
    return cu_fail(err, CU_ENOMEM, "Out of memory");
}

const char *cu_error_name(int code)
{
    const error_entry *e = entry_for(code);
    return e ? e->name : "unknown";
}

int cu_error_status(int code)
{
    const error_entry *e = entry_for(code);
    return e ? e->status : 500;
}

int cu_error_by_name(const char *name)
{
    for (size_t i = 0; name && i < sizeof error_table / sizeof *error_table; i++)
        if (!strcmp(error_table[i].name, name))
            return error_table[i].code;
    return CU_EIO;
}
