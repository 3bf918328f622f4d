/*
 * libsvm.h — a small reader for binary-classification data in LibSVM format, for the terse
 * examples and experiments (logreg, the EF21 convergence runs).
 *
 * Format, one example per line:
 *
 *     <label> <index>:<value> <index>:<value> ...
 *
 * indices 1-based and strictly increasing within a line (as LibSVM itself requires), values
 * and labels any finite number. Anything after a '#' is a comment; lines that are blank or
 * only a comment are skipped; a `qid:<n>` item (SVMlight's query id) is accepted and ignored.
 *
 * Labels: the file must hold at most two distinct label values. The larger one is mapped to
 * +1 and the other to -1 (mushrooms' 1/2 gives 2 -> +1, phishing's 0/1 gives 1 -> +1, a9a's
 * -1/+1 stays as it is). A file with a single label value maps it by sign: > 0 gives +1,
 * otherwise -1.
 *
 * The matrix is dense and row-major, in double (exact for every value the text can hold to
 * double precision; libsvm_copy_float() gives a float32 copy). Its width is the largest index
 * seen, or a given number of features d (then an index above d is an error).
 *
 * Errors: every function that can fail returns 0 on success and -1 on error, with a message
 * in err (which names the file and, for a malformed line, the line number and the text) and
 * the output left untouched.
 */
#ifndef TERSE_EXAMPLES_LIBSVM_H
#define TERSE_EXAMPLES_LIBSVM_H

#include <stddef.h>

/* Room for any message the reader writes (the path is shortened to fit). */
#define LIBSVM_ERR_LEN 512

typedef struct {
    size_t rows;       /* rows held in x and y                                          */
    size_t cols;       /* features: the width of x                                      */
    size_t total_rows; /* rows in the whole file (rows == total_rows after libsvm_read) */
    size_t first_row;  /* the 0-based row of the file that x[0] holds                  */
    double label_pos;  /* the label value in the file mapped to +1                      */
    double label_neg;  /* the label value mapped to -1 (equal to label_pos if only one) */
    double *x;         /* rows x cols, row-major; NULL when rows or cols is 0            */
    double *y;         /* rows labels, each +1 or -1; NULL when rows is 0               */
} libsvm_data_t;

/* The sequential split of n rows over `parts` ranks: every rank gets floor(n / parts) rows,
 * in rank order, and the last rank also gets the remainder. Rank `part` holds rows
 * [*first, *first + *count). With more ranks than rows, every rank but the last gets 0 rows.
 * parts must be >= 1 and 0 <= part < parts (otherwise *first = *count = 0). */
void libsvm_split(size_t n, int parts, int part, size_t *first, size_t *count);

/* Reads the whole file. d = 0: the number of features is the largest index seen; d > 0:
 * exactly d features, and an index above d is an error. */
int libsvm_read(const char *path, size_t d, libsvm_data_t *out, char err[LIBSVM_ERR_LEN]);

/* Reads only rank `part`'s rows of the libsvm_split of the file over `parts` ranks, so a rank
 * holds only its share of the matrix. The whole file is still parsed and validated (twice:
 * once to count rows, find the width and the labels, once to keep the rows), so every rank
 * sees the same width, label mapping and errors. */
int libsvm_read_part(const char *path, size_t d, int parts, int part, libsvm_data_t *out,
                     char err[LIBSVM_ERR_LEN]);

/* A float32 copy of x (rows * cols values, malloc'd; the caller frees it), or NULL if the
 * allocation fails or the matrix is empty. */
float *libsvm_copy_float(const libsvm_data_t *data);

/* Frees x and y and zeroes *data. NULL is accepted. */
void libsvm_free(libsvm_data_t *data);

#endif /* TERSE_EXAMPLES_LIBSVM_H */
