/* Saving and loading a communicator's state.
 *
 * File "<path>.rank<R>", little-endian as the host writes it:
 *   char magic[8] = "TERSEST\0" | uint32 version | uint32 rank | uint32 nranks |
 *   uint32 n_layers | uint64 step |
 *   uint64 plan_version | uint64 next_decision | uint64 fallbacks        (L-GreCo; version 2)
 *   per layer: uint64 count | uint64 fingerprint | uint64 calls | uint64 skipped |
 *              double plan (the adapted parameter's value, NaN if none; version 2) |
 *              uint64 n_state | char codec[128] | char feedback[64] | float state[n_state] |
 *              uint64 window_calls | uint64 n_window | float window[n_window]   (version 2:
 *              L-GreCo's accumulation, on rank 0 only; n_window = 0 elsewhere) |
 *              uint64 auto_choice | uint64 auto_done | double auto_best[2]   (compressor=auto's
 *              trials and choice, zeros for other layers; version 3)
 *   uint64 checksum (FNV-1a of every byte before it)
 * Version 1 files (no plan) still load; their adapted layers start from the uniform plan.
 * Version 1 and 2 files (no auto record) load with the trials of compressor=auto to come.
 * Both operations are collective and all-or-nothing across ranks: an allgather of a
 * success flag decides whether the temporary files are renamed (save) or the parsed state
 * is applied (load). The ranks' files must hold the same step; a rank left with the older
 * file by a job that died between the ranks' renames takes its complete "<file>.tmp". */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

#define STATE_VERSION 3u
static const char state_magic[8] = "TERSEST";

typedef struct {
    unsigned char *data;
    size_t len, cap;
    int failed;
} sbuf_t;

static void put(sbuf_t *b, const void *p, size_t n)
{
    if (b->failed) return;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n) cap *= 2;
        unsigned char *d = realloc(b->data, cap);
        if (!d) { b->failed = 1; return; }
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

static void put_u32(sbuf_t *b, uint32_t v) { put(b, &v, sizeof v); }
static void put_u64(sbuf_t *b, uint64_t v) { put(b, &v, sizeof v); }

uint64_t state_checksum(const unsigned char *d, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ d[i]) * 1099511628211ull;
    return h;
}

static size_t state_floats(const layer_t *l) { return l->fb_floats + l->proto_floats; }

static void layer_labels(const layer_t *l, char codec[128], char feedback[64])
{
    memset(codec, 0, 128);
    memset(feedback, 0, 64);
    if (l->dense) snprintf(codec, 128, "none");
    else config_format_method(&l->cfg.compressor, codec, 128);
    snprintf(feedback, 64, "%s", l->fb->name);
}

/* 1 on every rank if ok is 1 on every rank. These agreements gather into the communicator's
 * header rows (nranks * HDR_WORDS words, unused between calls), so that no rank can fail to
 * allocate and skip the collective. */
static int all_ok(terse_comm_t *c, int ok)
{
    uint64_t *all = c->headers;
    int every = transport_allgather_u64(&c->tp, (uint64_t)ok, all) == TERSE_OK;
    for (int r = 0; every && r < c->tp.size; r++) every = all[r] == 1;
    return every;
}

/* 1 on every rank if every rank passes the same step. */
static int steps_agree(terse_comm_t *c, uint64_t step)
{
    uint64_t *all = c->headers;
    int same = transport_allgather_u64(&c->tp, step, all) == TERSE_OK;
    for (int r = 0; same && r < c->tp.size; r++) same = all[r] == step;
    return same;
}

static terse_status_t rank_path(const terse_comm_t *c, const char *path, const char *suffix,
                                char *out, size_t len)
{
    const size_t need = (size_t)snprintf(out, len, "%s.rank%d%s", path, c->tp.rank, suffix);
    if (need >= len)
        return terse_error(TERSE_ERR_ARG, "state file path is too long (%zu bytes with the rank suffix; at most %zu): '%.80s...'",
                           need, len - 1, path);
    return TERSE_OK;
}

/* Makes a rename in the folder of `file` durable (power loss), where the file system allows
 * it; best effort: the data itself was synced before the rename. */
static void sync_folder(const char *file)
{
    char folder[PATH_MAX];
    snprintf(folder, sizeof folder, "%s", file);
    char *slash = strrchr(folder, '/');
    if (slash == folder) slash[1] = '\0';
    else if (slash) *slash = '\0';
    else snprintf(folder, sizeof folder, ".");
    const int fd = open(folder, O_RDONLY | O_DIRECTORY);
    if (fd < 0) return;
    (void)fsync(fd);
    close(fd);
}

static terse_status_t state_save(terse_comm_t *c, const char *path)
{
    if (!path || !path[0]) return terse_error(TERSE_ERR_ARG, "terse_state_save: path is NULL or empty");
    char final[PATH_MAX], tmp[PATH_MAX];
    TERSE_CHECK(rank_path(c, path, "", final, sizeof final));
    TERSE_CHECK(rank_path(c, path, ".tmp", tmp, sizeof tmp));

    sbuf_t b = {0};
    put(&b, state_magic, sizeof state_magic);
    put_u32(&b, STATE_VERSION);
    put_u32(&b, (uint32_t)c->tp.rank);
    put_u32(&b, (uint32_t)c->tp.size);
    put_u32(&b, (uint32_t)c->n_layers);
    put_u64(&b, c->step);
    put_u64(&b, c->lg.version);
    put_u64(&b, c->lg.next_step);
    put_u64(&b, c->lg.fallbacks);
    for (size_t i = 0; i < c->n_layers; i++) {
        const layer_t *l = &c->layers[i];
        char codec[128], feedback[64];
        layer_labels(l, codec, feedback);
        put_u64(&b, l->count);
        put_u64(&b, l->fingerprint);
        put_u64(&b, l->calls);
        put_u64(&b, l->skipped);
        const double plan = l->lg ? l->lg->cand[l->lg->choice] : NAN;
        put(&b, &plan, sizeof plan);
        put_u64(&b, state_floats(l));
        put(&b, codec, sizeof codec);
        put(&b, feedback, sizeof feedback);
        put(&b, l->state, l->fb_floats * sizeof(float));
        put(&b, l->pstate, l->proto_floats * sizeof(float));
        const int window = l->lg && l->lg->acc;
        put_u64(&b, window ? l->lg->acc_calls : 0);
        put_u64(&b, window ? l->count : 0);
        if (window) put(&b, l->lg->acc, l->count * sizeof(float));
        put(&b, &l->autorec, sizeof l->autorec);
    }
    put_u64(&b, b.failed ? 0 : state_checksum(b.data, b.len));

    int ok = !b.failed;
    char why[2 * PATH_MAX + 128] = "out of memory";
    if (ok) {
        FILE *f = fopen(tmp, "wb");
        ok = f && fwrite(b.data, 1, b.len, f) == b.len;
        if (f) ok = (fflush(f) == 0) && (fsync(fileno(f)) == 0) && ok;
        if (f && fclose(f) != 0) ok = 0;
        if (!ok) snprintf(why, sizeof why, "%s: %s", tmp, strerror(errno));
    }
    free(b.data);
    if (!all_ok(c, ok)) {
        unlink(tmp);
        if (ok) snprintf(why, sizeof why, "another rank could not write its file");
        return terse_error(TERSE_ERR_IO, "terse_state_save: %s; no checkpoint was replaced", why);
    }
    ok = rename(tmp, final) == 0;
    if (!ok) snprintf(why, sizeof why, "rename %s -> %s: %s", tmp, final, strerror(errno));
    else sync_folder(final);
    if (!all_ok(c, ok))
        return terse_error(TERSE_ERR_IO, "terse_state_save: %s", ok ? "another rank could not rename its file" : why);
    return TERSE_OK;
}

typedef struct {
    const unsigned char *p, *end;
} reader_t;

static int get(reader_t *r, void *out, size_t n)
{
    if ((size_t)(r->end - r->p) < n) return 0;
    memcpy(out, r->p, n);
    r->p += n;
    return 1;
}

/* Validates the whole file against the communicator; on success *r points at nothing more
 * and the per-layer state positions are in offsets[]. */
/* What a file holds beyond the layers' state blocks. */
typedef struct {
    uint64_t step, plan_version, next_decision, fallbacks;
    size_t *offsets;        /* per layer: where its state block starts                      */
    size_t *window_offsets; /* per layer: where its window starts (0: no window in the file)  */
    uint64_t *calls, *skipped, *window_calls;
    double *plan;
    auto_rec_t *autorec;
} parsed_t;

static terse_status_t parse_file(const terse_comm_t *c, const unsigned char *d, size_t len,
                                 const char *file, parsed_t *out)
{
    if (len < sizeof state_magic + 8 || memcmp(d, state_magic, sizeof state_magic) != 0)
        return terse_error(TERSE_ERR_IO, "%s is not a terse state file", file);
    uint64_t sum;
    memcpy(&sum, d + len - 8, 8);
    reader_t r = {d + sizeof state_magic, d + len - 8};
    uint32_t version, rank, nranks, n_layers;
    if (!get(&r, &version, 4)) return terse_error(TERSE_ERR_IO, "%s is truncated", file);
    if (version > STATE_VERSION)
        return terse_error(TERSE_ERR_IO, "%s was written by a newer terse (state format %u; this one reads up to %u)",
                           file, version, STATE_VERSION);
    if (state_checksum(d, len - 8) != sum)
        return terse_error(TERSE_ERR_IO, "%s is corrupted or truncated (checksum mismatch)", file);
    if (!get(&r, &rank, 4) || !get(&r, &nranks, 4) || !get(&r, &n_layers, 4) || !get(&r, &out->step, 8))
        return terse_error(TERSE_ERR_IO, "%s is truncated", file);
    out->plan_version = out->fallbacks = 0;
    out->next_decision = c->lg.on ? c->lg.period : 0;
    if (version >= 2 && (!get(&r, &out->plan_version, 8) || !get(&r, &out->next_decision, 8) ||
                         !get(&r, &out->fallbacks, 8)))
        return terse_error(TERSE_ERR_IO, "%s is truncated", file);
    if (nranks != (uint32_t)c->tp.size || rank != (uint32_t)c->tp.rank)
        return terse_error(TERSE_ERR_MISMATCH, "%s holds rank %u of %u, but this is rank %d of %d",
                           file, rank, nranks, c->tp.rank, c->tp.size);
    if (n_layers != c->n_layers)
        return terse_error(TERSE_ERR_MISMATCH, "%s holds %u layers, but %zu are registered", file,
                           n_layers, c->n_layers);
    for (size_t i = 0; i < c->n_layers; i++) {
        const layer_t *l = &c->layers[i];
        uint64_t count, fp, n_state;
        char codec[128], feedback[64], mine_c[128], mine_f[64];
        out->plan[i] = NAN;
        if (!get(&r, &count, 8) || !get(&r, &fp, 8) || !get(&r, &out->calls[i], 8) ||
            !get(&r, &out->skipped[i], 8) || (version >= 2 && !get(&r, &out->plan[i], 8)) ||
            !get(&r, &n_state, 8) || !get(&r, codec, 128) || !get(&r, feedback, 64))
            return terse_error(TERSE_ERR_IO, "%s is truncated", file);
        codec[127] = feedback[63] = '\0';
        layer_labels(l, mine_c, mine_f);
        /* an adapted layer is compared as it will be once the file's plan is in force */
        uint64_t my_fp = l->fingerprint;
        size_t my_state = state_floats(l);
        if (l->lg) {
            /* version 1 (no plan): the uniform one */
            const double v = out->plan[i] == out->plan[i] ? out->plan[i] : l->lg->cand[l->lg->uniform];
            if (lgreco_preview(c, l, v, &my_fp, &my_state) != TERSE_OK)
                return terse_error(TERSE_ERR_MISMATCH,
                                   "%s: layer %zu was saved with the L-GreCo choice %s, which is not "
                                   "one of the candidates of its registered configuration %s",
                                   file, i, codec, mine_c);
        }
        if (count != l->count || fp != my_fp || n_state != my_state)
            return terse_error(TERSE_ERR_MISMATCH,
                               "%s: layer %zu was saved as %llu elements with %s / %s, but is "
                               "registered as %zu elements with %s / %s",
                               file, i, (unsigned long long)count, codec, feedback, l->count, mine_c, mine_f);
        out->offsets[i] = (size_t)(r.p - d);
        if ((size_t)(r.end - r.p) < n_state * sizeof(float))
            return terse_error(TERSE_ERR_IO, "%s is truncated", file);
        r.p += n_state * sizeof(float);
        out->window_calls[i] = 0;
        out->window_offsets[i] = 0;
        memset(&out->autorec[i], 0, sizeof out->autorec[i]);
        if (version < 2) continue;
        uint64_t n_window;
        if (!get(&r, &out->window_calls[i], 8) || !get(&r, &n_window, 8))
            return terse_error(TERSE_ERR_IO, "%s is truncated", file);
        const int mine = l->lg && l->lg->acc;
        if (n_window != (mine ? l->count : 0))
            return terse_error(TERSE_ERR_MISMATCH, "%s: layer %zu holds an L-GreCo window of %llu elements; "
                               "this rank expects %zu", file, i, (unsigned long long)n_window,
                               mine ? l->count : (size_t)0);
        if ((size_t)(r.end - r.p) < n_window * sizeof(float))
            return terse_error(TERSE_ERR_IO, "%s is truncated", file);
        out->window_offsets[i] = n_window ? (size_t)(r.p - d) : 0;
        r.p += n_window * sizeof(float);
        if (version < 3) continue;
        auto_rec_t *a = &out->autorec[i];
        if (!get(&r, a, sizeof *a)) return terse_error(TERSE_ERR_IO, "%s is truncated", file);
        if (a->choice > AUTO_DENSE || a->done > 2 * (uint64_t)l->cfg.auto_trials ||
            (!auto_on(l) && (a->choice || a->done)) || !(a->best[0] >= 0) || !(a->best[1] >= 0))
            return terse_error(TERSE_ERR_MISMATCH, "%s: layer %zu holds a compressor=auto record (choice %llu "
                               "after %llu trials) that its registered configuration cannot have", file, i,
                               (unsigned long long)a->choice, (unsigned long long)a->done);
    }
    if (r.p != r.end) return terse_error(TERSE_ERR_IO, "%s has trailing bytes", file);
    return TERSE_OK;
}

/* One rank's file, read and checked: its bytes and where things are in them. */
typedef struct {
    unsigned char *d;
    size_t len;
    parsed_t pf;
} loaded_t;

static void loaded_free(loaded_t *f)
{
    free(f->d);
    free(f->pf.offsets);
    free(f->pf.window_offsets);
    free(f->pf.calls);
    free(f->pf.skipped);
    free(f->pf.window_calls);
    free(f->pf.plan);
    free(f->pf.autorec);
    memset(f, 0, sizeof *f);
}

/* Reads `file` and checks it against c; on error *out holds what must still be freed. */
static terse_status_t load_file(const terse_comm_t *c, const char *file, loaded_t *out)
{
    memset(out, 0, sizeof *out);
    const size_t n = c->n_layers ? c->n_layers : 1;
    parsed_t *pf = &out->pf;
    pf->offsets = calloc(n, sizeof *pf->offsets);
    pf->window_offsets = calloc(n, sizeof *pf->window_offsets);
    pf->calls = calloc(n, sizeof *pf->calls);
    pf->skipped = calloc(n, sizeof *pf->skipped);
    pf->window_calls = calloc(n, sizeof *pf->window_calls);
    pf->plan = calloc(n, sizeof *pf->plan);
    pf->autorec = calloc(n, sizeof *pf->autorec);
    if (!pf->offsets || !pf->window_offsets || !pf->calls || !pf->skipped || !pf->window_calls || !pf->plan ||
        !pf->autorec)
        return terse_error(TERSE_ERR_NOMEM, "terse_state_load: out of memory");
    FILE *f = fopen(file, "rb");
    if (!f) return terse_error(TERSE_ERR_IO, "terse_state_load: cannot open %s: %s", file, strerror(errno));
    terse_status_t s = TERSE_OK;
    long end = -1;
    if (fseek(f, 0, SEEK_END) != 0 || (end = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0 ||
        !(out->d = malloc(end ? (size_t)end : 1)) || fread(out->d, 1, (size_t)end, f) != (size_t)end)
        s = terse_error(TERSE_ERR_IO, "terse_state_load: cannot read %s", file);
    fclose(f);
    if (s != TERSE_OK) return s;
    out->len = (size_t)end;
    return parse_file(c, out->d, out->len, file, pf);
}

/* The largest of the ranks' steps (0 for a rank without a valid file); UINT64_MAX if the
 * reduction fails. */
static uint64_t newest_step(terse_comm_t *c, int have, uint64_t step)
{
    uint64_t *all = c->headers, newest = UINT64_MAX;
    if (transport_allgather_u64(&c->tp, have ? step : 0, all) == TERSE_OK)
        for (int r = 0; r < c->tp.size; r++) newest = r == 0 || all[r] > newest ? all[r] : newest;
    return newest;
}

/* Whether every float of v is +0, bit for bit: a loaded feedback state with which an
 * uncompressed call may bypass the method (engine_begin). The full path would leave the
 * state as it is (p - p = +0), so the resumed run's results and state are the
 * uninterrupted run's either way. */
static int all_zero(const float *v, size_t n)
{
    uint32_t any = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &v[i], sizeof u);
        any |= u;
    }
    return any == 0;
}

static void apply_loaded(terse_comm_t *c, const loaded_t *f)
{
    const parsed_t *pf = &f->pf;
    for (size_t i = 0; i < c->n_layers; i++) {
        layer_t *l = &c->layers[i];
        if (l->lg) {
            /* the plan first: it sets the size of the protocol state copied next */
            if (pf->plan[i] == pf->plan[i]) lgreco_apply(c, l, pf->plan[i]);
            else lgreco_apply(c, l, l->lg->cand[l->lg->uniform]);
            l->lg->acc_calls = pf->window_calls[i];
            if (l->lg->acc && pf->window_offsets[i])
                memcpy(l->lg->acc, f->d + pf->window_offsets[i], l->count * sizeof(float));
            else if (l->lg->acc)
                memset(l->lg->acc, 0, l->count * sizeof(float));
        }
        memcpy(l->state, f->d + pf->offsets[i], l->fb_floats * sizeof(float));
        l->fb_zero = all_zero(l->state, l->fb_floats);
        memcpy(l->pstate, f->d + pf->offsets[i] + l->fb_floats * sizeof(float), l->proto_floats * sizeof(float));
        l->calls = pf->calls[i];
        l->skipped = pf->skipped[i];
        l->autorec = pf->autorec[i];
    }
    c->step = pf->step;
    if (c->lg.on) {
        c->lg.version = pf->plan_version;
        c->lg.next_step = pf->next_decision;
        c->lg.fallbacks = pf->fallbacks;
    }
}

static terse_status_t state_load(terse_comm_t *c, const char *path)
{
    if (!path || !path[0]) return terse_error(TERSE_ERR_ARG, "terse_state_load: path is NULL or empty");
    char file[PATH_MAX], tmp[PATH_MAX];
    TERSE_CHECK(rank_path(c, path, "", file, sizeof file));
    TERSE_CHECK(rank_path(c, path, ".tmp", tmp, sizeof tmp));

    loaded_t f;
    terse_status_t s = load_file(c, file, &f);
    /* A job that died between the ranks' renames in terse_state_save leaves some ranks with
     * the new file and the others with the old one, and the new one complete as "<file>.tmp":
     * no rank renames before every rank has written and synced its temporary file. Such a
     * rank takes its .tmp if it holds the newest step, so the checkpoint is the newest one,
     * whole. */
    const uint64_t newest = newest_step(c, s == TERSE_OK, f.pf.step);
    if ((s != TERSE_OK || f.pf.step < newest) && newest != UINT64_MAX && access(tmp, F_OK) == 0) {
        char why[1024];
        snprintf(why, sizeof why, "%s", terse_last_error());
        loaded_t t;
        if (load_file(c, tmp, &t) == TERSE_OK && t.pf.step == newest) {
            loaded_free(&f);
            f = t;
            s = TERSE_OK;
        } else {
            loaded_free(&t);
            if (s != TERSE_OK) terse_error(s, "%s", why);
        }
    }
    int ok = all_ok(c, s == TERSE_OK);
    if (ok && !steps_agree(c, f.pf.step)) {
        ok = 0;
        s = terse_error(TERSE_ERR_MISMATCH, "terse_state_load: the ranks' files are from different checkpoints "
                                            "(this rank's %s is at step %llu, another rank's is not); nothing was loaded",
                        file, (unsigned long long)f.pf.step);
    }
    if (ok)
        apply_loaded(c, &f);
    else if (s == TERSE_OK)
        s = terse_error(TERSE_ERR_IO, "terse_state_load: another rank's state file is missing or invalid; "
                                      "nothing was loaded");
    loaded_free(&f);
    return s;
}

terse_status_t terse_state_save(terse_comm_t *c, const char *path)
{
    GUARDED_MPI_CALL(c, "terse_state_save", state_save(c, path));
}

terse_status_t terse_state_load(terse_comm_t *c, const char *path)
{
    GUARDED_MPI_CALL(c, "terse_state_load", state_load(c, path));
}
