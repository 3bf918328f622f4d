/* LibSVM reader: two passes over the text. The first validates every line and finds the
 * number of rows, the width and the label values; the second keeps one rank's rows. Both
 * passes parse with the same function, so a line is either accepted by both or rejected with
 * the same message. */
#include "libsvm.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* What the first pass learns and the second relies on. */
typedef struct {
    const char *path;
    size_t d;          /* the given width, or 0 for "the largest index"   */
    size_t rows;       /* data rows seen                                  */
    size_t max_index;  /* the largest feature index seen (1-based)        */
    int n_labels;      /* distinct label values seen, at most 2           */
    double labels[2];
    char *err;
} scan_t;

#define TOKEN_SHOWN 40 /* characters of an offending token quoted in a message */

static int is_blank(char ch) { return ch == '\0' || isspace((unsigned char)ch); }

static const char *skip_space(const char *p)
{
    while (*p && isspace((unsigned char)*p)) p++;
    return p;
}

/* The length of the whitespace-delimited token at p, for quoting it. */
static int token_len(const char *p)
{
    size_t n = 0;
    while (!is_blank(p[n])) n++;
    return n > TOKEN_SHOWN ? TOKEN_SHOWN : (int)n;
}

void libsvm_split(size_t n, int parts, int part, size_t *first, size_t *count)
{
    if (parts < 1 || part < 0 || part >= parts) {
        *first = *count = 0;
        return;
    }
    size_t chunk = n / (size_t)parts;
    *first = chunk * (size_t)part;
    *count = part == parts - 1 ? n - *first : chunk;
}

/* Parses one line (modified: a comment is cut off). Returns 1 for a data row, 0 for a line
 * to skip, -1 on error with s->err set. With row != NULL (cols wide, zeroed), the features
 * are stored in it. */
static int parse_line(scan_t *s, char *line, size_t lineno, double *label, double *row, size_t cols)
{
    char *hash = strchr(line, '#');
    if (hash) *hash = '\0';
    const char *p = skip_space(line);
    if (*p == '\0') return 0;

    char *end;
    errno = 0;
    double lab = strtod(p, &end);
    if (end == p || !is_blank(*end)) {
        if (end != p && *end == ':')
            snprintf(s->err, LIBSVM_ERR_LEN, "%.200s:%zu: the line starts with a feature "
                     "(\"%.*s\"), not a label; expected <label> <index>:<value> ...",
                     s->path, lineno, token_len(p), p);
        else
            snprintf(s->err, LIBSVM_ERR_LEN, "%.200s:%zu: expected a numeric label at the start "
                     "of the line, found \"%.*s\"", s->path, lineno, token_len(p), p);
        return -1;
    }
    if (!isfinite(lab)) {
        snprintf(s->err, LIBSVM_ERR_LEN, "%.200s:%zu: the label \"%.*s\" is not a finite number",
                 s->path, lineno, token_len(p), p);
        return -1;
    }
    *label = lab;

    size_t prev = 0;
    for (p = skip_space(end); *p; p = skip_space(p)) {
        const char *tok = p;
        if (strncmp(p, "qid:", 4) == 0) { /* SVMlight query id: not a feature */
            p += 4;
            if (!isdigit((unsigned char)*p)) goto bad_item;
            strtoull(p, &end, 10);
            if (!is_blank(*end)) goto bad_item;
            p = end;
            continue;
        }
        if (!isdigit((unsigned char)*p)) goto bad_item;
        errno = 0;
        unsigned long long idx = strtoull(p, &end, 10);
        if (*end != ':') goto bad_item;
        if (errno == ERANGE || idx > SIZE_MAX) {
            snprintf(s->err, LIBSVM_ERR_LEN, "%.200s:%zu: the feature index in \"%.*s\" is too large",
                     s->path, lineno, token_len(tok), tok);
            return -1;
        }
        if (idx == 0) {
            snprintf(s->err, LIBSVM_ERR_LEN, "%.200s:%zu: feature index 0 in \"%.*s\"; LibSVM "
                     "indices are 1-based", s->path, lineno, token_len(tok), tok);
            return -1;
        }
        if (idx <= prev) {
            snprintf(s->err, LIBSVM_ERR_LEN, "%.200s:%zu: feature index %llu follows index %zu; "
                     "indices must be strictly increasing within a line", s->path, lineno, idx, prev);
            return -1;
        }
        if (s->d > 0 && idx > s->d) {
            snprintf(s->err, LIBSVM_ERR_LEN, "%.200s:%zu: feature index %llu exceeds the given "
                     "number of features %zu", s->path, lineno, idx, s->d);
            return -1;
        }
        const char *vp = end + 1;
        double v = strtod(vp, &end);
        if (end == vp || !is_blank(*end)) goto bad_item;
        if (!isfinite(v)) {
            snprintf(s->err, LIBSVM_ERR_LEN, "%.200s:%zu: the value in \"%.*s\" is not a finite "
                     "number", s->path, lineno, token_len(tok), tok);
            return -1;
        }
        prev = (size_t)idx;
        if (prev > s->max_index) s->max_index = prev;
        if (row) {
            if (prev > cols) { /* only if the file changed between the two passes */
                snprintf(s->err, LIBSVM_ERR_LEN, "%.200s:%zu: feature index %zu exceeds the width "
                         "%zu found on the first pass; did the file change while being read?",
                         s->path, lineno, prev, cols);
                return -1;
            }
            row[prev - 1] = v;
        }
        p = end;
    }
    return 1;

bad_item:
    snprintf(s->err, LIBSVM_ERR_LEN, "%.200s:%zu: expected <index>:<value> (a 1-based integer "
             "index, a colon, a number), found \"%.*s\"", s->path, lineno, token_len(p), p);
    return -1;
}

/* Both passes. Without x: validates every line, counts rows, finds the width and labels.
 * With x and y: stores rows [first, first + count), mapped labels, and stops after them. */
static int scan_file(scan_t *s, FILE *f, size_t first, size_t count, size_t cols, double *x,
                     double *y, double label_pos)
{
    char *line = NULL;
    size_t cap = 0, lineno = 0, row = 0;
    int rc = 0, read_errno = 0;
    for (;;) {
        if (x && row >= first + count) break;
        errno = 0;
        ssize_t got = getline(&line, &cap, f);
        if (got < 0) {
            read_errno = errno;
            break;
        }
        lineno++;
        if ((size_t)got != strlen(line)) {
            snprintf(s->err, LIBSVM_ERR_LEN, "%.200s:%zu: the line holds a NUL byte; is this a "
                     "text file?", s->path, lineno);
            rc = -1;
            break;
        }
        double label, *dst = NULL;
        if (x && row >= first) {
            dst = x + (row - first) * cols;
            memset(dst, 0, cols * sizeof *dst);
        }
        int r = parse_line(s, line, lineno, &label, dst, cols);
        if (r < 0) {
            rc = -1;
            break;
        }
        if (r == 0) continue;
        if (x) {
            if (row >= first) y[row - first] = label == label_pos ? 1.0 : -1.0;
        } else {
            int known = 0;
            for (int i = 0; i < s->n_labels; i++) known |= s->labels[i] == label;
            if (!known && s->n_labels == 2) {
                snprintf(s->err, LIBSVM_ERR_LEN, "%.200s:%zu: a third label value %g (already "
                         "seen %g and %g); only binary classification is supported",
                         s->path, lineno, label, s->labels[0], s->labels[1]);
                rc = -1;
                break;
            }
            if (!known) s->labels[s->n_labels++] = label;
        }
        row++;
    }
    if (rc == 0 && ferror(f)) {
        snprintf(s->err, LIBSVM_ERR_LEN, "cannot read %.200s: %s", s->path,
                 read_errno ? strerror(read_errno) : "read error");
        rc = -1;
    }
    if (rc == 0 && x && row < first + count) {
        snprintf(s->err, LIBSVM_ERR_LEN, "%.200s: %zu rows on the second pass, %zu on the first; "
                 "did the file change while being read?", s->path, row, first + count);
        rc = -1;
    }
    if (rc == 0 && !x) s->rows = row;
    free(line);
    return rc;
}

int libsvm_read_part(const char *path, size_t d, int parts, int part, libsvm_data_t *out,
                     char err[LIBSVM_ERR_LEN])
{
    if (!path || !out) {
        snprintf(err, LIBSVM_ERR_LEN, "libsvm_read: %s is NULL", path ? "out" : "path");
        return -1;
    }
    if (parts < 1 || part < 0 || part >= parts) {
        snprintf(err, LIBSVM_ERR_LEN, "libsvm_read_part: part %d of %d; need parts >= 1 and "
                 "0 <= part < parts", part, parts);
        return -1;
    }
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, LIBSVM_ERR_LEN, "cannot open %.200s: %s", path, strerror(errno));
        return -1;
    }
    scan_t s = {.path = path, .d = d, .err = err};
    libsvm_data_t data = {0};
    if (scan_file(&s, f, 0, 0, 0, NULL, NULL, 0) != 0) goto fail_file;
    if (s.rows == 0) {
        snprintf(err, LIBSVM_ERR_LEN, "%.200s: no data rows (the file is empty or holds only "
                 "blank and comment lines)", path);
        goto fail_file;
    }

    data.total_rows = s.rows;
    data.cols = d > 0 ? d : s.max_index;
    if (s.n_labels == 2) {
        data.label_pos = fmax(s.labels[0], s.labels[1]);
        data.label_neg = fmin(s.labels[0], s.labels[1]);
    } else {
        data.label_pos = data.label_neg = s.labels[0];
    }
    /* A single label value maps by sign: make the comparison in the second pass say so. */
    double pos = (s.n_labels == 2 || s.labels[0] > 0) ? data.label_pos : NAN;
    libsvm_split(s.rows, parts, part, &data.first_row, &data.rows);
    if (data.rows > 0) {
        if (data.cols > 0 && data.rows > SIZE_MAX / sizeof(double) / data.cols) {
            snprintf(err, LIBSVM_ERR_LEN, "%.200s: %zu x %zu doubles do not fit in memory", path,
                     data.rows, data.cols);
            goto fail_file;
        }
        data.y = malloc(data.rows * sizeof *data.y);
        if (data.cols > 0) data.x = malloc(data.rows * data.cols * sizeof *data.x);
        if (!data.y || (data.cols > 0 && !data.x)) {
            snprintf(err, LIBSVM_ERR_LEN, "%.200s: cannot allocate %zu x %zu doubles", path,
                     data.rows, data.cols);
            goto fail_alloc;
        }
        rewind(f);
        /* scan_file wants a non-NULL x to know it is the second pass; a width of 0 stores
         * nothing through it. */
        double none;
        if (scan_file(&s, f, data.first_row, data.rows, data.cols, data.x ? data.x : &none,
                      data.y, pos) != 0)
            goto fail_alloc;
    }
    fclose(f);
    *out = data;
    return 0;

fail_alloc:
    free(data.x);
    free(data.y);
fail_file:
    fclose(f);
    return -1;
}

int libsvm_read(const char *path, size_t d, libsvm_data_t *out, char err[LIBSVM_ERR_LEN])
{
    return libsvm_read_part(path, d, 1, 0, out, err);
}

float *libsvm_copy_float(const libsvm_data_t *data)
{
    if (!data || !data->x || data->rows == 0 || data->cols == 0) return NULL;
    size_t n = data->rows * data->cols;
    float *f = malloc(n * sizeof *f);
    if (!f) return NULL;
    for (size_t i = 0; i < n; i++) f[i] = (float)data->x[i];
    return f;
}

void libsvm_free(libsvm_data_t *data)
{
    if (!data) return;
    free(data->x);
    free(data->y);
    memset(data, 0, sizeof *data);
}
