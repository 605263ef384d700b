/* table.c - text tables for psctl (see ctl.h). */
#include "ctl.h"

#include <stdlib.h>
#include <string.h>

int ctl_table_init(ctl_table *t, int ncols, const char *const *header)
{
    memset(t, 0, sizeof(*t));
    t->ncols = ncols;
    return ctl_table_add(t, header, ncols, ncols);
}

int ctl_table_add(ctl_table *t, const char *const *cells, int ncells, int span_from)
{
    if (t->nrows == t->caprows) {
        int cap = t->caprows ? 2 * t->caprows : 8;
        char ***nc = realloc(t->cells, (size_t)cap * sizeof(*nc));
        if (!nc)
            return -1;
        t->cells = nc;
        int *ns = realloc(t->span_from, (size_t)cap * sizeof(*ns));
        if (!ns)
            return -1;
        t->span_from = ns;
        t->caprows = cap;
    }
    char **row = calloc((size_t)t->ncols, sizeof(*row));
    if (!row)
        return -1;
    for (int i = 0; i < ncells && i < t->ncols; i++) {
        if (!cells[i])
            continue;
        row[i] = strdup(cells[i]);
        if (!row[i]) {
            for (int j = 0; j < i; j++)
                free(row[j]);
            free(row);
            return -1;
        }
    }
    t->cells[t->nrows] = row;
    t->span_from[t->nrows] = span_from < t->ncols ? span_from : t->ncols;
    t->nrows++;
    return 0;
}

void ctl_table_print(const ctl_table *t, FILE *f)
{
    if (t->ncols <= 0)
        return;
    size_t *w = calloc((size_t)t->ncols, sizeof(*w));
    if (!w)
        return;
    for (int r = 0; r < t->nrows; r++)
        for (int c = 0; c < t->span_from[r]; c++) {
            size_t l = t->cells[r][c] ? strlen(t->cells[r][c]) : 0;
            if (l > w[c])
                w[c] = l;
        }
    for (int r = 0; r < t->nrows; r++) {
        char **row = t->cells[r];
        /* the last cell that prints something, so no trailing blanks */
        int last = -1;
        for (int c = 0; c < t->ncols; c++)
            if (row[c] && row[c][0])
                last = c;
        for (int c = 0; c <= last; c++) {
            const char *s = row[c] ? row[c] : "";
            if (c > 0)
                fputs("  ", f);
            if (c >= t->span_from[r] || c == last)
                fputs(s, f);
            else
                fprintf(f, "%-*s", (int)w[c], s);
        }
        fputc('\n', f);
    }
    free(w);
}

void ctl_table_free(ctl_table *t)
{
    for (int r = 0; r < t->nrows; r++) {
        for (int c = 0; c < t->ncols; c++)
            free(t->cells[r][c]);
        free(t->cells[r]);
    }
    free(t->cells);
    free(t->span_from);
    memset(t, 0, sizeof(*t));
}
