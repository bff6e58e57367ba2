/* image.c — see image.h. libpng errors longjmp back here through PngCtx. */
#include "image.h"

#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fileio.h"

/* Per-call libpng state: the error jump, its message and the memory stream. */
typedef struct PngCtx {
    jmp_buf jb;
    char msg[256];
    unsigned char *buf;     /* encode: growing output; decode: the whole file */
    size_t len, cap, at;
    uint8_t *rgba;          /* decode scratch [H,W,channels] */
    png_bytep *rows;
} PngCtx;

static void png_err_fn(png_structp png, png_const_charp msg) {
    PngCtx *c = png_get_error_ptr(png);
    snprintf(c->msg, sizeof c->msg, "%s", msg);
    longjmp(c->jb, 1);
}

static void png_warn_fn(png_structp png, png_const_charp msg) {
    (void)png;
    (void)msg;
}

static void png_write_mem(png_structp png, png_bytep data, size_t n) {
    PngCtx *c = png_get_io_ptr(png);
    if (c->len + n > c->cap) {
        size_t cap = c->cap ? 2 * c->cap : 4096;
        while (cap < c->len + n) cap *= 2;
        unsigned char *b = realloc(c->buf, cap);
        if (!b) png_error(png, "out of memory encoding PNG");
        c->buf = b;
        c->cap = cap;
    }
    memcpy(c->buf + c->len, data, n);
    c->len += n;
}

static void png_flush_mem(png_structp png) { (void)png; }

static void png_read_mem(png_structp png, png_bytep data, size_t n) {
    PngCtx *c = png_get_io_ptr(png);
    if (n > c->len - c->at) png_error(png, "file ends early (truncated PNG)");
    memcpy(data, c->buf + c->at, n);
    c->at += n;
}

int rt_png_encode(const uint8_t *pixels, int H, int W, int C, unsigned char **png_out, size_t *len, char *err,
                  size_t errlen) {
    if ((C != 1 && C != 3) || H <= 0 || W <= 0) {
        snprintf(err, errlen, "cannot encode a %dx%dx%d image as PNG: need H, W > 0 and 1 or 3 channels", H, W, C);
        return -1;
    }
    PngCtx *c = calloc(1, sizeof *c);
    png_bytep *rows = malloc((size_t)H * sizeof *rows);
    if (!c || !rows) {
        free(c);
        free(rows);
        snprintf(err, errlen, "out of memory encoding PNG");
        return -1;
    }
    c->rows = rows;
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, c, png_err_fn, png_warn_fn);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!png || !info) {
        png_destroy_write_struct(&png, NULL);
        free(c->rows);
        free(c);
        snprintf(err, errlen, "cannot create a libpng writer");
        return -1;
    }
    if (setjmp(c->jb)) {
        snprintf(err, errlen, "cannot encode PNG: %s", c->msg);
        png_destroy_write_struct(&png, &info);
        free(c->buf);
        free(c->rows);
        free(c);
        return -1;
    }
    png_set_write_fn(png, c, png_write_mem, png_flush_mem);
    png_set_IHDR(png, info, (png_uint_32)W, (png_uint_32)H, 8, C == 1 ? PNG_COLOR_TYPE_GRAY : PNG_COLOR_TYPE_RGB,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    for (int h = 0; h < H; h++) c->rows[h] = (png_bytep)(pixels + (size_t)h * W * C);
    png_write_info(png, info);
    png_write_image(png, c->rows);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    *png_out = c->buf;
    *len = c->len;
    free(c->rows);
    free(c);
    return 0;
}

int rt_png_write(const char *path, const uint8_t *pixels, int H, int W, int C, char *err, size_t errlen) {
    unsigned char *png;
    size_t len;
    char e[256];
    if (rt_png_encode(pixels, H, W, C, &png, &len, e, sizeof e) != 0) {
        snprintf(err, errlen, "%s: %s", path, e);
        return -1;
    }
    RtChunk ch = {png, len};
    int rc = rt_write_atomic(path, &ch, 1, err, errlen);
    free(png);
    return rc;
}

int rt_png_write_grid(const char *path, const uint8_t *pixels, int n, int H, int W, int C, int cols, int pad,
                      char *err, size_t errlen) {
    if (n <= 0 || H <= 0 || W <= 0 || (C != 1 && C != 3) || pad < 0) {
        snprintf(err, errlen, "%s: cannot make a grid of %d images of %dx%dx%d with padding %d (need n, H, W > 0, "
                 "C = 1 or 3, padding >= 0)", path, n, H, W, C, pad);
        return -1;
    }
    if (cols <= 0) {
        cols = 1;
        while (cols * cols < n) cols++;
    }
    if (cols > n) cols = n;
    int rows = (n + cols - 1) / cols;
    int64_t GH = (int64_t)rows * H + (int64_t)(rows + 1) * pad;
    int64_t GW = (int64_t)cols * W + (int64_t)(cols + 1) * pad;
    if (GH > 1000000 || GW > 1000000) {
        snprintf(err, errlen, "%s: a grid of %lldx%lld pixels is too large for PNG", path, (long long)GH,
                 (long long)GW);
        return -1;
    }
    uint8_t *g = malloc((size_t)(GH * GW * C)); /* [GH,GW,C] */
    if (!g) {
        snprintf(err, errlen, "%s: out of memory for a %lldx%lld grid", path, (long long)GH, (long long)GW);
        return -1;
    }
    memset(g, 255, (size_t)(GH * GW * C));
    for (int i = 0; i < n; i++) {
        int64_t y0 = pad + (int64_t)(i / cols) * (H + pad), x0 = pad + (int64_t)(i % cols) * (W + pad);
        for (int h = 0; h < H; h++)
            memcpy(g + ((y0 + h) * GW + x0) * C, pixels + (((size_t)i * H + h) * W) * C, (size_t)W * C);
    }
    int rc = rt_png_write(path, g, (int)GH, (int)GW, C, err, errlen);
    free(g);
    return rc;
}

void rt_image_free(RtImage *img) {
    if (!img) return;
    free(img->pixels);
    img->pixels = NULL;
}

/* Decode c->buf (the whole file) into out. Returns 0 or -1 with a message
 * (without the path) in err. */
static int png_decode(PngCtx *c, RtImage *out, char *err, size_t errlen) {
    if (c->len < 8 || png_sig_cmp(c->buf, 0, 8) != 0) {
        snprintf(err, errlen, "not a PNG file (the first 8 bytes are not the PNG signature)");
        return -1;
    }
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, c, png_err_fn, png_warn_fn);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!png || !info) {
        png_destroy_read_struct(&png, NULL, NULL);
        snprintf(err, errlen, "cannot create a libpng reader");
        return -1;
    }
    if (setjmp(c->jb)) {
        snprintf(err, errlen, "damaged PNG: %s", c->msg);
        png_destroy_read_struct(&png, &info, NULL);
        return -1;
    }
    png_set_read_fn(png, c, png_read_mem);
    png_read_info(png, info);
    png_uint_32 W = png_get_image_width(png, info), H = png_get_image_height(png, info);
    int depth = png_get_bit_depth(png, info), type = png_get_color_type(png, info);
    if (depth == 16) {
        snprintf(err, errlen, "is a 16-bit PNG; pxc reads 8-bit grayscale or RGB images (convert it to 8 bits)");
        png_destroy_read_struct(&png, &info, NULL);
        return -1;
    }
    if (type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (type == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    if (png_get_valid(png, info, PNG_INFO_tRNS)) png_set_tRNS_to_alpha(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    int ch = png_get_channels(png, info);
    size_t rowbytes = png_get_rowbytes(png, info);
    if (ch < 1 || ch > 4 || rowbytes != (size_t)W * (size_t)ch) {
        snprintf(err, errlen, "unsupported PNG layout (%d channels, %zu bytes per row)", ch, rowbytes);
        png_destroy_read_struct(&png, &info, NULL);
        return -1;
    }
    c->rgba = malloc((size_t)H * rowbytes);
    c->rows = malloc((size_t)H * sizeof *c->rows);
    if (!c->rgba || !c->rows) {
        snprintf(err, errlen, "out of memory for a %ux%u PNG", (unsigned)H, (unsigned)W);
        png_destroy_read_struct(&png, &info, NULL);
        return -1;
    }
    for (png_uint_32 h = 0; h < H; h++) c->rows[h] = c->rgba + (size_t)h * rowbytes;
    png_read_image(png, c->rows);
    png_read_end(png, NULL);
    png_destroy_read_struct(&png, &info, NULL);
    /* Drop an alpha channel only if every pixel is opaque. */
    int C = ch == 1 || ch == 2 ? 1 : 3;
    size_t np = (size_t)H * W;
    if (ch == 2 || ch == 4) {
        for (size_t i = 0; i < np; i++)
            if (c->rgba[i * ch + ch - 1] != 255) {
                snprintf(err, errlen, "has translucent pixels (alpha %d at row %zu, column %zu); pxc reads opaque "
                         "grayscale or RGB images", c->rgba[i * ch + ch - 1], i / W, i % W);
                return -1;
            }
        for (size_t i = 0; i < np; i++)
            for (int k = 0; k < C; k++) c->rgba[i * C + k] = c->rgba[i * ch + k];
    }
    out->H = (int)H;
    out->W = (int)W;
    out->C = C;
    out->pixels = c->rgba;
    c->rgba = NULL;
    return 0;
}

int rt_png_read(const char *path, RtImage *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    struct stat sb;
    if (stat(path, &sb) == 0 && !S_ISREG(sb.st_mode)) {
        snprintf(err, errlen, "%s: not a regular file (expected a PNG image)", path);
        return -1;
    }
    PngCtx *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, errlen, "out of memory reading '%s'", path);
        return -1;
    }
    c->buf = rt_read_file(path, &c->len, err, errlen);
    if (!c->buf) {
        free(c);
        return -1;
    }
    char e[300];
    int rc = png_decode(c, out, e, sizeof e);
    if (rc != 0) snprintf(err, errlen, "%s: %s", path, e);
    free(c->rgba);
    free(c->rows);
    free(c->buf);
    free(c);
    return rc;
}
