/*
 * yaml.c — libyaml events → a small tree of YNodes, each with its source
 * mark. YAML is data only here:
 *   - tags (!!python/object, !foo) are rejected;
 *   - anchors and aliases are allowed but bounded: every alias expands to a
 *     copy, and the tree may hold at most YAML_MAX_NODES nodes in all, so an
 *     alias bomb is an error, not an out-of-memory;
 *   - a mapping may not repeat a key;
 *   - nesting depth is bounded (YAML_MAX_DEPTH);
 *   - a document must be exactly one mapping.
 * Errors become diagnostics at the offending line and column.
 */
#include "spec_internal.h"

#include <string.h>
#include <yaml.h>

#define YAML_MAX_NODES 200000
#define YAML_MAX_DEPTH 64
#define YAML_MAX_BYTES (16 << 20)
#define YAML_MAX_KEY 256

typedef struct Anchor {
    char *name;
    YNode *node;
} Anchor;

typedef struct YLoader {
    yaml_parser_t parser;
    Arena *arena;
    DiagList *dl;
    const char *file;
    const char *text;
    size_t len;
    long nodes;
    Anchor *anchors;
    int nanchors, acap;
    bool failed;
} YLoader;

static SrcLoc mark_loc(YLoader *L, yaml_mark_t m) {
    SrcLoc l = {L->file, (int)m.line + 1, (int)m.column + 1};
    return l;
}

static YNode *new_node(YLoader *L, YKind k, yaml_mark_t m) {
    if (++L->nodes > YAML_MAX_NODES) {
        if (!L->failed)
            diag_error(L->dl, mark_loc(L, m), "the document expands to more than %d YAML nodes (an alias bomb?)",
                       YAML_MAX_NODES);
        L->failed = true;
        return NULL;
    }
    YNode *n = arena_alloc(L->arena, sizeof *n);
    n->kind = k;
    n->loc = mark_loc(L, m);
    return n;
}

/* Deep copy for an alias, counted against the node limit. */
static YNode *copy_node(YLoader *L, const YNode *src, yaml_mark_t m) {
    YNode *n = new_node(L, src->kind, m);
    if (!n) return NULL;
    *n = *src;
    if (src->kind == Y_SCALAR) return n;
    n->items = arena_alloc(L->arena, sizeof(YNode *) * (size_t)(src->n ? src->n : 1));
    if (src->kind == Y_MAP) n->keys = arena_alloc(L->arena, sizeof(YNode *) * (size_t)(src->n ? src->n : 1));
    for (int i = 0; i < src->n; i++) {
        if (!(n->items[i] = copy_node(L, src->items[i], m))) return NULL;
        if (src->kind == Y_MAP) n->keys[i] = src->keys[i];
    }
    return n;
}

static void add_child(YLoader *L, YNode *parent, YNode *key, YNode *child) {
    if (parent->n == parent->cap) {
        int cap = parent->cap ? 2 * parent->cap : 4;
        YNode **items = arena_alloc(L->arena, sizeof(YNode *) * (size_t)cap);
        if (parent->n) memcpy(items, parent->items, sizeof(YNode *) * (size_t)parent->n);
        parent->items = items;
        if (parent->kind == Y_MAP) {
            YNode **keys = arena_alloc(L->arena, sizeof(YNode *) * (size_t)cap);
            if (parent->n) memcpy(keys, parent->keys, sizeof(YNode *) * (size_t)parent->n);
            parent->keys = keys;
        }
        parent->cap = cap;
    }
    if (parent->kind == Y_MAP) parent->keys[parent->n] = key;
    parent->items[parent->n++] = child;
}

/* The location of byte `off` of the text (for reader errors, which carry an
 * offset, not a mark). */
static SrcLoc offset_loc(YLoader *L, size_t off) {
    SrcLoc l = {L->file, 1, 1};
    for (size_t i = 0; i < off && i < L->len; i++) {
        if (L->text[i] == '\n') l.line++, l.col = 1;
        else if (((unsigned char)L->text[i] & 0xC0) != 0x80) l.col++;
    }
    return l;
}

/* Leading spaces of line `line` (1-based), or -1 for a blank or comment line
 * or one past the end. */
static int line_indent(YLoader *L, int line) {
    size_t i = 0;
    for (int l = 1; l < line && i < L->len; i++)
        if (L->text[i] == '\n') l++;
    if (i >= L->len) return -1;
    int n = 0;
    while (i + (size_t)n < L->len && L->text[i + (size_t)n] == ' ') n++;
    char ch = i + (size_t)n < L->len ? L->text[i + (size_t)n] : '\n';
    return ch == '\n' || ch == '\r' || ch == '#' ? -1 : n;
}

static const char *spaces(int n) { return n == 1 ? "space" : "spaces"; }

/* A libyaml error → a diagnostic at the problem, with a note at the start of
 * the construct being parsed (the '[' left open, the mapping whose keys do
 * not line up) and a hint when indentation is the likely cause. */
static void syntax_error(YLoader *L) {
    yaml_parser_t *P = &L->parser;
    const char *p = P->problem ? P->problem : "malformed YAML";
    SrcLoc at = P->error == YAML_READER_ERROR ? offset_loc(L, P->problem_offset) : mark_loc(L, P->problem_mark);
    bool tab = strstr(p, "tab character") != NULL;
    bool has_ctx = P->context && P->error != YAML_READER_ERROR && !tab;
    SrcLoc ctx = has_ctx ? mark_loc(L, P->context_mark) : at;
    if (P->error == YAML_READER_ERROR && P->problem_value >= 0)
        diag_error(L->dl, at, "YAML syntax error: %s (found byte 0x%02X)", p, (unsigned)P->problem_value & 0xFFu);
    else if (tab)
        diag_error(L->dl, at, "YAML syntax error: %s; YAML indents with spaces only", p);
    else if (has_ctx)
        diag_error(L->dl, at, "YAML syntax error: %s %s", p, P->context);
    else
        diag_error(L->dl, at, "YAML syntax error: %s", p);
    L->failed = true;
    if (has_ctx && (ctx.line != at.line || ctx.col != at.col)) {
        const char *what = strstr(P->context, "flow sequence")    ? "the '[' is opened here"
                           : strstr(P->context, "flow mapping")   ? "the '{' is opened here"
                           : strstr(P->context, "quoted scalar")  ? "the quoted text starts here"
                           : strstr(P->context, "block mapping")  ? "the mapping starts here"
                           : strstr(P->context, "block collection") ? "the list starts here"
                           : strstr(P->context, "simple key")     ? "the key starts here; a YAML key is on one line "
                                                                    "and at most 1024 characters long"
                                                                  : "the construct starts here";
        int want = ctx.col - 1, got = line_indent(L, at.line);
        bool block = strstr(P->context, "block") != NULL;
        int prev = -1, pl = at.line - 1;
        for (; pl > ctx.line && (prev = line_indent(L, pl)) < 0; pl--) {}
        if (block && got >= 0 && got != want && at.line != ctx.line && pl > ctx.line && prev > want && prev != got)
            diag_note(L->dl, ctx, "%s; its %s are indented by %d %s, line %d by %d and line %d by %d", what,
                      strstr(P->context, "mapping") ? "keys" : "items", want, spaces(want), pl, prev, at.line, got);
        else if (block && got >= 0 && got != want && at.line != ctx.line)
            diag_note(L->dl, ctx, "%s; its %s are indented by %d %s but line %d by %d", what,
                      strstr(P->context, "mapping") ? "keys" : "items", want, spaces(want), at.line, got);
        else
            diag_note(L->dl, ctx, "%s", what);
        return;
    }
    /* "key: value" then a line indented deeper: YAML reads that line as the
     * rest of the value above and stops at its ':' */
    if (strstr(p, "mapping values are not allowed")) {
        int got = line_indent(L, at.line), prev = -1, pl = at.line - 1;
        for (; pl >= 1 && (prev = line_indent(L, pl)) < 0; pl--) {}
        if (got > prev && prev >= 0) {
            SrcLoc l = {L->file, at.line, got + 1};
            diag_note(L->dl, l, "line %d is indented by %d %s, deeper than line %d (%d), so YAML reads it as the "
                      "rest of the value on line %d; keys of one mapping must line up",
                      at.line, got, spaces(got), pl, prev, pl);
        }
    }
}

static bool next_event(YLoader *L, yaml_event_t *ev) {
    if (!yaml_parser_parse(&L->parser, ev)) {
        syntax_error(L);
        return false;
    }
    return true;
}

/* A tag as it was written: libyaml expands "!!int" to "tag:yaml.org,2002:int". */
static const char *tag_text(YLoader *L, const unsigned char *tag) {
    const char *t = (const char *)tag, *std = "tag:yaml.org,2002:";
    if (strncmp(t, std, strlen(std)) == 0) return arena_printf(L->arena, "!!%s", t + strlen(std));
    return t;
}

static bool reject_tag_anchor(YLoader *L, yaml_event_t *ev, const unsigned char *tag, const unsigned char *anchor,
                              YNode *n) {
    if (tag) {
        diag_error(L->dl, mark_loc(L, ev->start_mark), "YAML tags are not allowed in a pxc spec (found '%s'); "
                   "write the plain value", tag_text(L, tag));
        L->failed = true;
        return false;
    }
    if (anchor && n) {
        Anchor a = {arena_strdup(L->arena, (const char *)anchor), n};
        VEC_PUSH(L->anchors, L->nanchors, L->acap, a);
    }
    return true;
}

static YNode *parse_node(YLoader *L, yaml_event_t *ev, int depth);

static YNode *parse_collection(YLoader *L, yaml_event_t *start, int depth, bool map) {
    YNode *n = new_node(L, map ? Y_MAP : Y_SEQ, start->start_mark);
    if (!n) return NULL;
    const unsigned char *anchor = map ? start->data.mapping_start.anchor : start->data.sequence_start.anchor;
    const unsigned char *tag = map ? start->data.mapping_start.tag : start->data.sequence_start.tag;
    if (!reject_tag_anchor(L, start, tag, anchor, n)) return NULL;
    if (depth > YAML_MAX_DEPTH) {
        diag_error(L->dl, n->loc, "the spec nests deeper than %d levels", YAML_MAX_DEPTH);
        L->failed = true;
        return NULL;
    }
    for (;;) {
        yaml_event_t ev;
        if (!next_event(L, &ev)) return NULL;
        if (ev.type == (map ? YAML_MAPPING_END_EVENT : YAML_SEQUENCE_END_EVENT)) {
            yaml_event_delete(&ev);
            return n;
        }
        YNode *key = NULL;
        if (map) {
            key = parse_node(L, &ev, depth + 1);
            yaml_event_delete(&ev);
            if (!key) return NULL;
            if (key->kind != Y_SCALAR) {
                diag_error(L->dl, key->loc, "mapping keys must be plain names");
                L->failed = true;
                return NULL;
            }
            if (key->len > YAML_MAX_KEY) {
                diag_error(L->dl, key->loc, "a key of %zu characters; keys are names of at most %d", key->len,
                           YAML_MAX_KEY);
                L->failed = true;
                return NULL;
            }
            for (int i = 0; i < n->n; i++)
                if (strcmp(n->keys[i]->str, key->str) == 0) {
                    diag_error(L->dl, key->loc, "duplicate key '%s'", key->str);
                    diag_note(L->dl, n->keys[i]->loc, "'%s' was first given here", key->str);
                    L->failed = true;
                    return NULL;
                }
            if (!next_event(L, &ev)) return NULL;
        }
        YNode *child = parse_node(L, &ev, depth + 1);
        yaml_event_delete(&ev);
        if (!child) return NULL;
        add_child(L, n, key, child);
    }
}

static YNode *parse_node(YLoader *L, yaml_event_t *ev, int depth) {
    switch (ev->type) {
    case YAML_SCALAR_EVENT: {
        YNode *n = new_node(L, Y_SCALAR, ev->start_mark);
        if (!n) return NULL;
        const unsigned char *tag = ev->data.scalar.tag;
        if (tag) {
            diag_error(L->dl, n->loc, "YAML tags are not allowed in a pxc spec (found '%s'); write the plain value",
                       tag_text(L, tag));
            L->failed = true;
            return NULL;
        }
        if (!reject_tag_anchor(L, ev, NULL, ev->data.scalar.anchor, n)) return NULL;
        n->str = arena_alloc(L->arena, ev->data.scalar.length + 1);
        if (ev->data.scalar.length) memcpy(n->str, ev->data.scalar.value, ev->data.scalar.length);
        n->len = ev->data.scalar.length;
        n->quoted = ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE;
        n->multiline = ev->start_mark.line != ev->end_mark.line;
        if (memchr(n->str, 0, n->len)) {
            diag_error(L->dl, n->loc, "a NUL character inside a scalar");
            L->failed = true;
            return NULL;
        }
        /* A quoted scalar's text starts one column after its mark. */
        if (ev->data.scalar.style == YAML_SINGLE_QUOTED_SCALAR_STYLE ||
            ev->data.scalar.style == YAML_DOUBLE_QUOTED_SCALAR_STYLE)
            n->text_col = n->loc.col + 1;
        else
            n->text_col = n->loc.col;
        return n;
    }
    case YAML_SEQUENCE_START_EVENT: return parse_collection(L, ev, depth, false);
    case YAML_MAPPING_START_EVENT: return parse_collection(L, ev, depth, true);
    case YAML_ALIAS_EVENT: {
        const char *name = (const char *)ev->data.alias.anchor;
        for (int i = L->nanchors - 1; i >= 0; i--)
            if (strcmp(L->anchors[i].name, name) == 0) return copy_node(L, L->anchors[i].node, ev->start_mark);
        diag_error(L->dl, mark_loc(L, ev->start_mark), "alias '*%s' names no anchor", name);
        L->failed = true;
        return NULL;
    }
    default:
        diag_error(L->dl, mark_loc(L, ev->start_mark), "unexpected YAML structure");
        L->failed = true;
        return NULL;
    }
}

YNode *yaml_load(const char *file, const char *text, size_t len, Arena *arena, DiagList *dl) {
    SrcLoc top = {file, 0, 0};
    if (len > YAML_MAX_BYTES) {
        diag_error(dl, top, "the spec is %zu bytes; at most %d are accepted", len, YAML_MAX_BYTES);
        return NULL;
    }
    YLoader L;
    memset(&L, 0, sizeof L);
    L.arena = arena;
    L.dl = dl;
    L.file = file;
    L.text = text;
    L.len = len;
    if (!yaml_parser_initialize(&L.parser)) pxc_bug("cannot initialise libyaml");
    yaml_parser_set_input_string(&L.parser, (const unsigned char *)text, len);
    yaml_parser_set_encoding(&L.parser, YAML_UTF8_ENCODING);
    YNode *root = NULL;
    yaml_event_t ev;
    int docs = 0;
    while (next_event(&L, &ev)) {
        yaml_event_type_t t = ev.type;
        if (t == YAML_STREAM_END_EVENT) {
            yaml_event_delete(&ev);
            break;
        }
        if (t == YAML_DOCUMENT_START_EVENT) {
            if (++docs > 1) {
                diag_error(dl, mark_loc(&L, ev.start_mark), "a spec is one YAML document; found a second");
                yaml_event_delete(&ev);
                L.failed = true;
                break;
            }
        } else if (t != YAML_STREAM_START_EVENT && t != YAML_DOCUMENT_END_EVENT) {
            root = parse_node(&L, &ev, 0);
            if (!root) {
                yaml_event_delete(&ev);
                break;
            }
        }
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&L.parser);
    free(L.anchors);
    if (L.failed) return NULL;
    if (root && root->kind == Y_SCALAR && root->len == 0 && !root->quoted) root = NULL;  /* "---" alone */
    if (!root) {
        diag_error(dl, top, "the spec is empty; expected a mapping with 'input', 'params', 'head' and 'network'");
        return NULL;
    }
    if (root->kind != Y_MAP) {
        diag_error(dl, root->loc, "a spec must be a YAML mapping (keys like 'input' and 'network'), found a %s",
                   root->kind == Y_SEQ ? "sequence" : "scalar");
        return NULL;
    }
    return root;
}

const char *ynode_kind_name(YKind k) { return k == Y_MAP ? "mapping" : k == Y_SEQ ? "sequence" : "scalar"; }

YNode *ymap_get(const YNode *map, const char *key) {
    if (!map || map->kind != Y_MAP) return NULL;
    for (int i = 0; i < map->n; i++)
        if (strcmp(map->keys[i]->str, key) == 0) return map->items[i];
    return NULL;
}
