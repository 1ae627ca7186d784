/* plot.c: the SVG plot of throughput against field size, plain text with no library. */
#include "bench.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/common.h"

#define WIDTH  960
#define HEIGHT 540
#define X0     80 /* the plot area; the legend is right of it */
#define X1     690
#define Y0     60
#define Y1     470

typedef struct {
    char name[64];
    bool dashed; /* ucx_perftest's figure */
} series_t;

typedef struct {
    size_t   series;
    uint64_t bytes;
    double   gbps;
} point_t;

/* The plot's scales: log2 of bytes across, GB/s from 0 up. */
typedef struct {
    unsigned e_lo, e_hi, e_step;
    double   top, step;
} scale_t;

static const char *const palette[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                                      "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"};

static void put_text(FILE *f, const char *s)
{
    for (; *s != '\0'; s++) {
        switch (*s) {
        case '&': fputs("&amp;", f); break;
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '"': fputs("&quot;", f); break;
        default: fputc((unsigned char)*s < 0x20 ? '?' : *s, f); /* not allowed in XML */
        }
    }
}

static bool plottable(const bench_result_t *r)
{
    return r->field_bytes > 0 && r->bytes_per_s > 0 && isfinite(r->bytes_per_s);
}

/* Do two plottable results of op share a field size (they differ in clients)? */
static bool op_split(const bench_result_t *r, size_t n, const char *op)
{
    for (size_t i = 0; i < n; i++) {
        if (!plottable(&r[i]) || strncmp(r[i].op, op, sizeof(r->op)) != 0)
            continue;
        for (size_t j = i + 1; j < n; j++)
            if (plottable(&r[j]) && r[j].field_bytes == r[i].field_bytes &&
                strncmp(r[j].op, op, sizeof(r->op)) == 0)
                return true;
    }
    return false;
}

static size_t series_at(series_t *s, size_t *num_p, const char *name, bool dashed)
{
    for (size_t i = 0; i < *num_p; i++)
        if (s[i].dashed == dashed && strcmp(s[i].name, name) == 0)
            return i;
    snprintf(s[*num_p].name, sizeof(s->name), "%s", name);
    s[*num_p].dashed = dashed;
    return (*num_p)++;
}

/* Gather the series and their points. An op's ucx_perftest figure depends on
 * the field size only: one point per size, whatever the clients. */
static size_t collect(const bench_result_t *r, size_t n, series_t *s, size_t *num_s, point_t *p)
{
    size_t np = 0;
    for (size_t i = 0; i < n; i++) {
        char op[sizeof(r->op) + 1], name[sizeof(s->name)];
        snprintf(op, sizeof(op), "%.*s", (int)sizeof(r->op), r[i].op);
        if (!plottable(&r[i]))
            continue;
        if (r[i].clients > 1 && op_split(r, n, r[i].op))
            snprintf(name, sizeof(name), "%s x%u clients", op, r[i].clients);
        else
            snprintf(name, sizeof(name), "%s", op);
        p[np++] = (point_t){series_at(s, num_s, name, false), r[i].field_bytes,
                            r[i].bytes_per_s / 1e9};
        if (!(r[i].ucx_bytes_per_s > 0 && isfinite(r[i].ucx_bytes_per_s)))
            continue;
        snprintf(name, sizeof(name), "ucx_perftest %s", op);
        size_t k = series_at(s, num_s, name, true), j = 0;
        while (j < np && !(p[j].series == k && p[j].bytes == r[i].field_bytes))
            j++;
        if (j == np)
            p[np++] = (point_t){k, r[i].field_bytes, r[i].ucx_bytes_per_s / 1e9};
    }
    return np;
}

static int point_cmp(const void *a, const void *b)
{
    const point_t *x = a, *y = b;
    if (x->series != y->series)
        return x->series < y->series ? -1 : 1;
    return (x->bytes > y->bytes) - (x->bytes < y->bytes);
}

/* log2 without libm, which the bench does not link: the integer part from the
 * top bit, the fraction bit by bit by squaring the mantissa. */
static double log2_u64(uint64_t v)
{
    int e = 63 - __builtin_clzll(v);
    double m = (double)v / (double)(1ull << e), frac = 0;
    for (double bit = 0.5; bit > 1e-6; bit /= 2) {
        m *= m;
        if (m >= 2)
            m /= 2, frac += bit;
    }
    return e + frac;
}

static scale_t scale_of(const point_t *p, size_t np)
{
    uint64_t lo = UINT64_MAX, hi = 0;
    double ymax = 1e-6; /* 1 KB/s: a step of 0 would divide by zero */
    for (size_t i = 0; i < np; i++) {
        lo = TQ_MIN(lo, p[i].bytes), hi = TQ_MAX(hi, p[i].bytes);
        ymax = TQ_MAX(ymax, p[i].gbps);
    }
    scale_t sc = {.e_lo = 63 - __builtin_clzll(lo), .e_hi = 63 - __builtin_clzll(hi)};
    if ((hi & (hi - 1)) != 0 && sc.e_hi < 63)
        sc.e_hi++;
    if (sc.e_hi == sc.e_lo) { /* one size: put it in the middle */
        sc.e_lo -= sc.e_lo > 0 ? 1 : 0;
        sc.e_hi++;
    }
    sc.e_step = (sc.e_hi - sc.e_lo + 7) / 8;
    /* a round step of 1, 2, 2.5 or 5 times a power of ten, for ~5 ticks */
    double raw = ymax / 5, mag = 1;
    while (mag * 10 <= raw)
        mag *= 10;
    while (mag > raw)
        mag /= 10;
    double norm = raw / mag;
    sc.step = mag * (norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 2.5 ? 2.5 : norm <= 5 ? 5 : 10);
    unsigned k = 1;
    while (k * sc.step < ymax * (1 - 1e-9))
        k++;
    sc.top = k * sc.step;
    return sc;
}

static double x_of(const scale_t *sc, uint64_t bytes)
{
    return X0 + (log2_u64(bytes) - sc->e_lo) * (X1 - X0) / (sc->e_hi - sc->e_lo);
}

static double y_of(const scale_t *sc, double gbps) { return Y1 - gbps * (Y1 - Y0) / sc->top; }

/* "4K", "64K", "1M", "16M" for 2^e bytes */
static void size_label(unsigned e, char *buf, size_t len)
{
    snprintf(buf, len, "%llu%.*s", 1ull << (e % 10), e >= 10, &" KMGTPE"[e / 10]);
}

static void draw_axes(FILE *f, const scale_t *sc)
{
    char label[16];
    for (unsigned k = 0; k * sc->step < sc->top * (1 + 1e-9); k++) {
        double y = y_of(sc, k * sc->step);
        fprintf(f, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#e4e4e4\"/>\n"
                   "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%g</text>\n",
                X0, y, X1, y, X0 - 8, y + 4, k * sc->step);
    }
    for (unsigned e = sc->e_lo; e <= sc->e_hi; e++) {
        if (e % sc->e_step != 0)
            continue;
        double x = X0 + (double)(e - sc->e_lo) * (X1 - X0) / (sc->e_hi - sc->e_lo);
        size_label(e, label, sizeof(label));
        fprintf(f, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"#e4e4e4\"/>\n"
                   "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%s</text>\n",
                x, Y0, x, Y1, x, Y1 + 20, label);
    }
    fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"none\" stroke=\"#333\"/>\n"
               "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">field size (bytes)</text>\n"
               "<text transform=\"translate(24 %d) rotate(-90)\" text-anchor=\"middle\">"
               "throughput (GB/s)</text>\n",
            X0, Y0, X1 - X0, Y1 - Y0, (X0 + X1) / 2, Y1 + 46, (Y0 + Y1) / 2);
}

/* Series i's line and markers (hollow for ucx_perftest), and its legend entry. */
static void draw_series(FILE *f, const scale_t *sc, const series_t *s, size_t i, size_t num_s,
                        const point_t *p, size_t np)
{
    const char *colour = palette[i % ARRAY_SIZE(palette)];
    const char *dash = s->dashed ? " stroke-dasharray=\"7 4\"" : "";
    const char *fill = s->dashed ? "white" : colour;
    fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\"%s points=\"", colour, dash);
    for (size_t j = 0; j < np; j++)
        fprintf(f, "%s%.1f,%.1f", j ? " " : "", x_of(sc, p[j].bytes), y_of(sc, p[j].gbps));
    fputs("\"/>\n", f);
    for (size_t j = 0; j < np; j++) {
        fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3.5\" fill=\"%s\" stroke=\"%s\"><title>",
                x_of(sc, p[j].bytes), y_of(sc, p[j].gbps), fill, colour);
        put_text(f, s->name);
        fprintf(f, " at %llu bytes: %.3g GB/s</title></circle>\n", (unsigned long long)p[j].bytes,
                p[j].gbps);
    }
    double gap = TQ_MIN(22.0, (HEIGHT - Y0 - 10.0) / (double)num_s), y = Y0 + 8 + i * gap;
    fprintf(f, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"2\"%s/>"
               "<circle cx=\"%d\" cy=\"%.1f\" r=\"3.5\" fill=\"%s\" stroke=\"%s\"/>"
               "<text x=\"%d\" y=\"%.1f\">",
            X1 + 20, y, X1 + 48, y, colour, dash, X1 + 34, y, fill, colour, X1 + 56, y + 4);
    put_text(f, s->name);
    fputs("</text>\n", f);
}

int bench_plot_svg(const char *path, const bench_result_t *r, size_t n)
{
    series_t *s = calloc(2 * n + 1, sizeof(*s));
    point_t *p = calloc(2 * n + 1, sizeof(*p));
    size_t num_s = 0, np = 0;
    FILE *f = NULL;
    if (s == NULL || p == NULL || (f = fopen(path, "w")) == NULL) {
        int e = s == NULL || p == NULL ? ENOMEM : errno;
        free(s), free(p);
        errno = e;
        return -1;
    }
    np = collect(r, n, s, &num_s, p);
    qsort(p, np, sizeof(*p), point_cmp); /* by series, then size */
    errno = 0; /* what a failed write sets, for the caller */
    fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
               "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
               "viewBox=\"0 0 %d %d\" font-family=\"sans-serif\" font-size=\"13\">\n"
               "<rect width=\"%d\" height=\"%d\" fill=\"white\"/>\n"
               "<text x=\"%d\" y=\"32\" text-anchor=\"middle\" font-size=\"17\">"
               "tq-rdma-bench: throughput against field size</text>\n",
            WIDTH, HEIGHT, WIDTH, HEIGHT, WIDTH, HEIGHT, WIDTH / 2);
    if (np == 0) {
        fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\" fill=\"#666\">"
                   "no throughput results</text>\n", WIDTH / 2, HEIGHT / 2);
    } else {
        scale_t sc = scale_of(p, np);
        draw_axes(f, &sc);
        for (size_t i = 0, j = 0; i < num_s; i++) {
            size_t k = j;
            while (k < np && p[k].series == i)
                k++;
            draw_series(f, &sc, &s[i], i, num_s, p + j, k - j);
            j = k;
        }
    }
    fputs("</svg>\n", f);
    int rc = ferror(f) ? -1 : 0, e = errno;
    if (fclose(f) != 0)
        rc = -1, e = errno;
    free(s), free(p);
    if (rc != 0)
        errno = e != 0 ? e : EIO;
    return rc;
}
